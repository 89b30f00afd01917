package sim

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func writeAt(t *testing.T, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotIsPointInTimeAndRestores(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Speed: 50})
	c := ec2Client(r)
	ctx := ctxT(t)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	before := []byte("written before the snapshot")
	writeAt(t, r.volumeImage(vol), 700<<20, before)
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol), Description: aws.String("d"),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: toTags(map[string]string{"handover:group": "web"})}}})
	if err != nil {
		t.Fatal(err)
	}
	writeAt(t, r.volumeImage(vol), 700<<20, []byte("WRITTEN AFTER THE SNAPSHOT"))
	if snap.State != ec2types.SnapshotStatePending || *snap.VolumeSize != 1 || len(snap.Tags) != 1 {
		t.Fatalf("snapshot: %+v", snap)
	}
	// Restoring needs a completed snapshot.
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId})
	wantCode(t, err, "IncorrectState")
	idle(t, r)
	out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []ec2types.Filter{{Name: aws.String("tag:handover:group"), Values: []string{"web"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Snapshots) != 1 || out.Snapshots[0].State != ec2types.SnapshotStateCompleted || *out.Snapshots[0].Progress != "100%" {
		t.Fatalf("completed snapshot: %+v", out.Snapshots)
	}
	if got := readAt(t, r.snapshotImage(*snap.SnapshotId), 700<<20, len(before)); !bytes.Equal(got, before) {
		t.Fatalf("snapshot holds %q", got)
	}
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId, Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	restored, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId, Size: aws.Int32(2)})
	if err != nil {
		t.Fatal(err)
	}
	if *restored.SnapshotId != *snap.SnapshotId || *restored.Size != 2 {
		t.Fatalf("restored: %+v", restored)
	}
	if got := readAt(t, r.volumeImage(*restored.VolumeId), 700<<20, len(before)); !bytes.Equal(got, before) {
		t.Fatalf("restored volume holds %q", got)
	}
	if st, _ := os.Stat(r.volumeImage(*restored.VolumeId)); st.Size() != 2*gib {
		t.Fatalf("restored image size %d", st.Size())
	}
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId, Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeIo1, Iops: aws.Int32(100)})
	wantCode(t, err, "InvalidParameterValue") // io1 starts at 4 GiB
	// Smaller than the snapshot is refused.
	big := createVolume(t, r, "us-east-1a", 5, nil)
	idle(t, r)
	bs, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(big)})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: bs.SnapshotId, Size: aws.Int32(2)})
	wantCode(t, err, "InvalidParameterValue")
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String("snap-0123456789abcdef0")})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"snap-0123456789abcdef0"}})
	wantCode(t, err, "InvalidSnapshot.NotFound")
	_, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{"nope"}})
	wantCode(t, err, "InvalidSnapshotID.Malformed")

	if err := r.FailSnapshot(*bs.SnapshotId); err != nil {
		t.Fatal(err)
	}
	out, err = c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{Filters: []ec2types.Filter{{Name: aws.String("status"), Values: []string{"error"}}}})
	if err != nil || len(out.Snapshots) != 1 {
		t.Fatalf("error snapshot: %v %v", out, err)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: bs.SnapshotId}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: bs.SnapshotId})
	wantCode(t, err, "InvalidSnapshot.NotFound")
}

func TestSnapshotProgressGrows(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	release := r.Hold(SnapshotComplete, "")
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	if err != nil {
		t.Fatal(err)
	}
	progress := func() (ec2types.SnapshotState, int) {
		t.Helper()
		out, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{*snap.SnapshotId}})
		if err != nil {
			t.Fatal(err)
		}
		p := *out.Snapshots[0].Progress
		n, err := strconv.Atoi(strings.TrimSuffix(p, "%"))
		if err != nil || !strings.HasSuffix(p, "%") {
			t.Fatalf("progress %q is not a percentage", p)
		}
		return out.Snapshots[0].State, n
	}
	state, first := progress()
	if state != ec2types.SnapshotStatePending || first >= 100 {
		t.Fatalf("new snapshot: %s %d%%, want pending below 100%%", state, first)
	}
	// Its duration over but held, the snapshot is still pending at the most a pending one shows.
	if _, err := r.WaitHeld(ctx, SnapshotComplete, *snap.SnapshotId); err != nil {
		t.Fatal(err)
	}
	if state, p := progress(); state != ec2types.SnapshotStatePending || p != 99 || p < first {
		t.Fatalf("snapshot past its duration: %s %d%% (first %d%%), want pending at 99%%", state, p, first)
	}
	release()
	if state, p := progress(); state != ec2types.SnapshotStateCompleted || p != 100 {
		t.Fatalf("released snapshot: %s %d%%, want completed at 100%%", state, p)
	}
}

func TestBlockDeviceFollowsAttachment(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	inst := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	env, err := r.InstanceEnv(inst)
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(env["HANDOVER_DEV_DIR"], "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+strings.ReplaceAll(vol, "-", ""))
	target, err := os.Readlink(link)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := os.ReadFile(filepath.Join(env["HANDOVER_SYS_DIR"], "class", "block", filepath.Base(target), "device", "serial"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(serial)) != strings.ReplaceAll(vol, "-", "") {
		t.Fatalf("serial %q", serial)
	}
	// The device is the volume: bytes written through it are in the image.
	writeAt(t, link, 4096, []byte("through the device"))
	if got := readAt(t, r.volumeImage(vol), 4096, 18); string(got) != "through the device" {
		if strings.HasPrefix(target, "/dev/loop") {
			// Loop devices write back through the page cache; flush it.
			f, _ := os.OpenFile(target, os.O_RDWR, 0)
			_ = f.Sync()
			_ = f.Close()
			got = readAt(t, r.volumeImage(vol), 4096, 18)
		}
		if string(got) != "through the device" {
			t.Fatalf("image holds %q", got)
		}
	}
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Fatalf("device link still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(env["HANDOVER_SYS_DIR"], "class", "block", filepath.Base(target))); !os.IsNotExist(err) {
		t.Fatalf("serial still there: %v", err)
	}
}
