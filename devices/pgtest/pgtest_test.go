package pgtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/telemetryd/telemetryd/devices/pgtest"
)

func query(ctx context.Context, url string) (int, error) {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	var n int
	err = c.QueryRow(ctx, "SELECT 40 + 2").Scan(&n)
	return n, err
}

func TestStartStopStart(t *testing.T) {
	s := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if n, err := query(ctx, s.URL()); err != nil || n != 42 {
		t.Fatalf("query: %d, %v", n, err)
	}
	s.Stop(t)
	if _, err := query(ctx, s.URL()); err == nil {
		t.Fatal("query succeeded on a stopped server")
	}
	s.Start(t)
	if n, err := query(ctx, s.URL()); err != nil || n != 42 {
		t.Fatalf("query after restart: %d, %v", n, err)
	}
}
