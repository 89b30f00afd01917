package cloud

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Snapshot sets: the snapshots of a group's slots taken for one moment (data and WAL of one database, say),
// so that up never restores data from one moment and WAL from another.
//
// Every snapshot down and snapshot take carries TagSet (the set's id, one per run) and TagSetSize (how many
// slots the run snapshotted). A set is of one moment in one of two ways:
//   - crash-consistent across volumes: one CreateSnapshots call, which EBS takes "crash-consistent across
//     the instance" (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html#ebs-create-snapshot-multi-volume),
//     used when a slot is live (not frozen, not unmounted);
//   - every slot kept still across all the calls: all frozen (or unmounted) before the first CreateSnapshot
//     and thawed after the last, so no write lands between two of them. A run killed between two calls leaves
//     an incomplete set, which up never restores.
//
// Choosing for a group of several slots (ChooseSet): the newest complete set (every one of its set-size
// members present and not in error) that covers every slot having any set-tagged snapshot. A slot none of
// whose snapshots carry a set tag (taken by a release before sets, or a slot new to the group) is restored
// as before, its newest snapshot, with a warning in a group of several slots; a group of one slot is
// restored as before, sets or not.

// NewSetID makes a snapshot set's id: random, so that two runs never share one.
func NewSetID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux (getrandom)
	return "set-" + hex.EncodeToString(b)
}

// SetID is the id of the set the snapshot belongs to; "" for a snapshot taken before sets.
func (s Snapshot) SetID() string { return s.Tags[TagSet] }

// SetSize is how many slots the snapshot's set has; 0 when not tagged.
func (s Snapshot) SetSize() int {
	n, err := strconv.Atoi(s.Tags[TagSetSize])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// SetRequest is one CreateSnapshots of the slots' volumes attached to an instance.
type SetRequest struct {
	Group       string
	InstanceID  string
	Volumes     map[string]Volume // slot -> its volume, attached to InstanceID
	Set         string            // NewSetID
	Consistent  bool              // the service was stopped by the pre-stop command (a crash-consistent set otherwise)
	Description string
	Log         *slog.Logger // where a shape that could not be recorded is warned of; nil: nowhere
}

// CreateSnapshotSet snapshots the slots' volumes of one instance in one CreateSnapshots call: one point in
// time for all (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshots.html). The boot
// volume and every other data volume attached to the instance are excluded (InstanceSpecification with
// ExcludeBootVolume and ExcludeDataVolumeIds, read from DescribeInstances' block device mappings). Each
// snapshot gets its volume's tags (CopyTagsFromSource=volume: the group, slot and generation, which
// CreateSnapshots cannot set per snapshot) and, in TagSpecifications, the set and the source instance; the
// source volume is the snapshot's own VolumeId (ToSlotSnapshot). Like CreateSnapshot, the per-volume rate
// limits are retried until ctx ends.
func CreateSnapshotSet(ctx context.Context, c EC2, r SetRequest) (map[string]Snapshot, error) {
	exclude, err := otherDataVolumes(ctx, c, r.InstanceID, r.Volumes)
	if err != nil {
		return nil, err
	}
	tags := map[string]string{TagSet: r.Set, TagSetSize: strconv.Itoa(len(r.Volumes)), TagSourceInstance: r.InstanceID}
	if r.Group != "" {
		// Also copied from each volume; in the request too, so that aws:RequestTag/handover:group scopes
		// ec2:CreateSnapshots as it does ec2:CreateSnapshot (handover iam-policy).
		tags[TagGroup] = r.Group
	}
	if r.Consistent {
		tags[TagConsistent] = "true"
	}
	in := &ec2.CreateSnapshotsInput{
		InstanceSpecification: &ec2types.InstanceSpecification{
			InstanceId: aws.String(r.InstanceID), ExcludeBootVolume: aws.Bool(true), ExcludeDataVolumeIds: exclude,
		},
		CopyTagsFromSource: ec2types.CopyTagsFromSourceVolume,
		Description:        aws.String(r.Description),
		TagSpecifications:  TagSpec(ec2types.ResourceTypeSnapshot, tags),
	}
	var out *ec2.CreateSnapshotsOutput
	err = Poll(ctx, nopLogger, wait.Spec{What: "CreateSnapshots of " + r.InstanceID, Bound: time.Until(wait.Deadline(ctx)), Initial: time.Second, Max: 5 * time.Second},
		func(ctx context.Context) (bool, string, error) {
			o, err := c.CreateSnapshots(ctx, in)
			switch {
			case HasCode(err, codeSnapshotRateExceeded, codeConcurrentSnapshots):
				return false, errorCode(err), nil
			case err != nil:
				return false, "", backoff.Permanent(err)
			}
			out = o
			return true, "", nil
		})
	if err != nil {
		return nil, fmt.Errorf("create the snapshot set of %s: %w", r.InstanceID, err)
	}
	slotOf := map[string]string{}
	for slot, v := range r.Volumes {
		slotOf[v.ID] = slot
	}
	got := map[string]Snapshot{}
	for _, si := range out.Snapshots {
		vol := aws.ToString(si.VolumeId)
		slot, ok := slotOf[vol]
		if !ok {
			continue // not asked for (a volume attached since we looked): not the set's
		}
		v := r.Volumes[slot]
		got[slot] = Snapshot{
			ID: aws.ToString(si.SnapshotId), State: string(si.State), Progress: aws.ToString(si.Progress),
			Generation: v.Generation, Consistent: r.Consistent, SourceVolume: vol, SourceInstance: r.InstanceID,
			VolumeSizeGiB: aws.ToInt32(si.VolumeSize), StartTime: aws.ToTime(si.StartTime), Tags: TagMap(si.Tags),
		}
	}
	recordSetShapes(ctx, c, r, got)
	var missing []string
	for slot, v := range r.Volumes {
		if _, ok := got[slot]; !ok {
			missing = append(missing, slot+" ("+v.ID+")")
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return got, fmt.Errorf("CreateSnapshots of %s made no snapshot of %s", r.InstanceID, strings.Join(missing, ", "))
	}
	return got, nil
}

// recordSetShapes tags each snapshot of the set with its source volume's shape (ShapeTags), which
// CreateSnapshots cannot set per snapshot in its TagSpecifications and CopyTagsFromSource does not carry
// (the shape is the volume's attributes, not its tags). Without it a set member's shape came only from its
// source volume while the group still had it (withSourceShape), so a ModifyVolume was lost again once that
// volume was gone. One CreateTags per snapshot, after the set is made: a failure is warned of and leaves
// that fallback, never fails a snapshot that exists.
func recordSetShapes(ctx context.Context, c EC2, r SetRequest, got map[string]Snapshot) {
	for slot, snap := range got {
		tags := ShapeTags(r.Volumes[slot])
		if len(tags) == 0 {
			continue
		}
		_, err := c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{snap.ID}, Tags: TagSpec(ec2types.ResourceTypeSnapshot, tags)[0].Tags})
		if err != nil {
			if r.Log != nil {
				r.Log.Warn("the snapshot's volume shape is not recorded on it: a restore takes the shape from its source volume while the group has it, else from the configuration",
					logkey.Slot, slot, logkey.Snapshot, snap.ID, logkey.Error, err)
			}
			continue
		}
		for k, v := range tags {
			snap.Tags[k] = v
		}
		snap.Shape = recordedShapeOf(tags)
		got[slot] = snap
	}
}

// otherDataVolumes lists the EBS data volumes attached to the instance that are not among vols, for
// ExcludeDataVolumeIds; the root volume is left out of it (naming it there fails the request:
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceSpecification.html).
func otherDataVolumes(ctx context.Context, c EC2, instanceID string, vols map[string]Volume) ([]string, error) {
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		return nil, fmt.Errorf("describe instance %s for its volumes: %w", instanceID, err)
	}
	ours := map[string]bool{}
	for _, v := range vols {
		ours[v.ID] = true
	}
	var exclude []string
	for _, res := range out.Reservations {
		for _, i := range res.Instances {
			root := aws.ToString(i.RootDeviceName)
			for _, m := range i.BlockDeviceMappings {
				if m.Ebs == nil || aws.ToString(m.DeviceName) == root || ours[aws.ToString(m.Ebs.VolumeId)] {
					continue
				}
				exclude = append(exclude, aws.ToString(m.Ebs.VolumeId))
			}
		}
	}
	return exclude, nil
}

// SnapshotSet is the snapshots of one set, one per slot.
type SnapshotSet struct {
	ID      string
	Size    int                 // TagSetSize
	Members map[string]Snapshot // slot -> its snapshot of the set
	Start   time.Time           // the newest member's start time
}

// Complete reports whether every slot of the set has its snapshot, none of them in error.
func (s SnapshotSet) Complete() bool {
	if s.Size == 0 || len(s.Members) != s.Size {
		return false
	}
	for _, m := range s.Members {
		if m.State == SnapshotError {
			return false
		}
	}
	return true
}

// Pending reports whether a member is still pending.
func (s SnapshotSet) Pending() bool {
	for _, m := range s.Members {
		if m.State == SnapshotPending {
			return true
		}
	}
	return false
}

// lacking says what makes the set incomplete: the slots it lacks (by count) or the members in error.
func (s SnapshotSet) lacking() string {
	var bad []string
	for slot, m := range s.Members {
		if m.State == SnapshotError {
			bad = append(bad, fmt.Sprintf("%s's %s is in error", slot, m.ID))
		}
	}
	sort.Strings(bad)
	if n := s.Size - len(s.Members); n > 0 {
		have := make([]string, 0, len(s.Members))
		for slot := range s.Members {
			have = append(have, slot)
		}
		sort.Strings(have)
		bad = append(bad, fmt.Sprintf("has %d of %d slots (%s): the run that took it stopped between its snapshots", len(s.Members), s.Size, strings.Join(have, ", ")))
	}
	return strings.Join(bad, "; ")
}

// PinKind is what a run of up already restored some slot of a multi-slot group from.
type PinKind int

const (
	PinNone      PinKind = iota
	PinSet               // a complete set: every other slot restores its member of it
	PinLastState         // a volume's last state (its final snapshot, or up's of the orphan): every other slot needs its own
)

// SetPin is shared by the slots of one run of up: the first slot to restore decides what the others
// restore from, so that two slots restoring at the same time never take two different moments.
type SetPin struct {
	mu   sync.Mutex
	kind PinKind
	set  string
}

// Claim pins kind/set unless another is pinned already; it reports the pin that holds.
func (p *SetPin) Claim(kind PinKind, set string) (PinKind, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kind == PinNone {
		p.kind, p.set = kind, set
		return kind, set, true
	}
	return p.kind, p.set, p.kind == kind && p.set == set
}

// get returns the pin.
func (p *SetPin) get() (PinKind, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kind, p.set
}

// SetChoice is what a restore of a multi-slot group may use: PlanSlot takes a slot's snapshot from it.
type SetChoice struct {
	Slots   []string
	Chosen  *SnapshotSet    // newest complete set covering every slot in Covered; nil: none
	Newer   []SnapshotSet   // incomplete sets newer than Chosen (all of them when Chosen is nil), newest first
	Covered map[string]bool // slots with any set-tagged snapshot: they restore only from Chosen
	Pin     PinKind
	PinSet  string
}

// ChooseSet groups the set-tagged snapshots of the group's slots (snaps: slot -> its snapshots) into sets
// and picks the newest complete one that covers every slot that has any; pin (what this run already
// restored from) overrides the pick when it names a complete set.
func ChooseSet(slots []string, snaps map[string][]Snapshot, pin PinKind, pinSet string) SetChoice {
	ch := SetChoice{Slots: slots, Covered: map[string]bool{}, Pin: pin, PinSet: pinSet}
	sets := map[string]*SnapshotSet{}
	for _, slot := range slots {
		for _, s := range snaps[slot] {
			id := s.SetID()
			if id == "" {
				continue
			}
			ch.Covered[slot] = true
			set := sets[id]
			if set == nil {
				set = &SnapshotSet{ID: id, Size: s.SetSize(), Members: map[string]Snapshot{}}
				sets[id] = set
			}
			if old, ok := set.Members[slot]; ok && !s.StartTime.After(old.StartTime) {
				continue // one member per slot: the newest (a set never has two)
			}
			set.Members[slot] = s
			if s.StartTime.After(set.Start) {
				set.Start = s.StartTime
			}
		}
	}
	ordered := make([]*SnapshotSet, 0, len(sets))
	for _, s := range sets {
		ordered = append(ordered, s)
	}
	sort.Slice(ordered, func(i, j int) bool {
		if !ordered[i].Start.Equal(ordered[j].Start) {
			return ordered[i].Start.After(ordered[j].Start)
		}
		return ordered[i].ID > ordered[j].ID
	})
	covers := func(s *SnapshotSet) bool {
		for slot := range ch.Covered {
			if _, ok := s.Members[slot]; !ok {
				return false
			}
		}
		return true
	}
	for _, s := range ordered {
		if s.Complete() && covers(s) && (pin != PinSet || s.ID == pinSet) {
			ch.Chosen = s
			break
		}
		if pin != PinSet {
			ch.Newer = append(ch.Newer, *s)
		}
	}
	return ch
}

// forSlot narrows a slot's usable snapshots (rankSnapshots' order) to what a multi-slot restore may use:
// its member of the chosen set when the slot has set-tagged snapshots (an error when there is none), all
// of them otherwise (a slot without sets restores as before; warn says so). warn also names newer sets
// passed over.
func (ch *SetChoice) forSlot(slot string, usable []Snapshot) (out []Snapshot, warn string, err error) {
	if !ch.Covered[slot] {
		if len(usable) > 0 {
			warn = fmt.Sprintf("slot %s has no snapshot taken as part of a set (they predate snapshot sets): restoring its newest, which may not be of the same moment as the other slots' (%s)",
				slot, strings.Join(ch.Slots, ", "))
		}
		return usable, warn, nil
	}
	if ch.Chosen == nil {
		var why []string
		for _, s := range ch.Newer {
			why = append(why, fmt.Sprintf("%s (%s) %s", s.ID, s.Start.UTC().Format(time.RFC3339), s.lacking()))
		}
		return nil, "", fmt.Errorf("no complete snapshot set of slots %s to restore slot %s from (restoring one slot's data from one moment and another's from another would not be consistent): %s",
			strings.Join(ch.Slots, ", "), slot, strings.Join(why, "; "))
	}
	m, ok := ch.Chosen.Members[slot]
	if !ok {
		return nil, "", fmt.Errorf("snapshot set %s has no snapshot of slot %s", ch.Chosen.ID, slot)
	}
	for _, s := range ch.Newer {
		if s.Start.After(ch.Chosen.Start) {
			warn = joinWarn(warn, fmt.Sprintf("restoring the older complete snapshot set %s (%s): the newer set %s (%s) %s",
				ch.Chosen.ID, ch.Chosen.Start.UTC().Format(time.RFC3339), s.ID, s.Start.UTC().Format(time.RFC3339), s.lacking()))
			break
		}
	}
	for _, u := range usable {
		if u.ID == m.ID {
			return []Snapshot{u}, warn, nil
		}
	}
	return []Snapshot{m}, warn, nil
}

// ObserveSets reads the snapshots of every slot of the group and chooses the set a restore may use (one
// DescribeSnapshots per slot), with pin as this run's earlier restores (SetPin) or, when it has none, as
// the group's volumes made under this run's lease say (a rerun after a crash restores the other slots from
// the set its first try used).
func ObserveSets(ctx context.Context, c EC2, group string, slots []string, pin *SetPin, epoch string) (SetChoice, error) {
	snaps := map[string][]Snapshot{}
	byID := map[string]Snapshot{}
	for _, slot := range slots {
		s, err := ListSlotSnapshots(ctx, c, group, slot)
		if err != nil {
			return SetChoice{}, err
		}
		snaps[slot] = s
		for _, x := range s {
			byID[x.ID] = x
		}
	}
	kind, set := PinNone, ""
	if pin != nil {
		kind, set = pin.get()
	}
	if kind == PinNone && epoch != "" {
		for _, slot := range slots {
			vols, err := ListSlotVolumes(ctx, c, group, slot)
			if err != nil {
				return SetChoice{}, err
			}
			for _, v := range vols {
				if v.Tags[TagEpoch] != epoch || v.SnapshotID == "" {
					continue
				}
				if src, ok := byID[v.SnapshotID]; ok && src.SetID() != "" && !src.Final {
					kind, set = PinSet, src.SetID()
				} else {
					kind = PinLastState
				}
			}
		}
		if pin != nil && kind != PinNone {
			kind, set, _ = pin.Claim(kind, set)
		}
	}
	return ChooseSet(slots, snaps, kind, set), nil
}
