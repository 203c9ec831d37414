package storage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/telemetryd/telemetryd/telemetry"
)

// InfluxQL over GET /query: the one query language InfluxDB 1.8 (natively),
// 2.x (through the bucket's DBRP mapping) and 3.x (its v1 API) all answer.
// Every identifier is written by quoteIdent and every string by
// quoteString, the InfluxQL escaping rules; times are integer nanoseconds
// and durations integer "ns" literals formatted from Go values. Nothing a
// caller passes is copied into a statement unquoted, and the names were
// validated first (validateHistoryQuery, validateSelection).

// maxQueryResponse bounds an InfluxQL answer read into memory.
const maxQueryResponse = 64 << 20

// qlSeries is one series of an InfluxQL answer; numbers are json.Number.
type qlSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// qlResult is the answer to one statement.
type qlResult struct {
	StatementID int        `json:"statement_id"`
	Error       string     `json:"error"`
	Series      []qlSeries `json:"series"`
}

// influxQL runs the read statements q (";"-separated) against the bucket's
// database and returns one result per statement, in order. A statement's
// own error fails the whole call.
func (s *Influx) influxQL(ctx context.Context, q string) ([]qlResult, error) {
	u := s.base.JoinPath("query")
	params := url.Values{"db": {s.db}, "q": {q}, "epoch": {"ns"}}
	u.RawQuery = params.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "telemetryd")
	req.Header.Set("Accept", "application/json")
	setAuth(req, s.cfg.Token)
	resp, err := s.httpc.Do(req)
	if err != nil {
		return nil, withContext(ctx, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxQueryResponse+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", withContext(ctx, err))
	}
	if len(body) > maxQueryResponse {
		return nil, fmt.Errorf("response larger than %d bytes", maxQueryResponse)
	}
	return parseQL(resp.StatusCode, resp.Header.Get("X-Influxdb-Error"), body)
}

// parseQL decodes an InfluxQL JSON answer (1.x, 2.x and 3.x share it).
func parseQL(status int, headerErr string, body []byte) ([]qlResult, error) {
	var out struct {
		Error   string     `json:"error"`
		Message string     `json:"message"` // 2.x error bodies
		Results []qlResult `json:"results"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	jsonErr := dec.Decode(&out)
	msg := cmp.Or(out.Error, out.Message, headerErr)
	if status < 200 || status >= 300 {
		if msg == "" {
			msg = strings.TrimSpace(string(body[:min(len(body), maxMessage)]))
		}
		return nil, fmt.Errorf("status %d: %s", status, cmp.Or(msg, http.StatusText(status)))
	}
	if msg != "" {
		return nil, errors.New(msg)
	}
	if jsonErr != nil {
		return nil, fmt.Errorf("decoding the answer: %w", jsonErr)
	}
	for _, r := range out.Results {
		if r.Error != "" {
			return nil, errors.New(r.Error)
		}
	}
	return out.Results, nil
}

// quoteIdent quotes an InfluxQL identifier: inside double quotes, \ and "
// are escaped with a backslash, and a newline is written \n (the scanner
// ends an identifier at a raw newline).
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer("\n", `\n`, `\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// quoteString quotes an InfluxQL string literal: inside single quotes, \
// and ' are escaped with a backslash, and a newline is written \n.
func quoteString(s string) string {
	return `'` + strings.NewReplacer("\n", `\n`, `\`, `\\`, `'`, `\'`).Replace(s) + `'`
}

// qlDuration is d as an InfluxQL duration literal.
func qlDuration(d time.Duration) string { return strconv.FormatInt(int64(d), 10) + "ns" }

// qlFrom is the FROM source: one measurement, or all (a fixed regex),
// qualified by the retention policy when there is one.
func qlFrom(rp, measurement string) string {
	m := "/.*/"
	if measurement != "" {
		m = quoteIdent(measurement)
	}
	if rp == "" {
		return m
	}
	return quoteIdent(rp) + "." + m
}

// qlWhere selects one device, its scope's tags and [start, stop). Tag
// keys are cast ::tag so that a field of the same name never matches.
func qlWhere(device string, start, stop time.Time, tags map[string]string) string {
	var b strings.Builder
	b.WriteString(" WHERE ")
	b.WriteString(quoteIdent("device_id"))
	b.WriteString("::tag = ")
	b.WriteString(quoteString(device))
	for _, k := range sortedKeys(tags) {
		b.WriteString(" AND ")
		b.WriteString(quoteIdent(k))
		b.WriteString("::tag = ")
		b.WriteString(quoteString(tags[k]))
	}
	b.WriteString(" AND time >= ")
	b.WriteString(strconv.FormatInt(start.UnixNano(), 10))
	b.WriteString(" AND time < ")
	b.WriteString(strconv.FormatInt(stop.UnixNano(), 10))
	return b.String()
}

// qlValue converts an answer's value; ok is false for null and unknown
// types. The JSON answer does not tell integers from floats: every number
// is read back as a float.
func qlValue(x any) (telemetry.Value, bool) {
	switch x := x.(type) {
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return telemetry.Value{}, false
		}
		return telemetry.Float(f), true
	case bool:
		return telemetry.Bool(x), true
	case string:
		return telemetry.String(x), true
	}
	return telemetry.Value{}, false
}

// qlTime reads an epoch=ns time column.
func qlTime(x any) (int64, bool) {
	n, ok := x.(json.Number)
	if !ok {
		return 0, false
	}
	t, err := n.Int64()
	return t, err == nil
}
