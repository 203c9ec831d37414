package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The bare paho subscriber of P2 and P2d runs as a process of its own
// (this binary with TELEMETRY_BENCH_ROLE=baresub): those scenarios judge
// telemetryd's process CPU per message against the baseline's, so the
// baseline must not share a process with the publishers.
const (
	bareURLEnv   = "TELEMETRY_BENCH_MQTT_URL"
	bareIDEnv    = "TELEMETRY_BENCH_MQTT_ID" // client id prefix: <id>-<i>
	bareTopicEnv = "TELEMETRY_BENCH_MQTT_TOPIC"
	bareConnsEnv = "TELEMETRY_BENCH_MQTT_CONNS"
)

// bareCounters is the bare subscriber's GET /stats answer.
type bareCounters struct {
	Count int64 `json:"count"`
	First int64 `json:"first_ns"` // unix ns of the first message, 0 before it
	Last  int64 `json:"last_ns"`
	// Subscribed: connections whose SUBSCRIBE the broker acknowledged.
	Subscribed int `json:"subscribed"`
}

func bareClientID(prefix string, i int) string { return prefix + "-" + strconv.Itoa(i) }

// bareSubMain serves /stats first, then connects its subscribers (a
// persistent session's backlog flows from the CONNACK on: the harness
// must be able to read the count from before the first message), and
// runs until SIGTERM. It disconnects without ending the sessions: the
// harness does (endSession).
func bareSubMain() int {
	addr, url, prefix, topic := os.Getenv(rawAddrEnv), os.Getenv(bareURLEnv), os.Getenv(bareIDEnv), os.Getenv(bareTopicEnv)
	conns, err := strconv.Atoi(os.Getenv(bareConnsEnv))
	if addr == "" || url == "" || prefix == "" || topic == "" || err != nil || conns < 1 {
		fmt.Fprintln(os.Stderr, "baresub: set "+rawAddrEnv+", "+bareURLEnv+", "+bareIDEnv+", "+bareTopicEnv+" and "+bareConnsEnv)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Printf("baresub: %v", err)
		return 1
	}
	var (
		mu   sync.Mutex
		subs []*bareSub
	)
	var subscribed atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		st := bareCounters{Subscribed: int(subscribed.Load())}
		for _, s := range subs {
			st.Count += s.count.Load()
			if f := s.first.Load(); f != 0 && (st.First == 0 || f < st.First) {
				st.First = f
			}
			st.Last = max(st.Last, s.last.Load())
		}
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	for i := range conns {
		s := &bareSub{url: url, id: bareClientID(prefix, i), topic: topic}
		// Counted from the CONNACK on, before the SUBSCRIBE: a session's
		// backlog arrives first.
		mu.Lock()
		subs = append(subs, s)
		mu.Unlock()
		if err := s.connect(ctx); err != nil {
			log.Printf("baresub: %v", err)
			return 1
		}
		subscribed.Add(1)
	}
	log.Printf("baresub: %d subscribers on %s, stats on %s", conns, topic, addr)
	<-ctx.Done()
	mu.Lock()
	defer mu.Unlock()
	for _, s := range subs {
		s.c.Disconnect(100)
	}
	return 0
}

// bareProc is a running baresub process.
type bareProc struct {
	c     *child
	addr  string
	url   string
	ids   []string
	httpc *http.Client
}

// startBareSub starts the bare subscriber process (name: its log) with
// conns connections as <idPrefix>-<i> on topic, and waits until every
// connection is subscribed (a fresh session gets nothing published
// before that). The stack's procs report it as "baresub" until stop.
func (s *stack) startBareSub(ctx context.Context, name, idPrefix, topic string, conns int) (*bareProc, error) {
	b, err := s.launchBareSub(name, idPrefix, topic, conns)
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, b.c, 30*time.Second, func() error {
		st, err := b.stats(ctx)
		if err == nil && st.Subscribed < conns {
			return fmt.Errorf("%d of %d connections subscribed", st.Subscribed, conns)
		}
		return err
	})
	if err != nil {
		b.stop(s, false)
		return nil, fmt.Errorf("bare subscriber: %w", err)
	}
	return b, nil
}

// launchBareSub starts the process and returns at once: P2d samples it
// from its start.
func (s *stack) launchBareSub(name, idPrefix, topic string, conns int) (*bareProc, error) {
	if s.bare != nil && !s.bare.exited() {
		return nil, fmt.Errorf("%s: a bare subscriber is already running", name)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b := &bareProc{addr: "127.0.0.1:" + strconv.Itoa(port), url: s.mqttURL, httpc: s.httpc}
	for i := range conns {
		b.ids = append(b.ids, bareClientID(idPrefix, i))
	}
	c, err := startChild(name, s.logDir, []string{
		roleEnv + "=baresub", rawAddrEnv + "=" + b.addr, bareURLEnv + "=" + s.mqttURL,
		bareIDEnv + "=" + idPrefix, bareTopicEnv + "=" + topic, bareConnsEnv + "=" + strconv.Itoa(conns),
	}, self)
	if err != nil {
		return nil, err
	}
	b.c, s.bare = c, c
	return b, nil
}

func (b *bareProc) stats(ctx context.Context) (bareCounters, error) {
	var st bareCounters
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+"/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := b.httpc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// stop ends the process and, with end, its sessions: otherwise the
// broker would queue every later matching message for them.
func (b *bareProc) stop(s *stack, end bool) {
	b.c.stop(5 * time.Second)
	if s.bare == b.c {
		s.bare = nil
	}
	if end {
		for _, id := range b.ids {
			endSession(b.url, id)
		}
	}
}

// bareCountPoller keeps the bare subscriber's latest counters, read every
// interval (as the service's are, from /metrics), for the publishers'
// lead bound.
type bareCountPoller struct {
	latest atomic.Pointer[bareCounters]
}

func (b *bareProc) poll(ctx context.Context, every time.Duration) *bareCountPoller {
	p := &bareCountPoller{}
	p.latest.Store(&bareCounters{})
	read := func() {
		if st, err := b.stats(ctx); err == nil {
			p.latest.Store(&st)
		}
	}
	read()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				read()
			}
		}
	}()
	return p
}

func (p *bareCountPoller) counters() bareCounters { return *p.latest.Load() }

func (p *bareCountPoller) count() int64 { return p.latest.Load().Count }
