package cloud

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Choosing and making a slot's volume. The newest generation of the slot is its live data:
//
//   - attached here: done;
//   - in this AZ and available: attach it (the fast path, nothing lost since the last snapshot);
//   - in this AZ and attached to an instance on its way out: wait for it to detach, then attach; attached to a
//     stopped instance: detach it (safe, its OS is not running), then attach;
//   - anywhere else: restore the best snapshot (newest generation, consistent before crash-consistent, then
//     newest) into a new volume of the next generation here, waiting for it first if it is still pending
//     rather than restoring older data; and while the newest volume is still attached to an instance that
//     is shutting down elsewhere, wait for it to be released first, because that instance's `down` may be
//     about to take the final snapshot;
//   - no volume and no snapshot at all: a blank volume (first boot), tagged handover:created-blank=true.
//
// PlanSlot decides from one observation and changes nothing; SlotRun.converge acts on its plan, waits
// for the world to move, observes again, until the plan is "done". A crash anywhere leaves a state the
// next run's plan picks up: a created volume is found by its tags, or, before DescribeVolumes shows it, by
// CreateVolume's ClientToken, which is derived from (group, slot, generation) so that the retry returns
// the same volume instead of making a second one.

// Holder is an instance a volume of the slot is attached to.
type Holder struct {
	ID       string `json:"instance_id"`
	State    string `json:"state"`               // EC2 state; "gone" when the instance no longer exists
	ASGState string `json:"asg_state,omitempty"` // Auto Scaling lifecycle state, when running in a group
}

// leaving reports whether the instance is on its way out and will release its volumes by itself.
func (h Holder) leaving() bool {
	switch h.State {
	case "gone", string(ec2types.InstanceStateNameShuttingDown), string(ec2types.InstanceStateNameTerminated), string(ec2types.InstanceStateNameStopping):
		return true
	}
	return strings.HasPrefix(h.ASGState, "Terminating")
}

func (h Holder) stopped() bool { return h.State == string(ec2types.InstanceStateNameStopped) }

func (h Holder) String() string {
	s := h.ID + " (" + h.State
	if h.ASGState != "" {
		s += ", " + h.ASGState
	}
	return s + ")"
}

// describeHolder reads an attached instance's EC2 state and, while it runs, its Auto Scaling state.
func describeHolder(ctx context.Context, c *Clients, id string) (Holder, error) {
	h := Holder{ID: id, State: "gone"}
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if HasCode(err, CodeInstanceNotFound) {
		return h, nil
	}
	if err != nil {
		return h, fmt.Errorf("describe instance %s: %w", id, err)
	}
	for _, res := range out.Reservations {
		for _, i := range res.Instances {
			if i.State != nil {
				h.State = string(i.State.Name)
			}
		}
	}
	if h.State == string(ec2types.InstanceStateNameRunning) || h.State == string(ec2types.InstanceStateNamePending) {
		as, err := c.AutoScaling.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
		if err != nil {
			return h, fmt.Errorf("describe Auto Scaling state of %s: %w", id, err)
		}
		for _, i := range as.AutoScalingInstances {
			h.ASGState = aws.ToString(i.LifecycleState)
		}
	}
	return h, nil
}

// SlotView is one observation of a slot: its volumes and snapshots (newest first) and the instances its
// newest volumes are attached to.
type SlotView struct {
	Volumes   []Volume
	Snapshots []Snapshot
	Holders   map[string]Holder
}

// ObserveSlot describes the slot's volumes and snapshots, and the other instances holding its newest
// generation.
//
// The two listings go out together: neither depends on the other, and each is a round trip on the
// recovery's critical path (80 ms or so in a real region).
func ObserveSlot(ctx context.Context, c *Clients, group, slot, self string) (SlotView, error) {
	var snaps []Snapshot
	var snapErr error
	listed := make(chan struct{})
	go func() {
		defer close(listed)
		snaps, snapErr = ListSlotSnapshots(ctx, c.EC2, group, slot)
	}()
	v, err := observeVolumes(ctx, c, group, slot, self, nil)
	<-listed
	if snapErr != nil {
		return SlotView{}, snapErr
	}
	if err != nil {
		return SlotView{}, err
	}
	v.Snapshots = snaps
	return v, nil
}

// observeVolumes is ObserveSlot with the snapshots already known: the slot's volumes and their holders.
func observeVolumes(ctx context.Context, c *Clients, group, slot, self string, snaps []Snapshot) (SlotView, error) {
	vols, err := ListSlotVolumes(ctx, c.EC2, group, slot)
	if err != nil {
		return SlotView{}, err
	}
	return viewOf(ctx, c, vols, snaps, self)
}

// viewOf is the view of a slot whose volumes and snapshots are listed already: it describes the other
// instances holding its newest generation.
func viewOf(ctx context.Context, c *Clients, vols []Volume, snaps []Snapshot, self string) (SlotView, error) {
	v := SlotView{Volumes: vols, Snapshots: snaps, Holders: map[string]Holder{}}
	for _, vol := range vols {
		if vol.Generation != vols[0].Generation {
			break
		}
		for _, a := range vol.Attachments {
			if a.InstanceID == "" || a.InstanceID == self {
				continue
			}
			if _, ok := v.Holders[a.InstanceID]; ok {
				continue
			}
			h, err := describeHolder(ctx, c, a.InstanceID)
			if err != nil {
				return SlotView{}, err
			}
			v.Holders[a.InstanceID] = h
		}
	}
	return v, nil
}

// PlanAction is what the slot needs next.
type PlanAction int

const (
	PlanDone           PlanAction = iota // the live volume is attached here
	PlanAttach                           // attach the live volume here
	PlanWaitVolume                       // the live volume is creating, attaching or detaching: wait
	PlanWaitHolder                       // another instance holds the live volume: wait for it to let go
	PlanDetachStopped                    // a stopped instance in this AZ holds it: detach, then attach here
	PlanWaitSnapshot                     // the best snapshot is still pending: wait rather than restore older data
	PlanRestore                          // create a volume here from the best snapshot
	PlanBlank                            // first boot: create a blank volume here
	PlanSnapshotOrphan                   // the newest volume is elsewhere and no snapshot has its last writes: snapshot it first
	PlanForceDetach                      // its holder is stuck leaving in this AZ past the bound: force the detach
	PlanRefuse                           // nothing safe to do; Err says what to fix
)

var planNames = map[PlanAction]string{
	PlanDone: "done", PlanAttach: "attach", PlanWaitVolume: "wait-volume", PlanWaitHolder: "wait-holder",
	PlanDetachStopped: "detach-stopped", PlanWaitSnapshot: "wait-snapshot", PlanRestore: "restore",
	PlanBlank: "create-blank", PlanRefuse: "refuse", PlanSnapshotOrphan: "snapshot-orphan", PlanForceDetach: "force-detach",
}

func (a PlanAction) String() string { return planNames[a] }

// SlotPlan is the next step for a slot and why.
type SlotPlan struct {
	Action     PlanAction
	Volume     Volume   // the live volume (done, attach, wait-volume, wait-holder, detach-stopped)
	Snapshot   Snapshot // restore, wait-snapshot
	Generation int      // restore, blank: the new volume's generation
	Holder     Holder   // wait-holder, detach-stopped
	Live       bool     // wait-holder: the holder is a live instance (exit 4 when the wait runs out)
	Why        string   // one line for the log and the plan
	Warn       string   // what the plan leaves behind, for the operator
	Err        error    // refuse
	// restore, in a group of several slots: what the restore takes the moment from (SetPin). FromSet is
	// the chosen set's id; LastState: the snapshot holds the volume's last writes (planOrphan).
	FromSet   string
	LastState bool
}

// key identifies a plan up to progress, so a wait can tell when the world has moved.
func (p SlotPlan) key() string {
	att := ""
	for _, a := range p.Volume.Attachments {
		att += a.InstanceID + "/" + a.State + ";"
	}
	return strings.Join([]string{p.Action.String(), p.Volume.ID, p.Volume.State, att, p.Snapshot.ID, p.Snapshot.State,
		p.Holder.State, p.Holder.ASGState, strconv.Itoa(p.Generation)}, "|")
}

// PlanInput is what PlanSlot decides from.
type PlanInput struct {
	InstanceID, AZ string
	Group, Slot    string
	View           SlotView
	Takeover       bool
	RequireData    bool
	// MinGeneration skips generations whose ClientToken was already spent with other parameters.
	MinGeneration int
	// HolderStuck: the leaving instance holding the newest volume did not let go within --release-timeout:
	// recover without it (force the detach in this AZ, snapshot the volume where it is otherwise).
	HolderStuck bool
	// OrphanFailed: snapshotting the orphaned newest volume failed or did not complete within the bound:
	// restore the newest older snapshot, with a loud warning of what is lost.
	OrphanFailed bool
	// Sets is the choice of snapshot set for a group of several slots (ObserveSets): a restore takes the
	// slot's member of it, never a snapshot of another moment. nil for a group of one slot.
	Sets *SetChoice
}

// liveVolume picks the slot's live volume: the newest generation, preferring one attached here, then
// one in this AZ. Volumes in the error state are never live.
func liveVolume(vols []Volume, self, az string) (Volume, bool) {
	var best Volume
	found := false
	for _, v := range vols {
		if v.State == string(ec2types.VolumeStateError) {
			continue
		}
		if found && v.Generation != best.Generation {
			break
		}
		switch {
		case !found:
			best, found = v, true
		case attachedTo(v, self) && !attachedTo(best, self):
			best = v
		case v.AZ == az && best.AZ != az && !attachedTo(best, self):
			best = v
		}
	}
	return best, found
}

func attachedTo(v Volume, instanceID string) bool {
	for _, a := range v.Attachments {
		if a.InstanceID == instanceID {
			return true
		}
	}
	return false
}

// rankSnapshots orders the usable snapshots best first: newest generation, then newest, and between two
// taken at the same instant the consistent one (taken with the service stopped or the filesystem frozen).
//
// Newest wins over consistent on purpose: a crash-consistent snapshot is what a power loss leaves, which a
// journaling filesystem and a database with a write-ahead log recover from, while restoring an older
// consistent snapshot silently drops every write made since it. A crash-consistent snapshot only exists
// when `down`'s pre-stop command or freeze failed, so the restore says so in a warning.
// Snapshots in the error state are returned apart.
func rankSnapshots(snaps []Snapshot) (usable, failed []Snapshot) {
	for _, s := range snaps {
		if s.State == string(ec2types.SnapshotStateError) {
			failed = append(failed, s)
			continue
		}
		usable = append(usable, s)
	}
	sort.SliceStable(usable, func(i, j int) bool {
		a, b := usable[i], usable[j]
		if a.Generation != b.Generation {
			return a.Generation > b.Generation
		}
		if !a.StartTime.Equal(b.StartTime) {
			return a.StartTime.After(b.StartTime)
		}
		return a.Consistent && !b.Consistent
	})
	return usable, failed
}

// nextGeneration is one more than any generation the slot has used.
func nextGeneration(v SlotView, min int) int {
	n := 0
	for _, vol := range v.Volumes {
		n = max(n, vol.Generation)
	}
	for _, s := range v.Snapshots {
		n = max(n, s.Generation)
	}
	return max(n+1, min)
}

// PlanSlot decides the slot's next step from one observation. It is pure: the dry run, status and the
// converge loop share it.
func PlanSlot(in PlanInput) SlotPlan {
	v := in.View
	usable, failed := rankSnapshots(v.Snapshots)
	live, haveLive := liveVolume(v.Volumes, in.InstanceID, in.AZ)
	if haveLive && len(usable) > 0 && usable[0].Generation > live.Generation {
		// A snapshot of a newer generation than any remaining volume: that volume was deleted, and the
		// snapshot holds the newest data.
		haveLive = false
	}
	var warn string
	orphan := false // the newest volume is in another AZ and gets no more writes: its data must come here
	if haveLive {
		var att *Attachment
		for i := range live.Attachments {
			att = &live.Attachments[i]
		}
		p := SlotPlan{Volume: live}
		switch {
		case att != nil && att.InstanceID == in.InstanceID:
			switch att.State {
			case string(ec2types.VolumeAttachmentStateAttached):
				p.Action, p.Why = PlanDone, fmt.Sprintf("%s is attached here at %s", live.ID, att.Device)
			default:
				p.Action, p.Why = PlanWaitVolume, fmt.Sprintf("%s is %s here", live.ID, att.State)
			}
			return p
		case att == nil && live.AZ != in.AZ:
			orphan = live.State == string(ec2types.VolumeStateAvailable)
		case att == nil && live.AZ == in.AZ:
			switch live.State {
			case string(ec2types.VolumeStateAvailable):
				p.Action, p.Why = PlanAttach, fmt.Sprintf("%s (generation %d) is available in %s", live.ID, live.Generation, in.AZ)
			default:
				p.Action, p.Why = PlanWaitVolume, fmt.Sprintf("%s (generation %d) is %s in %s", live.ID, live.Generation, live.State, in.AZ)
			}
			return p
		case att != nil:
			h, ok := v.Holders[att.InstanceID]
			if !ok {
				h = Holder{ID: att.InstanceID, State: "unknown"}
			}
			p.Holder = h
			sameAZ := live.AZ == in.AZ
			leaving := att.State == string(ec2types.VolumeAttachmentStateDetaching) || h.leaving()
			switch {
			case leaving && sameAZ && in.HolderStuck:
				p.Action = PlanForceDetach
				p.Why = fmt.Sprintf("%s is still attached to %s, which has been on its way out for all of --release-timeout: force the detach and attach it here", live.ID, h)
				return p
			case att.State == string(ec2types.VolumeAttachmentStateDetaching) && sameAZ:
				p.Action, p.Why = PlanWaitVolume, fmt.Sprintf("%s is detaching from %s", live.ID, h)
				return p
			case leaving && in.HolderStuck:
				orphan = true // snapshot it where it is: a volume attached to a dying instance can be snapshotted
			case leaving:
				// The leaving instance's down is taking the final snapshot and will detach the volume.
				p.Action = PlanWaitHolder
				p.Why = fmt.Sprintf("%s (generation %d, %s) is still attached to %s, which is on its way out: waiting for it to be released", live.ID, live.Generation, live.AZ, h)
				return p
			case h.stopped() && sameAZ:
				p.Action, p.Why = PlanDetachStopped, fmt.Sprintf("%s is attached to %s, which is stopped: detach it and attach it here", live.ID, h)
				return p
			case h.stopped():
				orphan = true
			case in.Takeover:
				warn = fmt.Sprintf("--takeover: %s (generation %d) stays with live %s in %s; what it writes after the snapshot restored here is lost", live.ID, live.Generation, h, live.AZ)
			default:
				p.Action, p.Live = PlanWaitHolder, true
				p.Why = fmt.Sprintf("%s (generation %d, %s) is attached to %s, a live instance that is not being terminated", live.ID, live.Generation, live.AZ, h)
				return p
			}
		}
		// The live volume is elsewhere (or stays with its holder): restore from a snapshot below.
	}

	next := nextGeneration(v, in.MinGeneration)
	if len(usable) == 0 && orphan && !in.OrphanFailed {
		return SlotPlan{Action: PlanSnapshotOrphan, Volume: live, Generation: next,
			Why: fmt.Sprintf("the newest volume %s (generation %d) is in %s with no snapshot: snapshot it, then restore that here", live.ID, live.Generation, live.AZ)}
	}
	if len(usable) == 0 {
		switch {
		case haveLive:
			return SlotPlan{Action: PlanRefuse, Volume: live, Err: fail.Precondition(fmt.Sprintf(
				"the slot's newest volume %s (generation %d) is in %s and there is no completed snapshot to restore in %s: snapshot it (handover snapshot on its instance) or run this instance in %s",
				live.ID, live.Generation, live.AZ, in.AZ, live.AZ), nil)}
		case len(failed) > 0:
			ids := make([]string, 0, len(failed))
			for _, s := range failed {
				ids = append(ids, s.ID)
			}
			return SlotPlan{Action: PlanRefuse, Err: fail.Precondition(fmt.Sprintf(
				"every snapshot of slot %s is in the error state (%s) and no volume is left: nothing safe to restore; restore one by hand or delete them to start blank",
				in.Slot, strings.Join(ids, ", ")), nil)}
		case in.RequireData:
			return SlotPlan{Action: PlanRefuse, Err: fail.Precondition(fmt.Sprintf(
				"slot %s of group %s has no volume and no snapshot, and --require-data refuses to start blank: check the group name and the volume and snapshot tags (%s, %s)",
				in.Slot, in.Group, TagGroup, TagSlot), nil)}
		}
		return SlotPlan{Action: PlanBlank, Generation: next,
			Why: fmt.Sprintf("slot %s has no volume and no snapshot: first boot, create a blank volume (generation %d)", in.Slot, next)}
	}
	pinnedSet := in.Sets != nil && in.Sets.Pin == PinSet && in.Sets.Covered[in.Slot]
	if orphan && !pinnedSet {
		if p, ok := planOrphan(in, live, usable, next); ok {
			p.LastState = p.Action == PlanRestore
			return p
		}
	}
	fromSet := ""
	if in.Sets != nil {
		if in.Sets.Pin == PinLastState && in.Sets.Covered[in.Slot] {
			return SlotPlan{Action: PlanRefuse, Volume: live, Err: &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf(
				"slot %s: another slot of the group was restored from its volume's last writes, and this slot's last writes cannot be had (%s): restoring it from an older snapshot set would mix two moments; rerun once its newest volume can be snapshotted (its zone answers), or restore the slots by hand",
				in.Slot, dashIfEmpty(live.ID))}}
		}
		cand, setWarn, err := in.Sets.forSlot(in.Slot, usable)
		if err != nil {
			return SlotPlan{Action: PlanRefuse, Volume: live, Err: fail.Precondition(err.Error()+"; restore the slots by hand from snapshots of one moment", nil)}
		}
		usable, warn = cand, joinWarn(warn, setWarn)
		if in.Sets.Covered[in.Slot] {
			fromSet = in.Sets.Chosen.ID
		}
	}
	best := usable[0]
	p := SlotPlan{Snapshot: best, Generation: next, Warn: warn, FromSet: fromSet}
	if haveLive {
		p.Volume = live
	}
	if best.State != string(ec2types.SnapshotStateCompleted) {
		p.Action = PlanWaitSnapshot
		p.Why = fmt.Sprintf("the newest snapshot %s (generation %d) is %s at %s: waiting for it rather than restoring older data", best.ID, best.Generation, best.State, dashIfEmpty(best.Progress))
		return p
	}
	p.Action = PlanRestore
	kind := "crash-consistent"
	if best.Consistent {
		kind = "consistent"
	}
	p.Why = fmt.Sprintf("restore %s snapshot %s (generation %d, %s) into a new volume in %s (generation %d)", kind, best.ID, best.Generation, best.StartTime.UTC().Format(time.RFC3339), in.AZ, next)
	if fromSet != "" {
		p.Why += fmt.Sprintf(", of snapshot set %s (%d slots, one moment)", fromSet, in.Sets.Chosen.Size)
	}
	if haveLive && live.AZ != in.AZ {
		p.Why += fmt.Sprintf("; the newest volume %s is in %s", live.ID, live.AZ)
	}
	if haveLive && (best.Generation < live.Generation || orphan) {
		p.Warn = joinWarn(p.Warn, fmt.Sprintf("DATA LOSS: the newest volume %s (generation %d, %s) could not be snapshotted; restoring %s taken %s: every write since then is not here (the volume still holds them: snapshot it and restore that when its zone answers)",
			live.ID, live.Generation, live.AZ, best.ID, best.StartTime.UTC().Format(time.RFC3339)))
	}
	for _, f := range failed {
		// rankSnapshots' order: a failed snapshot of a newer generation, or of the same one taken later,
		// held writes that this restore does not carry (down's final snapshot, typically).
		if f.Generation > best.Generation || (f.Generation == best.Generation && f.StartTime.After(best.StartTime)) {
			where := ""
			if f.SourceVolume != "" {
				where = fmt.Sprintf("; its volume %s may still hold them: snapshot it again and rerun to restore them instead", f.SourceVolume)
			}
			p.Warn = joinWarn(p.Warn, fmt.Sprintf("newer snapshot %s (generation %d, %s) ended in error: writes made after %s are not in this restore%s",
				f.ID, f.Generation, f.StartTime.UTC().Format(time.RFC3339), best.StartTime.UTC().Format(time.RFC3339), where))
			break
		}
	}
	if !best.Consistent {
		p.Warn = joinWarn(p.Warn, fmt.Sprintf("snapshot %s is crash-consistent (taken without the service stopped or the filesystem frozen): the filesystem replays its journal and the service recovers as after a power loss", best.ID))
	}
	return p
}

// planOrphan decides for a newest volume that is in another AZ and gets no more writes (detached, or
// attached to a stopped or stuck instance): restore the snapshot that holds all its writes (a final one),
// waiting for it while it is pending; without one, snapshot the volume first. Restoring an older snapshot
// silently would lose the writes since it; only when snapshotting the orphan failed does the plan fall
// back to it (ok false), and then it warns loudly.
func planOrphan(in PlanInput, live Volume, usable []Snapshot, next int) (SlotPlan, bool) {
	for _, s := range usable {
		if s.SourceVolume != live.ID || !s.Final || s.Generation != live.Generation {
			continue
		}
		p := SlotPlan{Volume: live, Snapshot: s, Generation: next}
		if s.State != string(ec2types.SnapshotStateCompleted) {
			p.Action = PlanWaitSnapshot
			p.Why = fmt.Sprintf("the newest snapshot %s (the final one of %s, generation %d) is %s at %s: waiting for it rather than restoring older data",
				s.ID, live.ID, s.Generation, s.State, dashIfEmpty(s.Progress))
			return p, true
		}
		p.Action = PlanRestore
		kind := "crash-consistent"
		if s.Consistent {
			kind = "consistent"
		}
		p.Why = fmt.Sprintf("restore %s snapshot %s (generation %d, %s) into a new volume in %s (generation %d): the final snapshot of %s (%s), it holds every write",
			kind, s.ID, s.Generation, s.StartTime.UTC().Format(time.RFC3339), in.AZ, next, live.ID, live.AZ)
		if !s.Consistent {
			p.Warn = fmt.Sprintf("snapshot %s is crash-consistent (taken of a volume that was not cleanly released): the filesystem replays its journal and the service recovers as after a power loss", s.ID)
		}
		return p, true
	}
	if !in.OrphanFailed {
		return SlotPlan{Action: PlanSnapshotOrphan, Volume: live, Generation: next,
			Why: fmt.Sprintf("the newest volume %s (generation %d, %s) gets no more writes and no snapshot holds its last ones: snapshot it, then restore that here", live.ID, live.Generation, live.AZ)}, true
	}
	return SlotPlan{}, false
}

func joinWarn(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// VolumeClientToken is CreateVolume's idempotency token for one generation of a slot: a rerun after a
// crash sends the same token and gets the volume the first run made, not a second one; an instance in
// another AZ racing for the same generation gets IdempotentParameterMismatch. EC2 tokens are at most 64
// ASCII characters. https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
func VolumeClientToken(group, slot string, generation int, epoch string) string {
	sum := sha256.Sum256([]byte("handover/" + group + "/" + slot + "/" + strconv.Itoa(generation) + "/" + epoch))
	return hex.EncodeToString(sum[:])
}

// CreateVolumeInput builds the CreateVolume request for a restore (snap non-empty) or a blank volume.
func CreateVolumeInput(group, slot, az string, generation int, epoch string, shape VolumeShape, snap *Snapshot) *ec2.CreateVolumeInput {
	size := shape.SizeGiB
	tags := map[string]string{TagGroup: group, TagSlot: slot, TagGeneration: strconv.Itoa(generation)}
	if epoch != "" {
		tags[TagEpoch] = epoch
	}
	in := &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(az),
		ClientToken:      aws.String(VolumeClientToken(group, slot, generation, epoch)),
		VolumeType:       ec2types.VolumeType(shape.Type),
	}
	if snap != nil {
		in.SnapshotId = aws.String(snap.ID)
		size = max(size, int(snap.VolumeSizeGiB)) // grow only
		if shape.InitializationRate > 0 {
			// Restores only: CreateVolume refuses the rate for a blank volume (initialization.go).
			in.VolumeInitializationRate = aws.Int32(int32(shape.InitializationRate))
		}
	} else {
		tags[TagCreatedBlank] = "true"
	}
	in.Size = aws.Int32(int32(size))
	if shape.IOPS > 0 {
		in.Iops = aws.Int32(int32(shape.IOPS))
	}
	if shape.Throughput > 0 {
		in.Throughput = aws.Int32(int32(shape.Throughput))
	}
	if shape.Encrypted {
		in.Encrypted = aws.Bool(true)
	}
	if shape.KMSKeyID != "" {
		in.KmsKeyId = aws.String(shape.KMSKeyID)
	}
	in.TagSpecifications = TagSpec(ec2types.ResourceTypeVolume, tags)
	return in
}

// VolumeShape is what a volume handover creates looks like. Existing volumes are never modified.
type VolumeShape struct {
	SizeGiB    int // grow only: a snapshot larger than this restores at its own size
	Type       string
	IOPS       int // 0: the type's default
	Throughput int // MiB/s, gp3 only; 0: the default
	Encrypted  bool
	KMSKeyID   string
	// TypeSet: Type was configured (not the default), so it wins over the type recorded on the snapshot
	// (shape.go).
	TypeSet bool
	// InitializationRate is the Provisioned Rate for Volume Initialization of a restore, MiB/s (0: none);
	// never sent for a blank volume, nor for a snapshot enabled for fast snapshot restore here
	// (initialization.go).
	InitializationRate int
}

// SlotOutcome is what converging and retiring did for one slot.
type SlotOutcome struct {
	Slot       string   `json:"slot"`
	Volume     Volume   `json:"volume"`
	How        string   `json:"how"`                    // "already attached", "reattached", "restored from", "created blank"
	Snapshot   string   `json:"snapshot,omitempty"`     // the snapshot restored from
	Set        string   `json:"snapshot_set,omitempty"` // the snapshot set it belongs to (a group of several slots)
	Superseded []string `json:"superseded,omitempty"`
	Deleted    []string `json:"deleted,omitempty"`
	Warnings   []string `json:"warnings,omitempty"` // what failed without failing the run
	// A restore: how its shape differs from the configuration (shape.go), and how it is initialized
	// (initialization.go).
	ShapeNotes         []string        `json:"shape_notes,omitempty"`
	FastRestore        bool            `json:"fast_snapshot_restore,omitempty"`
	InitializationRate int             `json:"initialization_rate,omitempty"`
	Initialization     *Initialization `json:"initialization,omitempty"`
}

// SlotRun converges one slot.
type SlotRun struct {
	C              *Clients
	Log            *slog.Logger
	InstanceID, Az string
	Group          string
	Slot, Device   string // the slot, and the device name AttachVolume gives it
	Shape          VolumeShape
	Takeover       bool
	RequireData    bool
	ReleaseTimeout time.Duration
	// Fence re-checks the lease (the group's Elastic IP, agent/FENCING.md) before every step that creates,
	// attaches or detaches, and after CreateVolume; nil only where nothing is changed. Epoch is the lease's
	// association ID, tagged on what this run creates and part of CreateVolume's ClientToken.
	Fence func(context.Context) error
	Epoch string
	// DeviceReady reports that the volume's block device is on this host (host.FindVolumeDevice); nil
	// when up does not look at devices (--no-mount). An attach wait ends on it (volumeWait.Device).
	DeviceReady func(volumeID string) bool
	// GroupSlots are all the slots of the group; with more than one, a restore takes one snapshot set for
	// all of them (ObserveSets), and Pin, shared by the run's slots, makes them agree on it.
	GroupSlots []string
	Pin        *SetPin

	sets         *SetChoice
	created      Volume // the one volume this run may create for the slot (bounded by construction)
	holderStuck  bool   // the leaving holder did not let go within ReleaseTimeout
	orphanFailed bool   // snapshotting the orphaned newest volume failed or timed out
	minGen       int
	// volumesOnly: the step just taken made or attached this run's own volume, and the wait saw its
	// state; the next observation lists the slot's volumes again (the race checks need them) but keeps
	// the snapshots it has, which that step cannot have changed.
	volumesOnly  bool
	viewFresh    bool      // view holds the volumes a wait listed just now: the next observation uses it as it is
	holdDeadline time.Time // when waiting for other instances to let go gives up
	view         SlotView  // the last observation
	Res          SlotOutcome
}

// Bounds of the waits on EBS itself (the command's --timeout bounds them all as well).
const (
	volumeTransitionBound = 10 * time.Minute // creating, attaching, detaching
	tokenVisibilityBound  = 30 * time.Second // a volume made with our token to show up in DescribeVolumes
	maxConvergeRounds     = 40
)

func (s *SlotRun) input() PlanInput {
	return PlanInput{InstanceID: s.InstanceID, AZ: s.Az, Group: s.Group, Slot: s.Slot, View: s.view,
		Takeover: s.Takeover, RequireData: s.RequireData, MinGeneration: s.minGen,
		HolderStuck: s.holderStuck, OrphanFailed: s.orphanFailed, Sets: s.sets}
}

func (s *SlotRun) observe(ctx context.Context) (SlotPlan, error) {
	var v SlotView
	var err error
	light := s.volumesOnly && s.view.Snapshots != nil
	switch {
	case s.viewFresh:
		v = s.view // the wait that just ended listed the volumes
	case light:
		v, err = observeVolumes(ctx, s.C, s.Group, s.Slot, s.InstanceID, s.view.Snapshots)
	default:
		v, err = ObserveSlot(ctx, s.C, s.Group, s.Slot, s.InstanceID)
	}
	light = light || s.viewFresh
	s.volumesOnly, s.viewFresh = false, false
	if err != nil {
		return SlotPlan{}, err
	}
	s.view = v
	if len(s.GroupSlots) > 1 && (!light || s.sets == nil) {
		ch, err := ObserveSets(ctx, s.C.EC2, s.Group, s.GroupSlots, s.Pin, s.Epoch)
		if err != nil {
			return SlotPlan{}, err
		}
		s.sets = &ch
	}
	return PlanSlot(s.input()), nil
}

// Converge acts on the slot's plan until its live volume is attached here.
func (s *SlotRun) Converge(ctx context.Context) error {
	s.Res.Slot = s.Slot
	p, err := s.observe(ctx)
	if err != nil {
		return err
	}
	lastKey := ""
	stuck := 0
	for round := 0; round < maxConvergeRounds; round++ {
		before := p.key()
		if before != lastKey {
			s.Log.Info("plan", logkey.Step, "volume", logkey.Action, p.Action.String(), logkey.Why, p.Why)
			if p.Warn != "" {
				s.Log.Warn(p.Warn, logkey.Step, "volume")
			}
			lastKey = before
		}
		next, done, err := s.act(ctx, p)
		if done || err != nil {
			return err
		}
		if next != nil { // the wait observed already
			p = *next
			continue
		}
		if p, err = s.observe(ctx); err != nil {
			return err
		}
		if err := s.newerThanOurs(); err != nil {
			return err
		}
		if p.key() != before {
			stuck = 0
			continue
		}
		// The action changed nothing visible yet (a refused attach, a detach not begun): pause before the
		// next round instead of spinning, 250 ms doubling to 2 s.
		stuck++
		if err := wait.Pause(ctx, min(250*time.Millisecond<<stuck, 2*time.Second)); err != nil {
			return err
		}
	}
	return fmt.Errorf("slot %s did not settle after %d rounds (last plan: %s: %s); rerun", s.Slot, maxConvergeRounds, p.Action, p.Why)
}

// act carries out one plan: done when the volume is attached here, next when the step observed already.
func (s *SlotRun) act(ctx context.Context, p SlotPlan) (next *SlotPlan, done bool, err error) {
	switch p.Action {
	case PlanDone:
		s.Res.Volume = p.Volume
		if s.Res.How == "" {
			s.Res.How = "already attached"
		}
		return nil, true, nil
	case PlanRefuse:
		return nil, true, p.Err
	case PlanAttach:
		return nil, false, s.attach(ctx, p.Volume)
	case PlanWaitVolume:
		start := p.Volume
		return nil, false, waitVolume(ctx, s.Log, s.C.EC2, start.ID, "the end of "+volumeTransition(start, s.InstanceID), func(v Volume) bool {
			return v.State == start.State && attachmentState(v, s.InstanceID) == attachmentState(start, s.InstanceID) &&
				len(v.Attachments) == len(start.Attachments)
		})
	case PlanDetachStopped:
		if err := s.fence(ctx); err != nil {
			return nil, true, err
		}
		return nil, false, detachFromStopped(ctx, s.Log, s.C.EC2, p.Volume.ID, p.Holder.ID)
	case PlanWaitHolder:
		np, err := s.waitHolder(ctx, p)
		return &np, false, err
	case PlanWaitSnapshot:
		return nil, false, WaitSnapshot(ctx, s.Log, s.C.EC2, p.Snapshot.ID)
	case PlanRestore, PlanBlank:
		return nil, false, s.make(ctx, p)
	case PlanSnapshotOrphan:
		return nil, false, s.snapshotOrphan(ctx, p.Volume)
	case PlanForceDetach:
		return nil, false, s.forceDetach(ctx, p.Volume, p.Holder)
	}
	return nil, true, fmt.Errorf("slot %s: no action for plan %s", s.Slot, p.Action)
}

// attach attaches the live volume here and waits for the attachment.
func (s *SlotRun) attach(ctx context.Context, v Volume) error {
	if s.Res.How == "" {
		s.Res.How = "reattached"
	}
	if err := s.fence(ctx); err != nil {
		return err
	}
	if err := attachVolume(ctx, s.Log, s.C.EC2, v.ID, s.InstanceID, s.Device); err != nil {
		return err
	}
	w := volumeWait{ID: v.ID, What: "attached here", Still: func(v Volume) bool {
		return attachmentState(v, s.InstanceID) == string(ec2types.VolumeAttachmentStateAttaching)
	}}
	if s.DeviceReady != nil {
		w.Device = func() bool { return s.DeviceReady(v.ID) }
	}
	if _, _, err := waitVolumeFor(ctx, s.Log, s.C.EC2, w); err != nil {
		return err
	}
	s.volumesOnly = true
	return nil
}

// make creates the slot's next volume here (restored from the plan's snapshot, or blank) and waits for it.
func (s *SlotRun) make(ctx context.Context, p SlotPlan) error {
	if s.created.ID != "" {
		// One run makes at most one volume per slot: wanting a second means another instance is making
		// generations too (or ours vanished), and going on is how two racers leapfrog each other.
		return fail.Fenced(fmt.Sprintf("slot %s: this run made %s (generation %d) and now the slot would need another volume (%s): another instance is at work on the group; stopping rather than making a second one",
			s.Slot, s.created.ID, s.created.Generation, p.Why), nil)
	}
	var snap *Snapshot
	if p.Action == PlanRestore {
		snap = &p.Snapshot
	}
	if !s.pinMoment(p) {
		return nil // another slot restored first from another moment: observe again, and follow it
	}
	// The fence and the restore's shape (its one call: is fast snapshot restore enabled here?) are both
	// reads before CreateVolume: they go out together, one round trip instead of two.
	shape := s.Shape
	shaped := make(chan struct{})
	go func() {
		defer close(shaped)
		if snap != nil {
			shape = s.restoreShape(ctx, *snap) // the recorded shape, the rate or fast snapshot restore
		}
	}()
	err := s.fence(ctx)
	<-shaped
	if err != nil {
		return err
	}
	id, err := s.create(ctx, p.Generation, snap, shape)
	if errors.Is(err, errTokenSpent) {
		return nil // observe again: minGen moved on, or the volume showed up
	}
	if err != nil {
		return err
	}
	s.created = Volume{ID: id, Generation: p.Generation, AZ: s.Az}
	if err := s.fence(ctx); err != nil {
		if fail.Code(err) == fail.CodeFenced {
			// The lease moved while the volume was being made: it is nobody's data; take it away again.
			// (A run stopped from outside keeps it: its rerun, under the same lease, gets it back by token.)
			s.discard(ctx, id)
		}
		return err
	}
	if snap != nil {
		s.Res.How, s.Res.Snapshot, s.Res.Set = "restored from", snap.ID, p.FromSet
		if p.Warn != "" {
			s.Res.Warnings = append(s.Res.Warnings, p.Warn) // what the restore leaves behind, in the summary too
		}
	} else {
		s.Res.How = "created blank"
	}
	// Creating takes seconds (the simulator's default for a restore: 8 s); a blank volume is often
	// available within a second or two. The wait asks every 250 ms at first, then every 500 ms: it
	// overshoots by 250 ms on average and makes two calls a second, half of the fixed 250 ms schedule's.
	v, listing, _, err := waitVolumeListing(ctx, s.Log, s.C.EC2, volumeWait{ID: id, What: "available",
		Still:   func(v Volume) bool { return v.State == string(ec2types.VolumeStateCreating) },
		Initial: 250 * time.Millisecond, Max: 500 * time.Millisecond, Group: s.Group, Slot: s.Slot})
	if err != nil {
		return err
	}
	s.volumesOnly = true
	if v.ID == id && listing != nil && s.view.Snapshots != nil {
		if view, err := viewOf(ctx, s.C, listing, s.view.Snapshots, s.InstanceID); err == nil {
			s.view, s.viewFresh = view, true
		}
	}
	// EBS checks an encrypted volume's KMS key after CreateVolume has answered: a key it cannot use puts the
	// volume in the error state instead of available. Planning again would only want another volume,
	// which reads as another instance at work. The wait's last reading says so.
	// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html
	if v.State == string(ec2types.VolumeStateError) {
		key := "its KMS key"
		if s.Shape.KMSKeyID != "" {
			key = "the KMS key " + s.Shape.KMSKeyID
		} else if snap != nil {
			key = "the KMS key of " + snap.ID
		}
		return fail.Precondition(fmt.Sprintf("slot %s: EBS put the new volume %s in the error state: for an encrypted volume it could not use %s (disabled, pending deletion, or the instance role lacks kms:CreateGrant or kms:GenerateDataKeyWithoutPlaintext on it); fix that and rerun (%s holds nothing: delete it)",
			s.Slot, id, key, id), nil)
	}
	return nil
}

// pinMoment makes the run's slots agree on the moment they restore (a group of several slots): the first
// to restore pins its set (or its volume's last state); it reports false when another moment is pinned.
func (s *SlotRun) pinMoment(p SlotPlan) bool {
	if s.Pin == nil || p.Action != PlanRestore {
		return true
	}
	switch {
	case p.FromSet != "":
		kind, set, ok := s.Pin.Claim(PinSet, p.FromSet)
		if !ok {
			s.Log.Info("another slot restores from another moment: following it", logkey.Step, "volume", "pin", kind, "set", set)
		}
		return ok
	case p.LastState:
		_, _, ok := s.Pin.Claim(PinLastState, "")
		return ok
	}
	return true
}

// orphanBound is how long up waits for its snapshot of an orphaned volume before it falls back to the
// newest older snapshot (and says what that loses). EBS snapshots of a volume whose earlier snapshot
// exists are incremental and take seconds to minutes.
const orphanBound = 15 * time.Minute

// snapshotOrphan snapshots the newest volume where it is (detached, or attached to a stopped or stuck
// instance): crash-consistent, final (no more writes reach it), tagged like down's, so that the restore
// carries every write. It waits for the snapshot; a failure or a snapshot that does not complete within
// orphanBound makes the plan fall back to the newest older snapshot, except a call the IAM role refused.
func (s *SlotRun) snapshotOrphan(ctx context.Context, v Volume) error {
	if err := s.fence(ctx); err != nil {
		return err
	}
	holder := ""
	for _, a := range v.Attachments {
		holder = a.InstanceID
	}
	snap, err := CreateSnapshot(ctx, s.C.EC2, SnapshotRequest{Group: s.Group, Slot: s.Slot, Volume: v, InstanceID: holder, Final: true, Epoch: s.Epoch,
		Description: fmt.Sprintf("handover up on %s: the orphaned newest volume %s of %s/%s", s.InstanceID, v.ID, s.Group, s.Slot)})
	if err == nil {
		s.Log.Warn("the newest volume had no snapshot of its last writes: snapshotted it where it is (crash-consistent)", logkey.Step, "volume",
			logkey.Volume, v.ID, logkey.Snapshot, snap.ID, logkey.AZ, v.AZ)
		err = WaitSnapshotCompleted(ctx, s.Log, s.C.EC2, snap.ID, orphanBound)
	}
	if err != nil && ctx.Err() == nil && IsDenied(err) {
		// A refusal is the role's, not EBS's: falling back would restore older data over writes the newest
		// volume still holds, for a permission an operator can add. Stop (exit 3); the rerun snapshots it.
		s.Log.Error("could not snapshot the orphaned newest volume: the IAM role refused it; not falling back to an older snapshot",
			logkey.Step, "volume", logkey.Volume, v.ID, logkey.Error, err.Error())
		return fmt.Errorf("snapshot the orphaned newest volume %s: %w", v.ID, err)
	}
	if err != nil && ctx.Err() == nil {
		s.Log.Error("could not snapshot the orphaned newest volume: falling back to the newest older snapshot", logkey.Step, "volume", logkey.Volume, v.ID, logkey.Error, err.Error())
		s.orphanFailed = true
		return nil
	}
	return err
}

// forceDetach detaches the newest volume from a holder in this AZ that has been on its way out for all of
// ReleaseTimeout (terminating, shutting down for good): DetachVolume with Force, the last resort EBS
// offers for a stuck attachment; the holder is fenced already (it is leaving, and this run holds the
// lease). https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html
func (s *SlotRun) forceDetach(ctx context.Context, v Volume, h Holder) error {
	if err := s.fence(ctx); err != nil {
		return err
	}
	s.Log.Warn("forcing the detach of the newest volume from its stuck holder", logkey.Step, "volume", logkey.Volume, v.ID, logkey.Instance, h.ID, logkey.State, h.String())
	_, err := s.C.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(v.ID), InstanceId: aws.String(h.ID), Force: aws.Bool(true)})
	if err != nil && !HasCode(err, CodeIncorrectState, CodeAttachmentNotFound) {
		return fmt.Errorf("force the detach of %s from %s: %w", v.ID, h.ID, err)
	}
	return waitVolume(ctx, s.Log, s.C.EC2, v.ID, "detached", func(v Volume) bool { return len(v.Attachments) > 0 })
}

// fence re-checks the lease, when the run has one.
func (s *SlotRun) fence(ctx context.Context) error {
	if s.Fence == nil {
		return nil
	}
	return s.Fence(ctx)
}

// newerThanOurs stops a run that made a volume once a newer generation of the slot shows up: another
// instance is making generations, and only one of the two may go on (exit 4).
func (s *SlotRun) newerThanOurs() error {
	if s.created.ID == "" {
		return nil
	}
	for _, v := range s.view.Volumes {
		if v.Generation > s.created.Generation {
			return fail.Fenced(fmt.Sprintf("slot %s: %s (generation %d) appeared after this run made %s (generation %d): another instance is making the slot's volumes; stopping",
				s.Slot, v.ID, v.Generation, s.created.ID, s.created.Generation), nil)
		}
	}
	return nil
}

// discard deletes a volume this run made and must not use (the lease moved meanwhile): once it is
// available, bounded, best effort. A volume that outlives it carries the dead epoch's tag.
func (s *SlotRun) discard(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	err := waitVolume(ctx, s.Log, s.C.EC2, id, "available", func(v Volume) bool { return v.State == string(ec2types.VolumeStateCreating) })
	if err == nil {
		_, err = s.C.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
	}
	if err != nil && !HasCode(err, codeVolumeNotFound) {
		s.Log.Warn("could not delete the volume made under a lease that moved; delete it by hand", logkey.Volume, id, logkey.Error, err.Error())
		return
	}
	s.Log.Info("deleted the volume made under a lease that moved", logkey.Volume, id)
}

// errTokenSpent: CreateVolume's token for this generation was used before with other parameters.
var errTokenSpent = errors.New("client token already used")

// create makes the slot's next volume here. A retry after a crash sends the same ClientToken and gets the
// first run's volume back. IdempotentParameterMismatch means the token was spent on other parameters: by
// a racing instance in another AZ (its volume shows up in DescribeVolumes shortly, and the next plan
// sees it), or by an earlier run with another snapshot or size whose volume has since been deleted (then
// this generation is skipped).
func (s *SlotRun) create(ctx context.Context, generation int, snap *Snapshot, shape VolumeShape) (string, error) {
	in := CreateVolumeInput(s.Group, s.Slot, s.Az, generation, s.Epoch, shape, snap)
	out, err := s.C.EC2.CreateVolume(ctx, in)
	if HasCode(err, codeIdempotentMismatch) {
		s.Log.Warn("CreateVolume token of this generation was used with other parameters; looking for its volume", logkey.Step, "volume", logkey.Generation, generation)
		err := Poll(ctx, s.Log, wait.Spec{What: fmt.Sprintf("a volume of generation %d to show up", generation), Bound: tokenVisibilityBound, Step: "volume"},
			func(ctx context.Context) (bool, string, error) {
				vols, err := ListSlotVolumes(ctx, s.C.EC2, s.Group, s.Slot)
				if err != nil {
					return false, "", err
				}
				return len(vols) > 0 && vols[0].Generation >= generation, "not visible", nil
			})
		switch {
		case errors.Is(err, wait.ErrTimeout):
			s.Log.Warn("no volume of this generation exists: skipping it", logkey.Step, "volume", logkey.Generation, generation)
			s.minGen = generation + 1
		case err != nil:
			return "", err
		}
		return "", errTokenSpent
	}
	if err != nil {
		what := "blank volume"
		if snap != nil {
			what = "volume from " + snap.ID
		}
		return "", fmt.Errorf("create %s in %s (generation %d): %w", what, s.Az, generation, err)
	}
	id := aws.ToString(out.VolumeId)
	if az := aws.ToString(out.AvailabilityZone); az != "" && az != s.Az {
		// A ClientToken is not compared across zones: CreateVolume may answer with a volume another run made
		// in its zone (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html). The epoch
		// in the token makes that another lease's volume: never this run's to use.
		return "", fail.Fenced(fmt.Sprintf("CreateVolume answered with %s in %s, not in %s: its token (generation %d, lease %s) was used in another zone; another instance is making the slot's volumes",
			id, az, s.Az, generation, s.Epoch), nil)
	}
	s.Log.Info("volume created", logkey.Step, "volume", logkey.Volume, id, logkey.Generation, generation, "size_gib", aws.ToInt32(in.Size), "type", shape.Type)
	return id, nil
}

// waitHolder waits, with the slow schedule, for the instance holding the live volume to let go (or for
// anything else to change the plan). All such waits of a run share one --release-timeout.
func (s *SlotRun) waitHolder(ctx context.Context, p SlotPlan) (SlotPlan, error) {
	if s.holdDeadline.IsZero() {
		s.holdDeadline = time.Now().Add(s.ReleaseTimeout)
	}
	bound := time.Until(s.holdDeadline)
	var next SlotPlan
	last := p
	err := Poll(ctx, s.Log, wait.Spec{What: fmt.Sprintf("%s to release %s", p.Holder.ID, p.Volume.ID), Bound: max(bound, time.Millisecond), Step: "volume", Initial: time.Second},
		func(ctx context.Context) (bool, string, error) {
			np, err := s.observe(ctx)
			if err != nil {
				return false, "", err
			}
			last = np
			if np.key() != p.key() {
				next = np
				return true, "", nil
			}
			return false, np.Holder.String(), nil
		})
	if errors.Is(err, wait.ErrTimeout) {
		if last.Live {
			return SlotPlan{}, fail.Fenced(fmt.Sprintf("%s (slot %s) is attached to %s, a live instance, after waiting %s: stop it or let its group terminate it, or pass --takeover to restore the newest snapshot here instead",
				last.Volume.ID, s.Slot, last.Holder, s.ReleaseTimeout), nil)
		}
		// A holder stuck on its way out (shutting-down for good, an impaired zone): recover without it.
		s.Log.Warn("the leaving holder did not let go within --release-timeout: recovering without it", logkey.Step, "volume",
			logkey.Volume, last.Volume.ID, logkey.Instance, last.Holder.ID, logkey.State, last.Holder.String())
		s.holderStuck = true
		return s.observe(ctx)
	}
	return next, err
}

// WaitSnapshot waits for a pending snapshot to complete (or fail), logging its progress. EBS reports
// progress in percent; a first snapshot of a large volume can take hours, so this wait is bounded by the
// command's --timeout only. The wait sits on the recovery's critical path (restore starts the moment the
// snapshot completes), so it polls at most every second rather than the default 2 s cap: a DescribeSnapshots
// a second is far inside EC2's non-mutating request budget.
func WaitSnapshot(ctx context.Context, log *slog.Logger, c EC2, id string) error {
	return Poll(ctx, log, wait.Spec{What: "snapshot " + id + " to complete", Bound: time.Until(wait.Deadline(ctx)), Step: "volume", Max: time.Second},
		func(ctx context.Context) (bool, string, error) {
			s, err := DescribeSnapshot(ctx, c, id)
			if HasCode(err, CodeSnapshotNotFound) {
				return true, "", nil // deleted meanwhile: plan again
			}
			if err != nil {
				return false, "", err
			}
			return s.State != string(ec2types.SnapshotStatePending), s.Progress, nil
		})
}

// Retire tags the slot's volumes of older generations handover:superseded=true, then deletes the
// detached ones beyond the keep newest of them: each move across AZs leaves the previous volume behind,
// and twenty moves would otherwise leave twenty idle volumes, billed. The keep newest stay as a way back
// (keep 1, the default: the previous generation; --delete-superseded: keep 0). Nothing is deleted before a
// snapshot of the current volume has completed (after a move, that is the snapshot timer's first one: it
// retires too). Whatever keep says, a volume is deleted only when it is detached and available, and only
// when a completed snapshot already holds what it holds: never the source of the slot's newest completed snapshot nor a newer volume (their writes
// may be in no snapshot: an old instance that went on writing, a restore that could not carry them), nor
// one newer than the snapshot the current volume was cut from; with no completed snapshot at all, nothing
// is deleted. It reads the slot afresh: it runs after the launch hook is completed, off the critical path,
// when snapshots may have completed since the plan was made.
//
// Retiring is housekeeping: by now this instance has its volume, so a failure here is logged and kept in
// the slot's warnings, and does not fail up (which would abandon the launch and make the group terminate
// a healthy instance). A rerun of up, or an operator, retires them later.
func (s *SlotRun) Retire(ctx context.Context, keep int) {
	warn := func(msg string, err error) {
		s.Log.Warn(msg+"; up goes on", logkey.Step, "superseded", logkey.Error, err.Error())
		s.Res.Warnings = append(s.Res.Warnings, msg+": "+fail.OneLine(err.Error()))
	}
	vols, err := ListSlotVolumes(ctx, s.C.EC2, s.Group, s.Slot)
	var snaps []Snapshot
	if err == nil {
		snaps, err = ListSlotSnapshots(ctx, s.C.EC2, s.Group, s.Slot)
	}
	if err != nil {
		warn("could not look at the slot's older volumes (rerun up to retire them)", err)
		return
	}
	untagged, doomed := planRetire(s.Res.Volume, vols, snaps, keep, s.Log)
	if len(untagged) > 0 {
		_, err := s.C.EC2.CreateTags(ctx, &ec2.CreateTagsInput{
			Resources: untagged,
			Tags:      []ec2types.Tag{{Key: aws.String(TagSuperseded), Value: aws.String("true")}},
		})
		if err != nil {
			warn(fmt.Sprintf("could not tag %s %s=true (rerun up, or tag them by hand)", strings.Join(untagged, ", "), TagSuperseded), err)
		} else {
			s.Res.Superseded = untagged
			s.Log.Info("older generations tagged superseded", logkey.Step, "superseded", "volumes", strings.Join(untagged, ","))
		}
	}
	for _, v := range doomed {
		_, err := s.C.EC2.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(v.ID)})
		switch {
		case HasCode(err, codeVolumeNotFound):
		case HasCode(err, codeVolumeInUse, CodeIncorrectState):
			// Attached (or being attached) since we looked: keep it.
			s.Log.Warn("superseded volume is in use now; keeping it", logkey.Step, "superseded", logkey.Volume, v.ID)
			continue
		case err != nil:
			warn(fmt.Sprintf("could not delete superseded volume %s (rerun up, or delete it by hand)", v.ID), err)
			continue
		}
		s.Res.Deleted = append(s.Res.Deleted, v.ID)
		s.Log.Info("superseded volume deleted", logkey.Step, "superseded", logkey.Volume, v.ID, logkey.Generation, v.Generation, "keep_superseded", keep)
	}
}

// planRetire decides, for the slot's volumes and snapshots (newest first) and the current volume cur,
// which older volumes to tag superseded and which to delete (Retire's rules). log says why a volume that
// keep alone would let go is kept.
func planRetire(cur Volume, vols []Volume, snaps []Snapshot, keep int, log *slog.Logger) (untagged []string, doomed []Volume) {
	cutFrom := cur.Generation - 1 // a blank volume, or a source snapshot no longer listed
	var newest *Snapshot          // the slot's newest completed snapshot
	curSnapped := false           // a completed snapshot of the current volume exists
	for i, sn := range snaps {
		if cur.SnapshotID != "" && sn.ID == cur.SnapshotID {
			cutFrom = sn.Generation
		}
		if newest == nil && sn.State == SnapshotCompleted {
			newest = &snaps[i]
		}
		if sn.State == SnapshotCompleted && sn.SourceVolume == cur.ID {
			curSnapped = true
		}
	}
	defer func() {
		if !curSnapped && len(doomed) > 0 {
			// Nothing older goes before the current volume has proved it can be snapshotted: a restore
			// that turned out bad still has every way back. The snapshot timer (handover snapshot) or the
			// next up deletes them once a snapshot of the current volume has completed.
			ids := make([]string, 0, len(doomed))
			for _, v := range doomed {
				ids = append(ids, v.ID)
			}
			log.Info("keeping the superseded volumes until a snapshot of the current volume completes", logkey.Step, "superseded",
				logkey.Volume, cur.ID, "volumes", strings.Join(ids, ","))
			doomed = nil
		}
	}()
	older := 0
	for _, v := range vols {
		if v.ID == cur.ID || v.Generation >= cur.Generation {
			continue
		}
		if !v.Superseded {
			untagged = append(untagged, v.ID)
		}
		older++
		if older <= keep || v.State != string(ec2types.VolumeStateAvailable) || len(v.Attachments) > 0 {
			continue // a way back, or in use
		}
		why := ""
		switch {
		case newest == nil:
			why = "the slot has no completed snapshot: this volume may hold the only copy of its data"
		case v.ID == newest.SourceVolume || v.Generation >= newest.Generation:
			why = fmt.Sprintf("the slot's newest completed snapshot %s is of this generation or an older one: this volume may hold writes no snapshot has", newest.ID)
		case v.Generation > cutFrom:
			why = "newer than the snapshot the current volume was restored from: it holds writes no snapshot has"
		}
		if why != "" {
			log.Warn("keeping a superseded volume: "+why, logkey.Step, "superseded", logkey.Volume, v.ID, logkey.Generation, v.Generation)
			continue
		}
		doomed = append(doomed, v)
	}
	return untagged, doomed
}

// dashIfEmpty shows an empty state as "-" in messages.
func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
