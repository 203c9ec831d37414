package storage

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestGzipTransportCompressesWritesOnly(t *testing.T) {
	var gotBody, gotEncoding string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotEncoding = r.Header.Get("Content-Encoding")
		var body io.Reader = r.Body
		if gotEncoding == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Errorf("not gzip: %v", err)
				return
			}
			body = zr
		}
		b, _ := io.ReadAll(body)
		gotBody = string(b)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	c := &http.Client{Transport: newGzipTransport(http.DefaultTransport)}
	lines := strings.Repeat("m,device_id=d v=1 1\n", 1000)
	resp, err := c.Post(srv.URL+"/api/v2/write?bucket=b", "text/plain", bytes.NewBufferString(lines))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotEncoding != "gzip" || gotBody != lines {
		t.Fatalf("write: encoding %q, body intact %v", gotEncoding, gotBody == lines)
	}
	resp, err = c.Post(srv.URL+"/query", "application/x-www-form-urlencoded", strings.NewReader("q=SHOW+DATABASES"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if gotEncoding != "" || gotBody != "q=SHOW+DATABASES" {
		t.Fatalf("query was altered: encoding %q body %q", gotEncoding, gotBody)
	}
}
