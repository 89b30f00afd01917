package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// `handover snapshot` takes a consistent snapshot of each slot's volume now (the filesystem frozen for the
// instant of CreateSnapshot), then applies retention. The packaged handover-snapshot.timer runs it.

// snapshotConfig is `handover snapshot`.
type snapshotConfig struct {
	hostOptions
	FreezeTimeout time.Duration
	Freeze        bool
	Keep          int
	// KeepSuperseded and DeleteSuperseded are up's retention of older volumes, run here too: after a move
	// up deletes none of them until a snapshot of the current volume has completed, which is this timer's.
	KeepSuperseded   int
	DeleteSuperseded bool
	// Retire: the command's own run (set by register). A snapshot watch takes on a rebalance
	// recommendation (watchConfig.snapshotConfig) leaves the older volumes alone: its zero value retires
	// nothing.
	Retire        bool
	Timeout       time.Duration
	LockSnapshots lockDays // lock each consistent snapshot (snaplock.go)
}

// register declares snapshot's flags.
func (c *snapshotConfig) register(f *flags) {
	c.hostOptions.register(f, "lock shared with up and down, so that a snapshot never runs in the middle of them")
	f.fs.DurationVar(&c.FreezeTimeout, "freeze-timeout", 30*time.Second, "longest a filesystem stays frozen waiting for CreateSnapshot; then it is thawed and the run fails")
	f.fs.BoolVar(&c.Freeze, "freeze", true, "freeze the filesystems for the snapshot (tagged consistent); false: no I/O pause, the slots snapshotted live, several of them in one crash-consistent CreateSnapshots")
	f.intVar(&c.Keep, "keep", 0, "after the snapshot, delete the slot's oldest completed snapshots beyond this many (`N`; 0: delete nothing)")
	c.Retire = true
	f.intVar(&c.KeepSuperseded, "keep-superseded", 1, "then, as up does, keep this many of each slot's older volumes (`N`, the newest; a way back) and delete the detached ones beyond them that a completed snapshot already holds, once a snapshot of the current volume has completed")
	f.fs.BoolVar(&c.DeleteSuperseded, "delete-superseded", false, "--keep-superseded 0")
	f.fs.DurationVar(&c.Timeout, "timeout", defaultDownTimeout, "bound on the whole snapshot; past it a freeze that hangs is given up on, a crash-consistent snapshot taken and the run fails")
	registerLock(f, &c.LockSnapshots)
}

// validate checks snapshot's options in one place.
func (c *snapshotConfig) validate() error {
	if c.Keep < 0 {
		return badOption("keep", "must be 0 (keep everything) or more")
	}
	if c.KeepSuperseded < 0 {
		return badOption("keep-superseded", "must be 0 (keep none) or more")
	}
	if c.FreezeTimeout <= 0 {
		return badOption("freeze-timeout", "must be positive")
	}
	if c.Timeout <= 0 {
		return badOption("timeout", "must be positive")
	}
	return c.hostOptions.validate()
}

// snapshotCommand is `handover snapshot` with the filesystem calls fsys (tests substitute ones that block).
func snapshotCommand(ctx context.Context, e Env, args []string, calls host.FSCalls) error {
	var cfg snapshotConfig
	st, in, err := openThisInstance(ctx, e, args, startSpec{name: "snapshot", imdsTimeout: 10 * time.Second, dryRun: true,
		declare: cfg.register, validate: cfg.validate}, &cfg.hostOptions, calls)
	if err != nil {
		return err
	}
	cfg.Volumes = cfg.Volumes.orDefault()
	return in.snapshotNow(ctx, st.log, e.Stdout, cfg, st.dryRun)
}

// snapshotRun is one run of `handover snapshot`. Its steps are its methods, run in this order: lock,
// observe (slots), snapshot (keep still and snapshot: snapshotStill, shared with down), retention; a step
// that runs past the bound ends in giveUp.
type snapshotRun struct {
	in     *thisInstance
	log    *slog.Logger
	out    io.Writer
	cfg    snapshotConfig
	dryRun bool

	held  *host.Lock
	slots []*slotRelease
}

// snapshotNow snapshots each slot's volume attached to this instance, frozen for the call, then applies
// retention to each slot. Like down, it is bounded by --timeout, with finalReserve of it kept for a
// crash-consistent snapshot when the freeze hangs; then it skips retention and fails naming the step.
func (in *thisInstance) snapshotNow(ctx context.Context, log *slog.Logger, out io.Writer, cfg snapshotConfig, dryRun bool) error {
	r := &snapshotRun{in: in, log: log.With(logkey.Instance, in.id.InstanceID), out: out, cfg: cfg, dryRun: dryRun}
	b, cancel := newRunBounds(ctx, cfg.Timeout, "--timeout "+cfg.Timeout.String())
	defer cancel()
	defer func() { r.held.Unlock() }() // r.held is set by the lock step, after this defer
	for _, st := range []runStep{{"lock", r.lock}, {"observe", r.observe}, {"snapshot", r.snapshot}, {"retention", r.retention}, {"superseded", r.retire}} {
		if err := st.run(b.work); err != nil {
			return r.giveUp(b, st.name, err)
		}
	}
	return nil
}

// describe is the description of the snapshots `handover snapshot` takes.
func (r *snapshotRun) describe(s *slotRelease) string {
	return fmt.Sprintf("handover snapshot: %s of %s", s.Volume.ID, r.in.id.InstanceID)
}

// lock takes the lock shared with up and down, so that a snapshot never runs in the middle of them, then
// thaws what a killed run left frozen.
func (r *snapshotRun) lock(ctx context.Context) (err error) {
	if r.dryRun {
		return nil
	}
	r.held, err = r.in.host.Lock(ctx, r.cfg.LockFile, r.cfg.Timeout)
	if err == nil {
		thawLeftFrozen(ctx, r.log, r.in.host)
	}
	return err
}

// observe finds each slot's volume attached here (every slot must have one) and, for --dry-run, says
// what would be snapshotted.
func (r *snapshotRun) observe(ctx context.Context) error {
	found, err := r.in.findSlotVolumes(ctx, r.log, r.cfg.Volumes)
	if err != nil {
		return err
	}
	for _, s := range found {
		if s.released() {
			return fail.Precondition(fmt.Sprintf("slot %s: %s; run `handover up` first, or drop the slot from --volume", s.Spec.Slot, orDash(s.Note)), nil)
		}
		if r.dryRun {
			how := "not mounted"
			switch mps := mountPointsOf(s.Mounts); {
			case s.Device == "":
				how = "device not visible: crash-consistent only"
			case len(mps) > 0 && !r.cfg.Freeze && len(found) > 1:
				how = "live: one CreateSnapshots with the other slots (crash-consistent across them)"
			case len(mps) > 0 && !r.cfg.Freeze:
				how = "live (--freeze=false): crash-consistent"
			case len(mps) > 0:
				how = "freeze " + mps[0] + " for the call"
			}
			fmt.Fprintf(r.out, "would snapshot slot %s: %s (generation %d), %s\n", s.Spec.Slot, s.Volume.ID, s.Volume.Generation, how)
		}
	}
	r.slots = found
	return nil
}

// snapshot freezes each slot's filesystem for its CreateSnapshot (snapshotStill) and prints the result.
func (r *snapshotRun) snapshot(ctx context.Context) error {
	if r.dryRun {
		return nil
	}
	st := stillness{Release: releaseFreeze, FreezeTimeout: r.cfg.FreezeTimeout, Rerun: "snapshot"}
	if !r.cfg.Freeze {
		st.Release = releaseNone
	}
	if err := r.in.snapshotStill(ctx, r.log, r.slots, st, r.describe); err != nil {
		return err
	}
	for _, s := range r.slots {
		cons := "consistent"
		if !s.Consistent {
			cons = "NOT consistent"
		}
		fmt.Fprintf(r.out, "slot %s: %s (generation %d) -> snapshot %s (%s, %s, set %s)\n", s.Spec.Slot, s.Volume.ID, s.Volume.Generation, s.Snapshot.ID, cons, orDash(s.Still), orDash(s.Snapshot.SetID()))
	}
	// A snapshot that could not be locked fails the run (after the snapshots exist): it was asked for.
	lines, err := r.in.lockSnapshots(ctx, r.log, r.slots, r.cfg.LockSnapshots)
	printLines(r.out, lines)
	return err
}

// retention applies --keep to each slot.
func (r *snapshotRun) retention(ctx context.Context) error {
	if r.cfg.Keep == 0 {
		return nil
	}
	for _, s := range r.slots {
		if err := r.in.applyRetention(ctx, r.log, r.out, s.Spec.Slot, r.cfg.Keep, r.dryRun); err != nil {
			return err
		}
	}
	return nil
}

// retire is up's retention of each slot's older volumes (cloud.SlotRun.Retire), under the lock shared with
// up: it tags them superseded and deletes those retention lets go. Failures are warnings, as in up.
func (r *snapshotRun) retire(ctx context.Context) error {
	if r.dryRun || !r.cfg.Retire {
		return nil
	}
	keep := r.cfg.KeepSuperseded
	if r.cfg.DeleteSuperseded {
		keep = 0
	}
	for _, s := range r.slots {
		run := &cloud.SlotRun{C: r.in.clients, Log: r.log.With(logkey.Slot, s.Spec.Slot), InstanceID: r.in.id.InstanceID, Az: r.in.id.AvailabilityZone,
			Group: r.in.group, Slot: s.Spec.Slot}
		run.Res.Volume = s.Volume
		run.Retire(ctx, keep)
		if out := run.Res; len(out.Superseded)+len(out.Deleted) > 0 {
			fmt.Fprintf(r.out, "superseded slot %s: tagged [%s], deleted [%s]\n", s.Spec.Slot, strings.Join(out.Superseded, " "), strings.Join(out.Deleted, " "))
		}
		for _, w := range run.Res.Warnings {
			fmt.Fprintf(r.out, "warning slot %s: %s\n", s.Spec.Slot, w)
		}
	}
	return nil
}

// giveUp ends the run after step failed with err: past the bound, with a crash-consistent snapshot when
// that is safe (givingUp), retention skipped, and one line naming the step; any other failure as it is.
func (r *snapshotRun) giveUp(b runBounds, step string, err error) error {
	step, outcomes, over := r.in.givingUp(b, r.log, step, err, r.slots, r.describe)
	if !over {
		return err
	}
	if r.cfg.Keep > 0 {
		outcomes = append(outcomes, "retention skipped")
	}
	return pastBound(overrun{Command: "snapshot", Within: b.within, Step: step, Cause: err, Bound: b.work.Err()}, outcomes,
		"look for a hung device (dmesg), then rerun handover snapshot")
}

// retentionVerdict is what retention decided for one snapshot.
type retentionVerdict struct {
	Snapshot cloud.Snapshot
	Delete   bool
	Why      string
}

// liveLineage is what retention protects: the slot's live volume (its newest generation) and the time it
// was cut from its source (the snapshot it was restored from, or its creation when made blank).
type liveLineage struct {
	VolumeID string
	Source   string    // snapshot ID the live volume was created from; "" when blank
	Cut      time.Time // the source's start time, or the live volume's creation time
}

// planRetention decides, for a slot's snapshots (newest first, as listSlotSnapshots returns them), which
// to delete so that keep completed ones remain. Whatever the count, it never deletes:
//   - a snapshot that is not completed (pending: `up` may be waiting for it; error: for an operator to look at);
//   - the newest consistent completed snapshot, the one `up` restores from;
//   - a snapshot taken from another volume after the live volume was cut from its source: it holds writes
//     the live volume never saw (an old instance that went on writing after the hand-over, or a restore
//     still to come from it), and only an operator can tell whether they matter. Snapshots of the live
//     volume itself are the lineage retention exists to prune.
func planRetention(snaps []cloud.Snapshot, keep int, live liveLineage) []retentionVerdict {
	newestConsistent := ""
	for _, s := range snaps {
		if s.State == cloud.SnapshotCompleted && s.Consistent {
			newestConsistent = s.ID
			break
		}
	}
	var out []retentionVerdict
	kept := 0
	for _, s := range snaps {
		v := retentionVerdict{Snapshot: s}
		switch {
		case s.State != cloud.SnapshotCompleted:
			v.Why = s.State + ": never deleted"
		case kept < keep:
			kept++
			v.Why = fmt.Sprintf("one of the newest %d completed", keep)
		case s.ID == newestConsistent:
			v.Why = "the newest consistent snapshot"
		case live.VolumeID != "" && s.SourceVolume != live.VolumeID && s.StartTime.After(live.Cut):
			v.Why = fmt.Sprintf("taken from %s after the live volume %s was cut from its source: may hold writes the live volume lacks", orDash(s.SourceVolume), live.VolumeID)
		default:
			v.Delete = true
			v.Why = fmt.Sprintf("beyond the newest %d completed", keep)
		}
		out = append(out, v)
	}
	return out
}

// liveLineageOf finds the slot's live volume (the newest generation not marked superseded) and where it
// was cut from.
func liveLineageOf(ctx context.Context, c cloud.EC2, group, slot string, snaps []cloud.Snapshot) (liveLineage, error) {
	vols, err := cloud.ListSlotVolumes(ctx, c, group, slot)
	if err != nil {
		return liveLineage{}, err
	}
	for _, v := range vols {
		if v.Superseded {
			continue
		}
		// ListSlotVolumes describes the volume with the snapshot it was created from.
		l := liveLineage{VolumeID: v.ID, Source: v.SnapshotID, Cut: v.CreateTime}
		if l.Source != "" {
			found := false
			for _, s := range snaps {
				if s.ID == l.Source {
					l.Cut, found = s.StartTime, true
				}
			}
			if !found {
				// The source is not among the slot's snapshots (not tagged for it, or deleted).
				if s, err := cloud.DescribeSnapshot(ctx, c, l.Source); err == nil {
					l.Cut = s.StartTime
				} else if !cloud.HasCode(err, cloud.CodeSnapshotNotFound) {
					return liveLineage{}, err
				}
			}
		}
		return l, nil
	}
	return liveLineage{}, nil
}

// applyRetention deletes the snapshots planRetention picks for one slot.
func (in *thisInstance) applyRetention(ctx context.Context, log *slog.Logger, out io.Writer, slot string, keep int, dryRun bool) error {
	log = log.With(logkey.Step, "retention", logkey.Slot, slot)
	snaps, err := cloud.ListSlotSnapshots(ctx, in.clients.EC2, in.group, slot)
	if err != nil {
		return err
	}
	live, err := liveLineageOf(ctx, in.clients.EC2, in.group, slot, snaps)
	if err != nil {
		return err
	}
	// A locked snapshot is never deleted, nor tried: EBS would refuse it (snaplock.go).
	locks, err := cloud.LockedSnapshots(ctx, in.clients.EC2)
	if err != nil {
		return fmt.Errorf("retention of slot %s reads the snapshot locks first, so as never to delete a locked one (grant ec2:DescribeLockedSnapshots): %w", slot, err)
	}
	verdicts := planRetention(snaps, keep, live)
	keepLocked(verdicts, locks)
	var deleted, kept []string
	for _, v := range verdicts {
		if !v.Delete {
			kept = append(kept, v.Snapshot.ID)
			log.Debug("keeping snapshot", logkey.Snapshot, v.Snapshot.ID, logkey.Why, v.Why)
			continue
		}
		if dryRun {
			fmt.Fprintf(out, "would delete %s (slot %s, generation %d, %s): %s\n", v.Snapshot.ID, slot, v.Snapshot.Generation, v.Snapshot.StartTime.UTC().Format(time.RFC3339), v.Why)
			continue
		}
		err := cloud.DeleteSnapshot(ctx, in.clients.EC2, v.Snapshot.ID)
		switch {
		case err == nil:
			deleted = append(deleted, v.Snapshot.ID)
			log.Info("deleted snapshot", logkey.Snapshot, v.Snapshot.ID, logkey.Why, v.Why)
		case cloud.HasCode(err, cloud.CodeSnapshotInUse):
			kept = append(kept, v.Snapshot.ID)
			log.Warn("snapshot in use (by an AMI): kept", logkey.Snapshot, v.Snapshot.ID)
		default:
			return err
		}
	}
	if !dryRun {
		fmt.Fprintf(out, "retention slot %s (--keep %d): deleted %d [%s], kept %d\n", slot, keep, len(deleted), strings.Join(deleted, " "), len(kept))
	}
	return nil
}
