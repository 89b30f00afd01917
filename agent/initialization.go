package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// A restored volume has its data when up mounts it but not yet its speed: EBS loads its blocks from S3
// for minutes to hours (cloud/initialization.go). up never waits for that: its job ends with the launch
// hook, and holding the hook for an hour of lazy loading would hold the whole recovery. Instead:
//
//   - while up still runs (the launch hook, retiring older volumes), it follows the initialization of the
//     volumes it restored and logs one line for each that reaches full performance;
//   - its summary shows where each stands when it ends (progress, and for a provisioned rate the time
//     left), or that a snapshot enabled for fast snapshot restore made it fully initialized at creation;
//   - after that, `handover status` (and `status --json`, for monitoring) shows the progress from
//     DescribeVolumeStatus until 100%.
//
// Nothing follows it once up has exited: a watch of its own would be one more process to keep alive for
// a line of log.

// initPoll is how often up reads the initialization while it runs: 2 s doubling to 15 s.
const (
	initPollFirst = 2 * time.Second
	initPollMax   = 15 * time.Second
	// initReadBound bounds the last read, for the summary.
	initReadBound = 5 * time.Second
)

// initWatch follows the initialization of the volumes one run of up restored.
type initWatch struct {
	log    *slog.Logger
	c      cloud.EC2
	start  time.Time
	slots  map[string]string // volume -> slot
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	logged map[string]bool // volumes whose full performance has been logged
}

// watchInitialization starts following the initialization of the volumes this run restored (none: a
// watch that does nothing).
func (r *upRun) watchInitialization(ctx context.Context, slots []*upSlot) *initWatch {
	w := &initWatch{log: r.log, c: r.clients.EC2, start: time.Now(), slots: map[string]string{}, logged: map[string]bool{}, done: make(chan struct{})}
	for _, s := range slots {
		if s != nil && s.run.Res.How == howRestored {
			w.slots[s.run.Res.Volume.ID] = s.spec.Slot
		}
	}
	if len(w.slots) == 0 {
		close(w.done)
		return w
	}
	wctx, cancel := context.WithCancel(ctx)
	w.cancel = cancel
	go func() {
		defer close(w.done)
		for d := initPollFirst; ; d = min(2*d, initPollMax) {
			if wait.Pause(wctx, d) != nil {
				return
			}
			if states, err := cloud.DescribeInitialization(wctx, w.c, w.ids()); err == nil && w.note(states) {
				return
			}
		}
	}()
	return w
}

// howRestored is SlotOutcome.How of a volume made from a snapshot.
const howRestored = "restored from"

func (w *initWatch) ids() []string {
	ids := make([]string, 0, len(w.slots))
	for id := range w.slots {
		ids = append(ids, id)
	}
	return ids
}

// note logs, once, each volume that has reached full performance; it reports whether all have.
func (w *initWatch) note(states map[string]cloud.Initialization) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	all := true
	for id, slot := range w.slots {
		in, ok := states[id]
		switch {
		case !ok || !in.Done():
			all = false
		case !w.logged[id]:
			w.logged[id] = true
			w.log.Info("volume fully initialized: full performance", logkey.Step, "initialization", logkey.Slot, slot, logkey.Volume, id,
				"type", in.Type, logkey.Elapsed, time.Since(w.start).Round(time.Second).String())
		}
	}
	return all
}

// stop ends the watch, reads each restored volume's initialization once more for the summary (logging the
// ones that reached full performance meanwhile) and puts it in res.
func (w *initWatch) stop(ctx context.Context, res *upResult) {
	if w.cancel != nil {
		w.cancel()
	}
	<-w.done
	if len(w.slots) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), initReadBound)
	defer cancel()
	states, err := cloud.DescribeInitialization(rctx, w.c, w.ids())
	if err != nil {
		w.log.Warn("could not read the restored volumes' initialization; handover status shows it", logkey.Step, "initialization", logkey.Error, err.Error())
		return
	}
	w.note(states)
	for i := range res.Slots {
		if in, ok := states[res.Slots[i].Volume.ID]; ok {
			res.Slots[i].Initialization = &in
		}
	}
}

// printRestoreNotes writes the summary's lines about a restore: how its shape differs from the
// configuration, and its initialization.
func printRestoreNotes(w io.Writer, s slotResult) {
	for _, n := range s.ShapeNotes {
		fmt.Fprintf(w, "  shape      %s: %s\n", s.Slot, n)
	}
	if s.How != howRestored {
		return
	}
	var parts []string
	switch {
	case s.FastRestore:
		parts = append(parts, fmt.Sprintf("snapshot %s is enabled for fast snapshot restore in %s: fully initialized at creation", s.Snapshot, s.Volume.AZ))
	case s.InitializationRate > 0:
		parts = append(parts, fmt.Sprintf("provisioned rate %d MiB/s", s.InitializationRate))
	default:
		parts = append(parts, "EBS's default rate (--initialization-rate not given)")
	}
	switch in := s.Initialization; {
	case in == nil:
		parts = append(parts, "progress unknown (handover status shows it)")
	case in.Done():
		parts = append(parts, in.String())
	default:
		parts = append(parts, in.String()+": full performance once done; up does not wait (handover status shows the progress)")
	}
	fmt.Fprintf(w, "  init       %s: %s\n", s.Slot, strings.Join(parts, "; "))
}
