package sim

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

func TestVolumeLifecycle(t *testing.T) {
	t.Parallel()
	// Each intermediate state (creating, attaching, detaching) is held until the test has looked at it.
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	release := r.Hold(VolumeCreate, "")
	id := createVolume(t, r, "us-east-1a", 1, map[string]string{"handover:group": "web"})
	v := describeVolume(t, r, id)
	if v.State != ec2types.VolumeStateCreating || *v.Size != 1 || *v.AvailabilityZone != "us-east-1a" || *v.Iops != 3000 || *v.Throughput != 125 {
		t.Fatalf("new volume: %+v", v)
	}
	if len(v.Tags) != 1 || *v.Tags[0].Key != "handover:group" {
		t.Fatalf("tags: %+v", v.Tags)
	}
	release()
	idle(t, r)
	if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("want available, got %s", v.State)
	}
	iid := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	release = r.Hold(VolumeAttach, id)
	att, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(iid), Device: aws.String("/dev/sdf")})
	if err != nil {
		t.Fatal(err)
	}
	if att.State != ec2types.VolumeAttachmentStateAttaching {
		t.Fatalf("attach state %s", att.State)
	}
	v = describeVolume(t, r, id)
	if v.State != ec2types.VolumeStateInUse || v.Attachments[0].State != ec2types.VolumeAttachmentStateAttaching {
		t.Fatalf("attaching: %+v", v)
	}
	release()
	idle(t, r)
	v = describeVolume(t, r, id)
	if v.Attachments[0].State != ec2types.VolumeAttachmentStateAttached || *v.Attachments[0].InstanceId != iid || *v.Attachments[0].Device != "/dev/sdf" {
		t.Fatalf("attached: %+v", v.Attachments)
	}
	_, err = c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
	wantCode(t, err, "VolumeInUse")
	release = r.Hold(VolumeDetach, id)
	det, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(iid)})
	if err != nil {
		t.Fatal(err)
	}
	if det.State != ec2types.VolumeAttachmentStateDetaching {
		t.Fatalf("detach state %s", det.State)
	}
	v = describeVolume(t, r, id)
	if v.State != ec2types.VolumeStateInUse || v.Attachments[0].State != ec2types.VolumeAttachmentStateDetaching {
		t.Fatalf("detaching: %+v", v)
	}
	release()
	idle(t, r)
	if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateAvailable || len(v.Attachments) != 0 {
		t.Fatalf("detached: %+v", v)
	}
	if _, err := c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	wantCode(t, err, "InvalidVolume.NotFound")
}

func TestAttachVolumeRules(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	volA := createVolume(t, r, "us-east-1a", 1, nil)
	volA2 := createVolume(t, r, "us-east-1a", 1, nil)
	volB := createVolume(t, r, "us-east-1b", 1, nil)
	i1 := runInstance(t, r, "us-east-1a", nil)
	i2 := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	attach := func(vol, inst, dev string) error {
		_, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String(dev)})
		return err
	}
	wantCode(t, attach(volB, i1, "/dev/sdf"), "InvalidVolume.ZoneMismatch")
	if err := attach(volA, i1, "/dev/sdf"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, attach(volA, i2, "/dev/sdf"), "VolumeInUse")
	wantCode(t, attach(volA2, i1, "/dev/sdf"), "InvalidParameterValue")
	wantCode(t, attach("vol-0123456789abcdef0", i1, "/dev/sdg"), "InvalidVolume.NotFound")
	wantCode(t, attach("volume-1", i1, "/dev/sdg"), "InvalidVolumeID.Malformed")
	wantCode(t, attach(volA2, "i-0123456789abcdef0", "/dev/sdg"), "InvalidInstanceID.NotFound")
	_, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volA2)})
	wantCode(t, err, "IncorrectState")
	_, err = c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volA), InstanceId: aws.String(i2)})
	wantCode(t, err, "InvalidAttachment.NotFound")

	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{i2}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, attach(volA2, i2, "/dev/sdg"), "IncorrectState")

	// A volume still creating cannot be attached.
	slow := startRegion(t, Options{Speed: 1, Delays: Delays{CreateVolume: time.Hour, InstanceStart: time.Millisecond}})
	sc := ec2Client(slow)
	creating := createVolume(t, slow, "us-east-1a", 1, nil)
	inst := runInstance(t, slow, "us-east-1a", nil)
	simtest.Eventually(t, waitBound, "instance running", func() (bool, string) {
		out, err := sc.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{inst}})
		if err != nil {
			return false, err.Error()
		}
		s := out.Reservations[0].Instances[0].State.Name
		return s == ec2types.InstanceStateNameRunning, "state " + string(s)
	})
	_, err = sc.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(creating), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")})
	wantCode(t, err, "IncorrectState")
}

func TestCreateVolumeClientToken(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(2), ClientToken: aws.String("tok-1"),
		VolumeType: ec2types.VolumeTypeGp3, Iops: aws.Int32(4000), Throughput: aws.Int32(250), Encrypted: aws.Bool(true), KmsKeyId: aws.String("alias/mine")}
	a, err := c.CreateVolume(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateVolume(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	if *a.VolumeId != *b.VolumeId {
		t.Fatalf("same token made two volumes: %s %s", *a.VolumeId, *b.VolumeId)
	}
	if *a.Iops != 4000 || *a.Throughput != 250 || !*a.Encrypted || *a.KmsKeyId != "alias/mine" {
		t.Fatalf("volume params: %+v", a)
	}
	in.Size = aws.Int32(3)
	_, err = c.CreateVolume(ctx, in)
	wantCode(t, err, "IdempotentParameterMismatch")
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil || len(out.Volumes) != 1 {
		t.Fatalf("want one volume, got %v %v", out, err)
	}
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), VolumeType: ec2types.VolumeTypeGp2, Size: aws.Int32(1), Iops: aws.Int32(100)})
	wantCode(t, err, "InvalidParameterCombination")
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a")})
	wantCode(t, err, "MissingParameter")
	_, err = c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), KmsKeyId: aws.String("k")})
	wantCode(t, err, "InvalidParameterDependency")
}

func TestVolumeFiltersAndPagination(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	for i := range 7 {
		az := "us-east-1a"
		if i%2 == 1 {
			az = "us-east-1b"
		}
		createVolume(t, r, az, 1, map[string]string{"handover:group": "web", "handover:volume": []string{"data", "logs"}[i%2]})
	}
	createVolume(t, r, "us-east-1c", 1, map[string]string{"handover:group": "db"})
	idle(t, r)
	count := func(f ...ec2types.Filter) int {
		t.Helper()
		n := 0
		p := ec2.NewDescribeVolumesPaginator(c, &ec2.DescribeVolumesInput{Filters: f, MaxResults: aws.Int32(5)})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Volumes) > 5 {
				t.Fatalf("page of %d > MaxResults", len(out.Volumes))
			}
			n += len(out.Volumes)
		}
		return n
	}
	flt := func(name string, values ...string) ec2types.Filter {
		return ec2types.Filter{Name: aws.String(name), Values: values}
	}
	cases := []struct {
		name string
		f    []ec2types.Filter
		want int
	}{
		{"all", nil, 8},
		{"tag", []ec2types.Filter{flt("tag:handover:group", "web")}, 7},
		{"tag wildcard", []ec2types.Filter{flt("tag:handover:group", "w*")}, 7},
		{"values OR", []ec2types.Filter{flt("tag:handover:group", "web", "db")}, 8},
		{"filters AND", []ec2types.Filter{flt("tag:handover:group", "web"), flt("availability-zone", "us-east-1a")}, 4},
		{"tag-key", []ec2types.Filter{flt("tag-key", "handover:volume")}, 7},
		{"tag-value", []ec2types.Filter{flt("tag-value", "logs")}, 3},
		{"status", []ec2types.Filter{flt("status", "available")}, 8},
		{"volume-type", []ec2types.Filter{flt("volume-type", "gp3")}, 8},
		{"attachment", []ec2types.Filter{flt("attachment.instance-id", "i-*")}, 0},
	}
	for _, tc := range cases {
		if got := count(tc.f...); got != tc.want {
			t.Errorf("%s: got %d volumes, want %d", tc.name, got, tc.want)
		}
	}
	_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(3)})
	wantCode(t, err, "InvalidParameterValue")
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{flt("no-such-filter", "x")}})
	wantCode(t, err, "InvalidParameterValue")
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{NextToken: aws.String("garbage")})
	wantCode(t, err, "InvalidNextToken")
}

func TestModifyVolumeGrowsImage(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	release := r.Hold(VolumeModify, id) // the second call must find the modification in progress
	out, err := c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(3)})
	if err != nil {
		t.Fatal(err)
	}
	if *out.VolumeModification.TargetSize != 3 || out.VolumeModification.ModificationState != ec2types.VolumeModificationStateModifying {
		t.Fatalf("modification: %+v", out.VolumeModification)
	}
	st, err := os.Stat(r.volumeImage(id))
	if err != nil || st.Size() != 3*gib {
		t.Fatalf("image size %v %v", st, err)
	}
	_, err = c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(2)})
	wantCode(t, err, "IncorrectModificationState")
	release()
	idle(t, r)
	_, err = c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(2)})
	wantCode(t, err, "InvalidParameterValue")
}

func TestConsistencyDelayHidesNewVolumes(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Faults: Faults{ConsistencyDelay: 300 * time.Millisecond}})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := createVolume(t, r, "us-east-1a", 1, nil)
	_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	wantCode(t, err, "InvalidVolume.NotFound")
	out, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil || len(out.Volumes) != 0 {
		t.Fatalf("new volume visible too early: %v %v", out, err)
	}
	simtest.Eventually(t, waitBound, "volume visible", func() (bool, string) {
		_, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		return err == nil, fmt.Sprint(err)
	})
}

func TestModifyVolumeOmitsThroughputOutsideGp3(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	out, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(10), VolumeType: ec2types.VolumeTypeGp2})
	if err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	mod, err := c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: out.VolumeId, Size: aws.Int32(20)})
	if err != nil {
		t.Fatal(err)
	}
	m := mod.VolumeModification
	if m.TargetThroughput != nil || m.OriginalThroughput != nil {
		t.Errorf("gp2 modification reports throughput: target %v original %v", m.TargetThroughput, m.OriginalThroughput)
	}
	if m.TargetIops == nil || *m.TargetIops != 100 || m.OriginalIops == nil || *m.OriginalIops != 100 {
		t.Errorf("gp2 IOPS: target %v original %v, want the baseline 100", m.TargetIops, m.OriginalIops)
	}
	idle(t, r)
	// gp2 -> gp3 without IOPS or throughput takes gp3's defaults, which then appear.
	mod, err = c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: out.VolumeId, VolumeType: ec2types.VolumeTypeGp3})
	if err != nil {
		t.Fatal(err)
	}
	m = mod.VolumeModification
	if m.TargetThroughput == nil || *m.TargetThroughput != 125 || *m.TargetIops != 3000 || m.OriginalThroughput != nil {
		t.Errorf("gp2 -> gp3: %+v", m)
	}
	idle(t, r)
	// st1 has neither IOPS nor throughput to report.
	mod, err = c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: out.VolumeId, VolumeType: ec2types.VolumeTypeSt1, Size: aws.Int32(125)})
	if err != nil {
		t.Fatal(err)
	}
	if m = mod.VolumeModification; m.TargetThroughput != nil || m.TargetIops != nil || *m.OriginalThroughput != 125 {
		t.Errorf("gp3 -> st1: %+v", m)
	}
}

func TestModifyVolumeChecksCreateVolumeRules(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := createVolume(t, r, "us-east-1a", 10, nil) // gp3
	idle(t, r)
	for _, tc := range []struct {
		name string
		in   ec2.ModifyVolumeInput
		code string
	}{
		{"gp3 IOPS below 3000", ec2.ModifyVolumeInput{Iops: aws.Int32(2999)}, "InvalidParameterValue"},
		{"gp3 IOPS above 16000", ec2.ModifyVolumeInput{Iops: aws.Int32(16001)}, "InvalidParameterValue"},
		{"gp3 throughput below 125", ec2.ModifyVolumeInput{Throughput: aws.Int32(124)}, "InvalidParameterValue"},
		{"gp3 throughput above 1000", ec2.ModifyVolumeInput{Throughput: aws.Int32(1001)}, "InvalidParameterValue"},
		{"throughput on gp2", ec2.ModifyVolumeInput{VolumeType: ec2types.VolumeTypeGp2, Throughput: aws.Int32(200)}, "InvalidParameterCombination"},
		{"IOPS on gp2", ec2.ModifyVolumeInput{VolumeType: ec2types.VolumeTypeGp2, Iops: aws.Int32(3000)}, "InvalidParameterCombination"},
		{"size out of range for st1", ec2.ModifyVolumeInput{VolumeType: ec2types.VolumeTypeSt1}, "InvalidParameterValue"},
	} {
		in := tc.in
		in.VolumeId = aws.String(id)
		_, err := c.ModifyVolume(ctx, &in)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		wantCode(t, err, tc.code)
	}
	// In range: accepted; a later IOPS-only change keeps the throughput.
	if _, err := c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Iops: aws.Int32(16000), Throughput: aws.Int32(1000)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	mod, err := c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Iops: aws.Int32(4000)})
	if err != nil {
		t.Fatal(err)
	}
	if m := mod.VolumeModification; *m.TargetIops != 4000 || *m.TargetThroughput != 1000 || *m.OriginalIops != 16000 {
		t.Fatalf("IOPS-only change: %+v", m)
	}
	idle(t, r)
	if v := describeVolume(t, r, id); *v.Iops != 4000 || *v.Throughput != 1000 {
		t.Fatalf("volume after the change: iops %d throughput %d", *v.Iops, *v.Throughput)
	}
}

func TestDescribeVolumesModifications(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := createVolume(t, r, "us-east-1a", 1, nil)
	other := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	_, err := c.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{VolumeIds: []string{id}})
	wantCode(t, err, "InvalidVolumeModification.NotFound")
	_, err = c.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{VolumeIds: []string{"vol-0123456789abcdef0"}})
	wantCode(t, err, "InvalidVolume.NotFound")

	// Both halves are held, so the test sees each state for as long as it looks.
	releaseModifying, releaseOptimizing := r.Hold(VolumeModify, id), r.Hold(VolumeOptimize, id)
	if _, err := c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	describe := func(in *ec2.DescribeVolumesModificationsInput) []ec2types.VolumeModification {
		t.Helper()
		out, err := c.DescribeVolumesModifications(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return out.VolumesModifications
	}
	ms := describe(&ec2.DescribeVolumesModificationsInput{})
	if len(ms) != 1 || *ms[0].VolumeId != id || ms[0].ModificationState != ec2types.VolumeModificationStateModifying ||
		*ms[0].TargetSize != 2 || *ms[0].OriginalSize != 1 || ms[0].StartTime == nil || ms[0].EndTime != nil || *ms[0].Progress > 50 {
		t.Fatalf("modifying: %+v", ms)
	}
	if _, err := r.WaitHeld(ctx, VolumeModify, id); err != nil {
		t.Fatal(err)
	}
	if ms := describe(&ec2.DescribeVolumesModificationsInput{VolumeIds: []string{id}}); ms[0].ModificationState != ec2types.VolumeModificationStateModifying || *ms[0].Progress >= 50 {
		t.Fatalf("modifying past its half: %s %d%%, want modifying below 50%%", ms[0].ModificationState, *ms[0].Progress)
	}
	releaseModifying()
	if ms := describe(&ec2.DescribeVolumesModificationsInput{VolumeIds: []string{id}}); ms[0].ModificationState != ec2types.VolumeModificationStateOptimizing || *ms[0].Progress < 50 {
		t.Fatalf("optimizing: %s %d%%, want optimizing from 50%%", ms[0].ModificationState, *ms[0].Progress)
	}
	_, err = c.ModifyVolume(ctx, &ec2.ModifyVolumeInput{VolumeId: aws.String(id), Size: aws.Int32(3)})
	wantCode(t, err, "IncorrectModificationState")
	releaseOptimizing()
	idle(t, r)
	ms = describe(&ec2.DescribeVolumesModificationsInput{Filters: []ec2types.Filter{{Name: aws.String("modification-state"), Values: []string{"completed"}}}})
	if len(ms) != 1 || *ms[0].Progress != 100 || ms[0].EndTime == nil {
		t.Fatalf("completed: %+v", ms)
	}
	if ms := describe(&ec2.DescribeVolumesModificationsInput{Filters: []ec2types.Filter{{Name: aws.String("volume-id"), Values: []string{other}}}}); len(ms) != 0 {
		t.Fatalf("unmodified volume listed: %+v", ms)
	}
	_, err = c.DescribeVolumesModifications(ctx, &ec2.DescribeVolumesModificationsInput{Filters: []ec2types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue")
}

// TestKMSKeyUnusable: CreateVolume with a KMS key that is not Enabled is accepted and the volume ends in
// the error state (EBS checks the key asynchronously); a restore that inherits the key too; the same key
// Enabled again makes available volumes.
func TestKMSKeyUnusable(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	if err := r.SetKMSKeyState("alias/gone", "Sideways"); err == nil {
		t.Fatal("an unknown key state was accepted")
	}
	create := func(in *ec2.CreateVolumeInput) string {
		t.Helper()
		out, err := c.CreateVolume(ctx, in)
		if err != nil {
			t.Fatalf("CreateVolume: %v", err)
		}
		if err := r.WaitIdle(ctx); err != nil {
			t.Fatal(err)
		}
		d, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{aws.ToString(out.VolumeId)}})
		if err != nil || len(d.Volumes) != 1 {
			t.Fatalf("DescribeVolumes: %v", err)
		}
		return string(d.Volumes[0].State)
	}
	az := aws.String("us-east-1a")
	plain := create(&ec2.CreateVolumeInput{AvailabilityZone: az, Size: aws.Int32(1), Encrypted: aws.Bool(true), KmsKeyId: aws.String("alias/db")})
	if plain != "available" {
		t.Fatalf("a volume with a usable key is %s", plain)
	}
	if err := r.SetKMSKeyState("alias/gone", "PendingDeletion"); err != nil {
		t.Fatal(err)
	}
	if s := create(&ec2.CreateVolumeInput{AvailabilityZone: az, Size: aws.Int32(1), Encrypted: aws.Bool(true), KmsKeyId: aws.String("alias/gone")}); s != "error" {
		t.Errorf("a volume with a key pending deletion is %s, want error", s)
	}
	if s := create(&ec2.CreateVolumeInput{AvailabilityZone: az, Size: aws.Int32(1)}); s != "available" {
		t.Errorf("an unencrypted volume is %s", s)
	}
	// A snapshot of a volume made while the key was usable, restored once it is not.
	if err := r.SetKMSKeyState("alias/db", "Enabled"); err != nil {
		t.Fatal(err)
	}
	out, err := c.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: az, Size: aws.Int32(1), Encrypted: aws.Bool(true), KmsKeyId: aws.String("alias/db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	snap, err := c.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: out.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitIdle(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.SetKMSKeyState("alias/db", "Disabled"); err != nil {
		t.Fatal(err)
	}
	if s := create(&ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1b"), SnapshotId: snap.SnapshotId}); s != "error" {
		t.Errorf("a restore inheriting a disabled key is %s, want error", s)
	}
}
