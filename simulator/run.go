package simulator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// runner is one run's shared state: settings, counters and endpoints.
type runner struct {
	cfg         Config
	log         *slog.Logger
	runID       string
	c           *counters
	start       time.Time
	genEnd      atomic.Int64 // latest moment a sender stopped generating (Unix ns)
	ingestURLs  []string     // one per service instance (cfg.ServiceURLs)
	liveURLs    []string
	live        *liveWatcher
	urlConnects []atomic.Uint64 // device connections made per instance
	failovers   atomic.Uint64   // devices moved to the next instance
	httpc       *http.Client    // TransportHTTP's links share its connections
}

// wire is a finished frame in the run's -format: the JSON frames (native
// or SenML) are built as text, which faults, renumbering and resends work
// on, and transcoded last.
func (r *runner) wire(frame []byte) []byte {
	switch r.cfg.Format {
	case FormatCBOR:
		return toCBOR(frame)
	case FormatSenMLCBOR:
		return toCBORLabels(frame, true)
	}
	return frame
}

// encode builds a frame of readings in the run's -format (before wire);
// recRef is non-nil for SenML (formats.go).
func (r *runner) encode(seq uint64, rs []reading, variant int, batch bool) (payload []byte, body int, recRef []int) {
	switch {
	case r.cfg.Format.senml():
		return encodeSenML(seq, rs, variant)
	case r.cfg.Format == FormatLP:
		return encodeLP(rs, r.runID), 0, nil
	}
	payload, body = encodeFrame(seq, rs, r.runID, variant, batch)
	return payload, body, nil
}

// malformed is the malformed fault's version of a frame.
func (r *runner) malformed(payload []byte, body int, cut float64) []byte {
	if r.cfg.Format == FormatLP {
		return malformedLP(r.runID)
	}
	return truncate(payload, body, cut)
}

// withSeq renumbers a frame; line protocol carries no seq (its frames are
// told apart by the request that carries them).
func (r *runner) withSeq(payload []byte, body int, seq uint64) ([]byte, int) {
	if r.cfg.Format == FormatLP {
		return payload, body
	}
	return withSeq(payload, body, seq)
}

// expectedRejections is how many rejection entries the service sends for
// a reading with the invalid or skew fault: one, but for SenML one per
// record of a skewed reading (its time is every record's) and one for the
// invalid value's record.
func expectedRejections(f Format, rd *reading) int {
	if f.senml() && rd.fault == FaultSkew {
		return 1 + len(rd.fields)
	}
	return 1
}

func (r *runner) noteGenEnd(t time.Time) {
	ns := t.UnixNano()
	for {
		old := r.genEnd.Load()
		if ns <= old || r.genEnd.CompareAndSwap(old, ns) {
			return
		}
	}
}

// newRunID is sortable by time and unique enough to tell runs apart.
func newRunID(now time.Time) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return now.UTC().Format("20060102T150405") + "-" + hex.EncodeToString(b[:])
}

// Run provisions (or reuses) the fleet, generates load until cfg.Duration
// has passed, every device has sent cfg.ReadingsPerDevice readings, or ctx
// is done, waits up to cfg.DrainTimeout for outstanding answers, and — with
// cfg.Verify — reconciles with the dashboard and InfluxDB. It returns an
// error only when the run could not take place (bad config, provisioning,
// no dashboard subscription); losses and unexpected answers are in the
// Report (Report.OK false). log may be nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) (*Report, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	began := time.Now()
	r := &runner{
		cfg: cfg, log: log, c: &counters{}, runID: cfg.RunID,
		urlConnects: make([]atomic.Uint64, len(cfg.ServiceURLs)),
		httpc:       &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}},
	}
	for _, u := range cfg.ServiceURLs {
		r.ingestURLs = append(r.ingestURLs, wsURL(u, "/v1/ingest"))
		r.liveURLs = append(r.liveURLs, wsURL(u, "/v1/live"))
	}
	if r.runID == "" {
		r.runID = newRunID(began)
	}
	creds, err := provision(ctx, &r.cfg, r.runID, log)
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	senders, sources, err := r.buildFleet(creds)
	if err != nil {
		return nil, fmt.Errorf("simulator: %w", err)
	}
	log.Info("simulation starting", "run", r.runID, "connections", len(senders), "devices", len(sources),
		"transport", cfg.Transport, "profile", cfg.Profile, "rate", cfg.Rate, "faults", cfg.Faults.String())

	liveCtx, stopLive := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLive()
	var liveDone sync.WaitGroup
	defer liveDone.Wait()
	if cfg.Verify {
		r.live = newLiveWatcher(r, sources)
		for _, u := range r.liveURLs { // every instance: each shows what it ingested, at least
			liveDone.Go(func() { r.live.run(liveCtx, u) })
		}
		if err := r.live.wait(ctx, 15*time.Second); err != nil {
			stopLive()
			return nil, fmt.Errorf("simulator: %w", err)
		}
	}

	r.start = time.Now()
	progCtx, stopProgress := context.WithCancel(context.WithoutCancel(ctx))
	var progDone sync.WaitGroup
	if cfg.Progress != nil {
		progDone.Go(func() { r.progress(progCtx, cfg.Progress, cfg.ProgressTTY, cfg.ProgressInterval, len(senders)) })
	}

	// Generation stops at the deadline or when ctx is done; draining has
	// its own deadline after that, independent of ctx.
	stopGen := make(chan struct{})
	drainCtx, stopDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDrain()
	var running sync.WaitGroup
	for _, s := range senders {
		running.Go(func() { s.run(drainCtx, stopGen, r.start) })
	}
	allDone := make(chan struct{})
	go func() { running.Wait(); close(allDone) }()
	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case <-deadline:
	case <-ctx.Done():
	case <-allDone:
	}
	r.noteGenEnd(time.Now())
	close(stopGen)
	select {
	case <-allDone:
	case <-time.After(cfg.DrainTimeout):
		log.Warn("drain timeout: some frames were never answered", "timeout", cfg.DrainTimeout)
		stopDrain()
		<-allDone
	}
	stopProgress()
	progDone.Wait()
	genTime := time.Unix(0, r.genEnd.Load()).Sub(r.start)

	var verifyErr error
	if cfg.Verify {
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.VerifyTimeout+time.Minute)
		verifyErr = r.verify(vctx, senders, sources)
		cancel()
	}
	stopLive()
	rep := r.buildReport(senders, genTime, time.Since(began), cfg.Verify && verifyErr == nil)
	if verifyErr != nil {
		rep.Failures = append(rep.Failures, "verification failed: "+verifyErr.Error())
		rep.OK = false
	}
	return rep, nil
}

// Provision makes sure cfg.CredsFile holds a credential for every device
// and gateway of the fleet cfg describes, creating the missing ones through
// the admin API (cfg.AdminToken). Run does this itself; provisioning first
// lets an operator or a test act in between — for example reload a broker
// whose password file the service rewrites on every registry change.
func Provision(ctx context.Context, cfg Config, log *slog.Logger) error {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	if cfg.CredsFile == "" {
		return fmt.Errorf("simulator: provisioning alone needs a credentials file (-creds) to keep the tokens in")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := provision(ctx, &cfg, "", log); err != nil {
		return fmt.Errorf("simulator: %w", err)
	}
	return nil
}

// buildFleet makes a sender per connection and a source per reporting
// device. Connection i is MQTT for transport mqtt, and for odd i in mixed.
func (r *runner) buildFleet(creds map[string]Credential) ([]*sender, map[string]*source, error) {
	cfg := &r.cfg
	direct, gateways, children := layout(cfg, r.runID)
	sources := map[string]*source{}
	var senders []*sender
	index := 0
	addSource := func(slotName string) (*source, Credential, error) {
		c, ok := creds[slotName]
		if !ok {
			return nil, c, fmt.Errorf("no credential for %s", slotName)
		}
		if _, dup := sources[c.ID]; dup {
			return nil, c, fmt.Errorf("device id %s appears twice in the fleet", c.ID)
		}
		src := newSource(c.ID, slotName, index, cfg.Profile, cfg.Seed)
		index++
		sources[c.ID] = src
		return src, c, nil
	}
	viaMQTT := func(i int) bool {
		return cfg.Transport == TransportMQTT || cfg.Transport == TransportMixed && i%2 == 1
	}
	for _, sl := range direct {
		src, c, err := addSource(sl.name)
		if err != nil {
			return nil, nil, err
		}
		i := len(senders)
		senders = append(senders, newSender(r, c.ID, c.Token, sl.name, viaMQTT(i), false, []*source{src}, i))
	}
	for g, gw := range gateways {
		c, ok := creds[gw.name]
		if !ok {
			return nil, nil, fmt.Errorf("no credential for %s", gw.name)
		}
		var kids []*source
		for _, k := range children[g] {
			src, _, err := addSource(k.name)
			if err != nil {
				return nil, nil, err
			}
			kids = append(kids, src)
		}
		i := len(senders)
		senders = append(senders, newSender(r, c.ID, c.Token, gw.name, viaMQTT(i), true, kids, i))
	}
	return senders, sources, nil
}

// verify waits until storage and the dashboard have caught up with the
// acknowledged readings (or VerifyTimeout), then marks every stored reading.
func (r *runner) verify(ctx context.Context, senders []*sender, sources map[string]*source) error {
	cfg := &r.cfg
	db := newInfluxClient(cfg)
	measurements := map[string]bool{}
	var expect uint64
	for _, src := range sources {
		measurements[src.gen.measurement()] = true
		src.mu.Lock()
		for i := range src.recs {
			if x := &src.recs[i]; x.fault == FaultNone && x.code == 0 && x.acked != 0 {
				expect++
			}
		}
		src.mu.Unlock()
	}
	ms := sortedKeys(measurements)
	from := r.start.Add(-time.Second).UnixNano()
	to := time.Now().Add(cfg.SkewBy + time.Hour).UnixNano()

	runTag := r.runID
	if !cfg.Format.tagged() {
		runTag = "" // found by its devices and time window (formats.go)
	}
	known := func(device string) bool { return sources[device] != nil }
	deadline := time.Now().Add(cfg.VerifyTimeout)
	for {
		n, err := db.count(ctx, ms, runTag, from, to, known)
		if err != nil {
			return err
		}
		if uint64(n) >= expect && r.c.liveSeen.Load() >= expect {
			break
		}
		if time.Now().After(deadline) {
			r.log.Warn("verification timeout: storage or dashboard is missing readings", "stored", n, "seen_live", r.c.liveSeen.Load(), "acked", expect)
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	var foreign uint64
	err := db.list(ctx, ms, runTag, from, to, func(device string, seq int64) {
		src := sources[device]
		if src == nil && runTag == "" {
			return // another fleet's reading in the window
		}
		if src == nil || seq < 1 || seq > int64(^uint32(0)) {
			foreign++
			return
		}
		src.update(uint32(seq), func(x *rec) { x.stored = true })
	})
	if foreign > 0 {
		r.log.Warn("storage holds readings of this run that it never sent", "count", foreign)
	}
	return err
}
