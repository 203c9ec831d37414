package live

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/lxzan/gws"
)

// permessage-deflate on /v1/live. A client that offers the extension
// (RFC 7692) gets it, without context takeover on either side: every
// message is compressed on its own, so one compressed frame is valid for
// every subscriber it is shared with, and a socket keeps no compression
// window. A client that does not offer it is served exactly as before.
//
// The Hub encodes one frame per subscription shape and hands the same slice
// to every matching client. For compressing sockets that frame goes through
// a gws.Broadcaster, which compresses it once and writes the same bytes to
// every socket; broadcasters are found by the frame's identity (the
// address and length of its bytes) in a small cache, which also keeps
// the frame alive so the address cannot be reused while it is looked up.

// compressThreshold is the smallest message that is compressed: below it
// deflate saves too little to pay for itself.
const compressThreshold = 128

// deflateOption is the gws setting for DashboardConfig.DisableCompression.
func deflateOption(disabled bool) gws.PermessageDeflate {
	return gws.PermessageDeflate{
		Enabled:   !disabled,
		Threshold: compressThreshold,
		// No context takeover: shared frames, and no per-socket window.
		ServerContextTakeover: false,
		ClientContextTakeover: false,
	}
}

// offersDeflate mirrors gws's negotiation: the extension is accepted when
// the client's offer names it.
func offersDeflate(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate")
}

// broadcasters shares one gws.Broadcaster per recent frame.
type broadcasters struct {
	mu      sync.Mutex
	recent  [broadcasterCacheSize]cachedFrame
	next    int
	byFrame map[frameID]*gws.Broadcaster

	compressed atomic.Uint64 // frames compressed (once each)
}

// broadcasterCacheSize is how many frames are remembered: the Hub sends one
// batch's frames (one per subscription shape) to all clients before the next
// batch, so this only has to cover the shapes of one batch.
const broadcasterCacheSize = 256

type frameID struct {
	p *byte
	n int
}

type cachedFrame struct {
	id    frameID
	frame []byte // keeps the frame's memory (and so its address) alive
	b     *gws.Broadcaster
}

// get returns the broadcaster of frame, making one when it is new.
func (c *broadcasters) get(frame []byte) *gws.Broadcaster {
	id := frameID{&frame[0], len(frame)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.byFrame[id]; ok {
		return b
	}
	if c.byFrame == nil {
		c.byFrame = make(map[frameID]*gws.Broadcaster, broadcasterCacheSize)
	}
	old := &c.recent[c.next]
	if old.b != nil {
		delete(c.byFrame, old.id)
		_ = old.b.Close() // its queued writes still complete
	}
	b := gws.NewBroadcaster(gws.OpcodeText, frame)
	*old = cachedFrame{id: id, frame: frame, b: b}
	c.byFrame[id] = b
	c.next = (c.next + 1) % broadcasterCacheSize
	c.compressed.Add(1)
	return b
}

// write queues frame on c's socket and calls done once it is written (or
// failed): shared through a broadcaster when c compresses.
func (d *Dashboards) write(c *dashConn, frame []byte, done func(error)) {
	if !c.deflate || len(frame) < compressThreshold {
		c.conn.WriteAsync(gws.OpcodeText, frame, done)
		return
	}
	if err := d.shared.get(frame).Broadcast(c.conn); err != nil {
		done(err)
		return
	}
	// The socket's write queue runs one task at a time, in order: this
	// runs once the broadcast frame is written (a failed write closes the
	// socket, so it counts as written here).
	c.conn.Async(func() { done(nil) })
}

// CompressedFrames is how many distinct frames were compressed for
// compressing dashboards (each once, however many sockets it went to).
func (d *Dashboards) CompressedFrames() uint64 { return d.shared.compressed.Load() }
