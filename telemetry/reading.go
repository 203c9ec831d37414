package telemetry

import (
	"context"
	"errors"
	"time"
)

// DeviceID identifies a device or gateway. It comes from the credential the
// device authenticated with (or the broker-enforced topic), never from a
// payload's say-so.
type DeviceID string

// Tag is one key/value label of a reading's series.
type Tag struct {
	Key, Value string
}

// Field is one named, typed value of a reading. Unit is the unit the value
// is expressed in ("" when none was declared).
type Field struct {
	Name  string
	Value Value
	Unit  string
}

// Reading is one point: what one device measured at one instant.
// Time is Unix nanoseconds; 0 means the device gave no time and the bridge
// assigns the receive time.
type Reading struct {
	Device      DeviceID
	Measurement string
	Tags        []Tag
	Fields      []Field
	Time        int64
}

// Rejection says why one reading of a frame was not accepted.
// Index is the reading's position in the frame (-1 for the whole frame).
type Rejection struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Outcome is delivered once per accepted frame, when its fate is known.
// Err is nil when every accepted reading is durable; Rejected lists readings
// the storage refused permanently (they are not durable, and never will be).
type Outcome struct {
	Err      error
	Rejected []Rejection
}

// Frame is one message from one device: the readings it carried and the
// callback through which the pipeline acknowledges it.
type Frame struct {
	// Device is the authenticated sender (a gateway for gateway frames).
	Device DeviceID
	// Readings are the decoded readings. The consumer owns them.
	Readings []Reading
	// Invalid lists readings the decoder already rejected, sorted by Index;
	// their slots in Readings are zero placeholders that consumers skip.
	Invalid []Rejection
	// Skipped lists slots (sorted) that carry no reading at all, such as
	// SenML records that only set base values; consumers ignore them.
	Skipped []int
	// Received is when the transport read the frame.
	Received time.Time
	// Done, when not nil, is called exactly once if Consume returned nil:
	// after every accepted reading is durable (Outcome.Err == nil) or has
	// failed for good. It is called from a pipeline goroutine and must not
	// block for long.
	Done func(Outcome)
}

// Receipt is Consume's synchronous answer: how many readings were accepted
// and which were rejected during validation.
type Receipt struct {
	Accepted int
	Rejected []Rejection
}

// Consumer accepts frames from upstream.
//
// Consume validates the frame and queues its accepted readings. It may block
// until ctx is done when the pipeline is full; it then returns an error
// wrapping ErrOverloaded. On a nil error f.Done is called exactly once later
// (immediately, if nothing was accepted). On a non-nil error f.Done is never
// called and nothing of the frame was accepted.
//
// Consume takes f over: it may rewrite f.Readings and their Tags in place
// (normalization), also when it returns an error, so a frame is consumed at
// most once; a caller that wants to retry decodes the payload again.
type Consumer interface {
	Consume(ctx context.Context, f *Frame) (Receipt, error)
}

// ConsumerFunc adapts a function to Consumer.
type ConsumerFunc func(ctx context.Context, f *Frame) (Receipt, error)

// Consume calls fn(ctx, f).
func (fn ConsumerFunc) Consume(ctx context.Context, f *Frame) (Receipt, error) { return fn(ctx, f) }

// Pipeline error vocabulary, shared so that no stage imports another to
// classify an error. Check with errors.Is.
var (
	// ErrOverloaded: the consumer is full; back off and retry later.
	ErrOverloaded = errors.New("overloaded")
	// ErrPermanent: retrying the same input will fail again.
	ErrPermanent = errors.New("permanent failure")
	// ErrClosed: the consumer is shutting down and accepts nothing more.
	ErrClosed = errors.New("closed")
	// ErrUnauthorized: a credential is unknown, revoked or not allowed.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrInvalidID: a string does not have the form of a device id.
	ErrInvalidID = errors.New("invalid device id")
)
