package simtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB whose Fatalf records the message instead of ending the test.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

func (r *recorder) Fatalf(format string, args ...any) { r.failed = fmt.Sprintf(format, args...) }

func TestEventuallyReturnsOnceTheConditionHolds(t *testing.T) {
	calls := 0
	rec := &recorder{TB: t}
	Eventually(rec, time.Minute, "third call", func() (bool, string) {
		calls++
		return calls == 3, fmt.Sprintf("call %d", calls)
	})
	if rec.failed != "" || calls != 3 {
		t.Fatalf("after %d calls: failed %q, want success on the third", calls, rec.failed)
	}
}

func TestEventuallyFailsWithTheLastObservedState(t *testing.T) {
	rec := &recorder{TB: t}
	calls := 0
	// A zero bound fails after the first look, without waiting.
	Eventually(rec, 0, "volume available", func() (bool, string) {
		calls++
		return false, "state creating"
	})
	if calls != 1 || !strings.Contains(rec.failed, "volume available") || !strings.Contains(rec.failed, "last observed: state creating") {
		t.Fatalf("after %d calls the failure said %q, want the wait and the last state", calls, rec.failed)
	}
}
