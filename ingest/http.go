package ingest

import (
	"cmp"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/telemetryd/telemetryd/ingest/payload"
	"github.com/telemetryd/telemetryd/telemetry"
)

// HTTP ingest: one request is one frame. It shares the WebSocket
// endpoint's authenticator, payload limits, frame-rate bucket (a device's
// requests and socket frames draw on the same tokens), overload wait and
// drain state, so a device gets the same rules whichever way it comes in;
// gateway rules are the bridge's, as for every transport. A request is
// answered only once the frame's Done reports its readings durable: the
// status is the ack.
//
//   - POST /v1/ingest: any payload format (JSON native or SenML, CBOR,
//     SenML-CBOR, line protocol in nanoseconds); answers in the device
//     protocol's shapes (Ingest).
//   - POST /api/v2/write and POST /write: line protocol, answered like
//     InfluxDB 2.x and 1.x answer (WriteV2, WriteV1).

// Codes of HTTP ingest refusals in the device protocol's error shape.
const (
	CodeUnauthorized    = "unauthorized"
	CodePayloadTooLarge = "payload_too_large"
	CodeBadEncoding     = "unsupported_encoding"
)

// HTTPStats are the HTTP endpoints' counters.
type HTTPStats struct {
	Requests, Unauthorized, TooLarge, Invalid uint64
	RateLimited, Overloaded, NotStored        uint64
	ReadingsAccepted, ReadingsRejected, Acked uint64
}

// HTTP serves the HTTP ingest endpoints. Build it with NewHTTP.
type HTTP struct {
	ws  *WS
	log *slog.Logger

	requests, unauthorized, tooLarge, invalid atomic.Uint64
	rateLimited, overloaded, notStored        atomic.Uint64
	readingsAccepted, readingsRejected, acked atomic.Uint64

	// bodies holds request-body buffers (*[]byte) for reuse: a body is
	// needed only until it is decoded, as the decoders copy what they keep.
	// Bounded by maxPooledBody per buffer; the pool drops idle ones.
	bodies sync.Pool
}

// maxPooledBody: a buffer grown past this by a large body is not kept.
const maxPooledBody = 1 << 20

// NewHTTP returns the HTTP endpoints of ws's devices: same authenticator,
// limits (the body may be as large as a WebSocket frame), rate bucket and
// consumer.
func NewHTTP(ws *WS, log *slog.Logger) *HTTP { return &HTTP{ws: ws, log: log} }

// Stats returns the counters.
func (h *HTTP) Stats() HTTPStats {
	return HTTPStats{
		Requests: h.requests.Load(), Unauthorized: h.unauthorized.Load(), TooLarge: h.tooLarge.Load(),
		Invalid: h.invalid.Load(), RateLimited: h.rateLimited.Load(), Overloaded: h.overloaded.Load(),
		NotStored: h.notStored.Load(), ReadingsAccepted: h.readingsAccepted.Load(),
		ReadingsRejected: h.readingsRejected.Load(), Acked: h.acked.Load(),
	}
}

// takeFrame takes a token from id's frame-rate bucket, the one its
// sockets use, or says how long until one is there.
func (w *WS) takeFrame(id telemetry.DeviceID, now time.Time) (bool, time.Duration) {
	w.slotMu.Lock()
	s := w.slots[id]
	if s == nil { // swept with the sockets' slots once refilled
		s = &deviceSlot{tokens: float64(w.cfg.FrameBurst), last: now}
		w.slots[id] = s
	}
	w.slotMu.Unlock()
	return s.take(now, w.cfg)
}

// refusal is why a request was not consumed, in terms each dialect
// words its own way.
type refusal struct {
	status     int
	code       string // device protocol code
	msg        string
	retryAfter time.Duration
	seq        *uint64 // the frame's seq, when known (device protocol only)
}

func (r *refusal) Error() string { return r.msg }

// result is a consumed frame's answer.
type result struct {
	seq      *uint64
	accepted int
	// rejected lists every refused reading by index: the decoder's (which
	// the consumer's Receipt reports with its own), validation's and
	// storage's. unparsed says whether the decoder refused any.
	rejected []telemetry.Rejection
	unparsed bool
}

// admit authenticates the request (token from cred), checks the device
// is active and takes a rate token.
func (h *HTTP) admit(r *http.Request, token string) (telemetry.DeviceID, *refusal) {
	w := h.ws
	h.requests.Add(1)
	if w.draining.Load() {
		return "", &refusal{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server is shutting down", retryAfter: 5 * time.Second}
	}
	id, err := w.auth.AuthenticateDevice(r.Context(), token)
	if err != nil || (w.cfg.Devices != nil && !w.cfg.Devices.Active(id)) {
		h.unauthorized.Add(1)
		h.log.Debug("device authentication failed", "remote", r.RemoteAddr) // never the token
		return "", &refusal{status: http.StatusUnauthorized, code: CodeUnauthorized, msg: "a valid device token is required"}
	}
	if ok, wait := w.takeFrame(id, time.Now()); !ok {
		h.rateLimited.Add(1)
		return "", &refusal{status: http.StatusTooManyRequests, code: CodeRateLimited, msg: "request rate limit exceeded; resend later", retryAfter: max(wait, time.Millisecond)}
	}
	return id, nil
}

// readBody reads the request body, inflating gzip, within the frame size,
// into a pooled buffer. The caller hands the buffer back with putBody once
// the body is decoded, and must not use the body after that.
func (h *HTTP) readBody(rw http.ResponseWriter, r *http.Request) ([]byte, *[]byte, *refusal) {
	limit := int64(h.ws.cfg.MaxFrameSize)
	var body io.Reader = http.MaxBytesReader(rw, r.Body, limit)
	size := int64(512)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		if r.ContentLength > 0 {
			size = min(r.ContentLength, limit) + 1 // +1: the read that sees EOF
		}
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, nil, h.bodyError(err)
		}
		defer zr.Close()
		body = zr
	default:
		return nil, nil, &refusal{status: http.StatusUnsupportedMediaType, code: CodeBadEncoding, msg: fmt.Sprintf("Content-Encoding %q is not supported; send gzip or nothing", enc)}
	}
	buf, _ := h.bodies.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	// The inflated body is held to the same bound as what was sent.
	data, err := readAll(slices.Grow((*buf)[:0], int(size)), io.LimitReader(body, limit+1))
	*buf = data
	if err == nil && int64(len(data)) > limit {
		err = &http.MaxBytesError{Limit: limit}
	}
	if err != nil {
		h.putBody(buf)
		return nil, nil, h.bodyError(err)
	}
	return data, buf, nil
}

// putBody hands a body buffer back for reuse, unless it grew too large.
func (h *HTTP) putBody(buf *[]byte) {
	if cap(*buf) > maxPooledBody {
		return
	}
	*buf = (*buf)[:0]
	h.bodies.Put(buf)
}

// readAll is io.ReadAll appending to b.
func readAll(b []byte, r io.Reader) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

func (h *HTTP) bodyError(err error) *refusal {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		h.tooLarge.Add(1)
		return &refusal{status: http.StatusRequestEntityTooLarge, code: CodePayloadTooLarge, msg: fmt.Sprintf("body larger than %d bytes", tooBig.Limit)}
	}
	h.invalid.Add(1)
	return &refusal{status: http.StatusBadRequest, code: CodeInvalidPayload, msg: "unreadable body: " + err.Error()}
}

// decodeError maps a frame-level decode error.
func (h *HTTP) decodeError(err error) *refusal {
	h.invalid.Add(1)
	code := CodeInvalidPayload
	if errors.Is(err, payload.ErrTooManyReadings) {
		code = CodeTooManyReadings
	}
	return &refusal{status: http.StatusBadRequest, code: code, msg: err.Error()}
}

// consume hands the frame to the pipeline and waits for its Done.
func (h *HTTP) consume(ctx context.Context, id telemetry.DeviceID, msg payload.Message, received time.Time) (result, *refusal) {
	w := h.ws
	res := result{seq: answerSeq(msg), unparsed: len(msg.Invalid) > 0}
	done := make(chan telemetry.Outcome, 1) // Done never blocks
	f := &telemetry.Frame{
		Device: id, Readings: msg.Readings, Invalid: msg.Invalid, Skipped: msg.Skipped,
		Received: received, Done: func(o telemetry.Outcome) { done <- o },
	}
	wait, cancel := context.WithTimeout(ctx, w.cfg.OverloadWait)
	rcpt, err := w.next.Consume(wait, f)
	cancel()
	switch {
	case errors.Is(err, telemetry.ErrOverloaded):
		h.overloaded.Add(1)
		return res, &refusal{status: http.StatusServiceUnavailable, code: CodeOverloaded, msg: "the service is overloaded; resend later", retryAfter: time.Second}
	case errors.Is(err, telemetry.ErrClosed):
		return res, &refusal{status: http.StatusServiceUnavailable, code: CodeShuttingDown, msg: "server is shutting down; resend later", retryAfter: 5 * time.Second}
	case err != nil:
		h.log.Error("consume failed", "device", id, "error", err)
		return res, &refusal{status: http.StatusInternalServerError, code: "internal", msg: "internal error"}
	}
	var o telemetry.Outcome
	select {
	case o = <-done:
	case <-ctx.Done(): // the client left; the frame's fate is the pipeline's
		return res, &refusal{status: http.StatusServiceUnavailable, code: CodeNotStored, msg: "request cancelled"}
	}
	if o.Err != nil {
		h.notStored.Add(1)
		return res, &refusal{status: http.StatusServiceUnavailable, code: CodeNotStored, msg: "readings were not stored; resend them", retryAfter: time.Second}
	}
	res.rejected = mergeRejections(rcpt.Rejected, o.Rejected)
	res.accepted = rcpt.Accepted - len(o.Rejected)
	h.acked.Add(1)
	h.readingsAccepted.Add(uint64(max(res.accepted, 0)))
	h.readingsRejected.Add(uint64(len(res.rejected)))
	return res, nil
}

// retryAfter sets Retry-After in whole seconds, rounded up.
func retryAfter(rw http.ResponseWriter, d time.Duration) {
	if d > 0 {
		rw.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(d.Seconds()))))
	}
}

// Ingest returns the handler of POST /v1/ingest. Its answers use the
// WebSocket error frames' shape:
//
//	200 {"ack":7,"accepted":2,"error":{"seq":7,"code":"rejected","message":"1 reading(s) rejected","rejected":[{"index":1,...}]}}
//	4xx/5xx {"error":{"seq":7,"code":"rate_limited","message":"...","retry_after_ms":250}} (+ Retry-After)
//
// "ack" is there when the payload had a seq; "error" when readings were
// rejected. The token is "Authorization: Bearer …" or "?token=".
func (h *HTTP) Ingest() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		received := time.Now()
		id, ref := h.admit(r, telemetry.BearerToken(r))
		if ref == nil {
			var data []byte
			var buf *[]byte
			if data, buf, ref = h.readBody(rw, r); ref == nil {
				dec := h.ws.decoders.Get().(*payload.Decoder)
				msg, err := dec.Decode(data, received)
				h.ws.decoders.Put(dec)
				h.putBody(buf) // Decode keeps nothing of data
				if err != nil {
					ref = h.decodeError(err)
					ref.seq = answerSeq(msg) // recovered from the malformed payload, when it could be
				} else {
					var res result
					if res, ref = h.consume(r.Context(), id, msg, received); ref == nil {
						writeIngestOK(rw, res)
						return
					}
					ref.seq = res.seq
				}
			}
		}
		retryAfter(rw, ref.retryAfter)
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(ref.status)
		_ = json.NewEncoder(rw).Encode(errorFrame{Error: errorFrameBody{Seq: ref.seq, Code: ref.code, Message: telemetry.ClipMessage(ref.msg), RetryAfterMS: ref.retryAfter.Milliseconds()}})
	})
}

type ingestOK struct {
	Ack      *uint64         `json:"ack,omitempty"`
	Accepted int             `json:"accepted"`
	Error    *errorFrameBody `json:"error,omitempty"`
}

func writeIngestOK(rw http.ResponseWriter, res result) {
	body := ingestOK{Ack: res.seq, Accepted: res.accepted}
	if all := res.rejected; len(all) > 0 {
		body.Error = &errorFrameBody{Seq: res.seq, Code: CodeRejected, Message: strconv.Itoa(len(all)) + " reading(s) rejected", Rejected: all}
	}
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(rw).Encode(body)
}

// mergeRejections lists the rejections of both lists by index.
func mergeRejections(a, b []telemetry.Rejection) []telemetry.Rejection {
	if len(b) == 0 {
		return a
	}
	out := append(slices.Clip(a), b...)
	slices.SortStableFunc(out, func(x, y telemetry.Rejection) int { return cmp.Compare(x.Index, y.Index) })
	return out
}

// influxDialect is how an InfluxDB version words its answers.
type influxDialect int

const (
	influxV1 influxDialect = iota // {"error":"..."}
	influxV2                      // {"code":"invalid","message":"..."}
)

// WriteV2 returns the handler of InfluxDB 2.x's POST /api/v2/write
// (?org=&bucket=&precision=, "Authorization: Token <device token>"). org
// and bucket are required, as by InfluxDB, and otherwise ignored: the
// device's readings go where all readings go.
func (h *HTTP) WriteV2() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("bucket") == "" {
			h.requests.Add(1)
			writeInflux(rw, influxV2, &refusal{status: http.StatusBadRequest, code: "invalid", msg: "bucket not specified"})
			return
		}
		h.write(rw, r, influxV2, influxToken(r))
	})
}

// WriteV1 returns the handler of InfluxDB 1.x's POST /write (?db=&
// precision=; the token as ?p=, as a basic-auth password, or in
// "Authorization: Token|Bearer"). db is required and otherwise ignored.
func (h *HTTP) WriteV1() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("db") == "" {
			h.requests.Add(1)
			writeInflux(rw, influxV1, &refusal{status: http.StatusBadRequest, msg: "database is required"})
			return
		}
		token := influxToken(r)
		if token == "" {
			token = r.URL.Query().Get("p")
		}
		h.write(rw, r, influxV1, token)
	})
}

// influxToken reads "Authorization: Token x" (InfluxDB 2.x), "Bearer x" or
// basic auth's password (Telegraf's outputs.influxdb, InfluxDB 1.x).
func influxToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	for _, scheme := range []string{"token ", "bearer "} {
		if len(h) > len(scheme) && strings.EqualFold(h[:len(scheme)], scheme) {
			return strings.TrimSpace(h[len(scheme):])
		}
	}
	if len(h) > 6 && strings.EqualFold(h[:6], "basic ") {
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[6:])); err == nil {
			if _, p, ok := strings.Cut(string(b), ":"); ok {
				return p
			}
		}
	}
	return ""
}

// write serves a line-protocol write in the given dialect. Like InfluxDB:
// 204 once every point is durable; a line that does not parse, or a point
// refused by validation or storage, is dropped alone while the rest is
// written, and the answer is then a partial write (400 "invalid" when a
// line did not parse, else 422 in 2.x and 400 in 1.x, naming the points).
func (h *HTTP) write(rw http.ResponseWriter, r *http.Request, dialect influxDialect, token string) {
	received := time.Now()
	unit, err := payload.ParsePrecision(r.URL.Query().Get("precision"))
	if err != nil {
		h.requests.Add(1)
		writeInflux(rw, dialect, &refusal{status: http.StatusBadRequest, code: "invalid", msg: err.Error()})
		return
	}
	id, ref := h.admit(r, token)
	if ref != nil {
		writeInflux(rw, dialect, ref)
		return
	}
	data, buf, ref := h.readBody(rw, r)
	if ref != nil {
		writeInflux(rw, dialect, ref)
		return
	}
	dec := h.ws.decoders.Get().(*payload.Decoder)
	msg, err := dec.DecodeLineProtocol(data, unit)
	h.ws.decoders.Put(dec)
	h.putBody(buf) // DecodeLineProtocol copies every string it keeps
	if err != nil {
		writeInflux(rw, dialect, h.decodeError(err))
		return
	}
	if len(msg.Readings) == 0 { // nothing but blank lines and comments
		rw.WriteHeader(http.StatusNoContent)
		return
	}
	res, ref := h.consume(r.Context(), id, msg, received)
	if ref != nil {
		writeInflux(rw, dialect, ref)
		return
	}
	all := res.rejected
	if len(all) == 0 {
		rw.WriteHeader(http.StatusNoContent)
		return
	}
	ref = &refusal{status: http.StatusBadRequest, code: "invalid", msg: partialWrite(all)}
	if !res.unparsed && dialect == influxV2 {
		ref.status, ref.code = http.StatusUnprocessableEntity, "unprocessable entity"
	}
	writeInflux(rw, dialect, ref)
}

// partialWrite words dropped points like InfluxDB: "partial write: … dropped=N".
func partialWrite(rej []telemetry.Rejection) string {
	const maxNamed = 10
	var b strings.Builder
	b.WriteString("partial write:")
	for i, r := range rej {
		if i == maxNamed {
			fmt.Fprintf(&b, " (and %d more);", len(rej)-maxNamed)
			break
		}
		fmt.Fprintf(&b, " point %d: %s (%s);", r.Index+1, r.Message, r.Code)
	}
	fmt.Fprintf(&b, " dropped=%d", len(rej))
	return b.String()
}

// influxCodes are InfluxDB 2.x's error codes for our statuses.
var influxCodes = map[int]string{
	http.StatusBadRequest:            "invalid",
	http.StatusUnauthorized:          "unauthorized",
	http.StatusRequestEntityTooLarge: "request too large",
	http.StatusUnsupportedMediaType:  "unsupported media type",
	http.StatusUnprocessableEntity:   "unprocessable entity",
	http.StatusTooManyRequests:       "too many requests",
	http.StatusServiceUnavailable:    "unavailable",
	http.StatusInternalServerError:   "internal error",
}

// writeInflux answers a refusal in InfluxDB's shape for the dialect.
func writeInflux(rw http.ResponseWriter, dialect influxDialect, ref *refusal) {
	retryAfter(rw, ref.retryAfter)
	rw.Header().Set("Content-Type", "application/json; charset=utf-8")
	if dialect == influxV1 {
		rw.Header().Set("X-Influxdb-Error", ref.msg)
	}
	rw.WriteHeader(ref.status)
	if dialect == influxV1 {
		_ = json.NewEncoder(rw).Encode(struct {
			Error string `json:"error"`
		}{ref.msg})
		return
	}
	_ = json.NewEncoder(rw).Encode(struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{influxCodes[ref.status], ref.msg})
}
