package storage

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// DeadLetter is one line InfluxDB refused for good, kept for the operator.
type DeadLetter struct {
	Time  time.Time `json:"time"`
	Error string    `json:"error"`
	Line  string    `json:"line"`
}

// DeadLetters appends refused lines to a JSON-lines file (one DeadLetter
// per line), fsynced, so that nothing is dropped without a record. The file
// is opened per record: dead letters are rare, and it lets `telemetryd
// deadletters replay` move the file aside while the service runs.
//
// Bound and policy: the file grows to at most maxBytes. When a record
// would pass it, the record is refused (ErrDeadLettersFull) and counted
// (Dropped): the oldest letters are kept, as they show when and why
// storage started refusing, and the file stays append-only. Replaying or
// removing the file makes room again.
type DeadLetters struct {
	path     string
	maxBytes int64
	mu       sync.Mutex
	count    atomic.Uint64
	dropped  atomic.Uint64
}

// DefaultDeadLetterMaxBytes is the bound when none is given.
const DefaultDeadLetterMaxBytes = 64 << 20

// ErrDeadLettersFull: the dead-letter file is at its bound; the line was
// not recorded.
var ErrDeadLettersFull = errors.New("deadletters: file full")

// NewDeadLetters records into path (created on first use), at most
// maxBytes (<= 0: DefaultDeadLetterMaxBytes).
func NewDeadLetters(path string, maxBytes int64) *DeadLetters {
	if maxBytes <= 0 {
		maxBytes = DefaultDeadLetterMaxBytes
	}
	return &DeadLetters{path: path, maxBytes: maxBytes}
}

// Dropped is the number of lines not recorded because the file was full.
func (d *DeadLetters) Dropped() uint64 { return d.dropped.Load() }

// Path is the dead-letter file.
func (d *DeadLetters) Path() string { return d.path }

// Count is the number of lines recorded since start.
func (d *DeadLetters) Count() uint64 { return d.count.Load() }

// Record appends one refused line with the server's reason.
func (d *DeadLetters) Record(line []byte, reason string) error {
	return d.recordLetter(DeadLetter{Time: time.Now().UTC(), Error: reason, Line: string(trimNewline(line))})
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// ReadDeadLetters reads a dead-letter file; a missing file has none.
func ReadDeadLetters(path string) ([]DeadLetter, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deadletters: %w", err)
	}
	defer f.Close()
	var out []DeadLetter
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxRecordBytes)
	for n := 1; sc.Scan(); n++ {
		var d DeadLetter
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			return out, fmt.Errorf("deadletters: %s line %d: %w", path, n, err)
		}
		out = append(out, d)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("deadletters: %w", err)
	}
	return out, nil
}

// ReplayResult counts what a replay did.
type ReplayResult struct {
	Replayed, StillRejected int
}

// ReplayDeadLetters writes every dead letter in path again through w, after
// the operator fixed the cause (e.g. dropped a conflicting field). The file
// is first moved aside, so a running service keeps recording into a new one;
// lines that are refused again are recorded anew with the new reason, into
// dl (its bound applies). A transient failure stops the replay and puts the
// unreplayed lines back.
func ReplayDeadLetters(ctx context.Context, dl *DeadLetters, w LineWriter) (ReplayResult, error) {
	var res ReplayResult
	path := dl.Path()
	aside := fmt.Sprintf("%s.replaying-%d", path, time.Now().UnixNano())
	if err := os.Rename(path, aside); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return res, nil
		}
		return res, fmt.Errorf("deadletters: %w", err)
	}
	letters, err := ReadDeadLetters(aside)
	if err != nil {
		return res, err
	}
	for i, l := range letters {
		err := w.Write(ctx, []byte(l.Line+"\n"))
		switch {
		case err == nil:
			res.Replayed++
		case isPermanent(err):
			res.StillRejected++
			if err := dl.Record([]byte(l.Line), err.Error()); err != nil {
				return res, err
			}
		default:
			for _, rest := range letters[i:] {
				if err := dl.recordLetter(rest); err != nil {
					return res, err
				}
			}
			_ = os.Remove(aside)
			return res, fmt.Errorf("deadletters: replay stopped (the rest is kept): %w", err)
		}
	}
	if err := os.Remove(aside); err != nil {
		return res, fmt.Errorf("deadletters: %w", err)
	}
	return res, nil
}

func (d *DeadLetters) recordLetter(l DeadLetter) error {
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	b = append(b, '\n')
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(d.path), 0o750); err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	f, err := os.OpenFile(d.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	if st.Size()+int64(len(b)) > d.maxBytes {
		d.dropped.Add(1)
		return fmt.Errorf("%w (%d bytes, limit %d)", ErrDeadLettersFull, st.Size(), d.maxBytes)
	}
	if _, err := f.Write(b); err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("deadletters: %w", err)
	}
	d.count.Add(1)
	return nil
}
