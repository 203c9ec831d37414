package main

import (
	"bytes"
	"compress/gzip"
	"strconv"
)

// The benchmark's reading: measurement "environment", one payload tag
// (site) plus the device_id tag the service adds, and five fields — the
// shape research/performance.md §0 used for its JSON and line-protocol
// costs. Values vary a little so that InfluxDB does not see one constant.
const (
	measurement = "environment"
	siteTag     = "plant-3"
)

var temps = func() []string {
	out := make([]string, 16)
	for i := range out {
		out[i] = strconv.FormatFloat(20+float64(i)/10, 'f', -1, 64)
	}
	return out
}()

// appendMetrics appends the five metrics as a JSON object body.
func appendMetrics(dst []byte, i int) []byte {
	dst = append(dst, `{"temperature":`...)
	dst = append(dst, temps[i&15]...)
	dst = append(dst, `,"humidity":40.1,"voltage":3.3,"rssi":-67,"door_open":false}`...)
	return dst
}

// appendReadingJSON appends one native reading object; device "" is the
// sender itself (no "device" key).
func appendReadingJSON(dst []byte, device string, ts int64, i int) []byte {
	dst = append(dst, `{"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	if device != "" {
		dst = append(dst, `,"device":"`...)
		dst = append(dst, device...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"measurement":"environment","metrics":`...)
	dst = appendMetrics(dst, i)
	dst = append(dst, `,"tags":{"site":"plant-3"}}`...)
	return dst
}

// singleFrame is a one-reading device frame: {"seq":..,"ts":..,...}; seq < 0
// leaves it out (no ack wanted).
func singleFrame(dst []byte, seq int64, ts int64, i int) []byte {
	dst = append(dst, `{`...)
	if seq >= 0 {
		dst = append(dst, `"seq":`...)
		dst = strconv.AppendInt(dst, seq, 10)
		dst = append(dst, ',')
	}
	dst = append(dst, `"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"measurement":"environment","metrics":`...)
	dst = appendMetrics(dst, i)
	dst = append(dst, `,"tags":{"site":"plant-3"}}`...)
	return dst
}

// batchFrame is a gateway frame of n readings for its children (round robin),
// timestamps ts0, ts0+1, …
func batchFrame(dst []byte, seq int64, children []string, ts0 int64, n int) []byte {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"readings":[`...)
	for i := range n {
		if i > 0 {
			dst = append(dst, ',')
		}
		dev := ""
		if len(children) > 0 {
			dev = children[i%len(children)]
		}
		dst = appendReadingJSON(dst, dev, ts0+int64(i), i)
	}
	return append(dst, `]}`...)
}

// appendLine appends the line telemetryd writes for that reading: tags
// sorted (device_id, site), fields in payload order, ns timestamp.
func appendLine(dst []byte, device string, ts int64, i int) []byte {
	dst = append(dst, measurement+",device_id="...)
	dst = append(dst, device...)
	dst = append(dst, ",site="+siteTag+" temperature="...)
	dst = append(dst, temps[i&15]...)
	dst = append(dst, ",humidity=40.1,voltage=3.3,rssi=-67,door_open=false "...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '\n')
}

// gzipBatch builds one bulk-loader request body: lines first..first+n-1
// of the global sequence (devices round robin, timestamp base+index, so
// every line is a new point), gzip-compressed at BestSpeed.
func gzipBatch(devices []string, first int, base int64, n int) []byte {
	raw := make([]byte, 0, n*130)
	for i := range n {
		g := first + i
		raw = appendLine(raw, devices[g%len(devices)], base+int64(g), g)
	}
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestSpeed)
	_, _ = zw.Write(raw)
	_ = zw.Close()
	return b.Bytes()
}

// appendLiveReading appends a reading as the service's hub shows it to
// dashboards (live.AppendReadingJSON's form): what the raw broadcaster
// is fed in P4, so that both send the same bytes per reading.
func appendLiveReading(dst []byte, device string, ts int64, i int) []byte {
	dst = append(dst, `{"device_id":"`...)
	dst = append(dst, device...)
	dst = append(dst, `","measurement":"environment","ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	dst = append(dst, `,"fields":`...)
	dst = appendMetrics(dst, i)
	return append(dst, `,"tags":{"site":"plant-3"}}`...)
}

// scanInt reads the non-negative integer after key in b (e.g. `"ts":`),
// starting at from; it returns the value, the index after it, and ok.
func scanInt(b []byte, key string, from int) (int64, int, bool) {
	i := bytes.Index(b[from:], []byte(key))
	if i < 0 {
		return 0, len(b), false
	}
	j := from + i + len(key)
	var n int64
	k := j
	for k < len(b) && b[k] >= '0' && b[k] <= '9' {
		n = n*10 + int64(b[k]-'0')
		k++
	}
	return n, k, k > j
}

// errorCode extracts "code" from a device error frame {"error":{"code":..}}.
func errorCode(b []byte) string {
	const key = `"code":"`
	i := bytes.Index(b, []byte(key))
	if i < 0 {
		return "unknown"
	}
	rest := b[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "unknown"
	}
	return string(rest[:j])
}
