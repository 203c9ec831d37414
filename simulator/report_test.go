package simulator

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestReportClassification feeds hand-made ledgers to the report and checks
// each reading lands where the counting model says.
func TestReportClassification(t *testing.T) {
	const ws, mqtt = false, true
	type want struct {
		ok                                              bool
		acked, unacked, stored, recovered               uint64
		ackedNotStored, notLive, unexpectedRej, faultOK uint64
		confirmed, unverified                           uint64
	}
	now := time.Now().UnixNano()
	for _, tc := range []struct {
		name     string
		mqtt     bool
		verified bool
		r        rec
		want     want
	}{
		{"valid, acked, stored, live", ws, true, rec{sent: now, acked: now, stored: true, live: now},
			want{ok: true, acked: 1, stored: 1}},
		{"acked, not stored: a loss", ws, true, rec{sent: now, acked: now, live: now},
			want{acked: 1, ackedNotStored: 1}},
		{"acked, stored, never live: a loss", mqtt, true, rec{sent: now, acked: now, stored: true},
			want{acked: 1, stored: 1, notLive: 1}},
		{"not verified: acks only", ws, false, rec{sent: now, acked: now},
			want{ok: true, acked: 1}},
		{"never answered", ws, true, rec{sent: now},
			want{unacked: 1}},
		{"never sent", ws, true, rec{},
			want{unacked: 1}},
		{"stored without ack: recovered, but unacked", ws, true, rec{sent: now, stored: true, live: now},
			want{unacked: 1, stored: 1, recovered: 1}},
		{"valid rejected", ws, true, rec{sent: now, acked: now, code: codeIndex("forbidden_device")},
			want{unexpectedRej: 1}},
		{"invalid refused as expected", ws, true, rec{sent: now, acked: now, fault: FaultInvalid, code: codeIndex("invalid_value")},
			want{ok: true, confirmed: 1}},
		{"skew answered with another code", ws, true, rec{sent: now, fault: FaultSkew, code: codeIndex("invalid_value")},
			want{faultOK: 1}},
		{"malformed refused", ws, true, rec{sent: now, fault: FaultMalformed, code: codeIndex("invalid_payload")},
			want{ok: true, confirmed: 1}},
		{"invalid acked without rejection", ws, true, rec{sent: now, acked: now, fault: FaultInvalid},
			want{faultOK: 1}},
		{"mqtt fault not stored", mqtt, true, rec{sent: now, acked: now, fault: FaultSkew},
			want{ok: true, confirmed: 1}},
		{"mqtt fault stored", mqtt, true, rec{sent: now, acked: now, fault: FaultInvalid, stored: true},
			want{stored: 1, faultOK: 1}},
		{"mqtt fault, no verify", mqtt, false, rec{sent: now, acked: now, fault: FaultMalformed},
			want{ok: true, unverified: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{cfg: Config{Devices: 1}.withDefaults(), c: &counters{}, runID: "r"}
			src := &source{id: "d1", recs: []rec{tc.r}}
			s := &sender{r: r, mqtt: tc.mqtt, sources: []*source{src}}
			rep := r.buildReport([]*sender{s}, time.Second, time.Second, tc.verified)
			l := rep.Losses
			got := want{
				ok: rep.OK, acked: rep.Readings.Acked, unacked: rep.Readings.Unacked, stored: rep.Readings.Stored,
				recovered: rep.Readings.Recovered, ackedNotStored: l.AckedNotStored.Count, notLive: l.NotSeenLive.Count,
				unexpectedRej: l.UnexpectedRejections.Count, faultOK: l.FaultsAccepted.Count,
			}
			if tc.r.fault != FaultNone {
				f := rep.Faults[tc.r.fault.String()]
				got.confirmed, got.unverified = f.Confirmed, f.Unverified
			}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v\nfailures %v", got, tc.want, rep.Failures)
			}
			if !tc.want.ok && len(rep.Failures) == 0 {
				t.Fatal("not OK without a failure")
			}
		})
	}
}

func TestReportCountsAndOutput(t *testing.T) {
	r := &runner{cfg: Config{Devices: 1, MaxListed: 2, Faults: Faults{Oversize: 0.1}}.withDefaults(), c: &counters{}, runID: "r"}
	var recs []rec
	for range 5 {
		recs = append(recs, rec{sent: 1, acked: 1, live: 1}) // acked, seen live, not stored
	}
	src := &source{id: "d1", recs: recs}
	r.c.faultInjected[FaultOversize].Add(3)
	r.c.faultConfirmed[FaultOversize].Add(2)
	r.c.closeCode(1009)
	r.c.closeCode(1009)
	r.c.ackWS.record(12 * time.Millisecond)
	rep := r.buildReport([]*sender{{r: r, sources: []*source{src}}}, 2*time.Second, 3*time.Second, true)
	if rep.Losses.AckedNotStored.Count != 5 || len(rep.Losses.AckedNotStored.Items) != 2 {
		t.Fatalf("loss list: count %d, %d items; want 5 and 2 (MaxListed)", rep.Losses.AckedNotStored.Count, len(rep.Losses.AckedNotStored.Items))
	}
	if f := rep.Faults["oversize"]; f.Injected != 3 || f.Confirmed != 2 {
		t.Fatalf("oversize %+v", f)
	}
	if rep.OK || len(rep.Failures) != 2 {
		t.Fatalf("failures %v: want the loss and the unconfirmed oversize", rep.Failures)
	}
	if rep.Throughput.ReadingsPerS != 2.5 || rep.Connection.CloseCodes["1009"] != 2 || rep.Latency["ack"].Count != 1 {
		t.Fatalf("throughput %+v, close codes %v, latency %+v", rep.Throughput, rep.Connection.CloseCodes, rep.Latency)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, s := range []string{"FAILED", "acked but not stored: 5", "oversize", "FAIL "} {
		if !strings.Contains(text.String(), s) {
			t.Fatalf("text report lacks %q:\n%s", s, text.String())
		}
	}
	b, err := json.Marshal(rep)
	if err != nil || !json.Valid(b) || !bytes.Contains(b, []byte(`"acked_not_stored":{"count":5`)) {
		t.Fatalf("JSON report: %v %s", err, b)
	}
}

// TestCompactionKeepsTheReport: folding settled readings into a tally (runs
// without -verify) must not change the report, and must stop at the first
// reading that is not settled.
func TestCompactionKeepsTheReport(t *testing.T) {
	now := time.Now().UnixNano()
	old := now - int64(time.Minute)
	recs := []rec{
		{sent: old, acked: old},
		{sent: old, acked: old, fault: FaultInvalid, code: codeIndex("invalid_value")},
		{sent: old, acked: old, fault: FaultSkew}, // mqtt: unverified; WebSocket: a failure, so compaction stops
		{sent: old, acked: old},
		{sent: old}, // unanswered: compaction stops here
		{sent: old, acked: old},
		{sent: now, acked: now}, // too recent anyway
	}
	for _, mqtt := range []bool{false, true} {
		build := func(compact bool) *Report {
			r := &runner{cfg: Config{Devices: 1}.withDefaults(), c: &counters{}, runID: "r"}
			src := &source{id: "d1", recs: append([]rec(nil), recs...)}
			if compact {
				src.compact(now, mqtt)
				want := uint32(4)
				if !mqtt {
					want = 2
				}
				if src.base != want || len(src.recs) != len(recs)-int(want) {
					t.Fatalf("compacted to base %d with %d left, want base %d", src.base, len(src.recs), want)
				}
				if seq := src.add(now, FaultNone); seq != uint32(len(recs)+1) {
					t.Fatalf("next sim_seq %d after compaction, want %d", seq, len(recs)+1)
				}
				src.recs = src.recs[:len(src.recs)-1]
			}
			return r.buildReport([]*sender{{r: r, mqtt: mqtt, sources: []*source{src}}}, time.Second, time.Second, false)
		}
		a, b := build(false), build(true)
		a.StartedAt, b.StartedAt = time.Time{}, time.Time{}
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if !bytes.Equal(ja, jb) {
			t.Fatalf("mqtt=%v: report changed by compaction:\n%s\n%s", mqtt, ja, jb)
		}
	}
}
