package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// How down (and snapshot) keep a volume's data still for the instant of CreateSnapshot: stop the service
// with the pre-stop command, flush with sync, then unmount the filesystem or freeze it (FIFREEZE) and thaw
// it (FITHAW) as soon as CreateSnapshot returns.
//
// An EBS snapshot is point-in-time as of the CreateSnapshot call: blocks written after the call returns are
// not in it, even while the snapshot is still pending, so the filesystem needs to be still only for the
// call itself. https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html

// Release modes (--release).
const (
	releaseUnmount = "unmount"
	releaseFreeze  = "freeze"
	// releaseNone keeps nothing still: `handover snapshot --freeze=false`, whose slots are then snapshotted
	// live, in one CreateSnapshots when there are several (snapshotset.go).
	releaseNone = "none"
)

// slotRelease is one slot's volume on this instance, as a run of down or snapshot found and left it. Each
// group of fields is written by the one step named above it, and read by the steps after.
type slotRelease struct {
	Spec volumeSpec

	// observe (findSlotVolumes; down's findExisting sets Existing). Note set means there is nothing to
	// release for the slot, and it says why.
	Volume     cloud.Volume
	AttachTime time.Time
	AttachSt   string       // attaching, attached, detaching
	Device     string       // block device on this instance; "" when not visible
	Mounts     []host.Mount // where Device is mounted, before the run
	Existing   *cloud.Snapshot
	Note       string

	// keep still (keepStill)
	Still    string // how the data was kept still: "unmounted", "frozen", "not mounted", "" (not at all)
	freezeAt string // the mount point to freeze for the snapshot; "" for none

	// snapshot (snapshotWhileStill, snapshotCrashConsistent; reuse for a snapshot a rerun finds)
	Snapshot   cloud.Snapshot
	Reused     bool
	Consistent bool

	// detach (down's detach)
	Detached bool
}

// released reports whether observe found nothing to release for the slot (Note says why).
func (s *slotRelease) released() bool { return s.Volume.ID == "" || s.Note != "" }

// reuse keeps the snapshot an earlier run of the same down took, instead of taking another; log carries
// the snapshot step.
func (s *slotRelease) reuse(log *slog.Logger) {
	s.Snapshot, s.Reused, s.Consistent = *s.Existing, true, s.Existing.Consistent
	log.Info("snapshot already taken by this down", logkey.Snapshot, s.Snapshot.ID, logkey.State, s.Snapshot.State)
}

// slotLog is the logger for one slot's volume.
func (s *slotRelease) slotLog(log *slog.Logger) *slog.Logger {
	return log.With(logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot)
}

// mountPointsOf lists where the slot's volume is mounted on this instance, by its device.
func mountPointsOf(mounts []host.Mount) []string {
	var mps []string
	for _, m := range mounts {
		mps = append(mps, m.MountPoint)
	}
	return mps
}

// stillness is how a run keeps the data still for its snapshots.
type stillness struct {
	Release       string // releaseUnmount or releaseFreeze
	FreezeTimeout time.Duration
	PreStop       bool   // a pre-stop command was configured
	PreStopErr    error  // and how it ended
	Rerun         string // what to tell the operator to rerun when a snapshot fails ("down", "snapshot")
	// Final: the snapshot is the hand-over's (down). One of a volume that is unmounted (or not mounted)
	// carries every write the volume will ever get before it is detached, and is tagged handover:final, so
	// that up restores it instead of snapshotting the volume again.
	Final bool
}

// consistent reports whether a snapshot may be tagged consistent: the service was stopped by the pre-stop
// command, or the filesystem was kept still (still); never when the pre-stop command failed, for the
// service may have been in the middle of a write it could not finish.
func (st stillness) consistent(still bool) bool {
	if st.PreStop {
		return st.PreStopErr == nil
	}
	return still
}

// snapshotStill is the keep-still and snapshot steps down and snapshot share: keepStill, then
// snapshotWhileStill. describe gives each snapshot's description.
func (in *thisInstance) snapshotStill(ctx context.Context, log *slog.Logger, slots []*slotRelease, st stillness, describe func(*slotRelease) string) error {
	work, err := in.keepStill(ctx, log, slots, st)
	if err != nil || len(work) == 0 {
		return err
	}
	return in.snapshotWhileStill(ctx, log, work, st, describe)
}

// keepStill decides, for each slot's volume, how its data is kept still for the snapshot, and unmounts
// what --release unmount asks for (falling back to a freeze when something still holds the filesystem);
// the freeze itself is snapshotWhileStill's, for the instant of CreateSnapshot. A slot with an Existing
// snapshot (down's rerun) keeps it unless the new one would be consistent and it is not. It returns the
// slots that need a new snapshot.
func (in *thisInstance) keepStill(ctx context.Context, log *slog.Logger, slots []*slotRelease, st stillness) ([]*slotRelease, error) {
	var work []*slotRelease
	for _, s := range slots {
		if s.released() {
			continue
		}
		vlog := s.slotLog(log)
		mounts := s.Mounts
		if s.Device != "" {
			// Read the mounts again: the pre-stop command may have unmounted the filesystem itself.
			var err error
			if mounts, err = in.host.MountsOf(s.Device); err != nil {
				return nil, err
			}
		}
		mps := mountPointsOf(mounts)
		switch {
		case s.Device == "":
			// Without its device handover cannot tell where the volume is mounted, so it touches no
			// filesystem: the snapshot is crash-consistent only (unless the service was stopped).
			vlog.Warn("block device not visible: snapshot without unmount or freeze", logkey.Step, "release")
		case len(mps) == 0:
			s.Still = "not mounted"
		case st.Release == releaseNone:
		case st.Release == releaseUnmount:
			var unfinished *host.UnfinishedError
			if err := in.host.Unmount(ctx, vlog, mounts); errors.As(err, &unfinished) {
				return nil, err
			} else if err != nil {
				vlog.Warn("could not unmount; freezing for the snapshot instead, and leaving the volume attached", logkey.Step, "release", logkey.Error, err.Error())
				s.freezeAt = mps[0]
			} else {
				s.Still = "unmounted"
			}
		default:
			s.freezeAt = mps[0]
		}
		// Would a new snapshot be consistent? If one from this down exists and is no worse, keep it.
		if s.Existing != nil && (s.Existing.Consistent || !st.consistent(s.Still != "" || s.freezeAt != "")) {
			// freezeAt stays: only work's slots are frozen, and retakePartialSet may put this one back.
			s.reuse(vlog.With(logkey.Step, "snapshot"))
			continue
		}
		work = append(work, s)
	}
	return retakePartialSet(log, slots, work), nil
}

// snapshotWhileStill freezes the mount points keepStill chose (WhileFrozen thaws them whatever happens,
// within st.FreezeTimeout) and snapshots each slot's volume, tagged consistent when it was kept still.
func (in *thisInstance) snapshotWhileStill(ctx context.Context, log *slog.Logger, work []*slotRelease, st stillness, describe func(*slotRelease) string) error {
	var toFreeze []string
	for _, s := range work {
		if s.freezeAt != "" {
			toFreeze = append(toFreeze, s.freezeAt)
		}
	}
	return in.host.WhileFrozen(ctx, log, toFreeze, st.FreezeTimeout, func(ctx context.Context, frozen map[string]bool) error {
		for _, s := range work {
			if s.freezeAt != "" && frozen[s.freezeAt] {
				s.Still = "frozen"
			}
		}
		set := cloud.NewSetID()
		if len(work) > 1 && anyLive(work) {
			// A slot is live: only one CreateSnapshots makes the slots' snapshots one moment.
			return in.snapshotSetAtOnce(ctx, log, work, set, st.consistent(false), st.Rerun)
		}
		// Every slot is still (frozen, unmounted or not mounted) until the last call returns: one moment.
		for _, s := range work {
			s.Consistent = st.consistent(s.Still != "")
			req := in.snapshotRequest(s, s.Consistent, describe)
			req.Set, req.SetSize = set, len(work)
			req.Final = st.Final && (s.Still == "unmounted" || s.Still == "not mounted")
			snap, err := cloud.CreateSnapshot(ctx, in.clients.EC2, req)
			if err != nil {
				bound := ""
				if errors.Is(err, context.DeadlineExceeded) && len(toFreeze) > 0 {
					bound = fmt.Sprintf(" within --freeze-timeout %s", st.FreezeTimeout)
				}
				return fmt.Errorf("snapshot of %s (slot %s) failed%s; the filesystem is thawed and the volume stays attached; rerun %s: %w",
					s.Volume.ID, s.Spec.Slot, bound, st.Rerun, err)
			}
			s.Snapshot = snap
			log.Info("snapshot created", logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot, logkey.Snapshot, snap.ID,
				"consistent", s.Consistent, "still", orDash(s.Still))
		}
		return nil
	})
}

// snapshotRequest is the CreateSnapshot of the slot's volume, from this instance.
func (in *thisInstance) snapshotRequest(s *slotRelease, consistent bool, describe func(*slotRelease) string) cloud.SnapshotRequest {
	return cloud.SnapshotRequest{
		Group: in.group, Slot: s.Spec.Slot, Volume: s.Volume, InstanceID: in.id.InstanceID,
		Consistent: consistent, Description: describe(s),
	}
}

// snapshotCrashConsistent is what down and snapshot still do after a step before the snapshot (pre-stop,
// sync, unmount, freeze) ran past their bound: snapshot each slot's volume that has no snapshot yet,
// without keeping it still, and not tagged consistent (the writes the hung step was flushing may not be
// on the volume). A snapshot an earlier run of the same down took is kept instead.
func (in *thisInstance) snapshotCrashConsistent(ctx context.Context, log *slog.Logger, slots []*slotRelease, describe func(*slotRelease) string) error {
	if attachedSlots(slots) > 1 {
		return in.crashConsistentSet(ctx, log, slots)
	}
	var errs []error
	for _, s := range slots {
		if s.released() || s.Snapshot.ID != "" {
			continue
		}
		vlog := log.With(logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot)
		if s.Existing != nil {
			s.reuse(vlog)
			continue
		}
		s.Consistent = false
		req := in.snapshotRequest(s, false, describe)
		req.Set, req.SetSize = cloud.NewSetID(), 1 // the one slot attached here: a set of one
		snap, err := cloud.CreateSnapshot(ctx, in.clients.EC2, req)
		if err != nil {
			vlog.Error("crash-consistent snapshot failed", logkey.Error, err.Error())
			errs = append(errs, err)
			continue
		}
		s.Snapshot = snap
		vlog.Warn("crash-consistent snapshot created past the bound (not tagged consistent)", logkey.Snapshot, snap.ID)
	}
	return errors.Join(errs...)
}

// snapshotsSummary says which snapshots a run has, for the line it fails with.
func snapshotsSummary(slots []*slotRelease) string {
	var have []string
	for _, s := range slots {
		if s.Snapshot.ID == "" {
			continue
		}
		how := "consistent"
		switch {
		case s.Reused:
			how = "from an earlier run"
		case !s.Consistent:
			how = "crash-consistent, not tagged consistent"
		}
		have = append(have, fmt.Sprintf("snapshot %s of %s (%s)", s.Snapshot.ID, s.Volume.ID, how))
	}
	if len(have) == 0 {
		return "no snapshot taken"
	}
	return "took " + strings.Join(have, ", ")
}

// runBounds are the contexts of a run of down or snapshot. The whole run ends at its bound (all); the
// steps up to the snapshot end finalReserve before it (work), so that a step that hangs leaves time to
// give up well: a crash-consistent snapshot, and down's hook. parent is the caller's: when it ends, that is
// a signal, not the bound, and nothing more is attempted.
type runBounds struct {
	parent, all, work context.Context
	within            string // the bound as the operator set it: "--timeout 10m0s"
}

func newRunBounds(parent context.Context, bound time.Duration, within string) (runBounds, context.CancelFunc) {
	all, cancelAll := context.WithTimeout(parent, bound)
	work, cancelWork := context.WithTimeout(all, bound-finalReserve(bound))
	return runBounds{parent: parent, all: all, work: work, within: within}, func() { cancelWork(); cancelAll() }
}

// runStep is one named step of a run; the name is what the log and the failure line call it.
type runStep struct {
	name string
	run  func(context.Context) error
}

// stepsBeforeSnapshot are the steps past which a run that gives up still takes a crash-consistent
// snapshot: until the snapshot step, the volumes hold the data and no snapshot of them exists.
var stepsBeforeSnapshot = map[string]bool{"pre-stop": true, "sync": true, "unmount": true, "freeze": true}

// givingUp starts giving up on step, which failed with err. When err is not the work bound's (an ordinary
// failure, or a signal: ok false) the caller returns err as it is. Otherwise it names the step that did
// not finish (a hung host call names its own), logs it, takes a crash-consistent snapshot when that is
// safe (the run holds the lock and knows the volumes, and the failure is not in CreateSnapshot itself),
// and returns what the run has to show for the failure line.
func (in *thisInstance) givingUp(b runBounds, log *slog.Logger, step string, err error, slots []*slotRelease, describe func(*slotRelease) string) (string, []string, bool) {
	if b.work.Err() == nil || b.parent.Err() != nil {
		return step, nil, false
	}
	var unfinished *host.UnfinishedError
	if errors.As(err, &unfinished) {
		step = unfinished.Step
	}
	log.Error("step did not finish within the bound; giving up on it", logkey.Step, step, logkey.Bound, b.within, logkey.Error, err.Error())
	var outcomes []string
	if slots != nil && stepsBeforeSnapshot[step] {
		if serr := in.snapshotCrashConsistent(b.all, log, slots, describe); serr != nil {
			outcomes = append(outcomes, "crash-consistent snapshot failed: "+serr.Error())
		}
	}
	return step, append(outcomes, snapshotsSummary(slots)), true
}

// overrun is a step of down or snapshot that ran past the command's bound.
type overrun struct {
	Command string // "down", "snapshot"
	Within  string // the bound as the operator set it: "--timeout 10m0s"
	Step    string // the step given up on: "lock", "pre-stop", "sync", "unmount", "freeze", "snapshot", ...
	Cause   error
	Bound   error // the bound's context error (context.DeadlineExceeded), whatever the cause says
}

// pastBound is the one line a command fails with (exit 1) when a step ran past its bound: the bound, the
// step and why, what the command still did (outcomes), and what to do. The error unwraps to the cause and
// to the bound's context error, so errors.Is(err, context.DeadlineExceeded) holds.
func pastBound(o overrun, outcomes []string, advice string) error {
	why := o.Cause.Error()
	var unfinished *host.UnfinishedError
	if errors.As(o.Cause, &unfinished) {
		why = unfinished.What + " did not return"
	}
	if o.Step == "lock" {
		why = "another handover up, down or snapshot held the lock"
	}
	parts := []string{fmt.Sprintf("%s did not finish within %s: step %q timed out (%s)", o.Command, o.Within, o.Step, why)}
	for _, s := range outcomes {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return &overrunError{
		line:   &fail.Error{Code: fail.CodeFailed, Msg: strings.Join(append(parts, advice), "; ")},
		causes: []error{o.Cause, o.Bound},
	}
}

// overrunError is pastBound's error: its text is the line alone (the line already says why, so the cause
// is not repeated after it), and it unwraps to the line (for the exit code) and to the causes.
type overrunError struct {
	line   *fail.Error
	causes []error
}

func (e *overrunError) Error() string { return e.line.Error() }

func (e *overrunError) Unwrap() []error {
	out := []error{e.line}
	for _, c := range e.causes {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}
