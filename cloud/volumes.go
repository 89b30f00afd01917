package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"github.com/handover/handover/internal/wait"
)

// Volume is one EBS volume of a group's slot, as last described.
type Volume struct {
	ID           string
	AZ           string
	State        string // creating, available, in-use, deleting, ...
	Generation   int
	SizeGiB      int32
	VolumeType   string
	CreatedBlank bool
	Superseded   bool
	CreateTime   time.Time
	Attachments  []Attachment
	Tags         map[string]string
	SnapshotID   string // the snapshot it was created from; "" when created blank
	// The rest of its shape, as DescribeVolumes reports it (the targets of a modification under way).
	IOPS       int32 // 0 for types without provisioned IOPS
	Throughput int32 // MiB/s, gp3 only
	Encrypted  bool
	KMSKeyID   string
	// InitializationRate is the Provisioned Rate for Volume Initialization it was created with (MiB/s, 0
	// for none); FastRestored: created from a snapshot enabled for fast snapshot restore in its zone.
	InitializationRate int32
	FastRestored       bool
}

// Attachment is where a volume is attached.
type Attachment struct {
	InstanceID string
	Device     string
	State      string // attaching, attached, detaching, detached
	AttachTime time.Time
}

// Snapshot is one snapshot of a group's slot.
type Snapshot struct {
	ID             string
	State          string // pending, completed, error
	Progress       string // "42%"
	Generation     int
	Consistent     bool
	Final          bool // TagFinal: it holds every write its volume got
	SourceVolume   string
	SourceInstance string
	VolumeSizeGiB  int32
	StartTime      time.Time
	Tags           map[string]string
	Encrypted      bool
	KMSKeyID       string        // the key the snapshot is encrypted with; a restore uses it unless given another
	Shape          RecordedShape // the source volume's shape, from the snapshot's tags (shape.go)
}

func TagMap(tags []ec2types.Tag) map[string]string {
	m := make(map[string]string, len(tags))
	for _, t := range tags {
		m[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return m
}

// generationOf parses handover:generation; a missing or malformed tag counts as generation 0, older than
// anything handover made, so a hand-made volume never outranks handover's own.
func generationOf(tags map[string]string) int {
	n, err := strconv.Atoi(tags[TagGeneration])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

func SlotFilters(group, slot string) []ec2types.Filter {
	return []ec2types.Filter{
		{Name: aws.String("tag:" + TagGroup), Values: []string{group}},
		{Name: aws.String("tag:" + TagSlot), Values: []string{slot}},
	}
}

// ListSlotVolumes returns the slot's volumes that still exist, newest generation first (ties: newest
// creation first).
func ListSlotVolumes(ctx context.Context, c EC2, group, slot string, opts ...func(*ec2.Options)) ([]Volume, error) {
	var vols []Volume
	p := ec2.NewDescribeVolumesPaginator(c, &ec2.DescribeVolumesInput{Filters: SlotFilters(group, slot)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx, opts...)
		if err != nil {
			return nil, fmt.Errorf("describe volumes of %s/%s: %w", group, slot, err)
		}
		for _, v := range page.Volumes {
			if v.State == ec2types.VolumeStateDeleting || v.State == ec2types.VolumeStateDeleted {
				continue
			}
			vols = append(vols, ToSlotVolume(v))
		}
	}
	sortNewestFirst(vols, func(v Volume) (int, time.Time) { return v.Generation, v.CreateTime })
	return vols, nil
}

func ToSlotVolume(v ec2types.Volume) Volume {
	tags := TagMap(v.Tags)
	sv := Volume{
		ID:           aws.ToString(v.VolumeId),
		AZ:           aws.ToString(v.AvailabilityZone),
		State:        string(v.State),
		Generation:   generationOf(tags),
		SizeGiB:      aws.ToInt32(v.Size),
		VolumeType:   string(v.VolumeType),
		CreatedBlank: tags[TagCreatedBlank] == "true",
		Superseded:   tags[TagSuperseded] == "true",
		CreateTime:   aws.ToTime(v.CreateTime),
		Tags:         tags,
		SnapshotID:   aws.ToString(v.SnapshotId),
		IOPS:         aws.ToInt32(v.Iops),
		Throughput:   aws.ToInt32(v.Throughput),
		Encrypted:    aws.ToBool(v.Encrypted),
		KMSKeyID:     aws.ToString(v.KmsKeyId),

		InitializationRate: aws.ToInt32(v.VolumeInitializationRate),
		FastRestored:       aws.ToBool(v.FastRestored),
	}
	for _, a := range v.Attachments {
		sv.Attachments = append(sv.Attachments, Attachment{
			InstanceID: aws.ToString(a.InstanceId),
			Device:     aws.ToString(a.Device),
			State:      string(a.State),
			AttachTime: aws.ToTime(a.AttachTime),
		})
	}
	return sv
}

// describeVolume returns one volume by ID.
//
// It asks by filter (volume-id), not by VolumeIds: EC2 counts a Describe call without a filter, MaxResults
// or NextToken against the small bucket of "unfiltered and unpaginated" requests, which every wait's
// polls would drain. A filter that matches nothing answers an empty list where VolumeIds answers
// InvalidVolume.NotFound; the error returned then carries that code, so callers read one code either way.
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
func describeVolume(ctx context.Context, c EC2, id string, opts ...func(*ec2.Options)) (Volume, error) {
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("volume-id"), Values: []string{id}}}}, opts...)
	if err != nil {
		return Volume{}, fmt.Errorf("describe volume %s: %w", id, err)
	}
	if len(out.Volumes) == 0 {
		return Volume{}, fmt.Errorf("describe volume %s: %w", id, &smithy.GenericAPIError{Code: codeVolumeNotFound,
			Message: "The volume '" + id + "' does not exist (no volume matches the volume-id filter)."})
	}
	if len(out.Volumes) != 1 {
		return Volume{}, fmt.Errorf("describe volume %s: %d volumes returned", id, len(out.Volumes))
	}
	return ToSlotVolume(out.Volumes[0]), nil
}

// ListSlotSnapshots returns the slot's snapshots owned by this account, newest first: by generation, then
// by start time.
func ListSlotSnapshots(ctx context.Context, c EC2, group, slot string) ([]Snapshot, error) {
	var snaps []Snapshot
	p := ec2.NewDescribeSnapshotsPaginator(c, &ec2.DescribeSnapshotsInput{
		OwnerIds: []string{"self"},
		Filters:  SlotFilters(group, slot),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describe snapshots of %s/%s: %w", group, slot, err)
		}
		for _, s := range page.Snapshots {
			snaps = append(snaps, ToSlotSnapshot(s))
		}
	}
	sortNewestFirst(snaps, func(s Snapshot) (int, time.Time) { return s.Generation, s.StartTime })
	return snaps, nil
}

func ToSlotSnapshot(s ec2types.Snapshot) Snapshot {
	tags := TagMap(s.Tags)
	return Snapshot{
		ID:             aws.ToString(s.SnapshotId),
		State:          string(s.State),
		Progress:       aws.ToString(s.Progress),
		Generation:     generationOf(tags),
		Consistent:     tags[TagConsistent] == "true",
		Final:          tags[TagFinal] == "true",
		SourceVolume:   sourceVolumeOf(s, tags),
		SourceInstance: tags[TagSourceInstance],
		VolumeSizeGiB:  aws.ToInt32(s.VolumeSize),
		StartTime:      aws.ToTime(s.StartTime),
		Tags:           tags,
		Encrypted:      aws.ToBool(s.Encrypted),
		KMSKeyID:       aws.ToString(s.KmsKeyId),
		Shape:          recordedShapeOf(tags),
	}
}

// sourceVolumeOf is the volume a snapshot was taken of: its handover:source-volume tag, or, for a snapshot
// of a set made by CreateSnapshots (which cannot tag each snapshot apart), its VolumeId.
func sourceVolumeOf(s ec2types.Snapshot, tags map[string]string) string {
	if v := tags[TagSourceVolume]; v != "" {
		return v
	}
	return aws.ToString(s.VolumeId)
}

// DescribeSnapshot returns one snapshot by ID.
func DescribeSnapshot(ctx context.Context, c EC2, id string) (Snapshot, error) {
	out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
	if err != nil {
		return Snapshot{}, fmt.Errorf("describe snapshot %s: %w", id, err)
	}
	if len(out.Snapshots) != 1 {
		return Snapshot{}, fmt.Errorf("describe snapshot %s: %d snapshots returned", id, len(out.Snapshots))
	}
	return ToSlotSnapshot(out.Snapshots[0]), nil
}

// TagSpec builds TagSpecifications: handover tags every resource at creation, never in a second call that
// could be lost between the two.
func TagSpec(rt ec2types.ResourceType, tags map[string]string) []ec2types.TagSpecification {
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

// sortNewestFirst orders a slot's volumes or snapshots newest first: by generation, then by time.
func sortNewestFirst[T any](xs []T, key func(T) (generation int, at time.Time)) {
	sort.SliceStable(xs, func(i, j int) bool {
		gi, ti := key(xs[i])
		gj, tj := key(xs[j])
		if gi != gj {
			return gi > gj
		}
		return ti.After(tj)
	})
}

// DescribeVolume returns one volume by ID, as described now.
func DescribeVolume(ctx context.Context, c EC2, id string) (Volume, error) {
	return describeVolume(ctx, c, id)
}

// markBound bounds MarkVolume's wait for its tag to show.
const markBound = 2 * time.Minute

// MarkVolume sets the tag key=true on a volume (CreateTags on an existing resource: the one handover tag
// that cannot be set at creation, because it records what happened later) and returns once DescribeVolumes
// shows it, so that every later reading, by this run or another instance's, finds it: EC2 is eventually
// consistent, and what the tag records (TagFormatting, TagHandedOut) decides whether a volume may ever be
// formatted. https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html,
// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
func MarkVolume(ctx context.Context, log *slog.Logger, c EC2, volumeID, key string) error {
	if _, err := c.CreateTags(ctx, &ec2.CreateTagsInput{
		Resources: []string{volumeID},
		Tags:      []ec2types.Tag{{Key: aws.String(key), Value: aws.String("true")}},
	}); err != nil {
		return fmt.Errorf("tag %s %s=true: %w", volumeID, key, err)
	}
	return Poll(ctx, log, wait.Spec{What: "tag " + key + " on " + volumeID, Bound: markBound}, func(ctx context.Context) (bool, string, error) {
		v, err := describeVolume(ctx, c, volumeID)
		if err != nil {
			return false, "", err
		}
		return v.Tags[key] == "true", "not visible yet", nil
	})
}
