package ingest

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"

	"github.com/telemetryd/telemetryd/internal/testsupport"
	"github.com/telemetryd/telemetryd/telemetry"
)

// startWS serves a device endpoint with cfg and consumer on a free
// loopback port and returns its address.
func startWS(t *testing.T, cfg WSConfig, consumer telemetry.Consumer) (*WS, string) {
	t.Helper()
	w := NewWS(cfg, oneDevice{}, consumer, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	return w, strings.TrimPrefix(srv.URL, "http://")
}

// dialRecording opens a device socket that records what it receives.
func dialRecording(t *testing.T, addr string) (*gws.Conn, chan clientEvent) {
	t.Helper()
	rc := &recordingClient{events: make(chan clientEvent, 1024), server: &countConn{}}
	client, _, err := gws.NewClient(rc, &gws.ClientOption{
		Addr:          "ws://" + addr + "/v1/ingest",
		RequestHeader: http.Header{"Authorization": {"Bearer t"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go client.ReadLoop()
	t.Cleanup(func() { client.NetConn().Close() })
	return client, rc.events
}

func nextEvent(t *testing.T, events chan clientEvent) clientEvent {
	t.Helper()
	select {
	case ev := <-events:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("device got nothing")
		return clientEvent{}
	}
}

// TestWSAnswersInFrameOrder: a frame whose readings are all rejected is
// answered only after the earlier frame still being written (issue 17.6).
func TestWSAnswersInFrameOrder(t *testing.T) {
	frames := make(chan *telemetry.Frame, 16)
	consumer := telemetry.ConsumerFunc(func(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		frames <- f
		if f.Readings[0].Measurement == "bad" {
			// Nothing accepted: Done at once, as the bridge does.
			rej := []telemetry.Rejection{{Index: 0, Code: "invalid_value", Message: "no"}}
			f.Done(telemetry.Outcome{})
			return telemetry.Receipt{Rejected: rej}, nil
		}
		return telemetry.Receipt{Accepted: len(f.Readings)}, nil
	})
	_, addr := startWS(t, WSConfig{FrameRate: -1}, consumer)
	client, events := dialRecording(t, addr)
	send := func(msg string) *telemetry.Frame {
		t.Helper()
		if err := client.WriteString(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case f := <-frames:
			return f
		case <-time.After(5 * time.Second):
			t.Fatal("frame not consumed")
			return nil
		}
	}
	first := send(`{"seq":1,"measurement":"m","metrics":{"v":1}}`) // held: its write is "slow"
	send(`{"seq":2,"measurement":"bad","metrics":{"v":1}}`)        // all rejected
	// The read loop is serial: once frame 3 is consumed, frame 2 has been
	// answered as far as the server will answer it before frame 1's ack.
	// Frame 3 is not completed, so nothing it owes can arrive either.
	send(`{"seq":3,"measurement":"m","metrics":{"v":1}}`)
	first.Done(telemetry.Outcome{})

	want := []string{`{"ack":1}`, `rejected:2`, `{"ack":2}`}
	for i, w := range want {
		ev := nextEvent(t, events)
		got := ev.text
		var e errorFrame
		if json.Unmarshal([]byte(ev.text), &e) == nil && e.Error.Code != "" && e.Error.Seq != nil {
			got = e.Error.Code + ":" + string(rune('0'+*e.Error.Seq))
		}
		if got != w {
			t.Fatalf("answer %d: got %q (%s), want %s", i, got, ev.text, w)
		}
	}
}

// TestWSErrorMessagesBounded: a deeply nested payload is answered with a
// bounded message (issue 17.3).
func TestWSErrorMessagesBounded(t *testing.T) {
	consumer := telemetry.ConsumerFunc(func(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		return telemetry.Receipt{Accepted: len(f.Readings)}, nil
	})
	_, addr := startWS(t, WSConfig{FrameRate: -1}, consumer)
	client, events := dialRecording(t, addr)
	nested := `{"seq":1,"measurement":"m","metrics":{"v":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}}`
	if err := client.WriteString(nested); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, events)
	var e errorFrame
	if err := json.Unmarshal([]byte(ev.text), &e); err != nil || e.Error.Code != CodeInvalidPayload {
		t.Fatalf("got %.200s, want invalid_payload", ev.text)
	}
	if len(e.Error.Message) > telemetry.MaxMessageLen {
		t.Fatalf("message of %d bytes, want ≤ %d", len(e.Error.Message), telemetry.MaxMessageLen)
	}
}

// TestWSOversizedFrameOneWrite: a raw client that writes a 4 MiB frame in
// one call still reads the 1009 close frame and its reason (issue 17.2).
func TestWSOversizedFrameOneWrite(t *testing.T) {
	consumer := telemetry.ConsumerFunc(func(_ context.Context, f *telemetry.Frame) (telemetry.Receipt, error) {
		return telemetry.Receipt{Accepted: len(f.Readings)}, nil
	})
	w, addr := startWS(t, WSConfig{FrameRate: -1}, consumer)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small send buffer keeps most of the frame in the write call when
	// the server refuses it, as on a real network.
	_ = conn.(*net.TCPConn).SetWriteBuffer(16 << 10)
	_, err = io.WriteString(conn, "GET /v1/ingest HTTP/1.1\r\nHost: "+addr+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer t\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	const size = 4 << 20
	frame := make([]byte, 0, 14+size)
	frame = append(frame, 0x81, 0x80|127)
	frame = binary.BigEndian.AppendUint64(frame, size)
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	frame = append(frame, mask[:]...)
	body := make([]byte, size)
	for i := range body {
		body[i] = 'a' ^ mask[i%4]
	}
	frame = append(frame, body...)
	// One call, and only then a read, as a blocking client does: the
	// server must read (and discard) what it refused for the close frame
	// to survive until the device reads it.
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, werr := conn.Write(frame)
	writeErr := make(chan error, 1)
	writeErr <- werr
	var hdr [2]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		t.Fatalf("reading the close frame: %v (write: %v)", err, errOf(writeErr))
	}
	if hdr[0] != 0x88 {
		t.Fatalf("first frame opcode %#x, want a close frame", hdr[0])
	}
	p := make([]byte, hdr[1]&0x7f)
	if _, err := io.ReadFull(br, p); err != nil || len(p) < 2 {
		t.Fatalf("close payload: %v", err)
	}
	if code := binary.BigEndian.Uint16(p); code != telemetry.CloseTooBig || len(p) == 2 {
		t.Fatalf("close %d %q, want %d with a reason", code, p[2:], telemetry.CloseTooBig)
	}
	_ = conn.Close() // the device's side closed: the server's linger ends
	// The server read what it refused instead of resetting the connection
	// (which can destroy the close frame before a client reads it).
	if werr != nil {
		t.Fatalf("writing the frame: %v, want the server to read and discard it", werr)
	}
	testsupport.Eventually(t, 5*time.Second, "TooBig counted", func() bool { return w.Stats().TooBig == 1 })
}

func errOf(c chan error) error {
	select {
	case err := <-c:
		return err
	default:
		return errors.New("still writing")
	}
}
