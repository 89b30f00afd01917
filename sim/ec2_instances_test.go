package sim

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

func instanceState(t *testing.T, r *Region, id string) ec2types.Instance {
	t.Helper()
	out, err := ec2Client(r).DescribeInstances(ctxT(t), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Reservations[0].Instances[0]
}

func TestInstanceLifecycleAndVolumes(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	started := r.Hold(InstanceStart, "") // pending lasts until the check below, however loaded the machine
	id := runInstance(t, r, "us-east-1b", map[string]string{"Name": "web"})
	in := instanceState(t, r, id)
	if in.State.Name != ec2types.InstanceStateNamePending || *in.Placement.AvailabilityZone != "us-east-1b" || *in.Tags[0].Value != "web" {
		t.Fatalf("new instance: state %s, %+v", in.State.Name, in)
	}
	if in.MetadataOptions.InstanceMetadataTags != ec2types.InstanceMetadataTagsStateEnabled {
		t.Fatalf("metadata options: %+v", in.MetadataOptions)
	}
	started()
	idle(t, r)
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameRunning {
		t.Fatalf("want running, got %s", s)
	}
	st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.InstanceStatuses) != 1 {
		t.Fatalf("statuses: %+v", st.InstanceStatuses)
	}
	simtest.Eventually(t, waitBound, "status ok", func() (bool, string) {
		st, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
		if err != nil {
			return false, err.Error()
		}
		s := st.InstanceStatuses[0]
		return s.InstanceStatus.Status == ec2types.SummaryStatusOk && s.SystemStatus.Status == ec2types.SummaryStatusOk,
			fmt.Sprintf("instance %s, system %s", s.InstanceStatus.Status, s.SystemStatus.Status)
	})
	vol := createVolume(t, r, "us-east-1b", 1, nil)
	idle(t, r)
	if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(id), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameStopped {
		t.Fatalf("want stopped, got %s", s)
	}
	st, err = c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}})
	if err != nil || len(st.InstanceStatuses) != 0 {
		t.Fatalf("stopped instance listed without IncludeAllInstances: %v %v", st, err)
	}
	st, err = c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
	if err != nil || len(st.InstanceStatuses) != 1 || st.InstanceStatuses[0].InstanceState.Name != ec2types.InstanceStateNameStopped {
		t.Fatalf("IncludeAllInstances: %v %v", st, err)
	}
	if v := describeVolume(t, r, vol); v.State != ec2types.VolumeStateInUse {
		t.Fatalf("volume of a stopped instance should stay attached, is %s", v.State)
	}
	if _, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	release := r.Hold(InstanceTerminate, id) // shutting-down stays observable, however fast the test runs
	if _, err := c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameShuttingDown {
		t.Fatalf("want shutting-down, got %s", s)
	}
	release()
	idle(t, r)
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameTerminated {
		t.Fatalf("want terminated, got %s", s)
	}
	if v := describeVolume(t, r, vol); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("data volume after terminate: %s", v.State)
	}
	_, err = c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}})
	wantCode(t, err, "IncorrectInstanceState")
	_, err = c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"i-0123456789abcdef0"}})
	wantCode(t, err, "InvalidInstanceID.NotFound")
	_, err = c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{"bogus"}})
	wantCode(t, err, "InvalidInstanceID.Malformed")
	out, err := c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"running", "terminated"}},
		{Name: aws.String("tag:Name"), Values: []string{"web"}}}})
	if err != nil || len(out.Reservations) != 1 {
		t.Fatalf("filtered describe: %v %v", out, err)
	}
}

func TestRunInstancesSubnetAndZones(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	out, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(2), MaxCount: aws.Int32(2), SubnetId: aws.String("subnet-c")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Instances) != 2 || *out.Instances[0].Placement.AvailabilityZone != "us-east-1c" {
		t.Fatalf("run: %+v", out.Instances)
	}
	_, err = c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: aws.String("subnet-z")})
	wantCode(t, err, "InvalidSubnetID.NotFound")
	azs, err := c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(azs.AvailabilityZones) != 3 || *azs.AvailabilityZones[1].ZoneId != "use1-az2" || *azs.AvailabilityZones[1].ZoneName != "us-east-1b" {
		t.Fatalf("zones: %+v", azs.AvailabilityZones)
	}
}

func TestUnknownActionAndCaller(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	resp, err := http.PostForm(r.Endpoint(), url.Values{"Action": {"RebootInstances"}, "Version": {"2016-11-15"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "<Code>InvalidAction</Code>") {
		t.Fatalf("unknown action: %d %s", resp.StatusCode, body)
	}
	resp, err = http.PostForm(r.Endpoint(), url.Values{"Action": {"Nope"}, "Version": {"2011-01-01"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "<ErrorResponse") {
		t.Fatalf("unknown auto scaling action: %d %s", resp.StatusCode, body)
	}
	r.ResetCalls()
	if _, err := ec2Client(r).DescribeVolumes(ctxT(t), &ec2.DescribeVolumesInput{}); err != nil {
		t.Fatal(err)
	}
	calls := r.Calls()
	if len(calls) != 1 || calls[0].Action != "DescribeVolumes" || calls[0].Caller != "AKIDTEST" || calls[0].Mutating || calls[0].Code != "" {
		t.Fatalf("calls: %+v", calls)
	}
}

func TestSetInstanceStatusImpairsStatusChecks(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := runInstance(t, r, "us-east-1a", nil)
	checks := func() (system, instance ec2types.InstanceStatusSummary) {
		t.Helper()
		out, err := c.DescribeInstanceStatus(ctx, &ec2.DescribeInstanceStatusInput{InstanceIds: []string{id}, IncludeAllInstances: aws.Bool(true)})
		if err != nil || len(out.InstanceStatuses) != 1 {
			t.Fatalf("DescribeInstanceStatus: %v %v", out, err)
		}
		return *out.InstanceStatuses[0].SystemStatus, *out.InstanceStatuses[0].InstanceStatus
	}
	simtest.Eventually(t, waitBound, "status checks ok", func() (bool, string) {
		s, i := checks()
		return s.Status == ec2types.SummaryStatusOk && i.Status == ec2types.SummaryStatusOk, fmt.Sprintf("system %s, instance %s", s.Status, i.Status)
	})

	if err := r.SetInstanceStatus(id, "impaired", ""); err != nil {
		t.Fatal(err)
	}
	s, i := checks()
	if s.Status != ec2types.SummaryStatusImpaired || i.Status != ec2types.SummaryStatusOk {
		t.Fatalf("system %s instance %s, want impaired/ok", s.Status, i.Status)
	}
	if d := s.Details; len(d) != 1 || d[0].Status != ec2types.StatusTypeFailed || d[0].ImpairedSince == nil {
		t.Fatalf("impaired details: %+v", d)
	}
	if err := r.SetInstanceStatus(id, "", "insufficient-data"); err != nil {
		t.Fatal(err)
	}
	if s, i := checks(); s.Status != ec2types.SummaryStatusOk || i.Status != ec2types.SummaryStatusInsufficientData {
		t.Fatalf("system %s instance %s, want ok/insufficient-data", s.Status, i.Status)
	}
	if err := r.SetInstanceStatus(id, "initializing", "impaired"); err != nil {
		t.Fatal(err)
	}
	if s, i := checks(); s.Status != ec2types.SummaryStatusInitializing || i.Status != ec2types.SummaryStatusImpaired {
		t.Fatalf("system %s instance %s, want initializing/impaired", s.Status, i.Status)
	}
	// A stopped instance reports not-applicable whatever was forced.
	if _, err := c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if s, i := checks(); s.Status != ec2types.SummaryStatusNotApplicable || i.Status != ec2types.SummaryStatusNotApplicable {
		t.Fatalf("stopped: system %s instance %s", s.Status, i.Status)
	}
	if err := r.SetInstanceStatus(id, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.SetInstanceStatus(id, "broken", ""); err == nil {
		t.Fatal("a bad status was accepted")
	}
	if err := r.SetInstanceStatus("i-0123456789abcdef0", "ok", "ok"); err == nil {
		t.Fatal("an unknown instance was accepted")
	}

	// Through the admin path, as handover-sim status-checks does.
	if _, err := c.StartInstances(ctx, &ec2.StartInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	resp, err := http.Post(r.Endpoint()+"/sim/status-checks?instance="+id+"&system=ok&instance-status=impaired", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("admin: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if s, i := checks(); s.Status != ec2types.SummaryStatusOk || i.Status != ec2types.SummaryStatusImpaired {
		t.Fatalf("after admin: system %s instance %s", s.Status, i.Status)
	}
}
