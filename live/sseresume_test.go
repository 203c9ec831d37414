package live

import (
	"bytes"
	"net/http/httptest"
	"testing"
)

func TestSSEOptions(t *testing.T) {
	tests := []struct {
		url, lastEventID string
		want             SubscribeOptions
		wantErr          bool
	}{
		{"/v1/live/sse", "", SubscribeOptions{}, false},
		{"/v1/live/sse", "42", SubscribeOptions{Resume: true, Since: 42}, false},
		{"/v1/live/sse?since=7", "", SubscribeOptions{Resume: true, Since: 7}, false},
		{"/v1/live/sse?since=7", "9", SubscribeOptions{Resume: true, Since: 9}, false}, // the header wins: EventSource's own retry
		{"/v1/live/sse?persisted=1", "", SubscribeOptions{Persisted: true}, false},
		{"/v1/live/sse", "x1", SubscribeOptions{}, true},
		{"/v1/live/sse?since=-1", "", SubscribeOptions{}, true},
		{"/v1/live/sse?persisted=yes", "", SubscribeOptions{}, true},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", tc.url, nil)
		if tc.lastEventID != "" {
			r.Header.Set("Last-Event-ID", tc.lastEventID)
		}
		got, err := sseOptions(r)
		if (err != nil) != tc.wantErr || (err == nil && got != tc.want) {
			t.Errorf("%s (Last-Event-ID %q): %+v, %v; want %+v, error %v", tc.url, tc.lastEventID, got, err, tc.want, tc.wantErr)
		}
	}
}

// FuzzMessagePos: the position read for an event id is digits taken from
// the message's own head, never from elsewhere.
func FuzzMessagePos(f *testing.F) {
	f.Add([]byte(`{"type":"readings","pos":123,"sub":"s"}`))
	f.Add([]byte(`{"type":"persisted","sub":"s"}`))
	f.Add([]byte(`{"type":"x","pos":`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		pos, ok := messagePos(msg)
		if !ok {
			return
		}
		typ, _ := messageType(msg)
		head := []byte(`{"type":"` + string(typ) + `","pos":`)
		if !bytes.HasPrefix(msg, head) || !bytes.HasPrefix(msg[len(head):], pos) || len(pos) == 0 {
			t.Fatalf("pos %q from %q", pos, msg)
		}
		for _, c := range pos {
			if c < '0' || c > '9' {
				t.Fatalf("pos %q from %q", pos, msg)
			}
		}
	})
}
