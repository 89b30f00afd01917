package cloud

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// Tag keys: the contract between instances, addresses, volumes and snapshots (DESIGN.md). They use only
// characters that instance metadata tags allow (no '/', no spaces).
const (
	TagGroup          = "handover:group"
	TagSlot           = "handover:volume"
	TagGeneration     = "handover:generation"
	TagSourceVolume   = "handover:source-volume"
	TagSourceInstance = "handover:source-instance"
	TagConsistent     = "handover:consistent"
	TagCreatedBlank   = "handover:created-blank"
	TagSuperseded     = "handover:superseded"
	TagRole           = "handover:role"
	// TagEpoch is the Elastic IP association (the lease, agent/FENCING.md) under which a volume or snapshot
	// was made: it tells which of two racers made what.
	TagEpoch = "handover:epoch"
	// TagFinal marks a snapshot taken of a volume that can get no more writes before it changes hands
	// (down's, of an unmounted volume; up's, of an orphaned one): restoring it loses nothing.
	TagFinal = "handover:final"
	// TagSet and TagSetSize make the snapshots of one moment of a group's slots one set (cloud/snapshotsets.go):
	// the set's id, and how many slots it has; up restores a group of several slots only from complete sets.
	TagSet     = "handover:set"
	TagSetSize = "handover:set-size"
	// TagFormatting marks a volume handover created blank on which it has started to make a filesystem:
	// set (CreateTags) before mkfs, so that a run that finds it, and no TagHandedOut, knows the only
	// writer the volume has had is handover's own mkfs (agent/filesystem.go: when handover formats).
	TagFormatting = "handover:formatting"
	// TagHandedOut marks a volume handover created blank once it is given for use: set before its first
	// mount, or before `up --no-mount` reports it attached. Never removed: a volume that has it is never
	// formatted, whatever it holds.
	TagHandedOut = "handover:handed-out"
	// The source volume's shape when the snapshot was taken (ModifyVolume changes survive a move across
	// AZs: a restore takes the larger of these and the configuration, shape.go): EBS volume type, size in
	// GiB, provisioned IOPS and throughput (MiB/s; absent when the type has none), and the KMS key of an
	// encrypted volume.
	TagShapeType       = "handover:shape-type"
	TagShapeSize       = "handover:shape-size"
	TagShapeIOPS       = "handover:shape-iops"
	TagShapeThroughput = "handover:shape-throughput"
	TagShapeKMSKey     = "handover:shape-kms-key"

	DefaultSlot = "data"
)

// ValidGroupName reports whether s can name a handover group: it is a tag value and part of idempotency
// tokens, so letters, digits, '-', '_' and '.' only, at most 64.
func ValidGroupName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}

// InstanceTags reads an instance's tags with ec2:DescribeTags (for an instance whose launch template does
// not put its tags in instance metadata).
func InstanceTags(ctx context.Context, c EC2, instanceID string) (map[string]string, error) {
	tags := map[string]string{}
	p := ec2.NewDescribeTagsPaginator(c, &ec2.DescribeTagsInput{
		Filters: []ec2types.Filter{{Name: aws.String("resource-id"), Values: []string{instanceID}}},
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("ec2:DescribeTags for %s: %w", instanceID, err)
		}
		for _, t := range page.Tags {
			tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	return tags, nil
}
