package sim

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func fastRestoreState(t *testing.T, r *Region, snap, az string) ec2types.FastSnapshotRestoreStateCode {
	t.Helper()
	out, err := ec2Client(r).DescribeFastSnapshotRestores(ctxT(t), &ec2.DescribeFastSnapshotRestoresInput{Filters: []ec2types.Filter{
		{Name: aws.String("snapshot-id"), Values: []string{snap}}, {Name: aws.String("availability-zone"), Values: []string{az}}}})
	if err != nil {
		t.Fatal(err)
	}
	switch len(out.FastSnapshotRestores) {
	case 0:
		return ""
	case 1:
		return out.FastSnapshotRestores[0].State
	}
	t.Fatalf("%d fast snapshot restores of %s in %s", len(out.FastSnapshotRestores), snap, az)
	return ""
}

// TestFastSnapshotRestore: enabling goes enabling -> optimizing -> enabled per zone; a volume made in
// that zone from the snapshot is fully initialized at creation (and says it was fast restored), one in
// another zone or with a rate is not; bad zones and snapshots fail per item; disabling goes disabling ->
// disabled; deleting the snapshot forgets it.
func TestFastSnapshotRestore(t *testing.T) {
	t.Parallel()
	// Slower than the default test speed: between one state's release and the next Hold, the next state's
	// delay (300 ms) must not run out.
	r := startRegion(t, Options{Speed: 100})
	c := ec2Client(r)
	ctx := ctxT(t)
	snap := completedSnapshot(t, r, 1)

	release := r.Hold(FastRestoreEnable, "")
	out, err := c.EnableFastSnapshotRestores(ctx, &ec2.EnableFastSnapshotRestoresInput{
		AvailabilityZones: []string{"us-east-1a", "us-east-9z"}, SourceSnapshotIds: []string{snap, "snap-0123456789abcdef0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Successful) != 1 || out.Successful[0].State != ec2types.FastSnapshotRestoreStateCodeEnabling || aws.ToString(out.Successful[0].AvailabilityZone) != "us-east-1a" {
		t.Fatalf("successful: %+v", out.Successful)
	}
	codes := map[string]string{}
	for _, u := range out.Unsuccessful {
		for _, e := range u.FastSnapshotRestoreStateErrors {
			codes[aws.ToString(u.SnapshotId)+"/"+aws.ToString(e.AvailabilityZone)] = aws.ToString(e.Error.Code)
		}
	}
	want := map[string]string{snap + "/us-east-9z": "InvalidParameterValue", "snap-0123456789abcdef0/us-east-1a": "InvalidSnapshot.NotFound",
		"snap-0123456789abcdef0/us-east-9z": "InvalidSnapshot.NotFound"}
	for k, v := range want {
		if codes[k] != v {
			t.Errorf("unsuccessful %s: %q, want %q (all: %v)", k, codes[k], v, codes)
		}
	}
	for _, next := range []ec2types.FastSnapshotRestoreStateCode{"enabling", "optimizing"} {
		if got := fastRestoreState(t, r, snap, "us-east-1a"); got != next {
			t.Fatalf("state %s, want %s", got, next)
		}
		// Not enabled yet: a volume made now loads lazily.
		v, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3})
		if err != nil || aws.ToBool(v.FastRestored) {
			t.Fatalf("volume while %s: fast restored %v, err %v", next, aws.ToBool(v.FastRestored), err)
		}
		if _, err := r.WaitHeld(ctx, FastRestoreEnable, ""); err != nil {
			t.Fatal(err)
		}
		release()
		release = r.Hold(FastRestoreEnable, "")
	}
	release()
	idle(t, r)
	if got := fastRestoreState(t, r, snap, "us-east-1a"); got != ec2types.FastSnapshotRestoreStateCodeEnabled {
		t.Fatalf("state %s, want enabled", got)
	}
	if got := fastRestoreState(t, r, snap, "us-east-1b"); got != "" {
		t.Fatalf("us-east-1b: %s, want nothing", got)
	}

	mk := func(az string, rate int32) ec2types.VolumeStatusItem {
		in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3}
		if rate > 0 {
			in.VolumeInitializationRate = aws.Int32(rate)
		}
		v, err := c.CreateVolume(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		wantFast := az == "us-east-1a" && rate == 0
		if aws.ToBool(v.FastRestored) != wantFast {
			t.Errorf("volume in %s, rate %d: fast restored %v, want %v", az, rate, aws.ToBool(v.FastRestored), wantFast)
		}
		return volumeStatusOf(t, r, aws.ToString(v.VolumeId))
	}
	release = r.Hold(VolumeInitialize, "")
	defer release()
	if d := mk("us-east-1a", 0).InitializationStatusDetails; d.InitializationType != ec2types.InitializationTypeDefault || aws.ToInt64(d.Progress) != 100 {
		t.Errorf("from the fast-restore snapshot in its zone: %+v, want default at 100%% from creation", d)
	}
	if d := mk("us-east-1b", 0).InitializationStatusDetails; aws.ToInt64(d.Progress) == 100 {
		t.Errorf("in a zone without fast snapshot restore: %+v, want below 100%%", d)
	}
	if d := mk("us-east-1a", 100).InitializationStatusDetails; d.InitializationType != ec2types.InitializationTypeProvisionedRate || aws.ToInt64(d.Progress) == 100 {
		t.Errorf("with a rate, the rate wins over fast snapshot restore: %+v", d)
	}

	dis, err := c.DisableFastSnapshotRestores(ctx, &ec2.DisableFastSnapshotRestoresInput{AvailabilityZones: []string{"us-east-1a", "us-east-1b"}, SourceSnapshotIds: []string{snap}})
	if err != nil {
		t.Fatal(err)
	}
	if len(dis.Successful) != 1 || dis.Successful[0].State != ec2types.FastSnapshotRestoreStateCodeDisabling || len(dis.Unsuccessful) != 1 {
		t.Fatalf("disable: successful %+v, unsuccessful %+v; want us-east-1a disabling, us-east-1b refused", dis.Successful, dis.Unsuccessful)
	}
	idle(t, r)
	if got := fastRestoreState(t, r, snap, "us-east-1a"); got != ec2types.FastSnapshotRestoreStateCodeDisabled {
		t.Fatalf("after disable: %s", got)
	}
	if _, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil {
		t.Fatal(err)
	}
	if got := fastRestoreState(t, r, snap, "us-east-1a"); got != "" {
		t.Fatalf("after DeleteSnapshot: %s, want nothing", got)
	}
}
