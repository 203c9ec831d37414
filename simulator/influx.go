package simulator

import (
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
)

// influxClient reads back what the service stored, with InfluxQL over
// HTTP (GET /query): InfluxDB 1.8, 2.x through its DBRP mapping, or 3.x
// through its v1 API. Identifiers go through quoteIdent and strings through
// quoteString, InfluxQL's escaping rules, whatever was validated before.
type influxClient struct {
	base, db, rp, token string
	http                *http.Client
}

func newInfluxClient(cfg *Config) *influxClient {
	db, rp, _ := splitBucket(cfg.InfluxBucket)
	return &influxClient{base: cfg.InfluxURL, db: db, rp: rp, token: cfg.InfluxToken, http: &http.Client{Timeout: 2 * time.Minute}}
}

// influxSeries is one series of a result; numbers stay json.Number.
type influxSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

type influxResult struct {
	Error   string `json:"error"`
	Results []struct {
		Error  string         `json:"error"`
		Series []influxSeries `json:"series"`
	} `json:"results"`
}

// query runs q and calls fn for every series of every chunk.
func (c *influxClient) query(ctx context.Context, q string, fn func(*influxSeries) error) error {
	v := url.Values{"db": {c.db}, "q": {q}, "epoch": {"ns"}, "chunked": {"true"}, "chunk_size": {"10000"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/query?"+v.Encode(), nil)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Token "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("influxdb: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("influxdb: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	for {
		var r influxResult
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("influxdb: decoding the answer: %w", err)
		}
		if r.Error != "" {
			return fmt.Errorf("influxdb: %s", r.Error)
		}
		for _, res := range r.Results {
			if res.Error != "" {
				return fmt.Errorf("influxdb: %s", res.Error)
			}
			for i := range res.Series {
				if err := fn(&res.Series[i]); err != nil {
					return err
				}
			}
		}
	}
}

// from is the FROM clause for measurements.
func (c *influxClient) from(measurements []string) string {
	parts := make([]string, len(measurements))
	for i, m := range measurements {
		if c.rp != "" {
			parts[i] = quoteIdent(c.rp) + "." + quoteIdent(m)
		} else {
			parts[i] = quoteIdent(m)
		}
	}
	return strings.Join(parts, ",")
}

// quoteIdent quotes an InfluxQL identifier ("…" with \ and " escaped).
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// quoteString quotes an InfluxQL string literal ('…' with \ and ' escaped).
func quoteString(s string) string {
	return `'` + strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\n", `\n`).Replace(s) + `'`
}

// where selects one run's readings in a time window (ns): by its sim_run
// tag, or, for a run whose format carries no tags (runID ""), by the
// window alone — the callers then keep only the run's devices.
func where(runID string, from, to int64) string {
	if runID == "" {
		return fmt.Sprintf(`WHERE time >= %d AND time <= %d`, from, to)
	}
	return fmt.Sprintf(`WHERE %s::tag = %s AND time >= %d AND time <= %d`, quoteIdent(RunTag), quoteString(runID), from, to)
}

// count returns how many readings of the run's devices (known) are stored.
func (c *influxClient) count(ctx context.Context, measurements []string, runID string, from, to int64, known func(device string) bool) (int64, error) {
	q := fmt.Sprintf(`SELECT count(%s) FROM %s %s GROUP BY %s`, quoteIdent(SeqField), c.from(measurements), where(runID, from, to), quoteIdent(deviceIDTag))
	var total int64
	err := c.query(ctx, q, func(s *influxSeries) error {
		if !known(s.Tags[deviceIDTag]) {
			return nil
		}
		for _, row := range s.Values {
			if len(row) > 1 {
				if n, err := asInt(row[1]); err == nil {
					total += n
				}
			}
		}
		return nil
	})
	return total, err
}

// list calls fn with the device id and sim_seq of every stored reading of the run.
func (c *influxClient) list(ctx context.Context, measurements []string, runID string, from, to int64, fn func(device string, seq int64)) error {
	for _, m := range measurements {
		q := fmt.Sprintf(`SELECT %s FROM %s %s GROUP BY %s`, quoteIdent(SeqField), c.from([]string{m}), where(runID, from, to), quoteIdent(deviceIDTag))
		err := c.query(ctx, q, func(s *influxSeries) error {
			dev := s.Tags[deviceIDTag]
			col := -1
			for i, name := range s.Columns {
				if name == SeqField {
					col = i
				}
			}
			if col < 0 {
				return fmt.Errorf("influxdb: answer without a %s column", SeqField)
			}
			for _, row := range s.Values {
				if n, err := asInt(row[col]); err == nil {
					fn(dev, n)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func asInt(v any) (int64, error) {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
		f, err := x.Float64()
		return int64(f), err
	case float64:
		return int64(x), nil
	case string:
		return strconv.ParseInt(x, 10, 64)
	}
	return 0, fmt.Errorf("not a number: %v", v)
}
