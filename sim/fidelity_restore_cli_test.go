package sim

import (
	"fmt"
	"testing"

	"github.com/handover/handover/sim/simtest"
)

// TestFidelityCLIRestoreSpeedAndLocks drives what handover relies on for a restored volume's speed and
// for snapshot locks through the AWS CLI (its own request shapes and response parsing): CreateVolume's
// --volume-initialization-rate (refused without a snapshot), describe-volume-status'
// InitializationStatusDetails, fast snapshot restore per zone, lock-snapshot, describe-locked-snapshots
// and a delete-snapshot refused while locked. moto models none of these, so the sim is checked against
// the CLI alone.
func TestFidelityCLIRestoreSpeedAndLocks(t *testing.T) {
	t.Parallel()
	// Faster than startFidelitySim: nothing here waits on a lifecycle hook, and every wait is one for a
	// transition to end, so each costs a CLI round trip or two.
	r := startRegion(t, Options{Speed: 1000})
	aws := newAWSCLI(t, r.Endpoint())
	const azA, azB = "us-east-1a", "us-east-1b"

	aws.fails("InvalidParameterCombination", "ec2", "create-volume", "--availability-zone", azA, "--size", "1", "--volume-type", "gp3",
		"--volume-initialization-rate", "200")
	vol := jstr(aws.ok("ec2", "create-volume", "--availability-zone", azA, "--size", "2", "--volume-type", "gp3"), "VolumeId")
	waitVolume(t, aws, vol, "available")
	if st := jget(aws.ok("ec2", "describe-volume-status", "--volume-ids", vol), "VolumeStatuses", 0); jstr(st, "VolumeStatus", "Status") != "ok" ||
		jget(st, "InitializationStatusDetails") != nil {
		t.Errorf("describe-volume-status of a blank volume: %v; want ok and no initialization", st)
	}
	snap := jstr(aws.ok("ec2", "create-snapshot", "--volume-id", vol), "SnapshotId")
	simtest.Eventually(t, fidelityBound, "snapshot completed", func() (bool, string) {
		s := jget(aws.ok("ec2", "describe-snapshots", "--snapshot-ids", snap), "Snapshots", 0)
		return jstr(s, "State") == "completed", fmt.Sprintf("%v", s)
	})

	aws.fails("InvalidParameterValue", "ec2", "create-volume", "--availability-zone", azB, "--snapshot-id", snap, "--volume-type", "gp3",
		"--volume-initialization-rate", "400")
	rest := aws.ok("ec2", "create-volume", "--availability-zone", azB, "--snapshot-id", snap, "--volume-type", "gp3", "--volume-initialization-rate", "300")
	restored := jstr(rest, "VolumeId")
	if jnum(rest, "VolumeInitializationRate") != 300 {
		t.Errorf("create-volume --volume-initialization-rate 300: %v", rest)
	}
	simtest.Eventually(t, fidelityBound, "initialization reported to 100%", func() (bool, string) {
		d := jget(aws.ok("ec2", "describe-volume-status", "--volume-ids", restored), "VolumeStatuses", 0, "InitializationStatusDetails")
		if jstr(d, "InitializationType") != "provisioned-rate" || jget(d, "EstimatedTimeToCompleteInSeconds") == nil {
			t.Fatalf("initialization of a volume with a rate: %v", d)
		}
		return jnum(d, "Progress") == 100 && jnum(d, "EstimatedTimeToCompleteInSeconds") == 0, fmt.Sprintf("%v", d)
	})
	if v := jget(aws.ok("ec2", "describe-volumes", "--volume-ids", restored), "Volumes", 0); jnum(v, "VolumeInitializationRate") != 300 || jget(v, "FastRestored") != false {
		t.Errorf("describe-volumes of the restored volume: %v", v)
	}

	en := aws.ok("ec2", "enable-fast-snapshot-restores", "--availability-zones", azA, "--source-snapshot-ids", snap)
	if jstr(en, "Successful", 0, "State") != "enabling" || len(jlist(en, "Unsuccessful")) != 0 {
		t.Errorf("enable-fast-snapshot-restores: %v", en)
	}
	simtest.Eventually(t, fidelityBound, "fast snapshot restore enabled", func() (bool, string) {
		f := jlist(aws.ok("ec2", "describe-fast-snapshot-restores", "--filters", "Name=snapshot-id,Values="+snap, "Name=state,Values=enabled"), "FastSnapshotRestores")
		return len(f) == 1 && jstr(f[0], "AvailabilityZone") == azA && jstr(f[0], "EnabledTime") != "", fmt.Sprintf("%v", f)
	})
	fast := aws.ok("ec2", "create-volume", "--availability-zone", azA, "--snapshot-id", snap, "--volume-type", "gp3")
	if jget(fast, "FastRestored") != true {
		t.Errorf("create-volume from the fast-restore snapshot in its zone: %v", fast)
	}
	if d := jget(aws.ok("ec2", "describe-volume-status", "--volume-ids", jstr(fast, "VolumeId")), "VolumeStatuses", 0, "InitializationStatusDetails"); jnum(d, "Progress") != 100 || jstr(d, "InitializationType") != "default" {
		t.Errorf("initialization of a fast-restored volume: %v", d)
	}
	dis := aws.ok("ec2", "disable-fast-snapshot-restores", "--availability-zones", azA, azB, "--source-snapshot-ids", snap)
	if jstr(dis, "Successful", 0, "State") != "disabling" || jstr(dis, "Unsuccessful", 0, "FastSnapshotRestoreStateErrors", 0, "Error", "Code") == "" {
		t.Errorf("disable-fast-snapshot-restores: %v", dis)
	}

	lock := aws.ok("ec2", "lock-snapshot", "--snapshot-id", snap, "--lock-mode", "governance", "--lock-duration", "1")
	if jstr(lock, "LockState") != "governance" || jnum(lock, "LockDuration") != 1 || jstr(lock, "LockExpiresOn") == "" {
		t.Errorf("lock-snapshot: %v", lock)
	}
	locked := jlist(aws.ok("ec2", "describe-locked-snapshots", "--filters", "Name=lock-state,Values=governance"), "Snapshots")
	if len(locked) != 1 || jstr(locked[0], "SnapshotId") != snap {
		t.Errorf("describe-locked-snapshots: %v", locked)
	}
	aws.fails("SnapshotLocked", "ec2", "delete-snapshot", "--snapshot-id", snap)
	aws.ok("ec2", "unlock-snapshot", "--snapshot-id", snap)
	aws.ok("ec2", "delete-snapshot", "--snapshot-id", snap)
	t.Logf("%d AWS CLI commands", aws.calls)
}
