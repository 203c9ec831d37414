package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// httpLink is a device on POST /v1/ingest: each frame one request, its
// answer the ack. Requests of one link run concurrently (up to the
// sender's window of outstanding frames); answers may come in any order,
// which the sender's bookkeeping, keyed by seq, does not mind. An HTTP
// device holds no connection, so the link "closes" only when the sender
// kills or closes it, or a request fails on the network.
type httpLink struct {
	s      *sender
	gen    uint64
	url    string
	token  string
	client *http.Client
	closed atomic.Bool

	mu      sync.Mutex
	cancels map[*http.Request]context.CancelFunc
}

var errLinkClosed = errors.New("http link closed")

// dialHTTP returns a link posting to base's /v1/ingest (line protocol:
// its /api/v2/write).
func (r *runner) dialHTTP(_ context.Context, s *sender, gen uint64, base, token string) (link, error) {
	path := "/v1/ingest"
	if r.cfg.Format == FormatLP {
		path = "/api/v2/write?org=sim&bucket=sim&precision=ns"
	}
	return &httpLink{
		s: s, gen: gen, token: token, client: r.httpc,
		url:     strings.TrimSuffix(base, "/") + path,
		cancels: make(map[*http.Request]context.CancelFunc),
	}, nil
}

func (l *httpLink) send(f *frame) error {
	if l.closed.Load() {
		return errLinkClosed
	}
	go l.post(f.seq, f.payload, false)
	return nil
}

// sendRaw posts an oversized body; the 413 stands for the socket's 1009.
func (l *httpLink) sendRaw(b []byte) error {
	if l.closed.Load() {
		return errLinkClosed
	}
	go l.post(0, b, true)
	return nil
}

func (l *httpLink) post(seq uint64, body []byte, raw bool) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		l.lost(0, err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	req.Header.Set("Content-Type", contentTypes[l.s.r.cfg.Format])
	if l.s.r.cfg.Format == FormatLP {
		req.Header.Set("Authorization", "Token "+l.token) // as InfluxDB clients send it
	}
	l.mu.Lock()
	if l.closed.Load() {
		l.mu.Unlock()
		return
	}
	l.cancels[req] = cancel
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.cancels, req)
		l.mu.Unlock()
	}()
	resp, err := l.client.Do(req)
	if err != nil {
		l.lost(0, err)
		return
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		l.lost(0, err)
		return
	}
	switch {
	case raw && resp.StatusCode == http.StatusRequestEntityTooLarge:
		l.lost(1009, fmt.Errorf("HTTP %s", resp.Status))
		return
	case resp.StatusCode == http.StatusUnauthorized:
		l.lost(1008, fmt.Errorf("HTTP %s", resp.Status)) // the credential was revoked
		return
	case l.s.r.cfg.Format == FormatLP && !raw:
		l.influxAnswer(seq, body, resp, answer)
		return
	}
	var m struct {
		Ack   *uint64         `json:"ack"`
		Error json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(answer, &m); err != nil {
		l.s.onMessage(answer) // counted as unparsable there
		return
	}
	if len(m.Error) > 0 {
		// The error part alone, as a socket's error frame; rejections come
		// before the ack, as on a socket.
		var e serverError
		if err := json.Unmarshal(m.Error, &e); err != nil {
			l.s.onMessage(answer) // counted as unparsable there
			return
		}
		if e.Seq == nil && !raw {
			e.Seq = &seq // the frame this answers is known here
		}
		if b, err := json.Marshal(struct {
			Error serverError `json:"error"`
		}{e}); err == nil {
			l.s.onMessage(b)
		}
	}
	if resp.StatusCode == http.StatusOK && m.Ack != nil {
		l.s.onAck(*m.Ack)
	}
}

var contentTypes = map[Format]string{
	FormatJSON: "application/json", FormatSenML: "application/senml+json",
	FormatCBOR: "application/cbor", FormatSenMLCBOR: "application/senml+cbor",
	FormatLP: "text/plain; charset=utf-8",
}

// influxPoint is one dropped point of an InfluxDB partial-write message,
// as the service words it: "point N: <message> (<code>);".
var influxPoint = regexp.MustCompile(`point (\d+): (.*?) \(([a-z_]+)\);`)

// influxAnswer turns a /api/v2/write answer into the socket's messages:
// 204 the ack; a partial write (400, 422) its rejections (points are
// 1-based there), then the ack — unless every line failed to parse (400
// dropping them all), which is the frame's invalid_payload; 429 and 503
// a resend after Retry-After.
func (l *httpLink) influxAnswer(seq uint64, body []byte, resp *http.Response, answer []byte) {
	var m struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	_ = json.Unmarshal(answer, &m) // an empty 204 has none
	e := serverError{Seq: &seq, Message: m.Message}
	switch resp.StatusCode {
	case http.StatusNoContent:
		l.s.onAck(seq)
		return
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		e.Code = "rate_limited"
		if resp.StatusCode == http.StatusServiceUnavailable {
			e.Code = "overloaded"
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfterMS = int64(s) * 1000
		}
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		for _, p := range influxPoint.FindAllStringSubmatch(m.Message, -1) {
			n, _ := strconv.Atoi(p[1])
			e.Rejected = append(e.Rejected, rejection{Index: n - 1, Code: p[3], Message: p[2]})
		}
		if resp.StatusCode == http.StatusBadRequest && unparsable(e.Rejected, bytes.Count(body, []byte{'\n'})) {
			e.Code, e.Rejected = "invalid_payload", nil
			l.s.onError(&e)
			return
		}
		e.Code = "rejected"
		l.s.onError(&e)
		l.s.onAck(seq)
		return
	default:
		e.Code = m.Code
		if e.Code == "" {
			e.Code = "http_" + strconv.Itoa(resp.StatusCode)
		}
	}
	l.s.onError(&e)
}

// unparsable reports whether every one of a frame's lines was dropped for
// not parsing (invalid_reading, the decoder's code for a syntax error).
func unparsable(rej []rejection, lines int) bool {
	if len(rej) != lines {
		return false
	}
	for _, r := range rej {
		if r.Code != "invalid_reading" {
			return false
		}
	}
	return true
}

// lost ends the link once (a network failure, a revoked token, the
// oversize fault's refusal) and tells the sender as a socket's close would.
func (l *httpLink) lost(code uint16, err error) {
	if l.closed.Swap(true) {
		return
	}
	l.cancelAll()
	l.s.onClosed(l.gen, code, err)
}

func (l *httpLink) cancelAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, cancel := range l.cancels {
		cancel()
	}
	clear(l.cancels)
}

// kill abandons the requests in flight (the disconnect fault).
func (l *httpLink) kill() { l.lost(0, errLinkClosed) }

func (l *httpLink) close() { l.lost(1000, errLinkClosed) }
