package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/logkey"
)

// The slots of one run of down or snapshot are snapshotted as one set (cloud/snapshotsets.go): tagged with
// one set id and the number of slots, and taken for one moment, either with every slot kept still across
// all the CreateSnapshot calls (frozen together, or unmounted), or, when a slot is live, in one
// CreateSnapshots call. up restores a group of several slots only from a complete set.

// anyLive reports whether a slot to snapshot is not kept still (not frozen, unmounted or unmounted already):
// its device is not visible, its freeze failed, or nothing was to keep it still (snapshot --freeze=false).
func anyLive(work []*slotRelease) bool {
	for _, s := range work {
		if s.Still == "" {
			return true
		}
	}
	return false
}

// attachedSlots counts the slots whose volume is attached here.
func attachedSlots(slots []*slotRelease) int {
	n := 0
	for _, s := range slots {
		if !s.released() {
			n++
		}
	}
	return n
}

// retakePartialSet: in a group of several slots, a rerun of down that finds a snapshot from its earlier
// run for some slots but not for others takes all of them again. The earlier snapshots are of the earlier
// run's moment (its set is incomplete, and up never restores it), and a new one of the others would be of
// another moment: only a new set of every slot is one moment.
func retakePartialSet(log *slog.Logger, slots, work []*slotRelease) []*slotRelease {
	if attachedSlots(slots) < 2 || len(work) == 0 {
		return work
	}
	for _, s := range slots {
		if s.released() || !s.Reused {
			continue
		}
		s.slotLog(log).Info("snapshot from an earlier run of this down taken again: the other slots need new ones, and a set is of one moment",
			logkey.Step, "snapshot", logkey.Snapshot, s.Snapshot.ID)
		s.Snapshot, s.Reused, s.Consistent = cloud.Snapshot{}, false, false
		work = append(work, s)
	}
	return work
}

// snapshotSetAtOnce snapshots the slots' volumes in one CreateSnapshots call (crash-consistent across
// them), for a run in which a slot is live; the slots kept still meanwhile (frozen, say) are so for the
// call too. The snapshots are tagged consistent only when the service was stopped.
func (in *thisInstance) snapshotSetAtOnce(ctx context.Context, log *slog.Logger, work []*slotRelease, set string, consistent bool, rerun string) error {
	vols := map[string]cloud.Volume{}
	var live []string
	for _, s := range work {
		vols[s.Spec.Slot] = s.Volume
		if s.Still == "" {
			live = append(live, s.Spec.Slot)
		}
	}
	log.Info("a slot is live: snapshotting the slots in one CreateSnapshots (crash-consistent across them)", logkey.Step, "snapshot",
		"live", strings.Join(live, ","), "set", set)
	snaps, err := cloud.CreateSnapshotSet(ctx, in.clients.EC2, cloud.SetRequest{
		Group: in.group, InstanceID: in.id.InstanceID, Volumes: vols, Set: set, Consistent: consistent,
		Description: fmt.Sprintf("handover %s: snapshot set %s of %s", rerun, set, in.id.InstanceID), Log: log,
	})
	if cloud.HasCode(err, cloud.CodeUnauthorizedOp) {
		return in.snapshotApart(ctx, log, work, consistent, rerun, err)
	}
	for _, s := range work {
		if snap, ok := snaps[s.Spec.Slot]; ok {
			s.Snapshot, s.Consistent = snap, consistent
			log.Info("snapshot created", logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot, logkey.Snapshot, snap.ID,
				"consistent", consistent, "still", orDash(s.Still), "set", set)
		}
	}
	if err != nil {
		return fmt.Errorf("snapshot set of slots %s failed; any filesystem frozen is thawed and the volumes stay attached; rerun %s: %w",
			strings.Join(slotNames(work), ", "), rerun, err)
	}
	return nil
}

// crashConsistentSet is snapshotCrashConsistent for a group of several slots: one CreateSnapshots of every
// slot's volume attached here, so that the crash-consistent snapshots are one set, whatever snapshots the
// run took before it gave up (those are of another moment; their set stays incomplete). A slot without a
// snapshot yet gets its member of the set as its snapshot.
func (in *thisInstance) crashConsistentSet(ctx context.Context, log *slog.Logger, slots []*slotRelease) error {
	vols := map[string]cloud.Volume{}
	for _, s := range slots {
		if !s.released() {
			vols[s.Spec.Slot] = s.Volume
		}
	}
	set := cloud.NewSetID()
	snaps, err := cloud.CreateSnapshotSet(ctx, in.clients.EC2, cloud.SetRequest{
		Group: in.group, InstanceID: in.id.InstanceID, Volumes: vols, Set: set,
		Description: fmt.Sprintf("handover: crash-consistent snapshot set %s of %s, past the bound", set, in.id.InstanceID), Log: log,
	})
	if cloud.HasCode(err, cloud.CodeUnauthorizedOp) {
		var todo []*slotRelease
		for _, s := range slots {
			if !s.released() && s.Snapshot.ID == "" {
				todo = append(todo, s)
			}
		}
		return in.snapshotApart(ctx, log, todo, false, "down", err)
	}
	for _, s := range slots {
		snap, ok := snaps[s.Spec.Slot]
		if !ok || s.Snapshot.ID != "" {
			continue
		}
		s.Snapshot, s.Consistent, s.Reused = snap, false, false
		log.Warn("crash-consistent snapshot created past the bound (not tagged consistent)", logkey.Step, "snapshot",
			logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot, logkey.Snapshot, snap.ID, "set", set)
	}
	if err != nil {
		log.Error("crash-consistent snapshot set failed", logkey.Step, "snapshot", logkey.Error, err.Error())
	}
	return err
}

// slotNames lists the slots' names.
func slotNames(slots []*slotRelease) []string {
	out := make([]string, 0, len(slots))
	for _, s := range slots {
		out = append(out, s.Spec.Slot)
	}
	return out
}

// snapshotApart is the fallback when the instance's role may not call CreateSnapshots: each slot's volume
// snapshotted by itself, live. They are not of one moment, so each is a set of its own (never a complete
// set of the group, which up would restore as one moment); the warning says which permission to add.
func (in *thisInstance) snapshotApart(ctx context.Context, log *slog.Logger, work []*slotRelease, consistent bool, rerun string, denied error) error {
	log.Warn("not allowed to call ec2:CreateSnapshots: snapshotting the slots one by one, which are not one moment; add ec2:CreateSnapshots (and ec2:DescribeInstances) to the instance's role",
		logkey.Step, "snapshot", logkey.Error, denied.Error())
	for _, s := range work {
		req := cloud.SnapshotRequest{Group: in.group, Slot: s.Spec.Slot, Volume: s.Volume, InstanceID: in.id.InstanceID, Consistent: consistent,
			Description: fmt.Sprintf("handover %s: %s of %s", rerun, s.Volume.ID, in.id.InstanceID), Set: cloud.NewSetID(), SetSize: 1}
		snap, err := cloud.CreateSnapshot(ctx, in.clients.EC2, req)
		if err != nil {
			return fmt.Errorf("snapshot of %s (slot %s) failed; rerun %s: %w", s.Volume.ID, s.Spec.Slot, rerun, err)
		}
		s.Snapshot, s.Consistent, s.Reused = snap, consistent, false
		log.Info("snapshot created", logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, logkey.Slot, s.Spec.Slot, logkey.Snapshot, snap.ID, "consistent", consistent)
	}
	return nil
}
