package wait

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// schedule runs Poll with check answering errs in turn (nil: not done yet) and returns the intervals
// Poll waited between the checks.
func schedule(t *testing.T, spec Spec, errs []error) []time.Duration {
	t.Helper()
	var got []time.Duration
	after = func(d time.Duration) <-chan time.Time {
		got = append(got, d)
		c := make(chan time.Time, 1)
		c <- time.Now()
		return c
	}
	t.Cleanup(func() { after = time.After })
	n := 0
	err := Poll(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), spec, func(context.Context) (bool, string, error) {
		if n == len(errs) {
			return true, "", nil
		}
		n++
		return false, "", errs[n-1]
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

var errThrottled = errors.New("throttled")

func TestPollSlowsDownUnderThrottling(t *testing.T) {
	spec := Spec{What: "x", Bound: time.Hour, Initial: 100 * time.Millisecond, Max: 100 * time.Millisecond,
		Transient: func(err error) bool { return errors.Is(err, errThrottled) }}
	thr := errThrottled
	got := schedule(t, spec, []error{nil, thr, thr, thr, thr, thr, thr, nil, nil, nil, nil, nil})
	// The interval is 100 ms ±20%; the pressure multiplies it: 1, 2, 4, 8, 16, 16, 16, then halves.
	want := []int{1, 2, 4, 8, 16, 16, 16, 8, 4, 2, 1, 1}
	if len(got) != len(want) {
		t.Fatalf("%d waits, want %d: %v", len(got), len(want), got)
	}
	for i, d := range got {
		lo := time.Duration(want[i]) * 80 * time.Millisecond
		hi := time.Duration(want[i]) * 120 * time.Millisecond
		if d < lo || d > hi {
			t.Errorf("wait %d: %s, want %d × 100 ms ±20%% (all: %v)", i, d, want[i], got)
		}
	}
}

func TestPollStopsOnAnErrorThatIsNotTransient(t *testing.T) {
	boom := errors.New("boom")
	err := Poll(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), Spec{What: "x", Bound: time.Hour,
		Transient: func(err error) bool { return errors.Is(err, errThrottled) }},
		func(context.Context) (bool, string, error) { return false, "", boom })
	if !errors.Is(err, boom) {
		t.Fatalf("Poll returned %v, want boom", err)
	}
}

func TestPollTimesOut(t *testing.T) {
	err := Poll(context.Background(), slog.New(slog.NewTextHandler(io.Discard, nil)), Spec{What: "x", Bound: 30 * time.Millisecond, Initial: time.Millisecond, Max: time.Millisecond},
		func(context.Context) (bool, string, error) { return false, "still", nil })
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Poll returned %v, want ErrTimeout", err)
	}
}
