package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/influxdata/line-protocol/v2/lineprotocol"

	"github.com/telemetryd/telemetryd/ingest/payload"
)

// P7l and P7c (issue 19): CPU per reading of telemetryd's decoding of line
// protocol and of CBOR (the native schema; SenML-CBOR in the details)
// against the reference library decoding the same bytes alone, in this
// process like P7. The reference reads every value (as much of the input
// as the decoder) and builds no readings, so the ratio is what the service
// adds over the library: readings, validation, limits. Not judged (the
// issue sets no goal); recorded.

// p7fBatch is the readings per payload: a Telegraf batch is larger, a
// device's smaller; 100 is the Go benchmarks' size (ingest/payload).
const p7fBatch = 100

func p7fLines() []byte {
	var b bytes.Buffer
	for i := range p7fBatch {
		fmt.Fprintf(&b, "environment,site=plant-3,room=r%d temperature=%d.4,humidity=40.1,door_open=false,status=\"ok\",count=%di %d\n",
			i%4, 20+i%5, i, time.Now().Add(-time.Hour).UnixNano()+int64(i))
	}
	return b.Bytes()
}

func p7fCBOR() ([]byte, error) {
	ts := time.Now().Add(-time.Hour).UnixMilli()
	rs := make([]any, p7fBatch)
	for i := range rs {
		rs[i] = map[string]any{"ts": ts + int64(i), "measurement": "environment",
			"metrics": map[string]any{"temperature": 20.4 + float64(i%5), "humidity": 40.1, "door_open": false, "status": "ok"},
			"tags":    map[string]any{"site": "plant-3"}}
	}
	return cbor.Marshal(map[string]any{"seq": 18, "readings": rs})
}

func p7fSenMLCBOR() ([]byte, error) {
	bt := float64(time.Now().Add(-time.Hour).Unix())
	recs := []any{map[int]any{-2: "dev-1/", -3: bt, -4: "Cel", 0: "temperature", 2: 21.4}}
	for i := 1; i < p7fBatch; i++ {
		recs = append(recs, map[int]any{0: "temperature", 6: float64(i), 2: 21.4 + float64(i%3)})
	}
	return cbor.Marshal(recs)
}

// lpReference walks every line's measurement, tags, fields and time with
// line-protocol/v2 alone.
func lpReference(data []byte) error {
	dec := lineprotocol.NewDecoderWithBytes(data)
	n := 0
	for dec.Next() {
		if _, err := dec.Measurement(); err != nil {
			return err
		}
		for {
			k, _, err := dec.NextTag()
			if err != nil {
				return err
			}
			if k == nil {
				break
			}
		}
		for {
			k, _, err := dec.NextField()
			if err != nil {
				return err
			}
			if k == nil {
				break
			}
		}
		if _, err := dec.Time(lineprotocol.Nanosecond, time.Time{}); err != nil {
			return err
		}
		n++
	}
	if n != p7fBatch {
		return fmt.Errorf("reference: %d lines", n)
	}
	return nil
}

// cborReference is fxamacker/cbor alone unmarshalling into a generic value,
// with limits like the decoder's.
func cborReference() (func([]byte) error, error) {
	mode, err := cbor.DecOptions{
		MaxNestedLevels: 16, MaxArrayElements: 10000, MaxMapPairs: 10000,
		IndefLength: cbor.IndefLengthForbidden, UTF8: cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		return nil, err
	}
	return func(data []byte) error {
		var v any
		return mode.Unmarshal(data, &v)
	}, nil
}

// p7fDecode is telemetryd's decoding of one payload, checked whole.
func p7fDecode(dec *payload.Decoder, data []byte, lp bool) error {
	var m payload.Message
	var err error
	if lp {
		m, err = dec.DecodeLineProtocol(data, time.Nanosecond)
	} else {
		m, err = dec.Decode(data, time.Now())
	}
	if err != nil {
		return err
	}
	if len(m.Invalid) != 0 || len(m.Readings) != p7fBatch {
		return fmt.Errorf("%d readings, %d refused: %+v", len(m.Readings), len(m.Invalid), m.Invalid)
	}
	return nil
}

func runP7l(ctx context.Context, e *env, r *result) error {
	data := p7fLines()
	dec := payload.NewDecoder(payload.Limits{})
	return p7fMeasure(ctx, e, r, data, func() error { return p7fDecode(dec, data, true) }, func() error { return lpReference(data) })
}

func runP7c(ctx context.Context, e *env, r *result) error {
	ref, err := cborReference()
	if err != nil {
		return err
	}
	senml, err := p7fSenMLCBOR()
	if err != nil {
		return err
	}
	data, err := p7fCBOR()
	if err != nil {
		return err
	}
	// SenML-CBOR first, into the details.
	var s result
	dec := payload.NewDecoder(payload.Limits{})
	if err := p7fMeasure(ctx, e, &s, senml, func() error { return p7fDecode(dec, senml, false) }, func() error { return ref(senml) }); err != nil {
		return fmt.Errorf("SenML-CBOR: %w", err)
	}
	r.detail("senml_cbor", map[string]any{"service_ns_per_reading": s.Service, "baseline_ns_per_reading": s.Baseline,
		"ratio": s.Ratio, "payload_bytes": len(senml)})
	return p7fMeasure(ctx, e, r, data, func() error { return p7fDecode(dec, data, false) }, func() error { return ref(data) })
}

// p7fMeasure measures both sides like P7 and reports CPU ns per reading.
func p7fMeasure(ctx context.Context, e *env, r *result, data []byte, service, reference func() error) error {
	d := 2 * time.Second
	if e.cfg.Smoke {
		d = 200 * time.Millisecond
	}
	r.Unit = "CPU ns/reading"
	r.Goal = "— (recorded)"
	r.detail("payload_bytes", len(data))
	r.detail("readings_per_payload", p7fBatch)
	svc, base := &cpuSide{op: service}, &cpuSide{op: reference}
	if err := measureCPU(d, d/20, svc, base); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	sc, bc := svc.cost(), base.cost()
	r.Service, r.Baseline = round2(sc.CPUNsPerOp/p7fBatch), round2(bc.CPUNsPerOp/p7fBatch)
	r.Ratio = round3(r.Service / r.Baseline)
	r.ServiceText = fmt.Sprintf("%.0f ns, %.2g allocs", r.Service, sc.AllocsPerOp/p7fBatch)
	r.BaselineText = fmt.Sprintf("%.0f ns, %.2g allocs", r.Baseline, bc.AllocsPerOp/p7fBatch)
	return nil
}
