package ingest

// Answers of a device socket leave in frame order (the README's promise):
// a frame's answers — its error frame, its ack, the storage's rejections —
// wait until every earlier frame of the socket is answered. A frame whose
// readings were all rejected is completed at once by the pipeline; without
// this, its answers would overtake the ack of an earlier frame still being
// written.
//
// Exception: back-pressure refusals — overloaded, rate_limited,
// shutting_down — leave at once. They carry no ack (the frame was not
// consumed; the device resends it), and they must reach the device while
// it matters: when the pipeline is full, the earlier frames they would
// wait behind are exactly the ones that cannot complete yet.
//
// Each frame handed to the pipeline holds a slot in the socket's answer
// list, in receive order. A slot has two parts: what the read loop says
// once Consume returns (the receipt's rejections, or the refusal), and
// what the frame's Done callback says (ack, not_stored, storage
// rejections); Done may run before Consume returns, so the parts are kept
// apart and sent in that order. Answers to frames that never reach the
// pipeline (invalid, rate limited) take no slot when nothing waits ahead
// of them, otherwise a completed one.
//
// Bound and policy: at most maxPendingMsgs slots wait per socket; one
// more aborts the socket as the outgoing queue's bound does (wswriter.go).
// Completions never block: they only append to the slot and queue what is
// releasable.

// answerSlot is one frame's place in its socket's answer order. Guarded by
// the deviceConn's ansMu.
type answerSlot struct {
	pre, post         [][]byte // read-loop answers, then Done's
	preDone, postDone bool
	sentPre, sentPost int // of pre and post, already queued for writing
	// ack: post starts with {"ack":ackSeq}, not yet queued. An ack is
	// nearly every frame's only answer, so it is kept as its seq and
	// written straight into the frame (wswriter.go), not allocated.
	ack    bool
	ackSeq uint64
}

func (s *answerSlot) complete() bool { return s.preDone && s.postDone }

// reserve gives s the next place in the answer order. withDone says
// whether the frame's Done callback will add to it.
func (c *deviceConn) reserve(s *answerSlot, withDone bool) {
	s.postDone = !withDone
	c.ansMu.Lock()
	if len(c.answers) >= maxPendingMsgs {
		c.ansMu.Unlock()
		c.overflow()
		return
	}
	c.answers = append(c.answers, s)
	c.ansMu.Unlock()
}

// answerPre adds the read loop's answers to s and completes its first part.
func (c *deviceConn) answerPre(s *answerSlot, msgs ...[]byte) {
	c.ansMu.Lock()
	s.pre = append(s.pre, msgs...)
	s.preDone = true
	c.releaseAnswers()
	c.ansMu.Unlock()
}

// answerPost adds Done's answers to s and completes its second part.
func (c *deviceConn) answerPost(s *answerSlot, msgs ...[]byte) {
	c.ansMu.Lock()
	s.post = append(s.post, msgs...)
	s.postDone = true
	c.releaseAnswers()
	c.ansMu.Unlock()
}

// ackPost is answerPost with {"ack":seq} ahead of msgs.
func (c *deviceConn) ackPost(s *answerSlot, seq uint64, msgs ...[]byte) {
	c.ansMu.Lock()
	s.ack, s.ackSeq = true, seq
	s.post = append(s.post, msgs...)
	s.postDone = true
	c.releaseAnswers()
	c.ansMu.Unlock()
}

// answerNow answers a frame that took no slot: at once when nothing waits
// ahead of it, else behind the waiting ones.
func (c *deviceConn) answerNow(msg []byte) {
	c.ansMu.Lock()
	if len(c.answers) == 0 {
		c.ansMu.Unlock()
		c.send(msg)
		return
	}
	if len(c.answers) >= maxPendingMsgs {
		c.ansMu.Unlock()
		c.overflow()
		return
	}
	c.answers = append(c.answers, &answerSlot{pre: [][]byte{msg}, preDone: true, postDone: true})
	c.ansMu.Unlock()
}

// releaseAnswers queues what the head of the answer list may send: the
// head slot's answers so far and every completed slot's. ansMu is held,
// so answers are queued in order.
func (c *deviceConn) releaseAnswers() {
	n := 0
	for _, s := range c.answers {
		if s.preDone {
			for ; s.sentPre < len(s.pre); s.sentPre++ {
				c.send(s.pre[s.sentPre])
			}
			if s.postDone {
				if s.ack {
					s.ack = false
					c.sendAck(s.ackSeq)
				}
				for ; s.sentPost < len(s.post); s.sentPost++ {
					c.send(s.post[s.sentPost])
				}
			}
		}
		if !s.complete() {
			break
		}
		s.pre, s.post = nil, nil
		n++
	}
	if n > 0 {
		clear(c.answers[:n])
		if n == len(c.answers) {
			c.answers = c.answers[:0] // reuse the array rather than walk off its end
		} else {
			c.answers = c.answers[n:]
		}
	}
}

// answerFinal completes both parts of s: the frame was refused and its
// Done will not be called.
func (c *deviceConn) answerFinal(s *answerSlot, msgs ...[]byte) {
	c.ansMu.Lock()
	s.pre = append(s.pre, msgs...)
	s.preDone, s.postDone = true, true
	c.releaseAnswers()
	c.ansMu.Unlock()
}

// ackFinal completes both parts of s with {"ack":seq} between pre and
// post: a resend of a stored frame, whose Done will not be called.
func (c *deviceConn) ackFinal(s *answerSlot, seq uint64, pre, post [][]byte) {
	c.ansMu.Lock()
	s.ack, s.ackSeq = true, seq
	s.pre = append(s.pre, pre...)
	s.post = append(s.post, post...)
	s.preDone, s.postDone = true, true
	c.releaseAnswers()
	c.ansMu.Unlock()
}
