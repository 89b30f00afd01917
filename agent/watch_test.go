package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim/simtest"
)

// scriptedMonitor answers observe from a script, repeating its last step.
type scriptedMonitor struct {
	name  string
	steps []scriptStep
	i     int
}

type scriptStep struct {
	state string
	n     *notice
	err   error
}

func (m *scriptedMonitor) source() string { return m.name }

func (m *scriptedMonitor) observe(context.Context) (string, *notice, error) {
	s := m.steps[min(m.i, len(m.steps)-1)]
	m.i++
	return s.state, s.n, s.err
}

var errHiccup = errors.New("imds: connection refused")

func terminatedNotice() *notice {
	return &notice{Source: "lifecycle", Detail: "terminating", Occ: lifecycleOccasion("i-0abc")}
}

// syncBuffer is a log sink safe for the handler's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTestWatcher(t *testing.T, statePath string, monitors []monitor, handle func(context.Context, notice) error) (*watcher, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	st, err := loadWatchState(log, statePath, "i-0abc")
	if err != nil {
		t.Fatal(err)
	}
	return newWatcher(log, monitors, time.Millisecond, st, false, handle), logs
}

func countLines(logs, substr string) int {
	n := 0
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// TestWatcherRunsDownOncePerEvent: the notice stays up for many polls, with IMDS hiccups in between;
// down runs once, and a watcher restarted on the same state file does not run it again.
func TestWatcherRunsDownOncePerEvent(t *testing.T) {
	t.Parallel()
	statePath := filepath.Join(t.TempDir(), "state", "watch.json")
	var downs int
	handle := func(context.Context, notice) error { downs++; return nil }
	mon := &scriptedMonitor{name: "lifecycle", steps: []scriptStep{
		{state: "target InService"},
		{err: errHiccup},
		{err: errHiccup},
		{state: "target InService"},
		{state: "target Terminated", n: terminatedNotice()},
		{err: errHiccup},
		{state: "target Terminated", n: terminatedNotice()},
	}}
	w, logs := newTestWatcher(t, statePath, []monitor{mon}, handle)
	for range 12 {
		w.tick(context.Background())
	}
	if downs != 1 {
		t.Fatalf("down ran %d times, want 1", downs)
	}
	out := logs.String()
	// One line per state change, not per poll: InService, Terminated; one line per outage start and end.
	if n := countLines(out, "state changed"); n != 2 {
		t.Errorf("%d state-change lines, want 2:\n%s", n, out)
	}
	if n := countLines(out, "cannot read the notice"); n != 2 {
		t.Errorf("%d outage lines, want 2 (one per outage):\n%s", n, out)
	}

	var saved watchState
	b, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if err := json.Unmarshal(b, &saved); err != nil {
		t.Fatalf("state file: %v", err)
	}
	ev := saved.Events[lifecycleOccasion("i-0abc").Key]
	if saved.InstanceID != "i-0abc" || ev == nil || ev.Finished.IsZero() || ev.Attempts != 1 {
		t.Fatalf("state file does not record the finished event: %s", b)
	}

	// Restart: same state file, the notice still up.
	again := &scriptedMonitor{name: "lifecycle", steps: []scriptStep{{state: "target Terminated", n: terminatedNotice()}}}
	w2, logs2 := newTestWatcher(t, statePath, []monitor{again}, handle)
	for range 5 {
		w2.tick(context.Background())
	}
	if downs != 1 {
		t.Fatalf("a restarted watcher ran down again (%d downs)", downs)
	}
	if n := countLines(logs2.String(), "already handed over"); n != 1 {
		t.Errorf("%d 'already handed over' lines, want 1:\n%s", n, logs2.String())
	}
}

// TestWatcherRetriesAFailedDown: a failed down is run again at a later poll, and only a finished one is
// recorded; a new event (another key) gets its own down.
func TestWatcherRetriesAFailedDown(t *testing.T) {
	t.Parallel()
	statePath := filepath.Join(t.TempDir(), "watch.json")
	var calls []string
	handle := func(_ context.Context, n notice) error {
		calls = append(calls, n.Occ.Key)
		if len(calls) == 1 {
			return &fail.Error{Code: fail.CodeFailed, Msg: "CreateSnapshot throttled"}
		}
		return nil
	}
	spot := &notice{Source: "spot", Occ: occasion{Kind: "spot", Key: "spot terminate 2030-01-01T00:00:00Z"}}
	spotMon := &scriptedMonitor{name: "spot", steps: []scriptStep{{state: "terminate", n: spot}}}
	w, logs := newTestWatcher(t, statePath, []monitor{spotMon}, handle)
	w.tick(context.Background())
	st, _ := loadWatchState(slog.New(slog.DiscardHandler), statePath, "i-0abc")
	if ev := st.Events[spot.Occ.Key]; ev == nil || !ev.Finished.IsZero() || ev.LastError == "" {
		t.Fatalf("after a failed down the state file should hold an unfinished event with its error: %+v", ev)
	}
	simtest.Eventually(t, waitBound, "a retry of the failed down", func() (bool, string) {
		w.tick(context.Background())
		return len(calls) >= 2, fmt.Sprintf("down ran %d times", len(calls))
	})
	for range 5 {
		w.tick(context.Background())
	}
	if len(calls) != 2 {
		t.Fatalf("down ran %d times, want 2 (one failure, one retry): %s", len(calls), logs.String())
	}
	if !strings.Contains(logs.String(), "down failed; retrying") {
		t.Errorf("the failure was not logged:\n%s", logs.String())
	}

	// A restarted watcher whose earlier down started but never finished runs it again.
	unfinished := filepath.Join(t.TempDir(), "watch.json")
	started := &watchState{path: unfinished, InstanceID: "i-0abc", Events: map[string]*watchEvent{
		spot.Occ.Key: {Source: "spot", Started: time.Now().Add(-time.Minute), Attempts: 1},
	}}
	if err := started.save(); err != nil {
		t.Fatal(err)
	}
	calls = calls[:0]
	w3, logs3 := newTestWatcher(t, unfinished, []monitor{&scriptedMonitor{name: "spot", steps: []scriptStep{{state: "terminate", n: spot}}}},
		func(context.Context, notice) error { calls = append(calls, "x"); return nil })
	w3.tick(context.Background())
	if len(calls) != 1 || !strings.Contains(logs3.String(), "did not finish") {
		t.Fatalf("an unfinished event was not run again on restart (%d calls):\n%s", len(calls), logs3.String())
	}
}

func TestWatchStateFileForeignOrCorrupt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	foreign := filepath.Join(dir, "foreign.json")
	old := &watchState{path: foreign, InstanceID: "i-other", Events: map[string]*watchEvent{"k": {Finished: time.Now()}}}
	if err := old.save(); err != nil {
		t.Fatal(err)
	}
	st, err := loadWatchState(log, foreign, "i-0abc")
	if err != nil || len(st.Events) != 0 {
		t.Fatalf("a state file of another instance was used: %v %+v", err, st)
	}

	corrupt := filepath.Join(dir, "corrupt.json")
	if err := os.WriteFile(corrupt, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = loadWatchState(log, corrupt, "i-0abc")
	if err != nil || len(st.Events) != 0 {
		t.Fatalf("corrupt state file: %v %+v", err, st)
	}
	matches, _ := filepath.Glob(corrupt + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("the corrupt file was not moved aside (found %v)", matches)
	}
	if b, _ := os.ReadFile(matches[0]); string(b) != "{not json" {
		t.Errorf("the moved file lost its content: %q", b)
	}
}

func TestWatcherStopsOnCancel(t *testing.T) {
	t.Parallel()
	mon := &scriptedMonitor{name: "lifecycle", steps: []scriptStep{{state: "target InService"}}}
	w, _ := newTestWatcher(t, filepath.Join(t.TempDir(), "w.json"), []monitor{mon}, func(context.Context, notice) error { return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel = %v, want nil (a clean stop)", err)
	}
}

// TestMonitorsOverFlakyIMDS drives the real monitors through the IMDSv2 client against a metadata server
// that refuses some calls, expires the token once, and then shows the termination and a Spot notice.
func TestMonitorsOverFlakyIMDS(t *testing.T) {
	t.Parallel()
	var (
		calls     atomic.Int32
		tokens    atomic.Int32
		expiredAt = int32(5) // the call at which the current token is declared expired
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" {
			n := tokens.Add(1)
			w.Header().Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", "21600")
			_, _ = w.Write([]byte("token-" + string(rune('0'+n))))
			return
		}
		n := calls.Add(1)
		switch {
		case n == expiredAt && r.Header.Get("X-Aws-Ec2-Metadata-Token") == "token-1":
			w.WriteHeader(http.StatusUnauthorized) // the token expired: the client must fetch a new one
			return
		case n == 3 || n == 7:
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case n == 11:
			// The connection drops without an answer.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
		}
		switch r.URL.Path {
		case "/latest/meta-data/autoscaling/target-lifecycle-state":
			if n < 8 {
				_, _ = w.Write([]byte("InService"))
			} else {
				_, _ = w.Write([]byte("Terminated"))
			}
		case "/latest/meta-data/spot/instance-action":
			if n < 10 {
				http.NotFound(w, r)
			} else {
				_, _ = w.Write([]byte(`{"action":"terminate","time":"2030-01-01T00:02:00Z"}`))
			}
		case "/latest/meta-data/events/recommendations/rebalance":
			_, _ = w.Write([]byte(`{"noticeTime":"2030-01-01T00:00:00Z"}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	md := imds.New(imds.Options{Endpoint: srv.URL, CallTimeout: 2 * time.Second})
	seen := map[string]int{}
	handle := func(_ context.Context, n notice) error { seen[n.Occ.Key]++; return nil }
	monitors := []monitor{lifecycleMonitor{md: md, instanceID: "i-0abc"}, spotMonitor{md: md}, rebalanceMonitor{md: md}}
	w, logs := newTestWatcher(t, filepath.Join(t.TempDir(), "w.json"), monitors, handle)
	for range 12 {
		w.tick(context.Background())
	}
	want := map[string]int{
		lifecycleOccasion("i-0abc").Key:       1,
		"spot terminate 2030-01-01T00:02:00Z": 1,
		"rebalance 2030-01-01T00:00:00Z":      1,
	}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("event %q handled %d times, want %d (all: %v)\n%s", k, seen[k], v, seen, logs.String())
		}
	}
	if tokens.Load() < 2 {
		t.Errorf("the client never fetched a new token after the 401 (%d token requests)", tokens.Load())
	}
}
