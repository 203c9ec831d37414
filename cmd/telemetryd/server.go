package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// server is the public HTTP listener (devices, dashboards, the API): plain
// or TLS, with the handshake timeout, and counting the connections that
// closed before sending a complete request (slow or abandoned handshakes,
// the -read-header-timeout refusals among them).
type server struct {
	srv             *http.Server
	ln              net.Listener
	tlsCert, tlsKey string // both empty: plain HTTP
	log             *slog.Logger

	conns      sync.Map // net.Conn → *atomic.Bool (a request was read)
	incomplete atomic.Uint64
}

type requestSeenKey struct{}

// newServer prepares the server; listen binds it.
func newServer(cfg config, log *slog.Logger) *server {
	s := &server{tlsCert: cfg.Sec.TLSCert, tlsKey: cfg.Sec.TLSKey, log: log}
	s.srv = &http.Server{
		ReadHeaderTimeout: cfg.Sec.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			seen := new(atomic.Bool)
			s.conns.Store(c, seen)
			return context.WithValue(ctx, requestSeenKey{}, seen)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st != http.StateClosed && st != http.StateHijacked {
				return
			}
			if v, ok := s.conns.LoadAndDelete(c); ok && !v.(*atomic.Bool).Load() && st == http.StateClosed {
				s.incomplete.Add(1)
			}
		},
	}
	return s
}

// listen binds addr and serves h there once serve is called.
func (s *server) listen(addr string, h http.Handler) error {
	s.srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if seen, ok := r.Context().Value(requestSeenKey{}).(*atomic.Bool); ok {
			seen.Store(true)
		}
		h.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.ln = ln
	return nil
}

// Addr is the bound address (tests listen on port 0).
func (s *server) Addr() string { return s.ln.Addr().String() }

// IncompleteRequests counts connections closed before a complete request.
func (s *server) IncompleteRequests() uint64 { return s.incomplete.Load() }

// serveUntil serves (over TLS when a certificate is configured) until ctx
// ends or serving fails, which is logged. ready, when not nil, receives the
// bound address first.
func (s *server) serveUntil(ctx context.Context, ready chan<- string) {
	errc := make(chan error, 1)
	go func() { errc <- s.serve() }()
	if ready != nil {
		ready <- s.Addr()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		s.log.Error("http server failed", "error", err)
	}
}

func (s *server) serve() error {
	if s.tlsCert == "" && s.tlsKey == "" {
		return s.srv.Serve(s.ln)
	}
	cert, err := tls.LoadX509KeyPair(s.tlsCert, s.tlsKey)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	s.srv.TLSConfig = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		// HTTP/1.1 only: a WebSocket upgrade needs a hijackable HTTP/1.1
		// connection, which HTTP/2 would not give gws.
		NextProtos: []string{"http/1.1"},
	}
	return s.srv.ServeTLS(s.ln, "", "")
}

// shutdown closes the listener and idle connections; hijacked WebSockets
// were closed by their owners before.
func (s *server) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
}

// shutdownTimeout bounds closing an HTTP server at the end of shutdown.
const shutdownTimeout = 2 * time.Second

// checkTLSFiles fails at start when the certificate pair cannot be loaded.
func checkTLSFiles(cert, key string) error {
	if (cert == "") != (key == "") {
		return errors.New("set both -tls-cert and -tls-key, or neither")
	}
	if cert != "" {
		if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
			return fmt.Errorf("tls: %w", err)
		}
	}
	return nil
}
