package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The spool is a durable FIFO of line-protocol batches: an append-only log
// of segment files under one directory. Each record is
//
//	length uint32 | crc32c uint32 | unix-nanos int64 | payload (length bytes)
//
// little-endian, where the CRC (Castagnoli) covers the length, the time and
// the payload, so a damaged length is detected too. Append fsyncs before it
// returns: a record is acknowledged only once it is on disk.
//
// Why not a write-ahead-log library: tidwall/wal (the common Go choice) has
// no per-record checksum and refuses to open a log whose tail was torn by a
// crash (its recovery fix, PR #22, is unmerged); etcd's and Prometheus' WALs
// bring their whole modules. The format above is small enough to own.
//
// Recovery (OpenSpool) scans every segment. A record that is short or fails
// its checksum ends the valid part of its segment: in the newest segment
// that is a torn tail from a crash (truncated away); in an older segment the
// rest of that segment cannot be framed again and is skipped. Both are
// counted in the RecoveryReport, and everything before them is kept.

const (
	recordHeader   = 16
	segmentPrefix  = "spool-"
	segmentSuffix  = ".log"
	maxRecordBytes = 256 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrSpoolFull is returned by Append when the spool has reached its size limit.
var ErrSpoolFull = errors.New("spool full")

// SpoolConfig tunes a spool. The zero value of each field means its default.
type SpoolConfig struct {
	// MaxBytes bounds the spool on disk (default 1 GiB). When full, Append
	// fails with ErrSpoolFull: the caller must stop acknowledging.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment is started (default 16 MiB).
	SegmentBytes int64
}

// RecoveryReport says what OpenSpool found on disk.
type RecoveryReport struct {
	Records        int   // valid records recovered
	Bytes          int64 // their size on disk
	CorruptRecords int   // damaged records skipped (torn tail or checksum mismatch)
	CorruptBytes   int64 // bytes skipped with them
}

// SpoolStats describe the spool now.
type SpoolStats struct {
	Records        int           // records waiting for replay
	Bytes          int64         // bytes on disk
	MaxBytes       int64         // the limit
	OldestAge      time.Duration // age of the oldest waiting record (0 when empty)
	Appended       uint64        // records appended since start
	Replayed       uint64        // records replayed (committed) since start
	Full           uint64        // appends refused because the spool was full
	CorruptRecords int           // found at recovery
}

type segment struct {
	id      uint64
	size    int64 // bytes of valid records
	records int   // valid records not yet consumed
}

// Spool is a durable, bounded FIFO of batches. Append and the reader side
// (Peek/Commit) may run in different goroutines; there is one reader.
type Spool struct {
	cfg SpoolConfig
	dir string
	log *slog.Logger

	mu       sync.Mutex
	segs     []*segment // oldest first; the last one is appended to
	w        *os.File   // the newest segment, open for append
	r        *os.File   // the oldest segment, open for reading
	rID      uint64
	rOff     int64 // read position in the oldest segment
	bytes    int64
	records  int
	headTime time.Time // time of the record at the read position, zero if unknown
	notify   chan struct{}
	report   RecoveryReport

	appended, replayed, full uint64
}

// OpenSpool opens (creating if needed) the spool in dir and recovers what a
// previous process left there.
func OpenSpool(dir string, cfg SpoolConfig, log *slog.Logger) (*Spool, RecoveryReport, error) {
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 1 << 30
	}
	if cfg.SegmentBytes <= 0 {
		cfg.SegmentBytes = 16 << 20
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, RecoveryReport{}, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{cfg: cfg, dir: dir, log: log, notify: make(chan struct{}, 1)}
	ids, err := s.segmentIDs()
	if err != nil {
		return nil, RecoveryReport{}, err
	}
	for i, id := range ids {
		seg, err := s.recoverSegment(id, i == len(ids)-1)
		if err != nil {
			return nil, RecoveryReport{}, err
		}
		if seg.records == 0 {
			_ = os.Remove(s.path(id))
			continue
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
		s.records += seg.records
	}
	s.report.Records, s.report.Bytes = s.records, s.bytes
	if err := s.startSegment(); err != nil {
		return nil, RecoveryReport{}, err
	}
	if s.records > 0 {
		s.signal()
	}
	return s, s.report, nil
}

func (s *Spool) path(id uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%s%020d%s", segmentPrefix, id, segmentSuffix))
}

func (s *Spool) segmentIDs() ([]uint64, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var ids []uint64
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, segmentPrefix) || !strings.HasSuffix(name, segmentSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segmentPrefix), segmentSuffix), 10, 64)
		if err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// recoverSegment counts the valid records of a segment and cuts off what
// follows the first damaged one.
func (s *Spool) recoverSegment(id uint64, newest bool) (*segment, error) {
	f, err := os.OpenFile(s.path(id), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	seg := &segment{id: id}
	br := bufio.NewReaderSize(f, 1<<20)
	for {
		n, _, err := readRecord(br, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			damaged := info.Size() - seg.size
			s.report.CorruptRecords++
			s.report.CorruptBytes += damaged
			s.log.Warn("spool: damaged record; skipping the rest of the segment",
				"segment", s.path(id), "offset", seg.size, "skipped_bytes", damaged, "newest", newest, "error", err)
			if err := f.Truncate(seg.size); err != nil {
				return nil, fmt.Errorf("spool: truncating damaged tail: %w", err)
			}
			if err := f.Sync(); err != nil {
				return nil, fmt.Errorf("spool: %w", err)
			}
			break
		}
		seg.size += int64(n)
		seg.records++
	}
	return seg, nil
}

// readRecord reads one record into buf (grown as needed) and returns its
// size on disk, the payload and its time (through buf's header). io.EOF means
// a clean end; any other error means a short or damaged record.
func readRecord(r io.Reader, buf []byte) (int, []byte, error) {
	p, _, n, err := readRecordTime(r, buf)
	return n, p, err
}

var errDamaged = errors.New("damaged record")

func readRecordTime(r io.Reader, buf []byte) ([]byte, time.Time, int, error) {
	var h [recordHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF {
			return nil, time.Time{}, 0, io.EOF
		}
		return nil, time.Time{}, 0, fmt.Errorf("%w: short header", errDamaged)
	}
	length := binary.LittleEndian.Uint32(h[0:4])
	sum := binary.LittleEndian.Uint32(h[4:8])
	if length > maxRecordBytes {
		return nil, time.Time{}, 0, fmt.Errorf("%w: length %d", errDamaged, length)
	}
	if cap(buf) < int(length) {
		buf = make([]byte, length)
	}
	buf = buf[:length]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, time.Time{}, 0, fmt.Errorf("%w: short payload", errDamaged)
	}
	crc := crc32.Update(0, crcTable, h[0:4])
	crc = crc32.Update(crc, crcTable, h[8:16])
	crc = crc32.Update(crc, crcTable, buf)
	if crc != sum {
		return nil, time.Time{}, 0, fmt.Errorf("%w: checksum mismatch", errDamaged)
	}
	t := time.Unix(0, int64(binary.LittleEndian.Uint64(h[8:16])))
	return buf, t, recordHeader + int(length), nil
}

func appendRecord(dst, payload []byte, t time.Time) []byte {
	var h [recordHeader]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(h[8:16], uint64(t.UnixNano()))
	crc := crc32.Update(0, crcTable, h[0:4])
	crc = crc32.Update(crc, crcTable, h[8:16])
	crc = crc32.Update(crc, crcTable, payload)
	binary.LittleEndian.PutUint32(h[4:8], crc)
	dst = append(dst, h[:]...)
	return append(dst, payload...)
}

// startSegment opens a fresh segment for appending. Called with mu held (or
// before the spool is shared).
func (s *Spool) startSegment() error {
	var id uint64 = 1
	if n := len(s.segs); n > 0 {
		id = s.segs[n-1].id + 1
	}
	f, err := os.OpenFile(s.path(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	if s.w != nil {
		_ = s.w.Close()
	}
	s.w = f
	s.segs = append(s.segs, &segment{id: id})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("spool: syncing directory: %w", err)
	}
	return nil
}

// Append writes one batch durably (fsync) and returns. It fails with
// ErrSpoolFull when the batch does not fit under MaxBytes.
func (s *Spool) Append(payload []byte) error {
	rec := appendRecord(make([]byte, 0, recordHeader+len(payload)), payload, time.Now())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return fmt.Errorf("spool: %w", os.ErrClosed)
	}
	if s.bytes+int64(len(rec)) > s.cfg.MaxBytes {
		s.full++
		return fmt.Errorf("spool: %d of %d bytes used: %w", s.bytes, s.cfg.MaxBytes, ErrSpoolFull)
	}
	active := s.segs[len(s.segs)-1]
	if active.size > 0 && active.size+int64(len(rec)) > s.cfg.SegmentBytes {
		if err := s.startSegment(); err != nil {
			return err
		}
		active = s.segs[len(s.segs)-1]
	}
	if _, err := s.w.Write(rec); err != nil {
		// A partial write leaves a torn record that recovery would cut;
		// cut it now so later appends stay readable.
		_ = s.w.Truncate(active.size)
		return fmt.Errorf("spool: append: %w", err)
	}
	if err := s.w.Sync(); err != nil {
		return fmt.Errorf("spool: fsync: %w", err)
	}
	active.size += int64(len(rec))
	active.records++
	s.bytes += int64(len(rec))
	s.records++
	s.appended++
	s.signal()
	return nil
}

func (s *Spool) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// Ready is signalled after appends; the reader waits on it when Peek finds
// nothing.
func (s *Spool) Ready() <-chan struct{} { return s.notify }

// Len is the number of records waiting.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.records
}

// Peek returns the oldest waiting record (copied into buf, which may be
// nil) without consuming it; ok is false when the spool is empty.
func (s *Spool) Peek(buf []byte) (payload []byte, ok bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == 0 {
		return nil, false, nil
	}
	head := s.segs[0]
	for head.records == 0 { // consumed segments are dropped in Commit; skip empties
		s.dropHead()
		head = s.segs[0]
	}
	if s.r == nil || s.rID != head.id {
		if s.r != nil {
			_ = s.r.Close()
		}
		f, err := os.Open(s.path(head.id))
		if err != nil {
			return nil, false, fmt.Errorf("spool: %w", err)
		}
		s.r, s.rID, s.rOff = f, head.id, 0
	}
	sr := io.NewSectionReader(s.r, s.rOff, head.size-s.rOff)
	p, t, _, err := readRecordTime(sr, buf)
	if err != nil {
		return nil, false, fmt.Errorf("spool: reading %s at %d: %w", s.path(head.id), s.rOff, err)
	}
	s.headTime = t
	return p, true, nil
}

// Commit consumes the record Peek returned (of payload length n). A segment
// is deleted once every record in it has been committed.
func (s *Spool) Commit(n int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == 0 {
		return errors.New("spool: commit on empty spool")
	}
	head := s.segs[0]
	size := int64(recordHeader + n)
	s.rOff += size
	head.records--
	s.records--
	s.bytes -= size
	s.replayed++
	s.headTime = time.Time{}
	if head.records == 0 {
		s.dropHead()
	}
	return nil
}

// dropHead deletes the oldest segment, all of whose records are consumed.
// The active segment is replaced by a fresh one so that it can go too.
func (s *Spool) dropHead() {
	head := s.segs[0]
	if len(s.segs) == 1 {
		if err := s.startSegment(); err != nil {
			s.log.Error("spool: cannot start a new segment", "error", err)
			return
		}
	}
	if s.r != nil && s.rID == head.id {
		_ = s.r.Close()
		s.r = nil
	}
	s.segs = s.segs[1:]
	if err := os.Remove(s.path(head.id)); err != nil {
		s.log.Error("spool: removing replayed segment", "segment", s.path(head.id), "error", err)
	}
	s.bytes -= head.size - s.consumedOf(head)
	s.rOff = 0
}

// consumedOf is the byte count of head already subtracted from s.bytes.
func (s *Spool) consumedOf(head *segment) int64 {
	if s.rID == head.id {
		return s.rOff
	}
	return 0
}

// Stats returns the spool's figures.
func (s *Spool) Stats() SpoolStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SpoolStats{
		Records: s.records, Bytes: s.bytes, MaxBytes: s.cfg.MaxBytes,
		Appended: s.appended, Replayed: s.replayed, Full: s.full, CorruptRecords: s.report.CorruptRecords,
	}
	if s.records > 0 && !s.headTime.IsZero() {
		st.OldestAge = time.Since(s.headTime)
	}
	return st
}

// Close closes the spool's files. Waiting records stay on disk for the next
// OpenSpool.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	if s.w != nil {
		err = s.w.Close()
		s.w = nil
	}
	if s.r != nil {
		_ = s.r.Close()
		s.r = nil
	}
	return err
}
