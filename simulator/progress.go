package simulator

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// progress prints the run's pulse every interval until ctx ends: on a
// terminal one line rewritten in place, otherwise one plain line each time.
func (r *runner) progress(ctx context.Context, w io.Writer, tty bool, interval time.Duration, devices int) {
	c := r.c
	t := time.NewTicker(interval)
	defer t.Stop()
	lastT := time.Now()
	lastSent, lastAcked := c.readingsSent.Load(), c.readingsAcked.Load()
	lastHist := mergedSnapshot(&c.ackWS, &c.ackMQTT)
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprint(w, "\r\x1b[K")
			}
			return
		case now := <-t.C:
			secs := now.Sub(lastT).Seconds()
			sent, acked := c.readingsSent.Load(), c.readingsAcked.Load()
			cur := mergedSnapshot(&c.ackWS, &c.ackMQTT)
			diff := *cur
			for i := range diff {
				diff[i] -= lastHist[i]
			}
			p99 := "-"
			if q := quantile(&diff, 0.99); !math.IsNaN(q) {
				p99 = fmt.Sprintf("%.1fms", q/1000)
			}
			line := fmt.Sprintf("%5.0fs  connected %d/%d  sent %.0f/s  acked %.0f/s  rejected %d  errors %d  ack p99 %s  buffered frames %d",
				now.Sub(r.start).Seconds(), c.connected.Load(), devices,
				float64(sent-lastSent)/secs, float64(acked-lastAcked)/secs,
				c.readingsRejected.Load(), c.errors.Load()+c.dialFailures.Load(), p99, c.buffered.Load())
			if tty {
				fmt.Fprint(w, "\r\x1b[K"+line)
			} else {
				fmt.Fprintln(w, line)
			}
			lastT, lastSent, lastAcked, lastHist = now, sent, acked, cur
		}
	}
}

func mergedSnapshot(hs ...*hist) *[histBuckets]uint64 {
	var s [histBuckets]uint64
	for _, h := range hs {
		for i := range s {
			s[i] += h.counts[i].Load()
		}
	}
	return &s
}
