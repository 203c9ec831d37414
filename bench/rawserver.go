package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// rawAddrEnv is the raw server's listen address.
const rawAddrEnv = "TELEMETRY_BENCH_ADDR"

// rawCounters is the raw server's GET /stats answer.
type rawCounters struct {
	Conns  int64 `json:"conns"`
	Frames int64 `json:"frames"`
	Subs   int64 `json:"subs"`
	Casts  int64 `json:"casts"`
	// Dropped: readings refused because the fan-out queue was full.
	Dropped int64 `json:"dropped"`
}

// rawServer is every raw baseline in one process, with the gws options
// telemetryd uses (inside net/http, UTF-8 checks on):
//
//	/count  acks every frame with {"ack":seq} and counts it (P3, P6)
//	/echo   echoes every frame (P5)
//	/sub    a dashboard: answers a subscription with an empty snapshot (P4)
//	/pub    takes readings (dashboard JSON objects) and broadcasts them to
//	        every /sub socket: like the service's hub, it coalesces what is
//	        already waiting (≤ 1024) into one {"type":"readings",…} frame,
//	        encoded once, one gws.Broadcaster per frame (P4)
//	/stats  counters as JSON; ?gc=1 runs a GC first (P6)
type rawServer struct {
	conns, frames, casts, dropped atomic.Int64
	castQ                         chan []byte // readings waiting for fan-out, bounded like the hub's inbox

	mu   sync.RWMutex
	subs map[*gws.Conn]struct{}
	list []*gws.Conn // copy-on-write snapshot of subs for broadcasting
}

func rawServerMain() int {
	addr := os.Getenv(rawAddrEnv)
	if addr == "" {
		fmt.Fprintln(os.Stderr, "rawserver: "+rawAddrEnv+" is not set")
		return 2
	}
	s := &rawServer{subs: map[*gws.Conn]struct{}{}, castQ: make(chan []byte, 16384)}
	go s.broadcastLoop()
	mux := http.NewServeMux()
	for path, h := range map[string]gws.Event{
		"/count": &countEvents{s: s},
		"/echo":  &echoEvents{s: s},
		"/sub":   &subEvents{s: s},
		"/pub":   &pubEvents{s: s},
	} {
		up := gws.NewUpgrader(h, &gws.ServerOption{ReadMaxPayloadSize: 256 << 10, CheckUtf8Enabled: true, Recovery: gws.Recovery})
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			socket, err := up.Upgrade(w, r)
			if err != nil {
				return
			}
			go socket.ReadLoop()
		})
	}
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("gc") != "" {
			runtime.GC()
		}
		s.mu.RLock()
		subs := int64(len(s.subs))
		s.mu.RUnlock()
		_ = json.NewEncoder(w).Encode(rawCounters{Conns: s.conns.Load(), Frames: s.frames.Load(), Subs: subs, Casts: s.casts.Load(), Dropped: s.dropped.Load()})
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("rawserver listening on %s", addr)
	if err := srv.ListenAndServe(); err != nil {
		log.Printf("rawserver: %v", err)
		return 1
	}
	return 0
}

type countEvents struct {
	gws.BuiltinEventHandler
	s *rawServer
}

func (e *countEvents) OnOpen(*gws.Conn)         { e.s.conns.Add(1) }
func (e *countEvents) OnClose(*gws.Conn, error) { e.s.conns.Add(-1) }

func (e *countEvents) OnMessage(socket *gws.Conn, m *gws.Message) {
	e.s.frames.Add(1)
	seq, _, ok := scanInt(m.Bytes(), `"seq":`, 0)
	m.Close()
	if ok {
		var b [32]byte
		ack := append(b[:0], `{"ack":`...)
		ack = appendUint(ack, seq)
		ack = append(ack, '}')
		_ = socket.WriteMessage(gws.OpcodeText, ack)
	}
}

func appendUint(dst []byte, n int64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, tmp[i:]...)
}

type echoEvents struct {
	gws.BuiltinEventHandler
	s *rawServer
}

func (e *echoEvents) OnOpen(*gws.Conn)         { e.s.conns.Add(1) }
func (e *echoEvents) OnClose(*gws.Conn, error) { e.s.conns.Add(-1) }

func (e *echoEvents) OnMessage(socket *gws.Conn, m *gws.Message) {
	e.s.frames.Add(1)
	_ = socket.WriteMessage(gws.OpcodeText, m.Bytes())
	m.Close()
}

type subEvents struct {
	gws.BuiltinEventHandler
	s *rawServer
}

func (e *subEvents) OnOpen(socket *gws.Conn) {
	e.s.conns.Add(1)
	e.s.mu.Lock()
	e.s.subs[socket] = struct{}{}
	e.s.rebuild()
	e.s.mu.Unlock()
}

func (e *subEvents) OnClose(socket *gws.Conn, _ error) {
	e.s.conns.Add(-1)
	e.s.mu.Lock()
	delete(e.s.subs, socket)
	e.s.rebuild()
	e.s.mu.Unlock()
}

// OnMessage answers a subscription like the service does, with a (here
// always empty) snapshot, so that the same client code works on both.
func (e *subEvents) OnMessage(socket *gws.Conn, m *gws.Message) {
	m.Close()
	socket.WriteAsync(gws.OpcodeText, []byte(`{"type":"snapshot","sub":"s","readings":[]}`), nil)
}

func (s *rawServer) rebuild() {
	s.list = make([]*gws.Conn, 0, len(s.subs))
	for c := range s.subs {
		s.list = append(s.list, c)
	}
}

type pubEvents struct {
	gws.BuiltinEventHandler
	s *rawServer
}

func (e *pubEvents) OnOpen(*gws.Conn)         { e.s.conns.Add(1) }
func (e *pubEvents) OnClose(*gws.Conn, error) { e.s.conns.Add(-1) }

// OnMessage queues a reading for the fan-out loop (never blocks, like
// the hub's Publish).
func (e *pubEvents) OnMessage(_ *gws.Conn, m *gws.Message) {
	payload := append([]byte(nil), m.Bytes()...)
	m.Close()
	e.s.frames.Add(1)
	select {
	case e.s.castQ <- payload:
	default:
		e.s.dropped.Add(1)
	}
}

// broadcastLoop is the raw fan-out: one frame per batch of waiting
// readings, one Broadcaster per frame, queued on every subscriber's
// write queue.
func (s *rawServer) broadcastLoop() {
	var frame []byte
	for first := range s.castQ {
		frame = append(frame[:0], `{"type":"readings","sub":"s","readings":[`...)
		frame = append(frame, first...)
	drain:
		for n := 1; n < 1024; n++ {
			select {
			case p := <-s.castQ:
				frame = append(frame, ',')
				frame = append(frame, p...)
			default:
				break drain
			}
		}
		frame = append(frame, "]}"...)
		s.mu.RLock()
		list := s.list
		s.mu.RUnlock()
		// The Broadcaster keeps the payload until every write is done.
		b := gws.NewBroadcaster(gws.OpcodeText, append([]byte(nil), frame...))
		for _, c := range list {
			_ = b.Broadcast(c)
		}
		_ = b.Close()
		s.casts.Add(int64(len(list)))
	}
}
