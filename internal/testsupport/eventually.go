package testsupport

import (
	"testing"
	"time"
)

// Eventually re-checks quickly at first, then backs off to maxPoll: a
// condition that holds soon is seen soon, and a slow one (often an HTTP
// query) does not spin a loaded machine.
const minPoll, maxPoll = time.Millisecond, 20 * time.Millisecond

// Eventually polls cond until it holds, failing the test when it still
// does not after timeout. what names the awaited condition in the failure.
// It proves that something happens; to prove that something does not,
// use a deterministic signal or testing/synctest, never a wait.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for wait := minPoll; !cond(); wait = min(2*wait, maxPoll) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(wait)
	}
}
