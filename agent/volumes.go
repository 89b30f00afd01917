package agent

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// slotVolume is one EBS volume of a group's slot, as last described.
type slotVolume struct {
	ID           string
	AZ           string
	State        string // creating, available, in-use, deleting, ...
	Generation   int
	SizeGiB      int32
	VolumeType   string
	CreatedBlank bool
	Superseded   bool
	CreateTime   time.Time
	Attachments  []volumeAttachment
	Tags         map[string]string
	SnapshotID   string // the snapshot it was created from; "" when created blank
}

// volumeAttachment is where a volume is attached.
type volumeAttachment struct {
	InstanceID string
	Device     string
	State      string // attaching, attached, detaching, detached
}

// slotSnapshot is one snapshot of a group's slot.
type slotSnapshot struct {
	ID             string
	State          string // pending, completed, error
	Progress       string // "42%"
	Generation     int
	Consistent     bool
	SourceVolume   string
	SourceInstance string
	VolumeSizeGiB  int32
	StartTime      time.Time
	Tags           map[string]string
}

func tagMap(tags []ec2types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// generationOf parses handover:generation; a missing or malformed tag counts as generation 0, older than
// anything handover made, so a hand-made volume never outranks handover's own.
func generationOf(tags map[string]string) int {
	n, err := strconv.Atoi(tags[tagGeneration])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func slotFilters(group, slot string) []ec2types.Filter {
	return []ec2types.Filter{
		{Name: aws.String("tag:" + tagGroup), Values: []string{group}},
		{Name: aws.String("tag:" + tagSlot), Values: []string{slot}},
	}
}

// listSlotVolumes returns the slot's volumes that still exist, newest generation first (ties: newest
// creation first).
func listSlotVolumes(ctx context.Context, c EC2, group, slot string) ([]slotVolume, error) {
	var vols []slotVolume
	p := ec2.NewDescribeVolumesPaginator(c, &ec2.DescribeVolumesInput{Filters: slotFilters(group, slot)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe volumes of %s/%s: %w", group, slot, err)
		}
		for _, v := range page.Volumes {
			if v.State == ec2types.VolumeStateDeleting || v.State == ec2types.VolumeStateDeleted {
				continue
			}
			vols = append(vols, toSlotVolume(v))
		}
	}
	sort.SliceStable(vols, func(i, j int) bool {
		if vols[i].Generation != vols[j].Generation {
			return vols[i].Generation > vols[j].Generation
		}
		return vols[i].CreateTime.After(vols[j].CreateTime)
	})
	return vols, nil
}

func toSlotVolume(v ec2types.Volume) slotVolume {
	tags := tagMap(v.Tags)
	sv := slotVolume{
		ID:           aws.ToString(v.VolumeId),
		AZ:           aws.ToString(v.AvailabilityZone),
		State:        string(v.State),
		Generation:   generationOf(tags),
		SizeGiB:      aws.ToInt32(v.Size),
		VolumeType:   string(v.VolumeType),
		CreatedBlank: tags[tagCreatedBlank] == "true",
		Superseded:   tags[tagSuperseded] == "true",
		CreateTime:   aws.ToTime(v.CreateTime),
		Tags:         tags,
		SnapshotID:   aws.ToString(v.SnapshotId),
	}
	for _, a := range v.Attachments {
		sv.Attachments = append(sv.Attachments, volumeAttachment{
			InstanceID: aws.ToString(a.InstanceId),
			Device:     aws.ToString(a.Device),
			State:      string(a.State),
		})
	}
	return sv
}

// describeVolume returns one volume by ID.
func describeVolume(ctx context.Context, c EC2, id string) (slotVolume, error) {
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		return slotVolume{}, fmt.Errorf("describe volume %s: %w", id, err)
	}
	if len(out.Volumes) != 1 {
		return slotVolume{}, fmt.Errorf("describe volume %s: %d volumes returned", id, len(out.Volumes))
	}
	return toSlotVolume(out.Volumes[0]), nil
}

// listSlotSnapshots returns the slot's snapshots owned by this account, newest first: by generation, then
// by start time.
func listSlotSnapshots(ctx context.Context, c EC2, group, slot string) ([]slotSnapshot, error) {
	var snaps []slotSnapshot
	p := ec2.NewDescribeSnapshotsPaginator(c, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  slotFilters(group, slot),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe snapshots of %s/%s: %w", group, slot, err)
		}
		for _, s := range page.Snapshots {
			snaps = append(snaps, toSlotSnapshot(s))
		}
	}
	sort.SliceStable(snaps, func(i, j int) bool {
		if snaps[i].Generation != snaps[j].Generation {
			return snaps[i].Generation > snaps[j].Generation
		}
		return snaps[i].StartTime.After(snaps[j].StartTime)
	})
	return snaps, nil
}

func toSlotSnapshot(s ec2types.Snapshot) slotSnapshot {
	tags := tagMap(s.Tags)
	return slotSnapshot{
		ID:             aws.ToString(s.SnapshotId),
		State:          string(s.State),
		Progress:       aws.ToString(s.Progress),
		Generation:     generationOf(tags),
		Consistent:     tags[tagConsistent] == "true",
		SourceVolume:   tags[tagSourceVolume],
		SourceInstance: tags[tagSourceInstance],
		VolumeSizeGiB:  aws.ToInt32(s.VolumeSize),
		StartTime:      aws.ToTime(s.StartTime),
		Tags:           tags,
	}
}

// describeSnapshot returns one snapshot by ID.
func describeSnapshot(ctx context.Context, c EC2, id string) (slotSnapshot, error) {
	out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if err != nil {
		return slotSnapshot{}, fmt.Errorf("describe snapshot %s: %w", id, err)
	}
	if len(out.Snapshots) != 1 {
		return slotSnapshot{}, fmt.Errorf("describe snapshot %s: %d snapshots returned", id, len(out.Snapshots))
	}
	return toSlotSnapshot(out.Snapshots[0]), nil
}

// tagSpec builds TagSpecifications: handover tags every resource at creation, never in a second call that
// could be lost between the two.
func tagSpec(rt ec2types.ResourceType, tags map[string]string) []ec2types.TagSpecification {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ts := ec2types.TagSpecification{ResourceType: rt}
	for _, k := range keys {
		ts.Tags = append(ts.Tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return []ec2types.TagSpecification{ts}
}
