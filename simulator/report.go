package simulator

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Report is the outcome of a run: what was sent and answered and, with
// Verify, what storage and the dashboard saw. OK is false when anything
// was lost or answered unexpectedly; Failures says what.
type Report struct {
	RunID     string    `json:"run_id"`
	OK        bool      `json:"ok"`
	Failures  []string  `json:"failures,omitempty"`
	Verified  bool      `json:"verified"`
	StartedAt time.Time `json:"started_at"`
	// GenerationS is how long load was generated; TotalS includes
	// provisioning, draining and verification.
	GenerationS float64 `json:"generation_s"`
	TotalS      float64 `json:"total_s"`

	Config     ReportConfig            `json:"config"`
	Fleet      FleetReport             `json:"fleet"`
	Readings   ReadingCounts           `json:"readings"`
	Frames     FrameCounts             `json:"frames"`
	Rejected   map[string]*RejectCount `json:"rejected"`
	Faults     map[string]*FaultCount  `json:"faults,omitempty"`
	Retries    map[string]uint64       `json:"retries,omitempty"`
	Connection ConnectionReport        `json:"connections"`
	Latency    map[string]Latency      `json:"latency"`
	Throughput Throughput              `json:"throughput"`
	Losses     Losses                  `json:"losses"`
}

// ReportConfig echoes the run's settings.
type ReportConfig struct {
	Transport         Transport `json:"transport"`
	Profile           string    `json:"profile"`
	Rate              float64   `json:"rate"`
	Jitter            float64   `json:"jitter"`
	Batch             int       `json:"batch"`
	Burst             string    `json:"burst,omitempty"`
	Duration          string    `json:"duration,omitempty"`
	ReadingsPerDevice int       `json:"readings_per_device,omitempty"`
	Seed              uint64    `json:"seed"`
	Faults            string    `json:"faults,omitempty"`
}

// FleetReport is the fleet's shape: connections per transport and the
// devices reported for.
type FleetReport struct {
	Devices    int `json:"devices"` // every reporting identity, children included
	Gateways   int `json:"gateways"`
	Children   int `json:"children"`
	WebSockets int `json:"websocket_connections"`
	MQTT       int `json:"mqtt_connections"`
}

// ReadingCounts are per reading (a duplicate frame's readings count once).
type ReadingCounts struct {
	Generated      uint64 `json:"generated"`
	Sent           uint64 `json:"sent"`
	Valid          uint64 `json:"valid"`  // sent without an injected fault
	Faulty         uint64 `json:"faulty"` // sent with one (malformed, invalid, skew)
	Acked          uint64 `json:"acked"`  // valid and acknowledged (WebSocket ack / MQTT PUBACK)
	Rejected       uint64 `json:"rejected"`
	Unacked        uint64 `json:"unacked"` // valid, never answered by the end of the drain
	Stored         uint64 `json:"stored,omitempty"`
	SeenLive       uint64 `json:"seen_live,omitempty"`
	Recovered      uint64 `json:"recovered,omitempty"` // stored though never acked (allowed)
	DuplicatesSent uint64 `json:"duplicates_sent"`
	Skipped        uint64 `json:"skipped_buffer_full"`
}

// FrameCounts are per frame.
type FrameCounts struct {
	Sent    uint64 `json:"sent"`
	Resent  uint64 `json:"resent"`
	Acked   uint64 `json:"acked"`
	Late    uint64 `json:"late_acks"` // answers to frames already answered (resends)
	Unasked uint64 `json:"unattributed_errors,omitempty"`
}

// RejectCount splits rejections by whether a fault asked for them.
type RejectCount struct {
	Expected   uint64 `json:"expected"`
	Unexpected uint64 `json:"unexpected"`
}

// FaultCount is one fault kind: how often it was injected and how often
// the service answered as expected. Malformed, invalid and skew count
// readings; the others count events. Unverified are MQTT faults whose
// check needs -verify.
type FaultCount struct {
	Injected   uint64 `json:"injected"`
	Confirmed  uint64 `json:"confirmed"`
	Unverified uint64 `json:"unverified,omitempty"`
	Expect     string `json:"expect"`
}

// ConnectionReport counts connection events.
type ConnectionReport struct {
	Connects     uint64            `json:"connects"`
	Disconnects  uint64            `json:"disconnects"`
	DialFailures uint64            `json:"dial_failures"`
	AuthFailures uint64            `json:"auth_failures"`
	CloseCodes   map[string]uint64 `json:"close_codes,omitempty"`
	LiveReconn   uint64            `json:"live_reconnects,omitempty"`
	// PerService counts WebSocket connections made to each service URL and
	// Failovers the moves to the next one, with several URLs.
	PerService map[string]uint64 `json:"per_service,omitempty"`
	Failovers  uint64            `json:"failovers,omitempty"`
}

// Throughput over the generation time.
type Throughput struct {
	ReadingsPerS      float64 `json:"readings_per_s"`
	FramesPerS        float64 `json:"frames_per_s"`
	AckedReadingsPerS float64 `json:"acked_readings_per_s"`
}

// Loss names one reading.
type Loss struct {
	Device    string `json:"device"`
	SimSeq    uint32 `json:"sim_seq"`
	TS        int64  `json:"ts"`
	Transport string `json:"transport"`
	Detail    string `json:"detail,omitempty"`
}

// LossList is a complete count and the first MaxListed items.
type LossList struct {
	Count uint64 `json:"count"`
	Items []Loss `json:"items,omitempty"`
}

// Losses are the readings that break the promise.
type Losses struct {
	// AckedNotStored: acknowledged, yet not in storage — lost.
	AckedNotStored LossList `json:"acked_not_stored"`
	// NotSeenLive: valid and acknowledged, never seen on the dashboard.
	NotSeenLive LossList `json:"not_seen_live"`
	// Unacked: valid, sent, and still unanswered when the drain ended.
	Unacked LossList `json:"unacked"`
	// UnexpectedRejections: valid readings the service refused.
	UnexpectedRejections LossList `json:"unexpected_rejections"`
	// FaultsAccepted: readings with an injected fault that were stored,
	// seen live, or answered with another code than expected.
	FaultsAccepted LossList `json:"faults_accepted"`
}

func (l *LossList) add(max int, x Loss) {
	l.Count++
	if len(l.Items) < max {
		l.Items = append(l.Items, x)
	}
}

// faultExpect documents, per fault, the answer the report checks for.
var faultExpect = [numFaults]string{
	FaultMalformed:  "WebSocket: error invalid_payload for the frame; MQTT: never stored",
	FaultInvalid:    "WebSocket: reading rejected with invalid_value; MQTT: never stored",
	FaultSkew:       "WebSocket: reading rejected with timestamp_in_future; MQTT: never stored",
	FaultDuplicate:  "both copies acknowledged; stored once",
	FaultOversize:   "WebSocket closed with 1009 (not injected on MQTT)",
	FaultDisconnect: "device reconnects and resends; nothing lost",
	FaultWrongToken: "WebSocket: HTTP 401 at the upgrade; MQTT: CONNACK refused",
}

// buildReport classifies every reading. stored is nil without -verify.
func (r *runner) buildReport(senders []*sender, genTime, total time.Duration, verified bool) *Report {
	cfg := &r.cfg
	c := r.c
	rep := &Report{
		RunID: r.runID, StartedAt: r.start, Verified: verified,
		GenerationS: round3(genTime.Seconds()), TotalS: round3(total.Seconds()),
		Config: ReportConfig{
			Transport: cfg.Transport, Profile: cfg.Profile, Rate: cfg.Rate, Jitter: cfg.Jitter, Batch: cfg.Batch,
			Burst: cfg.Burst.String(), ReadingsPerDevice: cfg.ReadingsPerDevice, Seed: cfg.Seed, Faults: cfg.Faults.String(),
		},
		Rejected: map[string]*RejectCount{},
		Faults:   map[string]*FaultCount{},
		Retries:  map[string]uint64{},
		Latency:  map[string]Latency{},
	}
	if cfg.Duration > 0 {
		rep.Config.Duration = cfg.Duration.String()
	}
	for k := FaultMalformed; k < numFaults; k++ {
		if cfg.Faults.rate(k) > 0 {
			rep.Faults[k.String()] = &FaultCount{Expect: faultExpect[k]}
		}
	}
	fault := func(k FaultKind) *FaultCount {
		f := rep.Faults[k.String()]
		if f == nil {
			f = &FaultCount{Expect: faultExpect[k]}
			rep.Faults[k.String()] = f
		}
		return f
	}
	reject := func(code string) *RejectCount {
		rc := rep.Rejected[code]
		if rc == nil {
			rc = &RejectCount{}
			rep.Rejected[code] = rc
		}
		return rc
	}
	max := cfg.MaxListed
	rd := &rep.Readings
	for _, s := range senders {
		if s.gateway {
			rep.Fleet.Gateways++
			rep.Fleet.Children += len(s.sources)
		}
		if s.mqtt {
			rep.Fleet.MQTT++
		} else {
			rep.Fleet.WebSockets++
		}
		transport := "ws"
		if s.mqtt {
			transport = "mqtt"
		}
		for _, src := range s.sources {
			rep.Fleet.Devices++
			src.mu.Lock()
			d := &src.done
			rd.Generated += d.sent
			rd.Sent += d.sent
			rd.Valid += d.valid
			rd.Faulty += d.faulty
			rd.Acked += d.acked
			rd.Rejected += d.rejected
			for k := FaultMalformed; k < numFaults; k++ {
				if d.injected[k] > 0 {
					f := fault(k)
					f.Injected += d.injected[k]
					f.Confirmed += d.confirmed[k]
					f.Unverified += d.unverified[k]
				}
			}
			for code, n := range d.expected {
				if n > 0 {
					reject(knownCodes[code]).Expected += n
				}
			}
			for i := range src.recs {
				x := &src.recs[i]
				rd.Generated++
				loss := Loss{Device: src.id, SimSeq: src.base + uint32(i+1), TS: x.ts, Transport: transport}
				if x.stored {
					rd.Stored++
				}
				if x.live != 0 {
					rd.SeenLive++
				}
				if x.sent == 0 {
					if x.fault == FaultNone {
						rd.Unacked++
						loss.Detail = "never sent"
						rep.Losses.Unacked.add(max, loss)
					}
					continue
				}
				rd.Sent++
				code := knownCodes[x.code]
				if x.code != 0 {
					rd.Rejected++
				}
				if x.fault != FaultNone {
					rd.Faulty++
					f := fault(x.fault)
					f.Injected++
					want := expectedCode(x.fault)
					switch {
					case x.stored || x.live != 0:
						loss.Detail = x.fault.String() + " reading accepted"
						if x.code != 0 {
							reject(code).Unexpected++
						}
						rep.Losses.FaultsAccepted.add(max, loss)
					case x.code != 0 && code == want:
						reject(code).Expected++
						f.Confirmed++
					case x.code != 0:
						reject(code).Unexpected++
						loss.Detail = fmt.Sprintf("%s reading answered %s, want %s", x.fault, code, want)
						rep.Losses.FaultsAccepted.add(max, loss)
					case s.mqtt && verified:
						f.Confirmed++ // never stored, never seen: refused
					case s.mqtt:
						f.Unverified++
					case x.acked != 0:
						loss.Detail = x.fault.String() + " reading acknowledged without a rejection"
						rep.Losses.FaultsAccepted.add(max, loss)
					default:
						loss.Detail = x.fault.String() + " reading never answered"
						rep.Losses.FaultsAccepted.add(max, loss)
					}
					continue
				}
				rd.Valid++
				switch {
				case x.code != 0:
					reject(code).Unexpected++
					loss.Detail = code
					rep.Losses.UnexpectedRejections.add(max, loss)
				case x.acked != 0:
					rd.Acked++
					if verified && !x.stored {
						rep.Losses.AckedNotStored.add(max, loss)
					}
					if verified && x.live == 0 {
						rep.Losses.NotSeenLive.add(max, loss)
					}
				default:
					rd.Unacked++
					if x.stored {
						rd.Recovered++
					}
					rep.Losses.Unacked.add(max, loss)
				}
			}
			src.mu.Unlock()
		}
	}
	rd.DuplicatesSent = c.duplicatesSent.Load()
	rd.Skipped = c.skipped.Load()
	for k := FaultDuplicate; k < numFaults; k++ {
		if n := c.faultInjected[k].Load(); n > 0 || cfg.Faults.rate(k) > 0 {
			f := fault(k)
			f.Injected, f.Confirmed = n, c.faultConfirmed[k].Load()
		}
	}
	other := map[string]uint64{}
	c.otherCodes.Range(func(k, v any) bool {
		other[k.(string)] = v.(*atomic.Uint64).Load()
		return true
	})
	if n := rep.Rejected["other"]; n != nil && len(other) > 0 {
		delete(rep.Rejected, "other")
		for code, cnt := range other {
			reject(code).Unexpected += cnt
		}
	}

	rep.Frames = FrameCounts{
		Sent: c.framesSent.Load(), Resent: c.framesResent.Load(), Acked: c.framesAcked.Load(),
		Late: c.lateAcks.Load(), Unasked: c.unattributed.Load(),
	}
	for name, ctr := range map[string]*atomic.Uint64{
		"overloaded": &c.overloaded, "not_stored": &c.notStored, "rate_limited": &c.rateLimited, "shutting_down": &c.shutdowns,
	} {
		if n := ctr.Load(); n > 0 {
			rep.Retries[name] = n
		}
	}
	rep.Connection = ConnectionReport{
		Connects: c.connects.Load(), Disconnects: c.disconnects.Load(),
		DialFailures: c.dialFailures.Load(), AuthFailures: c.authFailures.Load(),
		CloseCodes: map[string]uint64{},
	}
	if r.live != nil {
		rep.Connection.LiveReconn = r.live.reconnects.Load()
	}
	if len(r.cfg.ServiceURLs) > 1 {
		rep.Connection.PerService = map[string]uint64{}
		for i, u := range r.cfg.ServiceURLs {
			rep.Connection.PerService[u] = r.urlConnects[i].Load()
		}
		rep.Connection.Failovers = r.failovers.Load()
	}
	c.closeCodes.Range(func(k, v any) bool {
		rep.Connection.CloseCodes[strconv.Itoa(int(k.(uint16)))] = v.(*atomic.Uint64).Load()
		return true
	})

	ackAll := mergeHists(&c.ackWS, &c.ackMQTT)
	rep.Latency["ack"] = ackAll
	if rep.Fleet.WebSockets > 0 {
		rep.Latency["ack_ws"] = c.ackWS.summary()
	}
	if rep.Fleet.MQTT > 0 {
		rep.Latency["ack_mqtt"] = c.ackMQTT.summary()
	}
	if verified || cfg.Verify {
		rep.Latency["live"] = c.live.summary()
	}
	if g := genTime.Seconds(); g > 0 {
		rep.Throughput = Throughput{
			ReadingsPerS:      round3(float64(rd.Sent) / g),
			FramesPerS:        round3(float64(rep.Frames.Sent) / g),
			AckedReadingsPerS: round3(float64(rd.Acked) / g),
		}
	}
	rep.judge(cfg)
	return rep
}

func mergeHists(hs ...*hist) Latency {
	var m hist
	for _, h := range hs {
		for i := range h.counts {
			m.counts[i].Add(h.counts[i].Load())
		}
		m.max.Store(max(m.max.Load(), h.max.Load()))
	}
	return m.summary()
}

// judge fills Failures and OK.
func (rep *Report) judge(cfg *Config) {
	fail := func(format string, args ...any) { rep.Failures = append(rep.Failures, fmt.Sprintf(format, args...)) }
	l := &rep.Losses
	if n := l.AckedNotStored.Count; n > 0 {
		fail("%d acknowledged readings are not in storage", n)
	}
	if n := l.NotSeenLive.Count; n > 0 {
		fail("%d acknowledged readings never reached the dashboard", n)
	}
	if n := l.Unacked.Count; n > 0 {
		fail("%d valid readings were never acknowledged (drain timeout %s)", n, cfg.DrainTimeout)
	}
	if n := l.UnexpectedRejections.Count; n > 0 {
		fail("%d valid readings were rejected", n)
	}
	if n := l.FaultsAccepted.Count; n > 0 {
		fail("%d readings with injected faults were not refused as expected", n)
	}
	names := make([]string, 0, len(rep.Faults))
	for k := range rep.Faults {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		f := rep.Faults[k]
		if f.Injected != f.Confirmed+f.Unverified {
			fail("fault %s: injected %d, confirmed %d (expected: %s)", k, f.Injected, f.Confirmed, f.Expect)
		}
	}
	if n := rep.Frames.Unasked; n > 0 {
		fail("%d error frames named no frame", n)
	}
	if n := rep.Connection.CloseCodes["1008"]; n > 0 {
		fail("%d connections were closed for policy (1008: revoked credential?)", n)
	}
	rep.OK = len(rep.Failures) == 0
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// WriteText prints a human summary of the report.
func (rep *Report) WriteText(w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	verdict := "OK"
	if !rep.OK {
		verdict = "FAILED"
	}
	p("run %s: %s (%s)", rep.RunID, verdict, map[bool]string{true: "verified against storage and the dashboard", false: "not verified: acks only"}[rep.Verified])
	f := rep.Fleet
	p("fleet      %d devices (%d gateways with %d children), %d WebSocket and %d MQTT connections", f.Devices, f.Gateways, f.Children, f.WebSockets, f.MQTT)
	r := rep.Readings
	p("readings   sent %d (valid %d, faulty %d)  acked %d  rejected %d  unacked %d  duplicates %d  skipped %d",
		r.Sent, r.Valid, r.Faulty, r.Acked, r.Rejected, r.Unacked, r.DuplicatesSent, r.Skipped)
	if rep.Verified {
		p("verified   stored %d  seen live %d  recovered %d", r.Stored, r.SeenLive, r.Recovered)
	}
	p("frames     sent %d  resent %d  acked %d  late acks %d", rep.Frames.Sent, rep.Frames.Resent, rep.Frames.Acked, rep.Frames.Late)
	p("throughput %.1f readings/s  %.1f frames/s over %.1fs", rep.Throughput.ReadingsPerS, rep.Throughput.FramesPerS, rep.GenerationS)
	for _, k := range sortedKeys(rep.Latency) {
		l := rep.Latency[k]
		if l.Count == 0 {
			p("latency    %-9s none", k)
			continue
		}
		p("latency    %-9s p50 %.1fms  p90 %.1fms  p99 %.1fms  max %.1fms  (n=%d)", k, l.P50, l.P90, l.P99, l.Max, l.Count)
	}
	for _, k := range sortedKeys(rep.Rejected) {
		rc := rep.Rejected[k]
		p("rejected   %-20s expected %d  unexpected %d", k, rc.Expected, rc.Unexpected)
	}
	for _, k := range sortedKeys(rep.Faults) {
		fc := rep.Faults[k]
		extra := ""
		if fc.Unverified > 0 {
			extra = fmt.Sprintf("  unverified %d", fc.Unverified)
		}
		p("fault      %-12s injected %d  confirmed %d%s", k, fc.Injected, fc.Confirmed, extra)
	}
	for _, k := range sortedKeys(rep.Retries) {
		p("retried    %-12s %d", k, rep.Retries[k])
	}
	cr := rep.Connection
	var codes []string
	for _, k := range sortedKeys(cr.CloseCodes) {
		codes = append(codes, k+"×"+strconv.FormatUint(cr.CloseCodes[k], 10))
	}
	p("conns      connects %d  disconnects %d  dial failures %d (auth %d)  close codes [%s]", cr.Connects, cr.Disconnects, cr.DialFailures, cr.AuthFailures, strings.Join(codes, " "))
	for _, u := range sortedKeys(cr.PerService) {
		p("service    %s  connects %d", u, cr.PerService[u])
	}
	if cr.PerService != nil {
		p("failovers  %d", cr.Failovers)
	}
	lists := []struct {
		name string
		l    *LossList
	}{
		{"acked but not stored", &rep.Losses.AckedNotStored},
		{"not seen live", &rep.Losses.NotSeenLive},
		{"unacked", &rep.Losses.Unacked},
		{"unexpectedly rejected", &rep.Losses.UnexpectedRejections},
		{"faults not refused", &rep.Losses.FaultsAccepted},
	}
	for _, x := range lists {
		if x.l.Count == 0 {
			continue
		}
		p("LOSS       %s: %d", x.name, x.l.Count)
		for i, it := range x.l.Items {
			if i == 10 {
				p("             … %d more in the JSON report", x.l.Count-10)
				break
			}
			p("             %s sim_seq=%d ts=%d %s %s", it.Device, it.SimSeq, it.TS, it.Transport, it.Detail)
		}
	}
	for _, fl := range rep.Failures {
		p("FAIL       %s", fl)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
