package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// `handover snapshot` takes a consistent snapshot of each slot's volume now (the filesystem frozen for the
// instant of CreateSnapshot), then applies retention. The packaged handover-snapshot.timer runs it.

// snapshotRequest is one CreateSnapshot of a slot's volume.
type snapshotRequest struct {
	Group       string
	Slot        string
	Volume      cloud.Volume
	InstanceID  string
	Consistent  bool
	Description string
}

// tags are the snapshot's tags, set at creation (DESIGN.md): group, slot, generation, source volume and
// instance, and handover:consistent=true only when the data was still.
func (r snapshotRequest) tags() map[string]string {
	t := map[string]string{
		cloud.TagGroup:          r.Group,
		cloud.TagSlot:           r.Slot,
		cloud.TagGeneration:     strconv.Itoa(r.Volume.Generation),
		cloud.TagSourceVolume:   r.Volume.ID,
		cloud.TagSourceInstance: r.InstanceID,
	}
	if r.Consistent {
		t[cloud.TagConsistent] = "true"
	}
	return t
}

// createSlotSnapshot calls CreateSnapshot with the tags in TagSpecifications, so that a snapshot never
// exists untagged. CreateSnapshot has no idempotency token: callers find an earlier one by description.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshot.html
func createSlotSnapshot(ctx context.Context, c cloud.EC2, r snapshotRequest) (cloud.Snapshot, error) {
	out, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{
		VolumeId:          aws.String(r.Volume.ID),
		Description:       aws.String(r.Description),
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeSnapshot, r.tags()),
	})
	if err != nil {
		return cloud.Snapshot{}, fmt.Errorf("create snapshot of %s: %w", r.Volume.ID, err)
	}
	return cloud.Snapshot{
		ID:             aws.ToString(out.SnapshotId),
		State:          string(out.State),
		Progress:       aws.ToString(out.Progress),
		Generation:     r.Volume.Generation,
		Consistent:     r.Consistent,
		SourceVolume:   r.Volume.ID,
		SourceInstance: r.InstanceID,
		VolumeSizeGiB:  aws.ToInt32(out.VolumeSize),
		StartTime:      aws.ToTime(out.StartTime),
		Tags:           cloud.TagMap(out.Tags),
	}, nil
}

// snapshotConfig is `handover snapshot`.
type snapshotConfig struct {
	hostOptions
	FreezeTimeout time.Duration
	Keep          int
	Timeout       time.Duration
}

// register declares snapshot's flags.
func (c *snapshotConfig) register(f *flags) {
	c.hostOptions.register(f, "lock shared with up and down, so that a snapshot never runs in the middle of them")
	f.fs.DurationVar(&c.FreezeTimeout, "freeze-timeout", 30*time.Second, "longest a filesystem stays frozen waiting for CreateSnapshot; then it is thawed and the run fails")
	f.fs.IntVar(&c.Keep, "keep", 0, "after the snapshot, delete the slot's oldest completed snapshots beyond this many (0: delete nothing)")
	f.fs.DurationVar(&c.Timeout, "timeout", defaultDownTimeout, "bound on the whole snapshot; past it a freeze that hangs is given up on, a crash-consistent snapshot taken and the run fails")
}

// validate checks snapshot's options in one place.
func (c *snapshotConfig) validate() error {
	if c.Keep < 0 {
		return badOption("keep", "must be 0 (keep everything) or more")
	}
	if c.FreezeTimeout <= 0 {
		return badOption("freeze-timeout", "must be positive")
	}
	if c.Timeout <= 0 {
		return badOption("timeout", "must be positive")
	}
	return c.hostOptions.validate()
}

func runSnapshot(ctx context.Context, e Env, args []string) error {
	return snapshotCommand(ctx, e, args, host.FSCalls{})
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

// snapshotNow snapshots each slot's volume attached to this instance, frozen for the call, then applies
// retention to each slot. Like down, it is bounded by --timeout, with finalReserve of it kept for a
// crash-consistent snapshot when the freeze hangs; then it skips retention and fails naming the step.
func (in *thisInstance) snapshotNow(ctx context.Context, log *slog.Logger, out io.Writer, cfg snapshotConfig, dryRun bool) error {
	self := in.id.InstanceID
	log = log.With(logkey.Instance, self)
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, cfg.Timeout)
	defer cancel()
	work, cancelWork := context.WithTimeout(ctx, cfg.Timeout-finalReserve(cfg.Timeout))
	defer cancelWork()
	var slots []*slotRelease
	describe := func(s *slotRelease) string { return fmt.Sprintf("handover snapshot: %s of %s", s.Volume.ID, self) }
	failed := func(step string, err error) error {
		if work.Err() == nil || parent.Err() != nil {
			return err
		}
		var unfinished *host.UnfinishedError
		if errors.As(err, &unfinished) {
			step = unfinished.Step
		}
		log.Error("step did not finish within the bound; giving up on it", logkey.Step, step, "bound", "--timeout "+cfg.Timeout.String(), "error", err.Error())
		var outcomes []string
		if slots != nil && (step == "unmount" || step == "freeze") {
			if serr := in.snapshotCrashConsistent(ctx, log, slots, describe); serr != nil {
				outcomes = append(outcomes, "crash-consistent snapshot failed: "+serr.Error())
			}
		}
		outcomes = append(outcomes, snapshotsSummary(slots))
		if cfg.Keep > 0 {
			outcomes = append(outcomes, "retention skipped")
		}
		return pastBound(overrun{Command: "snapshot", Within: "--timeout " + cfg.Timeout.String(), Step: step, Cause: err}, outcomes,
			"look for a hung device (dmesg), then rerun handover snapshot")
	}

	if !dryRun {
		lock, err := in.host.Lock(work, cfg.LockFile, cfg.Timeout)
		if err != nil {
			return failed("lock", err)
		}
		defer lock.Unlock()
	}
	found, err := in.findSlotVolumes(work, log, cfg.Volumes)
	if err != nil {
		return failed("observe", err)
	}
	for _, s := range found {
		if s.Volume.ID == "" || s.Note != "" {
			return fail.Precondition(fmt.Sprintf("slot %s: %s; run `handover up` first, or drop the slot from --volume", s.Spec.Slot, orDash(s.Note)), nil)
		}
		slots = append(slots, s)
		if dryRun {
			how := "not mounted"
			switch mps := mountPointsOf(s); {
			case s.Device == "":
				how = "device not visible: crash-consistent only"
			case len(mps) > 0:
				how = "freeze " + mps[0] + " for the call"
			}
			fmt.Fprintf(out, "would snapshot slot %s: %s (generation %d), %s\n", s.Spec.Slot, s.Volume.ID, s.Volume.Generation, how)
		}
	}
	if !dryRun {
		st := stillness{Release: releaseFreeze, FreezeTimeout: cfg.FreezeTimeout, Rerun: "snapshot"}
		if err := in.snapshotStill(work, log, slots, st, describe); err != nil {
			return failed("snapshot", err)
		}
		for _, s := range slots {
			cons := "consistent"
			if !s.Consistent {
				cons = "NOT consistent"
			}
			fmt.Fprintf(out, "slot %s: %s (generation %d) -> snapshot %s (%s, %s)\n", s.Spec.Slot, s.Volume.ID, s.Volume.Generation, s.Snapshot.ID, cons, orDash(s.Still))
		}
	}
	if cfg.Keep == 0 {
		return nil
	}
	for _, s := range slots {
		if err := in.applyRetention(work, log, out, s.Spec.Slot, cfg.Keep, dryRun); err != nil {
			return failed("retention", err)
		}
	}
	return nil
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
		if s.State == string(ec2types.SnapshotStateCompleted) && s.Consistent {
			newestConsistent = s.ID
			break
		}
	}
	var out []retentionVerdict
	kept := 0
	for _, s := range snaps {
		v := retentionVerdict{Snapshot: s}
		switch {
		case s.State != string(ec2types.SnapshotStateCompleted):
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
		out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{v.ID}})
		if err != nil {
			return liveLineage{}, fmt.Errorf("describe live volume %s: %w", v.ID, err)
		}
		l := liveLineage{VolumeID: v.ID, Cut: v.CreateTime}
		if len(out.Volumes) == 1 {
			l.Source = aws.ToString(out.Volumes[0].SnapshotId)
		}
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
	log = log.With(logkey.Step, "retention", "slot", slot)
	snaps, err := cloud.ListSlotSnapshots(ctx, in.clients.EC2, in.group, slot)
	if err != nil {
		return err
	}
	live, err := liveLineageOf(ctx, in.clients.EC2, in.group, slot, snaps)
	if err != nil {
		return err
	}
	var deleted, kept []string
	for _, v := range planRetention(snaps, keep, live) {
		if !v.Delete {
			kept = append(kept, v.Snapshot.ID)
			log.Debug("keeping snapshot", "snapshot_id", v.Snapshot.ID, "why", v.Why)
			continue
		}
		if dryRun {
			fmt.Fprintf(out, "would delete %s (slot %s, generation %d, %s): %s\n", v.Snapshot.ID, slot, v.Snapshot.Generation, v.Snapshot.StartTime.UTC().Format(time.RFC3339), v.Why)
			continue
		}
		_, err := in.clients.EC2.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(v.Snapshot.ID)})
		switch {
		case err == nil, cloud.HasCode(err, cloud.CodeSnapshotNotFound):
			deleted = append(deleted, v.Snapshot.ID)
			log.Info("deleted snapshot", "snapshot_id", v.Snapshot.ID, "why", v.Why)
		case cloud.HasCode(err, cloud.CodeSnapshotInUse):
			kept = append(kept, v.Snapshot.ID)
			log.Warn("snapshot in use (by an AMI): kept", "snapshot_id", v.Snapshot.ID)
		default:
			return fmt.Errorf("delete snapshot %s: %w", v.Snapshot.ID, err)
		}
	}
	if !dryRun {
		fmt.Fprintf(out, "retention slot %s (--keep %d): deleted %d [%s], kept %d\n", slot, keep, len(deleted), strings.Join(deleted, " "), len(kept))
	}
	return nil
}
