package simulator

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// wsIdle is how long a WebSocket may stay silent (no message, no ping)
// before it is considered dead; the service pings every 30 s by default.
const wsIdle = 2 * time.Minute

// wsLink is a device WebSocket (gws client).
type wsLink struct {
	gws.BuiltinEventHandler
	s      *sender
	gen    uint64
	conn   *gws.Conn
	closed atomic.Bool
}

// wsURL turns the service's http(s) base URL into the ws(s) URL of path.
func wsURL(base, path string) string {
	switch {
	case strings.HasPrefix(base, "https://"):
		return "wss://" + strings.TrimPrefix(base, "https://") + path
	case strings.HasPrefix(base, "http://"):
		return "ws://" + strings.TrimPrefix(base, "http://") + path
	}
	return base + path
}

// dialWS opens a device WebSocket to url with token. A 401 wraps errAuth.
func (r *runner) dialWS(ctx context.Context, s *sender, gen uint64, url, token string) (link, error) {
	l := &wsLink{s: s, gen: gen}
	conn, err := dialGWS(ctx, l, url, token)
	if err != nil {
		return nil, err
	}
	l.conn = conn
	_ = conn.SetDeadline(time.Now().Add(wsIdle))
	go conn.ReadLoop()
	return l, nil
}

// dialGWS performs the handshake; a refused one returns the service's
// status and error body.
func dialGWS(ctx context.Context, h gws.Event, url, token string) (*gws.Conn, error) {
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, resp, err := gws.NewClient(h, &gws.ClientOption{
		Addr:               url,
		RequestHeader:      hdr,
		HandshakeTimeout:   10 * time.Second,
		ReadMaxPayloadSize: 16 << 20,
		Recovery:           gws.Recovery,
		NewDialer: func() (gws.Dialer, error) {
			return dialFunc(func(network, addr string) (net.Conn, error) { return dialer.DialContext(ctx, network, addr) }), nil
		},
	})
	if err == nil {
		return conn, nil
	}
	if resp != nil {
		body := ""
		if resp.Body != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			body = strings.TrimSpace(string(b))
		}
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return nil, fmt.Errorf("%w: HTTP %d %s", errAuth, resp.StatusCode, body)
		}
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, fmt.Errorf("HTTP %d %s", resp.StatusCode, body)
		}
	}
	return nil, err
}

// dialFunc adapts a function to gws.Dialer (so the dial can follow a ctx).
type dialFunc func(network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) { return f(network, addr) }

func (l *wsLink) send(f *frame) error {
	_ = l.conn.SetDeadline(time.Now().Add(wsIdle))
	op := gws.OpcodeText
	if l.s.r.cfg.Format.binary() {
		op = gws.OpcodeBinary
	}
	return l.conn.WriteMessage(op, f.payload)
}

// sendRaw announces b as one text frame of its full length but writes only
// its first kilobyte, then nothing more: the link is about to be refused.
// The service refuses an oversized frame on its header alone; were all of
// it sent, the bytes it never reads would turn its close into a TCP reset
// that can overtake the close frame (and its 1009). The write bypasses
// gws's lock; the only other writer then is a pong, and the sender sends
// nothing more on this link.
func (l *wsLink) sendRaw(b []byte) error {
	_ = l.conn.SetDeadline(time.Now().Add(wsIdle))
	return writeFrameHead(l.conn.NetConn(), b, 1024)
}

// writeFrameHead writes a masked client text frame header for len(p)
// bytes (RFC 6455 §5.2) followed by the first n bytes of p.
func writeFrameHead(w io.Writer, p []byte, n int) error {
	n = min(n, len(p))
	hdr := make([]byte, 0, 14+n)
	hdr = append(hdr, 0x81, 0x80|127) // FIN, text; masked, 64-bit length
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(len(p)))
	var key [4]byte
	_, _ = rand.Read(key[:])
	hdr = append(hdr, key[:]...)
	for i := range n {
		hdr = append(hdr, p[i]^key[i%4])
	}
	_, err := w.Write(hdr)
	return err
}

func (l *wsLink) kill() { _ = l.conn.NetConn().Close() }

func (l *wsLink) close() {
	if !l.closed.Swap(true) {
		_ = l.conn.WriteClose(1000, nil)
	}
}

func (l *wsLink) OnPing(c *gws.Conn, payload []byte) {
	_ = c.SetDeadline(time.Now().Add(wsIdle))
	_ = c.WritePong(payload)
}

func (l *wsLink) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	_ = c.SetDeadline(time.Now().Add(wsIdle))
	l.s.onMessage(m.Bytes())
}

func (l *wsLink) OnClose(_ *gws.Conn, err error) {
	l.closed.Store(true)
	var code uint16
	if ce, ok := err.(*gws.CloseError); ok {
		code = ce.Code
	}
	l.s.onClosed(l.gen, code, err)
}

// wrongTokenProbe is the event handler of a connection that should never open.
type wrongTokenProbe struct{ gws.BuiltinEventHandler }

// dialWrongToken tries to connect as s with a wrong token; the expected
// answer wraps errAuth.
func (r *runner) dialWrongToken(ctx context.Context, s *sender, token string) error {
	if s.mqtt {
		return r.probeMQTT(ctx, s, token)
	}
	conn, err := dialGWS(ctx, wrongTokenProbe{}, r.ingestURLs[s.instance()], token)
	if err != nil {
		return err
	}
	_ = conn.WriteClose(1000, nil)
	return fmt.Errorf("the service accepted a WebSocket with a wrong token")
}
