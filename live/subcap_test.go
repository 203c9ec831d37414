package live

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/lxzan/gws"
)

// dashPeer is a dashboard WebSocket client for tests: it collects text
// messages in order.
type dashPeer struct {
	gws.BuiltinEventHandler
	conn *gws.Conn
	msgs chan string
}

func (p *dashPeer) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	p.msgs <- string(m.Bytes())
}

func dialDashboard(t *testing.T, srv *httptest.Server) *dashPeer {
	t.Helper()
	p := &dashPeer{msgs: make(chan string, 1024)}
	conn, _, err := gws.NewClient(p, &gws.ClientOption{Addr: "ws" + strings.TrimPrefix(srv.URL, "http")})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	p.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { _ = conn.WriteClose(1000, nil) })
	return p
}

// ask sends msg and returns the type of the answer.
func (p *dashPeer) ask(t *testing.T, msg string) string {
	t.Helper()
	if err := p.conn.WriteString(msg); err != nil {
		t.Fatalf("send: %v", err)
	}
	select {
	case m := <-p.msgs:
		var v struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(m), &v); err != nil {
			t.Fatalf("answer %q: %v", m, err)
		}
		return v.Type
	case <-time.After(10 * time.Second):
		t.Fatalf("no answer to %s", msg)
		return ""
	}
}

func startDashboards(t *testing.T, hcfg HubConfig, dcfg DashboardConfig) (*Hub, *httptest.Server) {
	t.Helper()
	h := startHub(t, hcfg)
	d := NewDashboards(dcfg, h, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	srv := httptest.NewServer(d)
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
	return h, srv
}

// TestSubscriptionCapCountsLiveSubscriptions (issue 17.5): the per-socket
// cap counts the subscriptions that exist: unsubscribing an unknown id frees
// nothing, re-subscribing an id takes no second slot.
func TestSubscriptionCapCountsLiveSubscriptions(t *testing.T) {
	type step struct{ op, id, want string }
	sub := func(id, want string) step { return step{"subscribe", id, want} }
	unsub := func(id string) step { return step{"unsubscribe", id, "unsubscribed"} }
	fill := func(prefix string, n int) []step {
		var s []step
		for i := range n {
			s = append(s, sub(fmt.Sprint(prefix, i), "snapshot"))
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	tests := []struct {
		name  string
		steps []step
		live  int // subscriptions the Hub holds at the end
	}{
		{"the cap", cat(fill("s", maxSubscriptions), []step{sub("one-more", "error")}), maxSubscriptions},
		{"unknown ids free nothing", cat([]step{unsub("x"), unsub("y"), unsub("z")}, fill("s", maxSubscriptions), []step{sub("one-more", "error")}), maxSubscriptions},
		{"an id re-subscribed counts once", cat(fill("same", 0), func() []step {
			var s []step
			for range maxSubscriptions + 6 {
				s = append(s, sub("same", "snapshot"))
			}
			return s
		}(), fill("s", maxSubscriptions-1), []step{sub("one-more", "error")}), maxSubscriptions},
		{"unsubscribing frees a slot", cat(fill("s", maxSubscriptions), []step{unsub("s3"), unsub("s3"), sub("new", "snapshot"), sub("newer", "error")}), maxSubscriptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, srv := startDashboards(t, HubConfig{}, DashboardConfig{})
			p := dialDashboard(t, srv)
			for i, s := range tt.steps {
				if got := p.ask(t, fmt.Sprintf(`{"op":%q,"id":%q}`, s.op, s.id)); got != s.want {
					t.Fatalf("step %d (%s %s): answer %q, want %q", i, s.op, s.id, got, s.want)
				}
			}
			if got := h.Stats(context.Background()).Subscriptions; got != tt.live {
				t.Fatalf("%d subscriptions, want %d", got, tt.live)
			}
		})
	}
}
