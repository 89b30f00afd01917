// Package simtest is what the tests of the simulator and of the programs run
// against it share. Production code never imports it (.ci/run checks).
package simtest

import (
	"testing"
	"time"
)

// pollEvery is short next to the simulator's transitions at test speed and
// long enough not to starve the process under test on a small machine.
const pollEvery = 10 * time.Millisecond

// Eventually calls cond until it reports true, and fails the test once bound
// has passed, saying what it waited for and the state cond last observed.
// bound is a limit for a wedged test, not a timing the test relies on: to
// catch an intermediate state, hold it with sim.Region.Hold instead.
//
// A t that has an Abandoned() bool method (a recording TB that runs a
// scenario expected to fail, and already has its outcome) fails the wait as
// soon as it reports true, instead of waiting out the bound.
func Eventually(t testing.TB, bound time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(bound)
	ab, _ := t.(interface{ Abandoned() bool })
	for {
		ok, state := cond()
		if ok {
			return
		}
		if ab != nil && ab.Abandoned() {
			t.Fatalf("%s: not waited for, the test has its outcome; last observed: %s", what, state)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s; last observed: %s", what, bound, state)
			return // a real t does not come back from Fatalf; a recording one does
		}
		time.Sleep(pollEvery)
	}
}
