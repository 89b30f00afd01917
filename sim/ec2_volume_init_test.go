package sim

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

// completedSnapshot snapshots a new blank volume of sizeGiB in us-east-1a and waits for the snapshot.
func completedSnapshot(t *testing.T, r *Region, sizeGiB int32) string {
	t.Helper()
	vol := createVolume(t, r, "us-east-1a", sizeGiB, nil)
	idle(t, r)
	out, err := ec2Client(r).CreateSnapshot(ctxT(t), &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	return aws.ToString(out.SnapshotId)
}

func volumeStatusOf(t *testing.T, r *Region, id string) ec2types.VolumeStatusItem {
	t.Helper()
	out, err := ec2Client(r).DescribeVolumeStatus(ctxT(t), &ec2.DescribeVolumeStatusInput{VolumeIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.VolumeStatuses) != 1 {
		t.Fatalf("DescribeVolumeStatus %s: %d items", id, len(out.VolumeStatuses))
	}
	return out.VolumeStatuses[0]
}

// TestVolumeInitializationRate: CreateVolume takes VolumeInitializationRate (100 to 300 MiB/s) only with a
// snapshot; DescribeVolumes shows it, and DescribeVolumeStatus reports the provisioned-rate initialization
// with its progress and estimated time until 100%; a blank volume has no initialization at all.
func TestVolumeInitializationRate(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	snap := completedSnapshot(t, r, 4)

	_, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), Size: aws.Int32(4),
		VolumeType: ec2types.VolumeTypeGp3, VolumeInitializationRate: aws.Int32(200)})
	wantCode(t, err, "InvalidParameterCombination")
	for _, bad := range []int32{99, 301} {
		_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: aws.String(snap),
			VolumeType: ec2types.VolumeTypeGp3, VolumeInitializationRate: aws.Int32(bad)})
		wantCode(t, err, "InvalidParameterValue")
	}

	release := r.Hold(VolumeInitialize, "")
	releaseCreate := r.Hold(VolumeCreate, "")
	out, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: aws.String(snap),
		VolumeType: ec2types.VolumeTypeGp3, VolumeInitializationRate: aws.Int32(300)})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(out.VolumeId)
	if aws.ToInt32(out.VolumeInitializationRate) != 300 {
		t.Errorf("CreateVolume answered rate %d, want 300", aws.ToInt32(out.VolumeInitializationRate))
	}
	st := volumeStatusOf(t, r, id)
	d := st.InitializationStatusDetails
	if d == nil || d.InitializationType != ec2types.InitializationTypeProvisionedRate || aws.ToInt64(d.Progress) != 0 || aws.ToInt64(d.EstimatedTimeToCompleteInSeconds) < 1 {
		t.Fatalf("initialization while creating: %+v", d)
	}
	releaseCreate()
	idle(t, r) // created; the initialization is not a transition WaitIdle waits for
	if _, err := r.WaitHeld(ctx, VolumeInitialize, id); err != nil {
		t.Fatal(err)
	}
	d = volumeStatusOf(t, r, id).InitializationStatusDetails
	if aws.ToInt64(d.Progress) != 99 || aws.ToInt64(d.EstimatedTimeToCompleteInSeconds) < 1 {
		t.Fatalf("initialization held at its end: progress %d, %d s left; want 99 and at least 1", aws.ToInt64(d.Progress), aws.ToInt64(d.EstimatedTimeToCompleteInSeconds))
	}
	release()
	simtest.Eventually(t, waitBound, "initialization at 100%", func() (bool, string) {
		d = volumeStatusOf(t, r, id).InitializationStatusDetails
		return aws.ToInt64(d.Progress) == 100 && aws.ToInt64(d.EstimatedTimeToCompleteInSeconds) == 0, fmt.Sprintf("%+v", d)
	})
	if v := describeVolume(t, r, id); aws.ToInt32(v.VolumeInitializationRate) != 300 || aws.ToBool(v.FastRestored) {
		t.Errorf("DescribeVolumes: rate %d, fast restored %v; want 300 and false", aws.ToInt32(v.VolumeInitializationRate), aws.ToBool(v.FastRestored))
	}

	// Without a rate: the default, with no estimate.
	out, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	d = volumeStatusOf(t, r, aws.ToString(out.VolumeId)).InitializationStatusDetails
	if d == nil || d.InitializationType != ec2types.InitializationTypeDefault || d.EstimatedTimeToCompleteInSeconds != nil {
		t.Errorf("default initialization: %+v", d)
	}
	if out.VolumeInitializationRate != nil {
		t.Errorf("a volume without a rate answers rate %d", aws.ToInt32(out.VolumeInitializationRate))
	}

	blank := createVolume(t, r, "us-east-1b", 1, nil)
	if st := volumeStatusOf(t, r, blank); st.InitializationStatusDetails != nil || st.VolumeStatus == nil {
		t.Errorf("blank volume: initialization %+v, status %+v; want none, and a status", st.InitializationStatusDetails, st.VolumeStatus)
	}
	idle(t, r)
	if st := volumeStatusOf(t, r, blank); st.VolumeStatus.Status != ec2types.VolumeStatusInfoStatusOk {
		t.Errorf("blank volume status %s, want ok", st.VolumeStatus.Status)
	}
	_, err = c.DescribeVolumeStatus(ctx, &ec2.DescribeVolumeStatusInput{VolumeIds: []string{"vol-0123456789abcdef0"}})
	wantCode(t, err, "InvalidVolume.NotFound")
}

// TestVolumeInitializationTokenParams: the rate is one of CreateVolume's parameters a ClientToken
// compares: the same token with another rate is IdempotentParameterMismatch.
func TestVolumeInitializationTokenParams(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	snap := completedSnapshot(t, r, 1)
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3,
		ClientToken: aws.String("tok-1"), VolumeInitializationRate: aws.Int32(100)}
	if _, err := c.CreateVolume(ctxT(t), in); err != nil {
		t.Fatal(err)
	}
	in.VolumeInitializationRate = aws.Int32(200)
	_, err := c.CreateVolume(ctxT(t), in)
	wantCode(t, err, "IdempotentParameterMismatch")
}
