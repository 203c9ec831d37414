package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetryd/telemetryd/telemetry"
)

// Hub is the local live hub the relay feeds (a *live.Hub).
type Hub interface {
	// Publish shows readings live; it never blocks.
	Publish(rs []telemetry.Reading)
	// Seed merges last values seen elsewhere; it waits at most for ctx.
	Seed(ctx context.Context, rs []telemetry.Reading)
	// Notice tells every dashboard about the relay; it waits at most for ctx.
	Notice(ctx context.Context, frame []byte, standing bool)
}

// DefaultLinger is Config.Linger's default.
const DefaultLinger = 2 * time.Millisecond

// Config tunes the relay. URL and Instance are required; the zero value of
// every other field means its default.
type Config struct {
	// URL is the NATS server (or comma-separated servers of one cluster).
	URL string
	// Instance names this instance. Messages carry it, so that an instance
	// never takes its own readings back; it must be unique in the fleet.
	Instance string
	// Prefix starts every subject (default "telemetryd"): readings go on
	// <Prefix>.live, last values on <Prefix>.last.<series>. The last-value
	// stream is named after it (TELEMETRYD_LAST for the default).
	Prefix string
	// Replicas of the last-value stream when the relay creates it (default 1;
	// 3 on a NATS cluster of three or more).
	Replicas int
	// FlushInterval is how often the series this instance changed are written
	// to the last-value stream (default 500ms): at most one write per series
	// per interval, however fast it reports.
	FlushInterval time.Duration
	// PublishBuffer bounds the batches waiting to be sent to NATS (default
	// 8192). When it is full the newest batch is not sent to the other
	// instances (it is still shown here and stored) and is counted; they
	// see its series again with their next reading.
	PublishBuffer int
	// Linger is how long the writer gathers readings into one message
	// before it sends them (default DefaultLinger; negative: at once). At a few
	// thousand readings per second a message per reading costs every other
	// instance a receive and a Hub wake-up each; a short linger makes that
	// one per batch, for that much delay across instances.
	Linger time.Duration
	// MaxMessageBytes is the size at which a batch is cut into another NATS
	// message (default 256 KiB, at most half the server's max_payload).
	MaxMessageBytes int
	// MaxSeries bounds the series this instance keeps for the last-value
	// stream (default 100000, the Hub's default) and the messages that
	// stream keeps (the oldest written go first). Series beyond it are
	// still relayed live, and counted.
	MaxSeries int
	// ReceivePending bounds the messages received and not yet handed to the
	// Hub (default 65536); beyond it NATS drops them for this instance
	// (counted: a slow-consumer drop).
	ReceivePending int
	// ReconnectWait is the pause between reconnect attempts (default 1s).
	ReconnectWait time.Duration
}

func (c *Config) defaults() error {
	if err := checkURLs(c.URL); err != nil {
		return err
	}
	if !validInstance(c.Instance) {
		return fmt.Errorf("relay: instance id %q: want 1 to 128 printable ASCII characters, no spaces", c.Instance)
	}
	if c.Prefix == "" {
		c.Prefix = "telemetryd"
	}
	for _, tok := range strings.Split(c.Prefix, ".") {
		if !validToken(tok) {
			return fmt.Errorf("relay: subject prefix %q is not a NATS subject without wildcards", c.Prefix)
		}
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 500 * time.Millisecond
	}
	if c.PublishBuffer <= 0 {
		c.PublishBuffer = 8192
	}
	if c.Linger == 0 {
		c.Linger = DefaultLinger
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 256 << 10
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = 100000
	}
	if c.ReceivePending <= 0 {
		c.ReceivePending = 65536
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = time.Second
	}
	return nil
}

// checkURLs refuses a server list nats.go would only fail on when connecting.
func checkURLs(list string) error {
	if strings.TrimSpace(list) == "" {
		return errors.New("relay: no NATS URL")
	}
	for _, raw := range strings.Split(list, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw // what nats.go assumes
		}
		u, err := url.Parse(raw)
		if err != nil {
			return fmt.Errorf("relay: NATS URL: %w", err)
		}
		switch u.Scheme {
		case "nats", "tls", "ws", "wss":
		default:
			return fmt.Errorf("relay: NATS URL %q: scheme %q is not nats, tls, ws or wss", raw, u.Scheme)
		}
		if u.Hostname() == "" {
			return fmt.Errorf("relay: NATS URL %q has no host", raw)
		}
	}
	return nil
}

// validInstance: fine in a header value and a client name.
func validInstance(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// validToken: one NATS subject token without wildcards.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}

// Message headers. Every message carries the sending instance; catch-up
// messages (last values sent again after an outage) say so.
const (
	hdrInstance = "Telemetryd-Instance"
	hdrKind     = "Telemetryd-Kind"
	kindCatchup = "catchup"
)

// Stats are the relay's counters.
type Stats struct {
	// Connected: connected to NATS and the last values loaded since; when
	// false, dashboards have been told they may be missing data.
	Connected bool
	// Published*: messages and readings sent to the other instances.
	PublishedMessages, PublishedReadings uint64
	// Received*: messages and readings taken from the other instances.
	ReceivedMessages, ReceivedReadings uint64
	// DroppedBatches: batches not sent because the publish buffer was full.
	// UnsentReadings: readings not sent because NATS was unreachable or
	// refused them.
	DroppedBatches, UnsentReadings uint64
	// ReceiveDropped: messages NATS dropped because the Hub did not take
	// them fast enough; CorruptMessages: messages that did not decode.
	ReceiveDropped, CorruptMessages uint64
	// LastValuesWritten, LastValueErrors: writes to the last-value stream;
	// LastValuesLoaded: last values read from it (at start, after outages);
	// SeriesNotKept: readings of series beyond MaxSeries.
	LastValuesWritten, LastValueErrors, LastValuesLoaded, SeriesNotKept uint64
	// CatchupReadings: last values sent again after an outage.
	CatchupReadings uint64
	// Outages: times the relay went degraded.
	Outages uint64
}

// Relay joins the local Hub to the other instances through NATS. Build it
// with New, run it with Run, and give it to the bridge as its Publisher.
type Relay struct {
	cfg  Config
	hub  Hub
	log  *slog.Logger
	out  chan []telemetry.Reading
	own  *lastValues
	wake chan struct{} // connection events for Run; 1, coalescing

	conns, lost atomic.Uint64 // (re)connects and disconnects seen
	connected   atomic.Bool
	abortLoad   atomic.Pointer[context.CancelFunc] // cancels a load in progress

	pubMsgs, pubReadings, recvMsgs, recvReadings atomic.Uint64
	droppedBatches, droppedReadings              atomic.Uint64
	recvDropped, corrupt                         atomic.Uint64
	lvWritten, lvErrors, lvLoaded, catchup       atomic.Uint64
	outages                                      atomic.Uint64

	dec decoder // used by the subscription's handler only (one at a time)

	subject                   string // the live subject
	liveHeader, catchupHeader nats.Header

	// The flusher's (flush runs on one goroutine at a time).
	owed       atomic.Bool // a catch-up is owed: some last values could not be written
	catchupBuf map[*ownSeries]pendingValue
}

// New validates cfg; nothing connects before Run.
func New(cfg Config, hub Hub, log *slog.Logger) (*Relay, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	return &Relay{
		cfg:           cfg,
		hub:           hub,
		log:           log,
		out:           make(chan []telemetry.Reading, cfg.PublishBuffer),
		own:           newLastValues(cfg.Prefix, cfg.MaxSeries),
		wake:          make(chan struct{}, 1),
		subject:       cfg.Prefix + ".live",
		liveHeader:    nats.Header{hdrInstance: {cfg.Instance}},
		catchupHeader: nats.Header{hdrInstance: {cfg.Instance}, hdrKind: {kindCatchup}},
		catchupBuf:    make(map[*ownSeries]pendingValue),
	}, nil
}

// Publish implements bridge.Publisher: the readings go to the local Hub and
// are queued for the other instances. It never blocks, whatever NATS does:
// with the publish buffer full the batch is not relayed, and counted.
func (r *Relay) Publish(rs []telemetry.Reading) {
	r.hub.Publish(rs)
	select {
	case r.out <- rs:
	default:
		r.droppedBatches.Add(1)
	}
}

// Stats returns the relay's counters.
func (r *Relay) Stats() Stats {
	return Stats{
		Connected:         r.connected.Load(),
		PublishedMessages: r.pubMsgs.Load(), PublishedReadings: r.pubReadings.Load(),
		ReceivedMessages: r.recvMsgs.Load(), ReceivedReadings: r.recvReadings.Load(),
		DroppedBatches: r.droppedBatches.Load(), UnsentReadings: r.droppedReadings.Load(),
		ReceiveDropped: r.recvDropped.Load(), CorruptMessages: r.corrupt.Load(),
		LastValuesWritten: r.lvWritten.Load(), LastValueErrors: r.lvErrors.Load(),
		LastValuesLoaded: r.lvLoaded.Load(), SeriesNotKept: r.own.notKept.Load(),
		CatchupReadings: r.catchup.Load(), Outages: r.outages.Load(),
	}
}

func (r *Relay) lastSubjects() string { return r.cfg.Prefix + ".last.>" }
func (r *Relay) streamName() string {
	return strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(r.cfg.Prefix)) + "_LAST"
}

func (r *Relay) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run connects to NATS (retrying for as long as it takes: the rest of the
// service never waits for it), relays until ctx is done, then writes the
// last values still owed and closes the connection.
func (r *Relay) Run(ctx context.Context) error {
	nc, err := nats.Connect(r.cfg.URL,
		nats.Name("telemetryd "+r.cfg.Instance),
		// Own messages are not sent back at all; the instance header is
		// the check that holds also for a second connection of the same id.
		nats.NoEcho(),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(r.cfg.ReconnectWait),
		// Nothing is buffered for later while disconnected: live readings
		// sent late would only be stale, and the last values are written
		// again once connected (and sent as catch-up).
		nats.ReconnectBufSize(-1),
		// A write stuck on a stalled connection fails instead of holding the
		// sending goroutine.
		nats.FlusherTimeout(2*time.Second),
		nats.ConnectHandler(func(*nats.Conn) { r.conns.Add(1); r.signal() }),
		nats.ReconnectHandler(func(*nats.Conn) { r.conns.Add(1); r.signal() }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			r.lost.Add(1)
			r.connected.Store(false)
			if abort := r.abortLoad.Load(); abort != nil {
				(*abort)() // its requests would wait for answers that never come
			}
			r.signal()
		}),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) && s != nil {
				if n, derr := s.Dropped(); derr == nil {
					r.recvDropped.Store(uint64(n))
				}
				return
			}
			r.log.Warn("NATS error", "error", err)
		}),
	)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	defer nc.Close()
	if !nc.IsConnected() { // ConnectHandler counts the connection when there is one
		r.lost.Add(1)
		r.log.Warn("NATS not reachable yet; live fan-out and fleet snapshots wait for it", "url", r.cfg.URL)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	sub, err := nc.Subscribe(r.subject, func(m *nats.Msg) { r.receive(ctx, m) })
	if err != nil {
		return fmt.Errorf("relay: subscribe: %w", err)
	}
	_ = sub.SetPendingLimits(r.cfg.ReceivePending, 256<<20)

	var wg sync.WaitGroup
	wg.Go(func() { r.write(ctx, nc) })
	wg.Go(func() { r.flushLoop(ctx, nc, js) })
	r.control(ctx, nc, js)
	wg.Wait()

	// The last values of the final interval, so that a restart loses none.
	final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if nc.IsConnected() {
		_ = r.flush(final, nc, js)
	}
	return nil
}

// control follows the connection: after every (re)connect it loads the last
// values into the Hub, and it tells dashboards when they may be missing
// data and when that is over.
func (r *Relay) control(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) {
	var (
		degraded          bool   // dashboards were told
		seenLost          uint64 // disconnects handled
		loadedFor         uint64 // the connection count the last values were loaded for
		retry             *time.Timer
		retryC            <-chan time.Time
		reasonDisconnect  = "nats_disconnected"
		reasonLastValues  = "last_values_unavailable"
		lastLoadErrLogged string
	)
	announce := func(state, reason string) {
		r.hub.Notice(ctx, noticeFrame(state, reason, r.cfg.Instance, time.Now()), state == "degraded")
	}
	for {
		if lost := r.lost.Load(); lost != seenLost {
			seenLost = lost
			loadedFor = 0
			if !degraded {
				degraded = true
				r.outages.Add(1)
				r.log.Warn("live relay degraded: dashboards may miss other instances' readings", "reason", reasonDisconnect)
				announce("degraded", reasonDisconnect)
			}
		}
		if conns := r.conns.Load(); nc.IsConnected() && conns != loadedFor {
			loadCtx, cancel := context.WithCancel(ctx)
			r.abortLoad.Store(&cancel)
			if r.lost.Load() != seenLost { // lost again meanwhile
				cancel()
			}
			err := r.load(loadCtx, js)
			r.abortLoad.Store(nil)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !degraded {
					degraded = true
					r.outages.Add(1)
					announce("degraded", reasonLastValues)
				}
				if msg := err.Error(); msg != lastLoadErrLogged {
					lastLoadErrLogged = msg
					r.log.Warn("live relay: last values not loaded; retrying", "error", err)
				}
				if retry == nil {
					retry = time.NewTimer(2 * time.Second)
					defer retry.Stop()
				} else {
					retry.Reset(2 * time.Second)
				}
				retryC = retry.C
			} else {
				loadedFor = conns
				lastLoadErrLogged = ""
				r.connected.Store(nc.IsConnected() && r.lost.Load() == seenLost)
				if degraded && r.connected.Load() {
					degraded = false
					r.log.Info("live relay recovered")
					announce("recovered", "")
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-retryC:
			retryC = nil
		}
	}
}

// noticeFrame is the dashboard message about the relay:
// {"type":"relay","state":"degraded","reason":…,"instance":…,"at":<ns>} or
// {"type":"relay","state":"recovered","instance":…,"at":<ns>}.
func noticeFrame(state, reason, instance string, at time.Time) []byte {
	b := append([]byte(nil), `{"type":"relay","state":"`...)
	b = append(b, state...)
	b = append(b, '"')
	if reason != "" {
		b = append(b, `,"reason":"`...)
		b = append(b, reason...)
		b = append(b, '"')
	}
	b = append(b, `,"instance":`...)
	b = telemetry.AppendJSONString(b, instance)
	b = append(b, `,"at":`...)
	b = strconv.AppendInt(b, at.UnixNano(), 10)
	return append(b, '}')
}

// receive hands another instance's message to the Hub: live readings to
// Publish, catch-up last values to Seed.
func (r *Relay) receive(ctx context.Context, m *nats.Msg) {
	if m.Header.Get(hdrInstance) == r.cfg.Instance {
		return
	}
	rs, err := r.dec.decode(m.Data)
	if err != nil {
		if r.corrupt.Add(1) == 1 {
			r.log.Warn("live relay: undecodable message (counted; logged once)", "from", m.Header.Get(hdrInstance), "error", err)
		}
		return
	}
	r.recvMsgs.Add(1)
	r.recvReadings.Add(uint64(len(rs)))
	if m.Header.Get(hdrKind) == kindCatchup {
		r.hub.Seed(ctx, rs)
		return
	}
	r.hub.Publish(rs)
}

// maxBatchReadings bounds what the writer coalesces into one round.
const maxBatchReadings = 4096

// write sends queued batches, coalescing what is waiting Linger after a
// batch's first readings arrived into as few messages as MaxMessageBytes
// allows, and records every reading for the last-value stream.
func (r *Relay) write(ctx context.Context, nc *nats.Conn) {
	var batch []telemetry.Reading
	s := sender{relay: r, nc: nc}
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		var rs []telemetry.Reading
		select {
		case <-ctx.Done():
			// The bridge has stopped: what is still queued goes out too,
			// and into the last values of the final flush.
			for {
				select {
				case rs = <-r.out:
					r.own.update(rs)
					if nc.IsConnected() {
						s.send(r.liveHeader, rs)
					}
				default:
					return
				}
			}
		case rs = <-r.out:
		}
		batch = append(batch[:0], rs...)
		if r.cfg.Linger > 0 {
			// Waits on the timer alone: Publish queues on r.out without
			// waking this goroutine once per batch (r.out is buffered),
			// and the drain below takes what came meanwhile.
			linger.Reset(r.cfg.Linger)
			select {
			case <-linger.C:
			case <-ctx.Done():
				linger.Stop()
			}
		}
	drain:
		for len(batch) < maxBatchReadings {
			select {
			case more := <-r.out:
				batch = append(batch, more...)
			default:
				break drain
			}
		}
		r.own.update(batch)
		if !nc.IsConnected() {
			r.droppedReadings.Add(uint64(len(batch)))
		} else {
			s.send(r.liveHeader, batch)
		}
		clear(batch)
	}
}

// sender encodes readings into messages of at most about MaxMessageBytes.
type sender struct {
	relay     *Relay
	nc        *nats.Conn
	enc       encoder
	body, msg []byte
}

func (s *sender) limit() int {
	l := s.relay.cfg.MaxMessageBytes
	if mp := int(s.nc.MaxPayload()); mp > 0 {
		l = min(l, mp/2)
	}
	return l
}

// send publishes rs on the live subject (PublishMsg copies the data, so the
// buffers are reused).
func (s *sender) send(hdr nats.Header, rs []telemetry.Reading) {
	limit := s.limit()
	for len(rs) > 0 {
		// A message's count comes first: encode the readings that fit, then
		// put the head in front of them.
		s.enc.reset()
		s.body = s.body[:0]
		n := 0
		for n < len(rs) && (n == 0 || len(s.body) < limit) {
			s.body = s.enc.reading(s.body, &rs[n])
			n++
		}
		s.msg = append(head(s.msg[:0], n), s.body...)
		m := &nats.Msg{Subject: s.relay.subject, Header: hdr, Data: s.msg}
		if err := s.nc.PublishMsg(m); err != nil {
			s.relay.droppedReadings.Add(uint64(n))
		} else {
			s.relay.pubMsgs.Add(1)
			s.relay.pubReadings.Add(uint64(n))
		}
		rs = rs[n:]
	}
}
