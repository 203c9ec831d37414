package devices

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// CopyResult says what CopyStore did.
type CopyResult struct {
	Devices, Viewers, Credentials int
	// AlreadyCopied: the target already held exactly the source's devices,
	// viewers and credentials, so nothing was written (a re-run).
	AlreadyCopied bool
}

// CopyStore moves a registry: everything in src (devices with their
// labels, gateways and last-seen times, viewers with their scopes, and every
// credential hash, rotated ones in their grace included) is written to dst
// in one transaction, so a failure leaves dst as it was. dst must be empty —
// or already hold exactly what src holds, which makes a re-run harmless.
// Tokens keep working: only their hashes exist, and they are copied as is.
func CopyStore(ctx context.Context, dst, src Store) (CopyResult, error) {
	st, err := src.Load(ctx)
	if err != nil {
		return CopyResult{}, fmt.Errorf("devices: read the source registry: %w", err)
	}
	res := CopyResult{Devices: len(st.Devices), Viewers: len(st.Viewers), Credentials: len(st.Credentials)}
	cur, err := dst.Load(ctx)
	if err != nil {
		return res, fmt.Errorf("devices: read the target registry: %w", err)
	}
	if len(cur.Devices)+len(cur.Viewers)+len(cur.Credentials) > 0 {
		if sameContent(st, cur) {
			res.AlreadyCopied = true
			return res, nil
		}
		return res, fmt.Errorf("%w: the target registry is not empty (%d devices, %d viewers) and differs from the source; refusing to merge",
			ErrConflict, len(cur.Devices), len(cur.Viewers))
	}
	creds := map[string][]Credential{}
	for _, c := range st.Credentials {
		creds[c.Owner] = append(creds[c.Owner], c)
	}
	err = dst.Update(ctx, func(ctx context.Context, tx Tx) error {
		for _, d := range st.Devices {
			if err := tx.PutDevice(ctx, d); err != nil {
				return err
			}
		}
		for _, v := range st.Viewers {
			if err := tx.PutViewer(ctx, v); err != nil {
				return err
			}
		}
		for _, owner := range slices.Sorted(maps.Keys(creds)) {
			if err := tx.SetCredentials(ctx, owner, creds[owner]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("devices: write the target registry: %w", err)
	}
	return res, nil
}

// sameContent compares what identifies a registry: device and viewer ids
// with their revocation, and credential hashes with their owners and
// expiry (names, labels and last-seen times may have been edited since).
func sameContent(a, b State) bool {
	type dk struct {
		id      string
		revoked bool
	}
	type ck struct {
		hash    TokenHash
		owner   string
		expires int64
	}
	key := func(s State) (ds []dk, cs []ck) {
		for _, d := range s.Devices {
			ds = append(ds, dk{string(d.ID), d.Revoked})
		}
		for _, v := range s.Viewers {
			ds = append(ds, dk{v.ID, v.Revoked})
		}
		for _, c := range s.Credentials {
			cs = append(cs, ck{c.Hash, c.Owner, nanos(c.ExpiresAt)})
		}
		slices.SortFunc(ds, func(x, y dk) int { return strings.Compare(x.id, y.id) })
		slices.SortFunc(cs, func(x, y ck) int { return strings.Compare(string(x.hash[:]), string(y.hash[:])) })
		return ds, cs
	}
	ad, ac := key(a)
	bd, bc := key(b)
	return slices.Equal(ad, bd) && slices.Equal(ac, bc)
}
