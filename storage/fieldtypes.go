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
	"strings"
)

// maxSchemaResponse bounds the SHOW FIELD KEYS answer read into memory.
const maxSchemaResponse = 64 << 20

// FieldTypes returns the type InfluxDB holds for every field of the bucket:
// measurement → field → "float", "integer", "boolean", "string" (or
// "unsigned"). It runs InfluxQL SHOW FIELD KEYS through GET /query, which
// 1.8 serves natively, 2.x through the bucket's (virtual) DBRP mapping and
// 3.x through its v1 API (the database is splitBucket's). A field that has different
// types in different shards is reported with the first type InfluxDB lists.
func (s *Influx) FieldTypes(ctx context.Context) (map[string]map[string]string, error) {
	u := s.base.JoinPath("query")
	u.RawQuery = url.Values{"db": {s.db}, "q": {"SHOW FIELD KEYS"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("influxdb field types: %w", err)
	}
	req.Header.Set("User-Agent", "telemetryd")
	req.Header.Set("Accept", "application/json")
	setAuth(req, s.cfg.Token)
	resp, err := s.httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("influxdb field types: %w", withContext(ctx, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSchemaResponse+1))
	if err != nil {
		return nil, fmt.Errorf("influxdb field types: read response: %w", withContext(ctx, err))
	}
	if len(body) > maxSchemaResponse {
		return nil, fmt.Errorf("influxdb field types: response larger than %d bytes", maxSchemaResponse)
	}
	return parseFieldKeys(resp.StatusCode, resp.Header.Get("X-Influxdb-Error"), body)
}

// parseFieldKeys decodes a SHOW FIELD KEYS answer.
func parseFieldKeys(status int, headerErr string, body []byte) (map[string]map[string]string, error) {
	var out struct {
		Error   string `json:"error"`
		Message string `json:"message"` // 2.x error bodies
		Results []struct {
			Error  string `json:"error"`
			Series []struct {
				Name    string     `json:"name"`
				Columns []string   `json:"columns"`
				Values  [][]string `json:"values"`
			} `json:"series"`
		} `json:"results"`
	}
	jsonErr := json.Unmarshal(body, &out)
	msg := cmp.Or(out.Error, out.Message, headerErr)
	for _, r := range out.Results {
		msg = cmp.Or(msg, r.Error)
	}
	if status < 200 || status >= 300 {
		return nil, fmt.Errorf("influxdb field types: status %d: %s", status, cmp.Or(msg, http.StatusText(status)))
	}
	if msg != "" {
		// A database without data yet: nothing to seed.
		if strings.Contains(msg, "database not found") {
			return map[string]map[string]string{}, nil
		}
		return nil, fmt.Errorf("influxdb field types: %s", msg)
	}
	if jsonErr != nil {
		return nil, fmt.Errorf("influxdb field types: %w", jsonErr)
	}
	types := map[string]map[string]string{}
	for _, r := range out.Results {
		for _, sr := range r.Series {
			if len(sr.Columns) < 2 || sr.Columns[0] != "fieldKey" || sr.Columns[1] != "fieldType" {
				return nil, errors.New("influxdb field types: unexpected columns " + strings.Join(sr.Columns, ","))
			}
			m := types[sr.Name]
			if m == nil {
				m = map[string]string{}
				types[sr.Name] = m
			}
			for _, v := range sr.Values {
				if len(v) >= 2 {
					if _, seen := m[v[0]]; !seen {
						m[v[0]] = v[1]
					}
				}
			}
		}
	}
	return types, nil
}
