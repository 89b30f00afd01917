package sim

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestSnapshotLock: a governance lock makes DeleteSnapshot fail until the snapshot is unlocked;
// DescribeLockedSnapshots lists it (by lock state too); a pending snapshot's lock duration starts when it
// completes; a compliance lock past its (absent) cooling-off period cannot be unlocked or shortened.
func TestSnapshotLock(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	snap := completedSnapshot(t, r, 1)

	for _, bad := range []struct {
		in   ec2.LockSnapshotInput
		code string
	}{
		{ec2.LockSnapshotInput{SnapshotId: aws.String(snap), LockMode: ec2types.LockModeGovernance}, "MissingParameter"},
		{ec2.LockSnapshotInput{SnapshotId: aws.String(snap), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(36501)}, "InvalidParameterValue"},
		{ec2.LockSnapshotInput{SnapshotId: aws.String(snap), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(1), CoolOffPeriod: aws.Int32(2)}, "InvalidParameterCombination"},
		{ec2.LockSnapshotInput{SnapshotId: aws.String("snap-0123456789abcdef0"), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(1)}, "InvalidSnapshot.NotFound"},
	} {
		_, err := c.LockSnapshot(ctx, &bad.in)
		wantCode(t, err, bad.code)
	}

	out, err := c.LockSnapshot(ctx, &ec2.LockSnapshotInput{SnapshotId: aws.String(snap), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(7)})
	if err != nil {
		t.Fatal(err)
	}
	if out.LockState != ec2types.LockStateGovernance || aws.ToInt32(out.LockDuration) != 7 || out.LockExpiresOn == nil ||
		out.LockExpiresOn.Sub(*out.LockDurationStartTime) != 7*24*time.Hour {
		t.Fatalf("LockSnapshot: %+v", out)
	}
	_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)})
	wantCode(t, err, "SnapshotLocked")

	locked, err := c.DescribeLockedSnapshots(ctx, &ec2.DescribeLockedSnapshotsInput{Filters: []ec2types.Filter{
		{Name: aws.String("lock-state"), Values: []string{"governance", "compliance", "compliance-cooloff"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(locked.Snapshots) != 1 || aws.ToString(locked.Snapshots[0].SnapshotId) != snap || locked.Snapshots[0].LockState != ec2types.LockStateGovernance {
		t.Fatalf("DescribeLockedSnapshots: %+v", locked.Snapshots)
	}

	if _, err := c.UnlockSnapshot(ctx, &ec2.UnlockSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatalf("DeleteSnapshot after unlocking: %v", err)
	}

	// A pending snapshot: locked at once, its duration starts when it completes.
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	release := r.Hold(SnapshotComplete, "")
	pend, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	if err != nil {
		t.Fatal(err)
	}
	ps := aws.ToString(pend.SnapshotId)
	l, err := c.LockSnapshot(ctx, &ec2.LockSnapshotInput{SnapshotId: aws.String(ps), LockMode: ec2types.LockModeCompliance, LockDuration: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if l.LockState != ec2types.LockStateCompliance || l.LockDurationStartTime != nil || l.LockExpiresOn != nil {
		t.Fatalf("lock of a pending snapshot: %+v; want compliance, no start nor expiry yet", l)
	}
	_, err = c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(ps)})
	wantCode(t, err, "SnapshotLocked")
	release()
	idle(t, r)
	got, err := c.DescribeLockedSnapshots(ctx, &ec2.DescribeLockedSnapshotsInput{SnapshotIds: []string{ps}})
	if err != nil || len(got.Snapshots) != 1 || got.Snapshots[0].LockDurationStartTime == nil || got.Snapshots[0].LockExpiresOn == nil {
		t.Fatalf("after completion: %+v, %v; want a start and an expiry", got, err)
	}
	_, err = c.UnlockSnapshot(ctx, &ec2.UnlockSnapshotInput{SnapshotId: aws.String(ps)})
	wantCode(t, err, "IncorrectState")
	_, err = c.LockSnapshot(ctx, &ec2.LockSnapshotInput{SnapshotId: aws.String(ps), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(1)})
	wantCode(t, err, "IncorrectState")
	if _, err := c.LockSnapshot(ctx, &ec2.LockSnapshotInput{SnapshotId: aws.String(ps), LockMode: ec2types.LockModeCompliance, LockDuration: aws.Int32(2)}); err != nil {
		t.Errorf("extending a compliance lock: %v", err)
	}
}

// TestSnapshotLockExpires: once the lock's expiry has passed the state is expired and the snapshot can
// be deleted.
func TestSnapshotLockExpires(t *testing.T) {
	t.Parallel()
	l := &snapshotLock{Mode: lockGovernance, Days: 1, Created: t0(), DurationStart: t0()}
	if s := l.state(t0().Add(23 * time.Hour)); s != lockGovernance {
		t.Errorf("after 23 h: %s", s)
	}
	if s := l.state(t0().Add(24 * time.Hour)); s != "expired" {
		t.Errorf("after 24 h: %s, want expired", s)
	}
	c := &snapshotLock{Mode: lockCompliance, Days: 3, CoolOffHours: 2, Created: t0(), DurationStart: t0()}
	if s := c.state(t0().Add(time.Hour)); s != "compliance-cooloff" {
		t.Errorf("compliance in its cooling-off period: %s", s)
	}
	if s := c.state(t0().Add(3 * time.Hour)); s != lockCompliance {
		t.Errorf("compliance after its cooling-off period: %s", s)
	}
	pending := &snapshotLock{Mode: lockGovernance, Days: 1, Created: t0()}
	if s := pending.state(t0().Add(1000 * time.Hour)); s != lockGovernance {
		t.Errorf("a pending snapshot's lock never started: %s, want governance", s)
	}
}

func t0() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) }
