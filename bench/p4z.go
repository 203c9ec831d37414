package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
)

// runP4z: P4 with permessage-deflate. The same fan-out as P4 (subscribers
// each subscribed to everything, fed by device sockets) runs twice against
// telemetryd in the same run: subscribers that do not offer compression
// (the baseline) and subscribers that offer permessage-deflate (the
// service figure). Reported for each: deliveries/s, bytes per delivery on
// the wire (what the subscriber sockets read, frame headers included) and
// telemetryd's CPU per delivery. Compression trades CPU for bytes; the
// hub compresses each shared frame once, so the CPU it adds is per frame,
// not per subscriber.
func runP4z(ctx context.Context, e *env, r *result) error {
	sz := e.sz
	r.Unit = "deliveries/s"
	r.Goal = "information"
	r.detail("subscribers", sz.P4Subscribers)
	r.detail("feeders", sz.P4Feeders)
	frame := func(buf []byte, n int64) []byte { return singleFrame(buf, -1, time.Now().UnixNano(), int(n)) }
	phase := func(name string, deflate bool) (float64, error) {
		var wire atomic.Int64
		dial := func(url, token string, h gws.Event) (*gws.Conn, error) {
			return dialCounting(url, token, h, deflate, &wire)
		}
		w0 := wire.Load()
		rate, n, use, err := fanOut(ctx, e, r, name, dial,
			"ws://"+e.s.svcAddr+"/v1/live", e.s.adminTok,
			"ws://"+e.s.svcAddr+"/v1/ingest", func(i int) string { return tokenFor(p4Feeder(i)) },
			frame, deflate, func() {})
		if err != nil {
			return 0, err
		}
		// Bytes are taken over the whole phase (warm-up included), per
		// delivery over the whole phase: the window's deliveries alone
		// would not match them.
		total := wire.Load() - w0
		if delivered := r.Details[name+"_bytes_per_reading"]; delivered != nil {
			r.detail(name+"_payload_bytes_per_delivery", delivered)
		}
		if dl := deliveredTotal(r, name); dl > 0 {
			r.detail(name+"_wire_bytes_per_delivery", round2(float64(total)/float64(dl)))
		}
		if cost := use.perUnit("telemetryd", float64(n)); cost != nil {
			r.detail(name+"_telemetryd_cpu_per_delivery", cost)
		}
		return rate, nil
	}
	plain, err := phase("uncompressed", false)
	if err != nil {
		return err
	}
	zipped, err := phase("compressed", true)
	if err != nil {
		return err
	}
	r.Service, r.Baseline = zipped, plain
	r.ServiceText = fmtRate(zipped, "deliveries/s") + " (deflate)"
	r.BaselineText = fmtRate(plain, "deliveries/s") + " (plain)"
	if r.Baseline > 0 {
		r.Ratio = round3(r.Service / r.Baseline)
	}
	return nil
}

// deliveredTotal is the deliveries of a fanOut phase over its whole
// length: readings sent times subscribers reached, as P4 counts them.
func deliveredTotal(r *result, name string) int64 {
	sent, _ := r.Details[name+"_readings_sent"].(int64)
	subs, _ := r.Details["subscribers"].(int)
	return sent * int64(subs)
}

// dialCounting opens a subscriber socket like dialer.dial, offering
// permessage-deflate when deflate is set, and adds every byte it reads to
// wire.
func dialCounting(url, token string, h gws.Event, deflate bool, wire *atomic.Int64) (*gws.Conn, error) {
	header := http.Header{}
	if token != "" {
		header.Set("Authorization", "Bearer "+token)
	}
	conn, _, err := gws.NewClient(h, &gws.ClientOption{
		Addr:              url,
		RequestHeader:     header,
		ReadBufferSize:    1024,
		HandshakeTimeout:  15 * time.Second,
		PermessageDeflate: gws.PermessageDeflate{Enabled: deflate},
		NewDialer: func() (gws.Dialer, error) {
			return countingDialer{d: &net.Dialer{Timeout: 15 * time.Second}, n: wire}, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	go conn.ReadLoop()
	return conn, nil
}

type countingDialer struct {
	d *net.Dialer
	n *atomic.Int64
}

func (d countingDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := d.d.Dial(network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: d.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// runP4r: resume cost. A dashboard subscribed to everything disconnects,
// the feeders send P4rMissed readings, and it reconnects with its last
// position: readings/s replayed to it (from the hub's in-memory window)
// from its subscribe message to the "resumed" message, over as many rounds
// as the run's duration holds. Baseline: the rate at which the same
// readings reached a dashboard that stayed connected (live, as fast as
// one feeder sends them): a reference, not a goal.
func runP4r(ctx context.Context, e *env, r *result) error {
	const missed = 10000 // within the default window (16384)
	r.Unit = "readings/s"
	r.Goal = "information"
	r.detail("missed_per_round", missed)
	url := "ws://" + e.s.svcAddr + "/v1/live"
	var watched atomic.Int64
	watcher := newLiveConn(&watched, nil)
	wc, err := e.dial.dial(url, e.s.adminTok, watcher)
	if err != nil {
		return err
	}
	defer closeNow(wc)
	if err := watcher.subscribe(ctx, wc, nil); err != nil {
		return err
	}
	feeder, err := e.dial.dial("ws://"+e.s.svcAddr+"/v1/ingest", tokenFor(p4Feeder(0)), newDeviceConn(newAnswers(), 1))
	if err != nil {
		return err
	}
	defer closeNow(feeder)
	var sent int64
	feed := func(n int) error {
		var buf []byte
		target := watched.Load() + int64(n)
		for range n {
			sent++
			buf = singleFrame(buf[:0], -1, time.Now().UnixNano(), int(sent))
			if err := feeder.WriteMessage(gws.OpcodeText, buf); err != nil {
				return err
			}
		}
		for watched.Load() < target { // the hub has them all
			if !sleepCtx(ctx, time.Millisecond) {
				return ctx.Err()
			}
		}
		return nil
	}
	if err := feed(10); err != nil {
		return err
	}
	rc := &resumeConn{resumed: make(chan int, 1)}
	conn, err := e.dial.dial(url, e.s.adminTok, rc)
	if err != nil {
		return err
	}
	conn.WriteMessage(gws.OpcodeText, []byte(`{"op":"subscribe","id":"s","devices":["*"]}`))
	if err := feed(10); err != nil {
		return err
	}
	for rc.pos.Load() == 0 {
		if !sleepCtx(ctx, time.Millisecond) {
			return ctx.Err()
		}
	}
	var replayed int64
	var took, fed time.Duration
	rounds := 0
	deadline := time.Now().Add(e.cfg.Duration)
	for rounds == 0 || time.Now().Before(deadline) {
		closeNow(conn)
		since := rc.pos.Load()
		t0 := time.Now()
		if err := feed(missed); err != nil {
			return err
		}
		fed += time.Since(t0)
		rc = &resumeConn{resumed: make(chan int, 1)}
		conn, err = e.dial.dial(url, e.s.adminTok, rc)
		if err != nil {
			return err
		}
		start := time.Now()
		conn.WriteMessage(gws.OpcodeText, []byte(`{"op":"subscribe","id":"s","devices":["*"],"since":`+strconv.FormatInt(since, 10)+`}`))
		select {
		case n := <-rc.resumed:
			took += time.Since(start)
			replayed += int64(n)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("P4r: no resumed message")
		case <-ctx.Done():
			return ctx.Err()
		}
		rounds++
	}
	closeNow(conn)
	r.detail("rounds", rounds)
	r.detail("replayed", replayed)
	if took > 0 {
		r.Service = round2(float64(replayed) / took.Seconds())
	}
	if fed > 0 {
		r.Baseline = round2(float64(rounds*missed) / fed.Seconds())
	}
	r.ServiceText = fmtRate(r.Service, "readings/s") + " (replayed)"
	r.BaselineText = fmtRate(r.Baseline, "readings/s") + " (live)"
	if r.Baseline > 0 {
		r.Ratio = round3(r.Service / r.Baseline)
	}
	return nil
}

// resumeConn follows a resuming subscription: the last position and the
// "resumed" message's count.
type resumeConn struct {
	gws.BuiltinEventHandler
	pos     atomic.Int64
	resumed chan int
}

func (c *resumeConn) OnMessage(_ *gws.Conn, m *gws.Message) {
	b := m.Bytes()
	if p, _, ok := scanInt(b, `"pos":`, 0); ok {
		c.pos.Store(p)
	}
	if bytes.HasPrefix(b, []byte(`{"type":"resumed"`)) {
		n, _, _ := scanInt(b, `"replayed":`, 0)
		select {
		case c.resumed <- int(n):
		default:
		}
	}
	m.Close()
}
