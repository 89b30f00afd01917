package sim

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/handover/handover/sim/simtest"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestClientTokenAcrossZones: the zone is not one of the parameters a reused
// ClientToken is checked against; what the other zone gets depends on
// Options.TokenAcrossAZ.
func TestClientTokenAcrossZones(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"", TokenFirst, TokenNew} {
		t.Run("mode="+mode, func(t *testing.T) {
			t.Parallel()
			r := startRegion(t, Options{TokenAcrossAZ: mode})
			c := ec2Client(r)
			ctx := ctxT(t)
			in := func(az string, size int32) *ec2.CreateVolumeInput {
				return &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), Size: aws.Int32(size),
					VolumeType: ec2types.VolumeTypeGp3, ClientToken: aws.String("tok-az")}
			}
			a, err := c.CreateVolume(ctx, in("us-east-1a", 2))
			if err != nil {
				t.Fatal(err)
			}
			b, err := c.CreateVolume(ctx, in("us-east-1b", 2))
			if err != nil {
				t.Fatalf("same token, same parameters, other zone: %v", err)
			}
			if mode == TokenNew {
				if *b.VolumeId == *a.VolumeId || *b.AvailabilityZone != "us-east-1b" {
					t.Fatalf("mode new: got %s in %s, want a new volume in us-east-1b (first %s)", *b.VolumeId, *b.AvailabilityZone, *a.VolumeId)
				}
			} else if *b.VolumeId != *a.VolumeId || *b.AvailabilityZone != "us-east-1a" {
				t.Fatalf("mode first: got %s in %s, want the first volume %s in us-east-1a", *b.VolumeId, *b.AvailabilityZone, *a.VolumeId)
			}
			// Any other parameter still counts, from either zone.
			for _, az := range []string{"us-east-1a", "us-east-1b"} {
				_, err = c.CreateVolume(ctx, in(az, 3))
				wantCode(t, err, "IdempotentParameterMismatch")
			}
		})
	}
}

// TestSnapshotRateAndConcurrency: a second CreateSnapshot of one volume within
// SnapshotInterval fails with SnapshotCreationPerVolumeRateExceeded and
// succeeds once the interval is over; an st1/sc1 volume has one pending
// snapshot at a time, other types five (ConcurrentSnapshotLimitExceeded, until
// one completes).
func TestSnapshotRateAndConcurrency(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		// 30 min / Speed 1000 = 1.8 s: long enough that the second call is inside it on any machine.
		r := startRegion(t, Options{SnapshotInterval: 30 * time.Minute})
		c := ec2Client(r)
		vol := createVolume(t, r, "us-east-1a", 1, nil)
		idle(t, r)
		if _, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)}); err != nil {
			t.Fatal(err)
		}
		_, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
		wantCode(t, err, "SnapshotCreationPerVolumeRateExceeded")
		wantStatus(t, err, 400)
		simtest.Eventually(t, waitBound, "a retried CreateSnapshot succeeds", func() (bool, string) {
			_, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
			return err == nil, fmt.Sprint(err)
		})
	})
	t.Run("concurrency", func(t *testing.T) {
		t.Parallel()
		r := startRegion(t, Options{SnapshotInterval: -1})
		c := ec2Client(r)
		cold, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(125), VolumeType: ec2types.VolumeTypeSc1})
		if err != nil {
			t.Fatal(err)
		}
		gp3 := createVolume(t, r, "us-east-1a", 1, nil)
		idle(t, r)
		release := r.Hold(SnapshotComplete, "")
		snap := func(vol string) error {
			_, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
			return err
		}
		if err := snap(*cold.VolumeId); err != nil {
			t.Fatal(err)
		}
		err = snap(*cold.VolumeId)
		wantCode(t, err, "ConcurrentSnapshotLimitExceeded")
		wantStatus(t, err, 400)
		for i := range 5 {
			if err := snap(gp3); err != nil {
				t.Fatalf("gp3 pending snapshot %d: %v", i+1, err)
			}
		}
		wantCode(t, snap(gp3), "ConcurrentSnapshotLimitExceeded")
		release()
		idle(t, r)
		if err := snap(*cold.VolumeId); err != nil {
			t.Fatalf("after the pending snapshot completed: %v", err)
		}
	})
}

// TestHangShutdownAndForceStop: a hung instance stays shutting-down (or
// stopping) with its volume attached until released; StopInstances Force=true
// ends a hung stop, and stops a running instance with its volumes attached.
func TestHangShutdownAndForceStop(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	withVolume := func() (string, string) {
		t.Helper()
		in := runInstance(t, r, "us-east-1a", nil)
		vol := createVolume(t, r, "us-east-1a", 1, nil)
		idle(t, r)
		if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(in), Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
		idle(t, r)
		return in, vol
	}
	want := func(in, vol string, state ec2types.InstanceStateName, att ec2types.VolumeAttachmentState) {
		t.Helper()
		out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in}})
		if err != nil {
			t.Fatal(err)
		}
		if s := out.Reservations[0].Instances[0].State.Name; s != state {
			t.Fatalf("instance %s: %s, want %s", in, s, state)
		}
		v := describeVolume(t, r, vol)
		got := ec2types.VolumeAttachmentState("none")
		if len(v.Attachments) > 0 {
			got = v.Attachments[0].State
		}
		if got != att {
			t.Fatalf("volume %s: attachment %s, want %s", vol, got, att)
		}
	}

	// Terminate hangs in shutting-down; the admin path sets and releases the hang.
	in, vol := withVolume()
	post(t, r.Endpoint()+"/sim/hang-shutdown?instance="+in)
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{in}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r) // nothing is scheduled: the shutdown hangs
	want(in, vol, ec2types.InstanceStateNameShuttingDown, ec2types.VolumeAttachmentStateAttached)
	post(t, r.Endpoint()+"/sim/hang-shutdown?instance="+in+"&hang=false")
	idle(t, r)
	want(in, vol, ec2types.InstanceStateNameTerminated, "none")

	// A hung stop stays stopping until forced; the volume stays attached throughout.
	in, vol = withVolume()
	if err := r.HangShutdown(in, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{in}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	want(in, vol, ec2types.InstanceStateNameStopping, ec2types.VolumeAttachmentStateAttached)
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{in}, Force: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	want(in, vol, ec2types.InstanceStateNameStopped, ec2types.VolumeAttachmentStateAttached)

	// Force on a running instance: stopped, volume attached.
	in, vol = withVolume()
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{in}, Force: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	want(in, vol, ec2types.InstanceStateNameStopped, ec2types.VolumeAttachmentStateAttached)
}

func post(t testing.TB, url string) {
	t.Helper()
	resp, err := http.Post(url, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %s", url, resp.Status)
	}
}

// age moves every creation time and every remembered change of r back by d,
// as if the world were that much older: a consistency window can then pass
// without the test sleeping.
func age(r *Region, d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ts []*time.Time
	for _, v := range r.w.Volumes {
		ts = append(ts, &v.Created)
		for i := range v.lag {
			ts = append(ts, &v.lag[i].At)
		}
	}
	for _, a := range r.w.Addresses {
		ts = append(ts, &a.Created)
		for i := range a.lag {
			ts = append(ts, &a.lag[i].At)
		}
	}
	for _, in := range r.w.Instances {
		ts = append(ts, &in.LaunchTime)
	}
	for _, s := range r.w.Snapshots {
		ts = append(ts, &s.Start)
	}
	for _, t := range ts {
		*t = t.Add(-d)
	}
}

// TestConsistencyDelayInMutatingCallsAndAttachments: with a consistency
// delay, a just-created volume, instance or address is not found by the
// mutating calls that name it, and DescribeVolumes / DescribeAddresses show
// an attachment or association as it was before the call that changed it,
// while the change itself is made at once.
func TestConsistencyDelayInMutatingCallsAndAttachments(t *testing.T) {
	t.Parallel()
	const lag = time.Hour
	r := startRegion(t, Options{Faults: Faults{ConsistencyDelay: lag}})
	c := ec2Client(r)
	ctx := ctxT(t)
	inst := runInstance(t, r, "us-east-1a", nil)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	alloc, err := c.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	attach := &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}
	associate := &ec2.AssociateAddressInput{AllocationId: alloc.AllocationId, InstanceId: aws.String(inst)}

	// (a) Just created: not found by ID in mutating calls.
	_, err = c.AttachVolume(ctx, attach)
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)})
	wantCode(t, err, "InvalidVolume.NotFound")
	_, err = c.AssociateAddress(ctx, associate)
	wantCode(t, err, "InvalidAllocationID.NotFound")
	_, err = c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{inst}})
	wantCode(t, err, "InvalidInstanceID.NotFound")

	// (b) Settled resources; reads of attachments and associations lag their calls.
	age(r, 2*lag)
	attachment := func() (string, string) {
		t.Helper()
		v := describeVolume(t, r, vol)
		if len(v.Attachments) == 0 {
			return string(v.State), "none"
		}
		return string(v.State), string(v.Attachments[0].State)
	}
	association := func() string {
		t.Helper()
		out, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{*alloc.AllocationId}})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Addresses[0].InstanceId)
	}
	if _, err := c.AttachVolume(ctx, attach); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AssociateAddress(ctx, associate); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if s, a := attachment(); s != "available" || a != "none" {
		t.Fatalf("right after AttachVolume: %s/%s, want the previous available/none", s, a)
	}
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("attachment.instance-id"), Values: []string{inst}}}})
	if err != nil || len(out.Volumes) != 0 {
		t.Fatalf("attachment.instance-id filter right after AttachVolume: %v %v, want nothing", out, err)
	}
	if got := association(); got != "" {
		t.Fatalf("right after AssociateAddress: associated with %q, want the previous none", got)
	}
	_, err = c.AttachVolume(ctx, attach) // the write itself was immediate
	wantCode(t, err, "VolumeInUse")

	age(r, 2*lag)
	if s, a := attachment(); s != "in-use" || a != "attached" {
		t.Fatalf("after the delay: %s/%s, want in-use/attached", s, a)
	}
	if got := association(); got != inst {
		t.Fatalf("after the delay: associated with %q, want %s", got, inst)
	}
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{PublicIp: alloc.PublicIp}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if s, a := attachment(); s != "in-use" || a != "attached" {
		t.Fatalf("right after DetachVolume: %s/%s, want the previous in-use/attached", s, a)
	}
	if got := association(); got != inst {
		t.Fatalf("right after DisassociateAddress: associated with %q, want the previous %s", got, inst)
	}
	r.SetFaults(Faults{})
	if s, a := attachment(); s != "available" || a != "none" {
		t.Fatalf("without the delay: %s/%s, want available/none", s, a)
	}
	if got := association(); got != "" {
		t.Fatalf("without the delay: associated with %q, want none", got)
	}
}
