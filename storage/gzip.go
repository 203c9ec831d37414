package storage

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// gzipTransport compresses write requests itself instead of letting the
// InfluxDB client do it: the client uses compress/gzip at its default level,
// a large share of telemetryd's CPU, while klauspost/compress at BestSpeed
// is much cheaper for a ratio that barely differs on line protocol (it is
// very repetitive). Figures: bench/RESULTS.md.
type gzipTransport struct {
	next    http.RoundTripper
	writers sync.Pool // *gzip.Writer
}

func newGzipTransport(next http.RoundTripper) *gzipTransport {
	t := &gzipTransport{next: next}
	t.writers.New = func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed)
		return w
	}
	return t
}

func (t *gzipTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != http.MethodPost || r.Body == nil || r.Header.Get("Content-Encoding") != "" ||
		!strings.HasSuffix(r.URL.Path, "/write") {
		return t.next.RoundTrip(r)
	}
	// The compressed body is not pooled: the transport may still be writing
	// it after RoundTrip returns (an early response), so it must not be reused.
	buf := new(bytes.Buffer)
	zw := t.writers.Get().(*gzip.Writer)
	zw.Reset(buf)
	_, err := io.Copy(zw, r.Body)
	_ = r.Body.Close()
	if err == nil {
		err = zw.Close()
	}
	t.writers.Put(zw)
	if err != nil {
		return nil, fmt.Errorf("storage: compressing write: %w", err)
	}
	body := buf.Bytes()
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Length", strconv.Itoa(len(body)))
	req.Header.Set("Content-Encoding", "gzip")
	return t.next.RoundTrip(req)
}
