package simulator

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// link is one connection of a sender to the service: a WebSocket or an MQTT
// client. Its events come back through the sender's on* methods, tagged
// with the generation the link was dialed as.
type link interface {
	// send writes one frame; an error means the link is gone (the frame
	// stays outstanding and is resent on the next link).
	send(f *frame) error
	// sendRaw writes a frame that is not tracked (the oversize fault).
	sendRaw(b []byte) error
	// kill drops the TCP connection without a goodbye (the disconnect fault).
	kill()
	// close says goodbye and releases the link.
	close()
}

// errAuth marks a dial refused for the credential (HTTP 401, CONNACK 4/5).
var errAuth = errors.New("credential refused")

// frame is one message a sender has built. It stays outstanding until the
// service answers it for good: an ack (WebSocket) or PUBACK (MQTT), or a
// frame-level rejection.
type frame struct {
	seq        uint64
	payload    []byte
	body       int // start of the part after the seq prefix
	refs       []ref
	recRef     []int     // SenML: the refs index of each record (nil: one entry per reading)
	kind       FaultKind // FaultMalformed or FaultDuplicate for such frames
	action     FaultKind // connection fault performed right after the first send
	acted      bool      // action done (run goroutine only)
	firstSent  time.Time
	lastSent   time.Time
	notBefore  time.Time
	needSend   bool
	awaitRej   int // expected rejections (WebSocket) not yet received
	rejections int // rejection entries received
}

type ref struct {
	src    *source
	simSeq uint32
	fault  FaultKind
}

// settleTime is how long a sender waits, after its last ack, for the
// rejections that the service sends right after an ack.
const settleTime = 2 * time.Second

// recentFrames is how many acked frames a sender remembers for rejections
// that arrive after their ack.
const recentFrames = 256

// sender is one connection's worth of simulated hardware: a device on its
// own (one source) or a gateway (one source per child). Its goroutine (run)
// generates readings on schedule, builds frames, keeps them until answered,
// and reconnects with backoff; the link's reader calls onMessage, onAck and
// onClosed from other goroutines, so the state below is under mu.
type sender struct {
	r         *runner
	id, token string
	name      string
	mqtt      bool
	gateway   bool
	sources   []*source
	faults    *rand.Rand // fault decisions only: the same for a seed however the run goes
	rng       *rand.Rand // schedule jitter (run goroutine only)
	wake      chan struct{}

	// Owned by the run goroutine.
	pending []reading
	ticks   int
	tickBuf []field

	mu            sync.Mutex
	link          link
	gen           uint64 // of the current (or being dialed) link
	lostGen       uint64
	backoffRng    *rand.Rand
	outstanding   map[uint64]*frame
	recent        map[uint64]*frame
	recentOrder   []uint64
	awaiting      int // expected rejections not yet received on acked frames
	lastAck       time.Time
	nextSeq       uint64
	reconnectAt   time.Time
	attempt       int
	doomed        bool // an oversize frame went out: wait for the service to close
	doomedAt      time.Time
	doomedProbe   probe
	probes        []probe // connection faults to perform
	mustReconnect bool    // a disconnect fault: reconnect even if nothing is left to send
	connected     bool
	urlIdx        int // the service instance (cfg.ServiceURLs) it connects to
}

func newSender(r *runner, id, token, name string, mqtt, gateway bool, sources []*source, index int) *sender {
	return &sender{
		r: r, id: id, token: token, name: name, mqtt: mqtt, gateway: gateway, sources: sources,
		faults:      rand.New(rand.NewPCG(r.cfg.Seed^0xfa17fa17fa17fa17, uint64(index))),
		rng:         rand.New(rand.NewPCG(r.cfg.Seed^0x5eed5eed5eed5eed, uint64(index))),
		backoffRng:  rand.New(rand.NewPCG(r.cfg.Seed^0xbacc0ff0bacc0ff0, uint64(index))),
		wake:        make(chan struct{}, 1),
		outstanding: make(map[uint64]*frame),
		recent:      make(map[uint64]*frame),
		nextSeq:     1,
		urlIdx:      index % len(r.ingestURLs), // spread over the instances
	}
}

// instance is the index of the service URL the sender connects to.
func (s *sender) instance() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.urlIdx
}

// failOver moves the sender to the next service instance, so that a dead
// one's devices reconnect through the others. Called with mu held.
func (s *sender) failOver() {
	if n := len(s.r.ingestURLs); n > 1 && !s.mqtt {
		s.urlIdx = (s.urlIdx + 1) % n
		s.r.failovers.Add(1)
	}
}

func (s *sender) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run drives the sender until generation has stopped and every frame is
// answered, or ctx ends (the drain deadline).
func (s *sender) run(ctx context.Context, stopGen <-chan struct{}, start time.Time) {
	cfg := &s.r.cfg
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	dt := interval.Seconds()
	next := start.Add(time.Duration(s.rng.Float64() * float64(interval))) // spread the fleet
	var nextBurst time.Time
	if cfg.Burst.Size > 0 {
		nextBurst = start.Add(cfg.Burst.Every)
	}
	generating := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	defer s.closeLink()
	for {
		now := time.Now()
		if generating && cfg.ReadingsPerDevice > 0 && s.ticks >= cfg.ReadingsPerDevice {
			generating = false
			s.finishBatch(now)
			s.r.noteGenEnd(now)
		}
		s.mu.Lock()
		if !generating && s.idleLocked(now) {
			s.mu.Unlock()
			return
		}
		dial := s.link == nil && !now.Before(s.reconnectAt)
		s.mu.Unlock()
		if dial {
			s.dial(ctx)
		}
		wait := s.flush(ctx, time.Now())
		if generating {
			wait = min(wait, time.Until(next))
			if !nextBurst.IsZero() {
				wait = min(wait, time.Until(nextBurst))
			}
		}
		timer.Reset(max(wait, 0))
		select {
		case <-timer.C:
		case <-s.wake:
		case <-stopGen:
			stopGen = nil
			generating = false
			s.finishBatch(time.Now())
		case <-ctx.Done():
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !generating {
			continue
		}
		now = time.Now()
		for n := 0; !now.Before(next) && n < 100 && s.mayTick(); n++ {
			s.tick(now, dt)
			next = next.Add(s.jittered(interval))
		}
		if !now.Before(next) { // far behind (a stall): resume the schedule from now
			next = now.Add(s.jittered(interval))
		}
		if !nextBurst.IsZero() && !now.Before(nextBurst) {
			for i := 0; i < cfg.Burst.Size && s.mayTick(); i++ {
				s.tick(now, dt)
			}
			nextBurst = nextBurst.Add(cfg.Burst.Every)
		}
	}
}

// mayTick: the device has readings left to take.
func (s *sender) mayTick() bool {
	return s.r.cfg.ReadingsPerDevice == 0 || s.ticks < s.r.cfg.ReadingsPerDevice
}

func (s *sender) jittered(d time.Duration) time.Duration {
	j := s.r.cfg.Jitter
	return time.Duration(float64(d) * (1 + j*(2*s.rng.Float64()-1)))
}

// idleLocked: nothing left to send or hear.
func (s *sender) idleLocked(now time.Time) bool {
	if len(s.outstanding) > 0 || s.doomed || s.mustReconnect || len(s.probes) > 0 {
		return false
	}
	return s.awaiting == 0 || now.Sub(s.lastAck) > settleTime
}

// tick takes one reading per source; they go out once a batch is full.
func (s *sender) tick(now time.Time, dt float64) {
	s.ticks++
	s.mu.Lock()
	full := len(s.outstanding) >= s.r.cfg.BufferFrames
	s.mu.Unlock()
	if full {
		s.r.c.skipped.Add(uint64(len(s.sources)))
		return
	}
	for _, src := range s.sources {
		ts := src.nextTS(now)
		s.tickBuf = src.gen.next(s.tickBuf[:0], time.Unix(0, ts), dt)
		rd := reading{src: src, ts: ts, measurement: src.gen.measurement(), fields: slices.Clone(s.tickBuf)}
		if s.gateway {
			rd.device = src.id
		}
		s.pending = append(s.pending, rd)
	}
	if len(s.pending) >= s.r.cfg.Batch*len(s.sources) {
		s.finishBatch(now)
	}
}

// drawFault picks at most one fault for a frame. One draw per frame, always,
// so that a seed gives the same decisions on every transport.
func (s *sender) drawFault() FaultKind {
	u := s.faults.Float64()
	for k := FaultMalformed; k < numFaults; k++ {
		if u -= s.r.cfg.Faults.rate(k); u < 0 {
			if k == FaultOversize && s.mqtt {
				return FaultNone // MQTT has no frame limit to probe
			}
			return k
		}
	}
	return FaultNone
}

// finishBatch turns the pending readings into a frame (with its fault).
func (s *sender) finishBatch(now time.Time) {
	if len(s.pending) == 0 {
		return
	}
	rs := s.pending
	s.pending = nil
	fault := s.drawFault()
	variant := s.faults.IntN(len(invalidValues))
	pick := s.faults.IntN(len(rs))
	cut := s.faults.Float64()
	switch fault {
	case FaultInvalid:
		rs[pick].fault = FaultInvalid
	case FaultSkew:
		rs[pick].fault = FaultSkew
		rs[pick].ts = now.Add(s.r.cfg.SkewBy).UnixNano()
	case FaultMalformed:
		for i := range rs {
			rs[i].fault = FaultMalformed
		}
	}
	refs := make([]ref, len(rs))
	awaitRej := 0
	for i := range rs {
		rs[i].simSeq = rs[i].src.add(rs[i].ts, rs[i].fault)
		refs[i] = ref{src: rs[i].src, simSeq: rs[i].simSeq, fault: rs[i].fault}
		if rs[i].fault == FaultInvalid || rs[i].fault == FaultSkew {
			awaitRej += expectedRejections(s.r.cfg.Format, &rs[i])
			s.r.c.faultInjected[rs[i].fault].Add(1)
		}
		if rs[i].fault == FaultMalformed {
			s.r.c.faultInjected[FaultMalformed].Add(1)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f := &frame{seq: s.nextSeq, refs: refs, needSend: true}
	s.nextSeq++
	f.payload, f.body, f.recRef = s.r.encode(f.seq, rs, variant, s.gateway)
	switch fault {
	case FaultMalformed:
		f.kind = FaultMalformed
		f.payload = s.r.malformed(f.payload, f.body, cut)
	case FaultOversize, FaultDisconnect, FaultWrongToken:
		f.action = fault
	}
	if !s.mqtt {
		f.awaitRej = awaitRej
	}
	s.outstanding[f.seq] = f
	s.r.c.buffered.Add(1)
	if fault == FaultDuplicate {
		d := &frame{seq: s.nextSeq, refs: refs, recRef: f.recRef, kind: FaultDuplicate, needSend: true}
		s.nextSeq++
		d.payload, d.body = s.r.withSeq(f.payload, f.body, d.seq)
		d.payload = s.r.wire(d.payload)
		s.outstanding[d.seq] = d
		s.r.c.buffered.Add(1)
	}
	f.payload = s.r.wire(f.payload) // last: the steps above work on the JSON text
}

// flush sends every frame due on the current link, in seq order, performs
// the connection faults of first sends, and returns how long until the
// next frame is due (or a long time).
func (s *sender) flush(ctx context.Context, now time.Time) time.Duration {
	wait := time.Hour
	s.mu.Lock()
	if s.link == nil {
		if !s.reconnectAt.IsZero() {
			wait = min(wait, s.reconnectAt.Sub(now))
		}
		s.mu.Unlock()
		return wait
	}
	if s.doomed {
		if now.Sub(s.doomedAt) > 5*time.Second { // the service never closed: give up on it
			s.link.kill()
		}
		s.mu.Unlock()
		return min(wait, time.Second)
	}
	if d := settleTime - now.Sub(s.lastAck); s.awaiting > 0 && d > 0 {
		wait = min(wait, d+time.Millisecond) // wake to find the device idle
	}
	var due []*frame
	for _, f := range s.outstanding {
		if !f.needSend {
			continue
		}
		if now.Before(f.notBefore) {
			wait = min(wait, f.notBefore.Sub(now))
			continue
		}
		due = append(due, f)
	}
	l, gen := s.link, s.gen
	s.mu.Unlock()
	slices.SortFunc(due, func(a, b *frame) int { return cmpUint(a.seq, b.seq) })
	for _, f := range due {
		if !s.sendFrame(l, gen, f) {
			return wait
		}
		// A connection fault follows its frame's first successful send,
		// so that the frame is in flight when the link goes away.
		if f.action != FaultNone && !f.acted {
			f.acted = true
			s.mu.Lock()
			s.probes = append(s.probes, probe{kind: f.action})
			s.mu.Unlock()
			if s.runProbes(ctx, l) {
				return wait
			}
		}
	}
	s.runProbes(ctx, l) // probes left over from a link that died
	return wait
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// sendFrame writes f on l; false when the link failed.
func (s *sender) sendFrame(l link, gen uint64, f *frame) bool {
	now := time.Now()
	s.mu.Lock()
	if s.gen != gen || s.link == nil {
		s.mu.Unlock()
		return false
	}
	if !f.needSend { // answered meanwhile
		s.mu.Unlock()
		return true
	}
	f.needSend = false
	first := f.firstSent.IsZero()
	if first {
		f.firstSent = now
	}
	f.lastSent = now
	s.mu.Unlock()

	c := s.r.c
	if first {
		c.framesSent.Add(1)
		if f.kind == FaultDuplicate {
			c.duplicatesSent.Add(uint64(len(f.refs)))
			c.faultInjected[FaultDuplicate].Add(1)
		} else {
			c.readingsSent.Add(uint64(len(f.refs)))
			ns := now.UnixNano()
			for _, r := range f.refs {
				r.src.update(r.simSeq, func(rc *rec) {
					if rc.sent == 0 {
						rc.sent = ns
					}
				})
			}
		}
	} else {
		c.framesResent.Add(1)
	}
	if err := l.send(f); err != nil {
		s.mu.Lock()
		f.needSend = true
		s.mu.Unlock()
		s.r.log.Debug("send failed", "device", s.name, "error", err)
		l.kill() // the reader reports the close
		return false
	}
	return true
}

// probe is a connection fault waiting to be performed on a live link.
type probe struct {
	kind  FaultKind
	tries int // oversize: attempts whose link died before the service answered
}

// maxOversizeTries bounds re-probing when a link dies (no close frame)
// before the service answered an oversized frame.
const maxOversizeTries = 3

// runProbes performs the queued connection faults on l; true when l is
// going away (the rest waits for the next link).
func (s *sender) runProbes(ctx context.Context, l link) bool {
	for {
		s.mu.Lock()
		if gone := s.link != l; gone || len(s.probes) == 0 {
			s.mu.Unlock()
			return gone
		}
		p := s.probes[0]
		s.probes = s.probes[1:]
		s.mu.Unlock()
		if s.act(ctx, l, p) {
			return true
		}
	}
}

// act performs one connection fault; true when the link is going away.
func (s *sender) act(ctx context.Context, l link, p probe) bool {
	c := s.r.c
	switch p.kind {
	case FaultOversize, FaultDisconnect:
		s.mu.Lock()
		if s.link != l { // gone meanwhile: do it on the next link
			s.probes = append([]probe{p}, s.probes...)
			s.mu.Unlock()
			return true
		}
		if p.tries == 0 {
			c.faultInjected[p.kind].Add(1)
		}
		if p.kind == FaultDisconnect {
			s.mustReconnect = true
			s.mu.Unlock()
			l.kill()
			return true
		}
		seq := s.nextSeq
		s.nextSeq++
		p.tries++
		s.doomed, s.doomedAt, s.doomedProbe = true, time.Now(), p
		s.mu.Unlock()
		_ = l.sendRaw(s.r.wire(oversizeFrame(seq, s.r.runID, s.r.cfg.MaxFrameBytes)))
		return true
	case FaultWrongToken:
		c.faultInjected[FaultWrongToken].Add(1)
		err := s.r.dialWrongToken(ctx, s, "tdv_simulator-wrong-token")
		if errors.Is(err, errAuth) {
			c.faultConfirmed[FaultWrongToken].Add(1)
		} else {
			c.errors.Add(1)
			s.r.log.Warn("a wrong token was not refused", "device", s.name, "mqtt", s.mqtt, "error", err)
		}
	}
	return false
}

// dial opens a new link, or schedules the next attempt with backoff.
func (s *sender) dial(ctx context.Context) {
	// The generation moves first, so that a link that fails before it is
	// registered below is still recognised (lostGen).
	s.mu.Lock()
	s.gen++
	gen := s.gen
	inst := s.urlIdx
	s.mu.Unlock()
	var l link
	var err error
	switch {
	case s.mqtt:
		l, err = s.r.dialMQTT(ctx, s, gen, s.token)
	case s.r.cfg.Transport == TransportHTTP:
		l, err = s.r.dialHTTP(ctx, s, gen, s.r.cfg.ServiceURLs[inst], s.token)
	default:
		l, err = s.r.dialWS(ctx, s, gen, s.r.ingestURLs[inst], s.token)
	}
	c := s.r.c
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		c.dialFailures.Add(1)
		if errors.Is(err, errAuth) {
			c.authFailures.Add(1)
		}
		s.attempt++
		d := s.backoff(s.attempt)
		s.reconnectAt = time.Now().Add(d)
		s.failOver()
		lvl := s.r.log.Debug
		if s.attempt == 5 || errors.Is(err, errAuth) && s.attempt == 1 {
			lvl = s.r.log.Warn
		}
		lvl("connect failed", "device", s.name, "mqtt", s.mqtt, "attempt", s.attempt, "retry_in", d.Round(time.Millisecond), "error", err)
		return
	}
	if s.lostGen == gen || s.gen != gen { // it went away already
		l.close()
		s.reconnectAt = time.Now().Add(s.backoff(max(s.attempt, 1)))
		return
	}
	s.link = l
	s.connected = true
	c.connects.Add(1)
	if !s.mqtt {
		s.r.urlConnects[inst].Add(1)
	}
	c.connected.Add(1)
	if s.mustReconnect {
		s.mustReconnect = false
		c.faultConfirmed[FaultDisconnect].Add(1)
	}
	for _, f := range s.outstanding {
		if !f.firstSent.IsZero() {
			f.needSend = true // resend everything unanswered, same bytes, same timestamps
		}
	}
}

// backoff is exponential with "equal jitter": half the delay is fixed so
// a fleet never hammers, half random so it never moves in lockstep.
// Called with mu held.
func (s *sender) backoff(attempt int) time.Duration {
	cfg := &s.r.cfg
	d := cfg.BackoffMin << min(attempt-1, 20)
	if d <= 0 || d > cfg.BackoffMax {
		d = cfg.BackoffMax
	}
	return d/2 + time.Duration(s.backoffRng.Int64N(int64(d/2)+1))
}

// onClosed is called by a link that went away.
func (s *sender) onClosed(gen uint64, code uint16, err error) {
	c := s.r.c
	if code != 0 {
		c.closeCode(code)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen {
		return
	}
	if s.link == nil { // lost while dial was still registering it
		s.lostGen = gen
		return
	}
	s.link = nil
	if s.connected {
		s.connected = false
		c.connected.Add(-1)
	}
	c.disconnects.Add(1)
	if s.doomed {
		s.doomed = false
		switch p := s.doomedProbe; {
		case code == 1009:
			c.faultConfirmed[FaultOversize].Add(1)
		case code == 0 && p.tries < maxOversizeTries:
			// The link died without a close frame (a reset, the network):
			// the service never answered; ask again on the next link.
			s.probes = append([]probe{p}, s.probes...)
		default:
			s.r.log.Warn("oversized frame: expected close 1009", "device", s.name, "code", code, "error", err)
		}
	} else if !s.mustReconnect {
		c.errors.Add(1)
		s.r.log.Debug("connection lost", "device", s.name, "code", code, "error", err)
		s.failOver() // not a fault of ours: the instance may be gone
	}
	if code == 1008 {
		c.revoked.Add(1)
	}
	s.attempt++
	delay := s.backoff(s.attempt)
	if s.attempt == 1 {
		delay = 0 // the first reconnect is immediate; backoff only when it repeats
	}
	s.reconnectAt = time.Now().Add(delay)
	s.signal()
}

// onAck: frame seq is durable (WebSocket) or with the broker (MQTT PUBACK).
func (s *sender) onAck(seq uint64) {
	now := time.Now()
	c := s.r.c
	s.mu.Lock()
	f := s.outstanding[seq]
	if f == nil {
		s.mu.Unlock()
		c.lateAcks.Add(1) // a resent frame answered twice
		return
	}
	delete(s.outstanding, seq)
	c.buffered.Add(-1)
	s.remember(f)
	s.awaiting += f.awaitRej
	s.lastAck = now
	s.attempt = 0
	s.mu.Unlock()

	if s.mqtt {
		c.ackMQTT.record(now.Sub(f.lastSent))
	} else {
		c.ackWS.record(now.Sub(f.lastSent))
	}
	c.framesAcked.Add(1)
	if f.kind == FaultDuplicate {
		c.faultConfirmed[FaultDuplicate].Add(1)
	}
	ns := now.UnixNano()
	var n uint64
	for _, r := range f.refs {
		r.src.update(r.simSeq, func(rc *rec) {
			if rc.acked == 0 {
				rc.acked = ns
				n++
			}
		})
	}
	c.readingsAcked.Add(n)
	if !s.r.cfg.Verify { // keep memory bounded on endless runs
		var last *source
		for _, r := range f.refs {
			if r.src != last {
				r.src.compact(ns, s.mqtt)
				last = r.src
			}
		}
	}
	s.signal()
}

// remember keeps an acked frame for rejections that follow its ack.
func (s *sender) remember(f *frame) {
	if len(s.recentOrder) >= recentFrames {
		old := s.recentOrder[0]
		s.recentOrder = s.recentOrder[1:]
		if of := s.recent[old]; of != nil {
			s.awaiting -= of.awaitRej // gave up on it; the report shows what is missing
			delete(s.recent, old)
		}
	}
	f.payload = nil
	s.recent[f.seq] = f
	s.recentOrder = append(s.recentOrder, f.seq)
}

// onMessage handles one message from the service on a WebSocket.
func (s *sender) onMessage(b []byte) {
	m, err := parseServerMessage(b)
	c := s.r.c
	switch {
	case err != nil:
		c.errors.Add(1)
		s.r.log.Warn("unparsable message from the service", "device", s.name, "error", err)
	case m.Ack != nil:
		s.onAck(*m.Ack)
	case m.Error != nil:
		s.onError(m.Error)
	}
}

func (s *sender) onError(e *serverError) {
	c := s.r.c
	if e.Seq == nil {
		c.unattributed.Add(1)
		c.errors.Add(1)
		s.r.log.Warn("error frame without seq", "device", s.name, "code", e.Code, "message", e.Message)
		return
	}
	now := time.Now()
	retry := func(ctr interface{ Add(uint64) uint64 }) {
		ctr.Add(1)
		s.mu.Lock()
		if f := s.outstanding[*e.Seq]; f != nil {
			f.needSend = true
			d := time.Duration(e.RetryAfterMS) * time.Millisecond
			if d <= 0 {
				d = time.Second
			}
			f.notBefore = now.Add(d)
		}
		s.mu.Unlock()
		s.signal()
	}
	switch e.Code {
	case "rejected":
		s.onRejected(*e.Seq, e.Rejected)
	case "overloaded":
		retry(&c.overloaded)
	case "not_stored":
		retry(&c.notStored)
	case "rate_limited":
		retry(&c.rateLimited)
	case "shutting_down":
		retry(&c.shutdowns)
	default: // invalid_payload, too_many_readings or unknown: the frame is refused for good
		s.mu.Lock()
		f := s.outstanding[*e.Seq]
		delete(s.outstanding, *e.Seq)
		s.mu.Unlock()
		if f == nil {
			return // a resent frame refused twice
		}
		c.buffered.Add(-1)
		if f.kind != FaultMalformed || e.Code != "invalid_payload" {
			c.errors.Add(1)
			s.r.log.Warn("frame refused", "device", s.name, "seq", *e.Seq, "code", e.Code, "message", e.Message)
		}
		for _, r := range f.refs {
			s.reject(r, e.Code)
		}
		s.signal()
	}
}

// onRejected records the readings a frame's rejection list names.
func (s *sender) onRejected(seq uint64, list []rejection) {
	s.mu.Lock()
	f := s.outstanding[seq]
	inRecent := false
	if f == nil {
		f = s.recent[seq]
		inRecent = f != nil
	}
	var refs []ref
	if f != nil {
		refs = f.refs
		if f.recRef != nil { // SenML: an index names a record, refs has one entry per reading
			mapped := make([]rejection, len(list))
			for i, rj := range list {
				mapped[i] = rj
				if rj.Index >= 0 && rj.Index < len(f.recRef) {
					mapped[i].Index = f.recRef[rj.Index]
				} else {
					mapped[i].Index = -1
				}
			}
			list = mapped
		}
		for _, rj := range list {
			if rj.Index >= 0 && rj.Index < len(refs) && refs[rj.Index].fault != FaultNone && f.awaitRej > 0 {
				f.awaitRej--
				if inRecent {
					s.awaiting--
				}
			}
		}
		f.rejections += len(list)
	}
	s.mu.Unlock()
	if f == nil {
		s.r.c.unknownRejections.Add(uint64(len(list)))
		return
	}
	for _, rj := range list {
		if rj.Index < 0 || rj.Index >= len(refs) {
			s.r.c.unknownRejections.Add(1)
			continue
		}
		r := refs[rj.Index]
		if r.fault == FaultNone {
			s.r.log.Warn("reading rejected", "device", r.src.name, "sim_seq", r.simSeq, "code", rj.Code, "message", rj.Message)
		}
		s.reject(r, rj.Code)
	}
	s.signal()
}

func (s *sender) reject(r ref, code string) {
	idx := codeIndex(code)
	if idx == codeOther {
		incr(&s.r.c.otherCodes, code)
	}
	first := false
	r.src.update(r.simSeq, func(rc *rec) {
		if rc.code == 0 {
			rc.code = idx
			first = true
		}
	})
	if first {
		s.r.c.readingsRejected.Add(1)
	}
}

func (s *sender) closeLink() {
	s.mu.Lock()
	l := s.link
	s.link = nil
	s.gen++ // late events of the old link are ignored
	if s.connected {
		s.connected = false
		s.r.c.connected.Add(-1)
	}
	s.mu.Unlock()
	if l != nil {
		l.close()
	}
}
