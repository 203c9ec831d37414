package simulator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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

// dialHTTP returns a link posting to base's /v1/ingest.
func (r *runner) dialHTTP(_ context.Context, s *sender, gen uint64, base, token string) (link, error) {
	return &httpLink{
		s: s, gen: gen, token: token, client: r.httpc,
		url:     strings.TrimSuffix(base, "/") + "/v1/ingest",
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
	if l.s.r.cfg.Format == FormatCBOR {
		req.Header.Set("Content-Type", "application/cbor")
	} else {
		req.Header.Set("Content-Type", "application/json")
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
