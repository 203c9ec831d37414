package relay

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telemetryd/telemetryd/telemetry"
)

// The last value of every series of the fleet lives in one JetStream stream
// that keeps one message per subject (MaxMsgsPerSubject 1), a subject per
// series: <prefix>.last.<32 hex digits>, the first 128 bits of the SHA-256
// of the series' identity (device, measurement, tags). A hash because tag
// values may hold any character, subjects may not; SHA-256 because devices
// choose their tags, and must not be able to aim at another's subject.
//
// Each instance writes the series it ingested, coalesced: a series changed
// many times within FlushInterval is written once, with every field's last
// value. An instance loads the whole stream into its Hub at start and after
// every reconnect, so its snapshots hold the whole fleet.

// seriesSubject is the subject of r's series. The identity is encoded with
// lengths, so no two series share it.
func seriesSubject(prefix string, r *telemetry.Reading) string {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	put := func(s string) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	put(string(r.Device))
	put(r.Measurement)
	for _, t := range r.Tags {
		put(t.Key)
		put(t.Value)
	}
	var sum [sha256.Size]byte
	return prefix + ".last." + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// ownSeries is one series this instance ingested, merged: the latest time
// and the last value of every field seen.
type ownSeries struct {
	reading telemetry.Reading
	subject string
	version uint64 // bumped by every update
	dirty   bool   // changed since last written
}

// lastValues are the series this instance ingested, for the last-value
// stream. The writer goroutine updates them, the flusher takes the changed
// ones; both hold mu briefly.
type lastValues struct {
	prefix  string
	max     int
	notKept atomic.Uint64

	mu     sync.Mutex
	series map[string]*ownSeries
	dirty  []*ownSeries
	keyBuf []byte
}

func newLastValues(prefix string, max int) *lastValues {
	return &lastValues{prefix: prefix, max: max, series: make(map[string]*ownSeries)}
}

func appendSeriesKey(k []byte, r *telemetry.Reading) []byte {
	k = append(k, r.Device...)
	k = append(k, 0)
	k = append(k, r.Measurement...)
	for _, t := range r.Tags {
		k = append(k, 0)
		k = append(k, t.Key...)
		k = append(k, 1)
		k = append(k, t.Value...)
	}
	return k
}

func (l *lastValues) update(rs []telemetry.Reading) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range rs {
		r := &rs[i]
		l.keyBuf = appendSeriesKey(l.keyBuf[:0], r)
		s, ok := l.series[string(l.keyBuf)]
		if !ok {
			if len(l.series) >= l.max {
				l.notKept.Add(1)
				continue
			}
			s = &ownSeries{
				reading: telemetry.Reading{Device: r.Device, Measurement: r.Measurement, Tags: slices.Clone(r.Tags)},
				subject: seriesSubject(l.prefix, r),
			}
			l.series[string(l.keyBuf)] = s
		}
		merge(&s.reading, r)
		s.version++
		if !s.dirty {
			s.dirty = true
			l.dirty = append(l.dirty, s)
		}
	}
}

// merge folds r into the series' last values: a later (or equal) time
// overwrites, an earlier one only adds fields not seen yet.
func merge(dst, r *telemetry.Reading) {
	later := r.Time >= dst.Time
	if later {
		dst.Time = r.Time
	}
	for _, f := range r.Fields {
		if i := slices.IndexFunc(dst.Fields, func(x telemetry.Field) bool { return x.Name == f.Name }); i >= 0 {
			if later {
				dst.Fields[i] = f
			}
		} else {
			dst.Fields = append(dst.Fields, f)
		}
	}
}

// pendingValue is one series' last value taken for writing.
type pendingValue struct {
	series  *ownSeries
	version uint64
	reading telemetry.Reading // a copy: the writer goes on updating the series
}

// take returns the series changed since the last take, and marks them clean.
func (l *lastValues) take() []pendingValue {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]pendingValue, len(l.dirty))
	for i, s := range l.dirty {
		rd := s.reading
		rd.Fields = slices.Clone(rd.Fields)
		out[i] = pendingValue{series: s, version: s.version, reading: rd}
		s.dirty = false
	}
	clear(l.dirty)
	l.dirty = l.dirty[:0]
	return out
}

// giveBack marks series whose write failed dirty again, unless they changed
// meanwhile (then they are dirty already, with a newer value).
func (l *lastValues) giveBack(ps []pendingValue) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		if s := p.series; !s.dirty {
			s.dirty = true
			l.dirty = append(l.dirty, s)
		}
	}
}

func (l *lastValues) anyDirty() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.dirty) > 0
}

// streamConfig is the last-value stream as the relay creates it. An
// operator may change it (replicas, placement, limits) with the nats CLI;
// the relay then uses it as it is.
func (r *Relay) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              r.streamName(),
		Description:       "telemetryd: the last value of every series (one message per series subject)",
		Subjects:          []string{r.lastSubjects()},
		MaxMsgsPerSubject: 1,
		MaxMsgs:           int64(r.cfg.MaxSeries),
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		Replicas:          r.cfg.Replicas,
	}
}

// stream returns the last-value stream, creating it if it does not exist.
func (r *Relay) stream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	s, err := js.Stream(ctx, r.streamName())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, r.streamConfig())
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another instance was quicker
			s, err = js.Stream(ctx, r.streamName())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("last-value stream %s: %w", r.streamName(), err)
	}
	return s, nil
}

// seedChunk is how many last values go to the Hub at once.
const seedChunk = 1000

// apiTimeout bounds one JetStream request: a request sent just before the
// connection is lost is never answered.
const apiTimeout = 5 * time.Second

// load reads every series' last value from the stream into the Hub.
func (r *Relay) load(ctx context.Context, js jetstream.JetStream) error {
	s, err := r.stream(ctx, js)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	cons, err := s.CreateConsumer(cctx, jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		FilterSubject:     r.lastSubjects(),
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	})
	if err != nil {
		return fmt.Errorf("last values: consumer: %w", err)
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer dcancel()
		_ = s.DeleteConsumer(dctx, cons.CachedInfo().Name)
	}()
	pending := cons.CachedInfo().NumPending
	var dec decoder
	chunk := make([]telemetry.Reading, 0, seedChunk)
	loaded := uint64(0)
	for pending > 0 {
		// Fetch waits until the whole batch is there: ask for what is pending.
		batch, err := cons.Fetch(int(min(pending, seedChunk)), jetstream.FetchMaxWait(apiTimeout))
		if err != nil {
			return fmt.Errorf("last values: fetch: %w", err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			rs, err := dec.decode(m.Data())
			if err != nil {
				r.corrupt.Add(1)
				continue
			}
			chunk = append(chunk, rs...)
			if len(chunk) >= seedChunk {
				r.hub.Seed(ctx, chunk)
				loaded += uint64(len(chunk))
				chunk = make([]telemetry.Reading, 0, seedChunk)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("last values: fetch: %w", err)
		}
		if got == 0 {
			return errors.New("last values: the stream delivered nothing while messages were pending")
		}
	}
	r.hub.Seed(ctx, chunk)
	loaded += uint64(len(chunk))
	r.lvLoaded.Add(loaded)
	r.log.Info("live relay: last values loaded", "series", loaded, "stream", r.streamName())
	return ctx.Err()
}

// flushLoop writes the changed series every FlushInterval. A write that
// fails (NATS down, JetStream unavailable) is kept for the next round;
// what is written after such a gap is also sent on the live subject as
// catch-up, since the live messages of the gap were lost.
func (r *Relay) flushLoop(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) {
	t := time.NewTicker(r.cfg.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_ = r.flush(ctx, nc, js)
	}
}

// flush writes the changed series; the catch-up is owed from the first
// round that could not write until one that wrote everything.
func (r *Relay) flush(ctx context.Context, nc *nats.Conn, js jetstream.JetStream) error {
	if !nc.IsConnected() {
		if r.own.anyDirty() {
			r.owed.Store(true)
		}
		return nats.ErrConnectionReconnecting
	}
	ps := r.own.take()
	if len(ps) == 0 {
		return nil
	}
	written, failed := r.writeLast(ctx, js, ps)
	r.lvWritten.Add(uint64(len(written)))
	if len(failed) > 0 {
		r.lvErrors.Add(uint64(len(failed)))
		r.own.giveBack(failed)
		r.owed.Store(true)
		if len(written) == 0 { // the stream may be gone (deleted by hand): create it again
			_, _ = r.stream(ctx, js)
		}
	}
	if r.owed.Load() {
		for _, p := range written { // the latest value of each series
			r.catchupBuf[p.series] = p
		}
		if len(failed) == 0 {
			r.owed.Store(false)
			r.sendCatchup(nc)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("last values: %d of %d writes failed", len(failed), len(ps))
	}
	return nil
}

// writeLast publishes each value to its series' subject and waits for
// JetStream's acknowledgements.
func (r *Relay) writeLast(ctx context.Context, js jetstream.JetStream, ps []pendingValue) (written, failed []pendingValue) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var enc encoder
	futures := make([]jetstream.PubAckFuture, len(ps))
	for i := range ps {
		data := enc.encode(nil, []telemetry.Reading{ps[i].reading})
		f, err := js.PublishMsgAsync(&nats.Msg{Subject: ps[i].series.subject, Data: data},
			jetstream.WithExpectStream(r.streamName()))
		if err != nil {
			failed = append(failed, ps[i])
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			written = append(written, ps[i])
		case <-f.Err():
			failed = append(failed, ps[i])
		case <-ctx.Done():
			failed = append(failed, ps[i])
		}
	}
	return written, failed
}

// sendCatchup publishes last values again on the live subject, marked as
// catch-up: the other instances merge them as last values (Hub.Seed) and
// show those newer than theirs.
func (r *Relay) sendCatchup(nc *nats.Conn) {
	if len(r.catchupBuf) == 0 {
		return
	}
	rs := make([]telemetry.Reading, 0, len(r.catchupBuf))
	for _, p := range r.catchupBuf {
		rs = append(rs, p.reading)
	}
	clear(r.catchupBuf)
	s := sender{relay: r, nc: nc}
	s.send(r.catchupHeader, rs)
	r.catchup.Add(uint64(len(rs)))
}
