package sim

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// requireRoot skips without root, except in CI, where the test must run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 && probeLoop() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI must run this test as root with loop devices available")
	}
	t.Skip("needs root and loop devices")
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestFilesystemSurvivesCrossZoneRestore is the story in miniature: mkfs and
// mount a volume in one zone, write a file, snapshot, restore in another zone,
// attach, mount and read the file back.
func TestFilesystemSurvivesCrossZoneRestore(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	r := startRegion(t, Options{Speed: 100})
	c := ec2Client(r)
	ctx := ctxT(t)
	attachAndLink := func(vol, inst string) string {
		t.Helper()
		if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
		idle(t, r)
		env, _ := r.InstanceEnv(inst)
		dev, err := filepath.EvalSymlinks(filepath.Join(env["HANDOVER_DEV_DIR"], "disk", "by-id", nvmeLinkName(vol)))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(dev, "/dev/loop") {
			t.Fatalf("want a loop device, got %s", dev)
		}
		return dev
	}
	mountAt := func(dev string) string {
		t.Helper()
		mnt := t.TempDir()
		run(t, "mount", dev, mnt)
		t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
		return mnt
	}
	volA := createVolume(t, r, "us-east-1a", 1, nil)
	instA := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	devA := attachAndLink(volA, instA)
	run(t, "mkfs.ext4", "-q", "-F", devA)
	mntA := mountAt(devA)
	if err := os.WriteFile(filepath.Join(mntA, "data.txt"), []byte("survives the move"), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "umount", mntA) // a clean unmount, as handover down does
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(volA)})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	restored, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId})
	if err != nil {
		t.Fatal(err)
	}
	instB := runInstance(t, r, "us-east-1b", nil)
	idle(t, r)
	devB := attachAndLink(*restored.VolumeId, instB)
	mntB := mountAt(devB)
	got, err := os.ReadFile(filepath.Join(mntB, "data.txt"))
	if err != nil || string(got) != "survives the move" {
		t.Fatalf("restored file: %q %v", got, err)
	}
	run(t, "umount", mntB)
}
