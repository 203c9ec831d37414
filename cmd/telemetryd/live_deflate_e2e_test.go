package main

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/storage/influxtest"
)

// liveNodeWS returns node and a NODE_PATH holding ws@8, installed once into
// a directory under the system's temp dir. A missing node skips the test,
// or fails it under CI=true.
func liveNodeWS(t *testing.T) (node, nodePath string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		const msg = "node not found: install nodejs and npm (make tools)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := filepath.Join(os.TempDir(), "telemetryd-livews")
	modules := filepath.Join(dir, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "ws", "package.json")); err != nil {
		npm, err := exec.LookPath("npm")
		if err != nil {
			t.Fatalf("npm not found (needed once to install ws): %v", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", dir, "ws@8")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm install ws@8: %v\n%s", err, out)
		}
	}
	return node, modules
}

// rawDeflateClient is a WebSocket client written out by hand, so that the
// test sees each frame's RSV1 bit (set: the message is compressed).
type rawDeflateClient struct {
	conn       net.Conn
	br         *bufio.Reader
	extensions string
}

func dialRawDeflate(t *testing.T, addr, path, token string) *rawDeflateClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nAuthorization: Bearer %s\r\n\r\n",
		path, addr, base64.StdEncoding.EncodeToString(key), token)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return &rawDeflateClient{conn: conn, br: br, extensions: resp.Header.Get("Sec-WebSocket-Extensions")}
}

func (c *rawDeflateClient) sendText(t *testing.T, msg string) {
	t.Helper()
	var hdr []byte
	hdr = append(hdr, 0x81)
	switch n := len(msg); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	default:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	}
	mask := []byte{1, 2, 3, 4}
	hdr = append(hdr, mask...)
	p := []byte(msg)
	for i := range p {
		p[i] ^= mask[i%4]
	}
	if _, err := c.conn.Write(append(hdr, p...)); err != nil {
		t.Fatal(err)
	}
}

// next reads one data message: its text and whether RSV1 was set.
func (c *rawDeflateClient) next(t *testing.T) (string, bool) {
	t.Helper()
	_ = c.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		var h [2]byte
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			t.Fatal(err)
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			_, _ = io.ReadFull(c.br, b[:])
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			_, _ = io.ReadFull(c.br, b[:])
			n = binary.BigEndian.Uint64(b[:])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c.br, p); err != nil {
			t.Fatal(err)
		}
		if h[0]&0x80 == 0 {
			t.Fatal("fragmented message: not expected from the hub")
		}
		op, rsv1 := h[0]&0x0f, h[0]&0x40 != 0
		if op != 1 {
			continue // ping and the like
		}
		if !rsv1 {
			return string(p), false
		}
		out, err := io.ReadAll(flate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte{0, 0, 0xff, 0xff}))))
		if err != nil && err != io.ErrUnexpectedEOF {
			t.Fatalf("inflate: %v", err)
		}
		return string(out), true
	}
}

// TestLiveDeflateNodeWS: a Node ws client and a hand-written client that
// offer permessage-deflate get it negotiated and compressed frames (RSV1)
// whose content is identical to what a client without it gets (issue 20).
func TestLiveDeflateNodeWS(t *testing.T) {
	node, nodePath := liveNodeWS(t)
	influx := influxtest.Start(t)
	svc := startService(t, influx, nil, tokensFile(t, "zip-dev", "tok-zip"))
	waitReady(t, svc)
	const n = 20

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("testdata", "livews", "deflate.js"), svc.ws("/v1/live"), testAdminToken, fmt.Sprint(n))
	cmd.Env = append(os.Environ(), "NODE_PATH="+nodePath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 4<<20), 4<<20)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("node: %q %s", lines.Text(), stderr.String())
	}

	raw := dialRawDeflate(t, svc.addr, "/v1/live", testAdminToken)
	if !strings.Contains(raw.extensions, "permessage-deflate") {
		t.Fatalf("extension not negotiated: %q", raw.extensions)
	}
	raw.sendText(t, `{"op":"subscribe","id":"z","devices":["zip-dev"]}`)
	if m, _ := raw.next(t); !strings.Contains(m, `"snapshot"`) {
		t.Fatalf("raw client: %s", m)
	}
	plain := mustDialWS(t, svc.ws("/v1/live"), bearer(testAdminToken))
	plain.send(t, `{"op":"subscribe","id":"z","devices":["zip-dev"]}`)
	plain.next(t, 15*time.Second) // snapshot

	dev := newBrowserDevice(t, svc, "tok-zip")
	for i := range n {
		dev.c.send(t, fmt.Sprintf(`{"seq":%d,"measurement":"env","metrics":{"temperature":%d.5,"humidity":41.25,"pressure":1013.2,"co2":612,"status":"ok"},"tags":{"site":"plant-3","room":"boiler-room"}}`, i+1, 20+i))
		var ack ackOrError
		dev.c.nextJSON(t, &ack)
	}
	collect := func(next func() string) []string {
		var out []string
		for got := 0; got < n; {
			m := next()
			out = append(out, m)
			var lm liveMsg
			_ = json.Unmarshal([]byte(m), &lm)
			got += len(lm.Readings)
		}
		return out
	}
	want := collect(func() string { return plain.next(t, 15*time.Second) })
	compressed := 0
	gotRaw := collect(func() string {
		m, rsv1 := raw.next(t)
		if rsv1 {
			compressed++
		}
		return m
	})
	if compressed != len(gotRaw) {
		t.Fatalf("%d of %d messages compressed, want all (each is over the threshold)", compressed, len(gotRaw))
	}
	if !lines.Scan() {
		t.Fatalf("node printed nothing more: %s", stderr.String())
	}
	var fromNode struct {
		Extensions              string
		BytesRead, PayloadBytes int
		Messages                []string
	}
	if err := json.Unmarshal(lines.Bytes(), &fromNode); err != nil {
		t.Fatalf("node: %v: %s", err, lines.Text())
	}
	_ = cmd.Wait()
	t.Logf("node: %s, %d bytes on the wire for %d bytes of messages", fromNode.Extensions, fromNode.BytesRead, fromNode.PayloadBytes)
	if !strings.Contains(fromNode.Extensions, "permessage-deflate") || fromNode.BytesRead >= fromNode.PayloadBytes {
		t.Fatalf("node: extensions %q, %d bytes read for %d of messages: not compressed", fromNode.Extensions, fromNode.BytesRead, fromNode.PayloadBytes)
	}
	if strings.Join(gotRaw, "\n") != strings.Join(want, "\n") || strings.Join(fromNode.Messages, "\n") != strings.Join(want, "\n") {
		t.Fatalf("compressed content differs:\nplain %v\nraw   %v\nnode  %v", want, gotRaw, fromNode.Messages)
	}
}
