package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestServerCountsIncompleteRequests: a connection closed before sending a
// complete request is counted; one that completed a request is not.
func TestServerCountsIncompleteRequests(t *testing.T) {
	cfg := config{Sec: securityConfig{ReadHeaderTimeout: 5 * time.Second}}
	srv := newServer(cfg, slog.New(slog.DiscardHandler))
	if err := srv.listen("127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan struct{})
	ready := make(chan string, 1)
	go func() { defer close(served); srv.serveUntil(ctx, ready) }()
	addr := <-ready
	t.Cleanup(func() { cancel(); <-served; srv.shutdown() })

	// A complete request, then the connection closes: not counted.
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()

	// Half a request line, then gone: counted.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HT"))
	c.Close()
	eventually(t, 5*time.Second, "one incomplete request", func() bool { return srv.IncompleteRequests() == 1 })

	// Once more with a request that completes, to see the first one was
	// really not counted.
	resp, err = (&http.Client{Transport: tr}).Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	eventually(t, 5*time.Second, "two incomplete requests", func() bool { return srv.IncompleteRequests() == 2 })
	if n := srv.IncompleteRequests(); n != 2 {
		t.Fatalf("incomplete requests %d, want 2", n)
	}
}
