package sim

import (
	"bytes"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestCreateSnapshotsOneMomentForEveryVolume: CreateSnapshots snapshots each volume of the instance but
// the excluded ones, all at one start time and with each image as of the call; each snapshot carries its
// volume's tags (CopyTagsFromSource) and the TagSpecifications'; AWS's errors for an unknown instance, a
// volume not attached and a root volume in ExcludeDataVolumeIds; a per-volume rate limit fails the whole
// call and makes nothing.
func TestCreateSnapshotsOneMomentForEveryVolume(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Speed: 50, SnapshotInterval: time.Hour}) // the interval at Speed 50: 72 s
	c := ec2Client(r)
	ctx := ctxT(t)
	inst := runInstance(t, r, "us-east-1a", nil)
	data := createVolume(t, r, "us-east-1a", 1, map[string]string{"handover:volume": "data"})
	wal := createVolume(t, r, "us-east-1a", 1, map[string]string{"handover:volume": "wal"})
	other := createVolume(t, r, "us-east-1a", 1, map[string]string{"handover:volume": "other"})
	idle(t, r)
	for dev, v := range map[string]string{"/dev/sdf": data, "/dev/sdg": wal, "/dev/sdh": other} {
		if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(v), InstanceId: aws.String(inst), Device: aws.String(dev)}); err != nil {
			t.Fatal(err)
		}
	}
	idle(t, r)
	before := []byte("before the set")
	writeAt(t, r.volumeImage(data), 1<<20, before)
	writeAt(t, r.volumeImage(wal), 1<<20, before)

	in := &ec2.CreateSnapshotsInput{
		InstanceSpecification: &ec2types.InstanceSpecification{InstanceId: aws.String(inst), ExcludeBootVolume: aws.Bool(true), ExcludeDataVolumeIds: []string{other}},
		CopyTagsFromSource:    ec2types.CopyTagsFromSourceVolume,
		Description:           aws.String("set"),
		TagSpecifications:     []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: toTags(map[string]string{"handover:set": "s1"})}},
	}
	out, err := c.CreateSnapshots(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, r.volumeImage(data), 1<<20, []byte("AFTER THE SET!"))
	if len(out.Snapshots) != 2 {
		t.Fatalf("%d snapshots, want 2 (data and wal; other excluded)", len(out.Snapshots))
	}
	start := out.Snapshots[0].StartTime
	for _, s := range out.Snapshots {
		vol := aws.ToString(s.VolumeId)
		tags := map[string]string{}
		for _, tg := range s.Tags {
			tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
		switch {
		case vol != data && vol != wal:
			t.Errorf("snapshot of %s, which was excluded", vol)
		case !s.StartTime.Equal(*start):
			t.Errorf("start times differ: %v and %v", s.StartTime, start)
		case s.State != ec2types.SnapshotStatePending || aws.ToString(s.Description) != "set":
			t.Errorf("snapshot %+v", s)
		case tags["handover:set"] != "s1" || (vol == data) != (tags["handover:volume"] == "data"):
			t.Errorf("tags of the snapshot of %s: %v", vol, tags)
		}
		if got := readAt(t, r.snapshotImage(aws.ToString(s.SnapshotId)), 1<<20, len(before)); !bytes.Equal(got, before) {
			t.Errorf("snapshot of %s holds %q, want what was written before the call", vol, got)
		}
	}

	// Within the 15 s per-volume interval: the whole call fails, nothing is made.
	count := func() int {
		d, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
		if err != nil {
			t.Fatal(err)
		}
		return len(d.Snapshots)
	}
	n := count()
	_, err = c.CreateSnapshots(ctx, in)
	wantCode(t, err, "SnapshotCreationPerVolumeRateExceeded")
	if got := count(); got != n {
		t.Errorf("a failed CreateSnapshots made %d snapshots", got-n)
	}

	bad := func(spec *ec2types.InstanceSpecification, code string) {
		t.Helper()
		_, err := c.CreateSnapshots(ctx, &ec2.CreateSnapshotsInput{InstanceSpecification: spec})
		wantCode(t, err, code)
	}
	bad(&ec2types.InstanceSpecification{InstanceId: aws.String("i-0123456789abcdef0")}, "InvalidInstanceID.NotFound")
	bad(&ec2types.InstanceSpecification{InstanceId: aws.String("nonsense")}, "InvalidInstanceID.Malformed")
	bad(&ec2types.InstanceSpecification{InstanceId: aws.String(inst), ExcludeDataVolumeIds: []string{createVolume(t, r, "us-east-1a", 1, nil)}}, "InvalidParameterValue")
}
