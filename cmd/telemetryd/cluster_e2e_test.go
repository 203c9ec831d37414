package main

// Issue 16's "Done means", each against three real telemetryd processes
// (cluster_harness_test.go). The subtests share one cluster; the ones that
// take a server away run last and bring it back.

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/telemetryd/telemetryd/devices"
)

func TestCluster(t *testing.T) {
	c := startCluster(t, "cluster_e2e")
	t.Run("Revoke", func(t *testing.T) { testClusterRevoke(t, c) })
	t.Run("RegistryOutage", func(t *testing.T) { testClusterRegistryOutage(t, c) })
}

// testClusterRevoke: provisioned through A, connected through B, revoked
// through C: B closes the socket with 1008 within 1 s and stores nothing
// after.
func testClusterRevoke(t *testing.T, c *cluster) {
	id, tok := provision(t, c.a().svc(), `{"name":"roamer"}`)
	waitKnown(t, c.b(), id, clusterPropagation)
	dev := clusterDial(t, c.b(), tok)
	sendAcked(t, dev, "cluster_revoke", 1)

	if status, out := adminCall(t, c.c().svc(), "POST", "/api/v1/devices/"+id+"/revoke", ""); status != http.StatusOK {
		t.Fatalf("revoke on C: %d %v", status, out)
	}
	revoked := time.Now()
	select {
	case <-dev.closed:
	case <-time.After(clusterPropagation):
		t.Fatalf("B's socket still open %v after the revocation on C", clusterPropagation)
	}
	t.Logf("B closed the socket %v after C answered the revocation", time.Since(revoked))
	if code := dev.closeCode(t); code != 1008 {
		t.Fatalf("close code %d, want 1008", code)
	}
	// The token is refused on every instance; B stores nothing more of it.
	for _, n := range c.nodes {
		dialStatus(t, n.ws("/v1/ingest"), bearer(tok), http.StatusUnauthorized, "unauthorized")
	}
	// A reading of another device through B after the revocation is the
	// barrier: once it is stored, anything of the revoked device B took
	// after the close would be too.
	_, other := provision(t, c.b().svc(), `{"name":"barrier"}`)
	sendAcked(t, clusterDial(t, c.b(), other), "cluster_revoke_barrier", 1)
	if got := storedSeqs(t, c.influx, c.db, "cluster_revoke", id); len(got) != 1 || !got[1] {
		t.Fatalf("stored %v, want only seq 1 (before the revocation)", got)
	}
}

// testClusterRegistryOutage: PostgreSQL stopped for 10 s: known devices
// keep ingesting on every instance (open sockets and new connections),
// provisioning answers 503 everywhere, and works again afterwards.
func testClusterRegistryOutage(t *testing.T, c *cluster) {
	const outage = 10 * time.Second
	type known struct {
		id, tok string
		cl      *wsClient
		seq     int
	}
	var devs []*known
	for i, n := range c.nodes {
		id, tok := provision(t, n.svc(), fmt.Sprintf(`{"name":"known-%d"}`, i))
		devs = append(devs, &known{id: id, tok: tok})
	}
	// Every device is known everywhere before the outage; each holds a
	// socket to the instance after the one that provisioned it.
	for i, d := range devs {
		n := c.nodes[(i+1)%len(c.nodes)]
		for _, m := range c.nodes {
			waitKnown(t, m, d.id, clusterPropagation)
		}
		d.cl = clusterDial(t, n, d.tok)
	}

	c.pg.Stop(t)
	stopped := time.Now()
	for time.Since(stopped) < outage {
		for i, d := range devs {
			d.seq++
			sendAcked(t, d.cl, "cluster_pg_outage", d.seq)
			// A new connection to yet another instance, from memory.
			n := c.nodes[(i+2)%len(c.nodes)]
			fresh := clusterDial(t, n, d.tok)
			d.seq++
			sendAcked(t, fresh, "cluster_pg_outage", d.seq)
			_ = fresh.conn.WriteClose(1000, nil)
		}
		for _, n := range c.nodes {
			status, out := adminCall(t, n.svc(), "POST", "/api/v1/devices", `{"name":"during"}`)
			if status != http.StatusServiceUnavailable || errCode(out) != devices.APICodeUnavailable {
				t.Fatalf("provisioning on %s while PostgreSQL is down: %d %v", n.name, status, out)
			}
		}
		time.Sleep(500 * time.Millisecond) // the outage's pace, not a wait for a condition
	}
	for _, d := range devs {
		if got := storedSeqs(t, c.influx, c.db, "cluster_pg_outage", d.id); len(got) != d.seq {
			t.Fatalf("device %s: stored %d of %d readings acked during the outage", d.id, len(got), d.seq)
		}
	}

	c.pg.Start(t)
	for i, n := range c.nodes {
		var id, tok string
		eventually(t, clusterWait, "provisioning on "+n.name+" after PostgreSQL is back", func() bool {
			status, out := adminCall(t, n.svc(), "POST", "/api/v1/devices", fmt.Sprintf(`{"name":"after-%d"}`, i))
			id, _ = get(out, "device", "id").(string)
			tok, _ = get(out, "token").(string)
			return status == http.StatusCreated
		})
		// The other instances hear of it once their change feed is back
		// (a full reload on reconnection).
		next := c.nodes[(i+1)%len(c.nodes)]
		waitKnown(t, next, id, clusterWait)
		sendAcked(t, clusterDial(t, next, tok), "cluster_pg_after", 1)
	}
}
