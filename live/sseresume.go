package live

import (
	"bytes"
	"errors"
	"net/http"
	"strconv"
)

// Resume over SSE. Every message that carries a position is sent with it as
// the event id ("id: <pos>"), so an EventSource that reconnects sends it
// back as Last-Event-ID by itself and gets what it missed (resume.go). A
// client that starts afresh with a known position passes it as ?since=.
// ?persisted=1 asks for persisted messages (persisted.go).

// sseOptions reads the subscription options of an SSE request.
func sseOptions(r *http.Request) (SubscribeOptions, error) {
	var o SubscribeOptions
	q := r.URL.Query()
	since := r.Header.Get("Last-Event-ID")
	if since == "" {
		since = q.Get("since")
	}
	if since != "" {
		p, err := strconv.ParseInt(since, 10, 64)
		if err != nil || p < 0 {
			return o, errors.New("Last-Event-ID and since must be a position (an integer)")
		}
		o.Resume, o.Since = true, p
	}
	switch q.Get("persisted") {
	case "", "0", "false":
	case "1", "true":
		o.Persisted = true
	default:
		return o, errors.New(`persisted must be "1" or "0"`)
	}
	return o, nil
}

// messagePos reads the position of a message the Hub encoded: positioned
// messages start with {"type":"<word>","pos":<digits>.
func messagePos(msg []byte) ([]byte, bool) {
	typ, ok := messageType(msg)
	if !ok {
		return nil, false
	}
	rest := msg[len(`{"type":"`)+len(typ)+1:]
	const key = `,"pos":`
	if !bytes.HasPrefix(rest, []byte(key)) {
		return nil, false
	}
	rest = rest[len(key):]
	n := 0
	for n < len(rest) && n < 20 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 {
		return nil, false
	}
	return rest[:n], true
}
