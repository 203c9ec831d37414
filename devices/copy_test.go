package devices

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

func TestCopyStore(t *testing.T) {
	ctx := context.Background()
	src := newTestRegistry(t, Config{})
	gw, _ := mustCreate(t, src, DeviceSpec{Name: "gw", Kind: KindGateway})
	_, tok := mustCreate(t, src, DeviceSpec{Name: "child", Gateway: gw.ID, Labels: map[string]string{"k": "v"}})
	if _, _, err := src.CreateViewer(ctx, "v", map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T) *SQLite {
		s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "dst.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	tests := []struct {
		name     string
		prepare  func(t *testing.T, dst *SQLite)
		wantErr  error
		wantDone bool // AlreadyCopied
	}{
		{"empty target", func(*testing.T, *SQLite) {}, nil, false},
		{"target already holds the same registry", func(t *testing.T, dst *SQLite) {
			if _, err := CopyStore(ctx, dst, src.store); err != nil {
				t.Fatal(err)
			}
		}, nil, true},
		{"different non-empty target", func(t *testing.T, dst *SQLite) {
			if err := dst.Update(ctx, func(ctx context.Context, tx Tx) error {
				return tx.PutDevice(ctx, Device{ID: "01900000-0000-7000-8000-0000000000ff", Name: "other", Kind: KindDevice})
			}); err != nil {
				t.Fatal(err)
			}
		}, ErrConflict, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := open(t)
			tc.prepare(t, dst)
			res, err := CopyStore(ctx, dst, src.store)
			if !errors.Is(err, tc.wantErr) || res.AlreadyCopied != tc.wantDone {
				t.Fatalf("CopyStore = %+v, %v; want err %v, already %v", res, err, tc.wantErr, tc.wantDone)
			}
			if err != nil {
				return
			}
			if res.Devices != 2 || res.Viewers != 1 || res.Credentials != 3 {
				t.Fatalf("counts %+v", res)
			}
			reg, err := Open(ctx, dst, Config{}, discard())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := reg.AuthenticateDevice(ctx, tok); err != nil {
				t.Fatalf("token after the copy: %v", err)
			}
		})
	}
}
