package sim

import (
	"context"
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

// makeGroup creates a launch template and a one-instance group over two
// zones with the given hooks.
func makeGroup(t *testing.T, r *Region, minHealthy *int32, hooks ...asgtypes.LifecycleHookSpecification) {
	t.Helper()
	ctx := ctxT(t)
	lt, err := ec2Client(r).CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("web"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-1"), InstanceType: ec2types.InstanceTypeT3Small,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateEnabled},
			TagSpecifications: []ec2types.LaunchTemplateTagSpecificationRequest{{ResourceType: ec2types.ResourceTypeInstance,
				Tags: toTags(map[string]string{"from": "template"})}}}})
	if err != nil {
		t.Fatal(err)
	}
	in := &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("web"), MinSize: aws.Int32(1), MaxSize: aws.Int32(2), DesiredCapacity: aws.Int32(1),
		LaunchTemplate:    &asgtypes.LaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId},
		VPCZoneIdentifier: aws.String("subnet-a,subnet-b"),
		Tags: []asgtypes.Tag{{Key: aws.String("handover:group"), Value: aws.String("web"), PropagateAtLaunch: aws.Bool(true)},
			{Key: aws.String("not-propagated"), Value: aws.String("x"), PropagateAtLaunch: aws.Bool(false)}},
		LifecycleHookSpecificationList: hooks,
	}
	if minHealthy != nil {
		in.InstanceMaintenancePolicy = &asgtypes.InstanceMaintenancePolicy{MinHealthyPercentage: minHealthy, MaxHealthyPercentage: aws.Int32(200)}
	}
	if _, err := asgClient(r).CreateAutoScalingGroup(ctx, in); err != nil {
		t.Fatal(err)
	}
}

func groupInstances(t *testing.T, r *Region) []asgtypes.Instance {
	t.Helper()
	out, err := asgClient(r).DescribeAutoScalingGroups(ctxT(t), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.AutoScalingGroups[0].Instances
}

func lifecycleOf(t *testing.T, r *Region, id string) string {
	t.Helper()
	for _, in := range groupInstances(t, r) {
		if *in.InstanceId == id {
			return string(in.LifecycleState)
		}
	}
	return "gone"
}

var (
	launchHook = asgtypes.LifecycleHookSpecification{LifecycleHookName: aws.String("up"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"), HeartbeatTimeout: aws.Int32(600), DefaultResult: aws.String("ABANDON")}
	termHook = asgtypes.LifecycleHookSpecification{LifecycleHookName: aws.String("down"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(600), DefaultResult: aws.String("CONTINUE")}
)

func TestGroupLifecycleHooks(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Speed: 100})
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, nil, launchHook, termHook)
	ins := groupInstances(t, r)
	if len(ins) != 1 || ins[0].LifecycleState != "Pending:Wait" || *ins[0].AvailabilityZone != "us-east-1a" {
		t.Fatalf("first instance: %+v", ins)
	}
	id := *ins[0].InstanceId
	idle(t, r)
	if got := lifecycleOf(t, r, id); got != "Pending:Wait" {
		t.Fatalf("hook must hold the instance, got %s", got)
	}
	in := instanceState(t, r, id)
	tags := map[string]string{}
	for _, tg := range in.Tags {
		tags[*tg.Key] = *tg.Value
	}
	if tags["handover:group"] != "web" || tags["aws:autoscaling:groupName"] != "web" || tags["from"] != "template" || tags["not-propagated"] != "" {
		t.Fatalf("instance tags: %v", tags)
	}
	m := imdsClient(t, r, id)
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "InService" {
		t.Fatalf("target state while Pending:Wait: %q", got)
	}
	_, err := a.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("down"), InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE")})
	wantCode(t, err, "ValidationError")
	if _, err := a.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("up"), InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if got := lifecycleOf(t, r, id); got != "InService" {
		t.Fatalf("after complete: %s", got)
	}
	// Termination: the instance waits in Terminating:Wait and its IMDS says Terminated.
	if _, err := a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(id),
		ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if got := lifecycleOf(t, r, id); got != "Terminating:Wait" {
		t.Fatalf("terminating: %s", got)
	}
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "Terminated" {
		t.Fatalf("target state while Terminating:Wait: %q", got)
	}
	var replacement string
	for _, in := range groupInstances(t, r) {
		if *in.InstanceId != id {
			replacement = *in.InstanceId
			if *in.AvailabilityZone != "us-east-1b" {
				t.Errorf("replacement should balance into us-east-1b, is in %s", *in.AvailabilityZone)
			}
		}
	}
	if replacement == "" {
		t.Fatal("no replacement launched")
	}
	if _, err := a.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("down"), InstanceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("down"), InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if got := lifecycleOf(t, r, id); got != "gone" {
		t.Fatalf("old instance still in group: %s", got)
	}
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameTerminated {
		t.Fatalf("old instance %s", s)
	}
	hooks, err := a.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String("web")})
	if err != nil || len(hooks.LifecycleHooks) != 2 || *hooks.LifecycleHooks[1].HeartbeatTimeout != 600 {
		t.Fatalf("hooks: %+v %v", hooks, err)
	}
	ai, err := a.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{replacement}})
	if err != nil || len(ai.AutoScalingInstances) != 1 || *ai.AutoScalingInstances[0].LifecycleState != "Pending:Wait" {
		t.Fatalf("autoscaling instances: %+v %v", ai, err)
	}
}

func TestLifecycleHookTimeoutAndHeartbeat(t *testing.T) {
	t.Parallel()
	// Speed 100: the 100 s heartbeat timeout is 1 s, long next to the few calls between the heartbeat and
	// the check that it restarted the timeout.
	r := startRegion(t, Options{Speed: 100})
	a := asgClient(r)
	ctx := ctxT(t)
	short := launchHook
	short.HeartbeatTimeout = aws.Int32(100)
	release := r.Hold(HookTimeout, "")
	makeGroup(t, r, nil, short)
	id := *groupInstances(t, r)[0].InstanceId
	// The timeout is due and held: the instance waits in Pending:Wait.
	if _, err := r.WaitHeld(ctx, HookTimeout, id); err != nil {
		t.Fatal(err)
	}
	if got := lifecycleOf(t, r, id); got != "Pending:Wait" {
		t.Fatalf("held timeout: lifecycle %s, want Pending:Wait", got)
	}
	// A heartbeat restarts the timeout: the one that was due is gone.
	if _, err := a.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("up"), InstanceId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	now, cancel := context.WithCancel(ctx)
	cancel() // WaitHeld with an ended context only reports what is held now
	if _, err := r.WaitHeld(now, HookTimeout, id); err == nil {
		t.Fatal("after the heartbeat the old timeout is still due")
	}
	if got := lifecycleOf(t, r, id); got != "Pending:Wait" {
		t.Fatalf("the heartbeat should keep the instance waiting, got %s", got)
	}
	// Then, without heartbeats, the restarted timeout applies ABANDON: terminated and replaced.
	release()
	simtest.Eventually(t, waitBound, "abandon", func() (bool, string) {
		got := lifecycleOf(t, r, id)
		return got == "gone", "lifecycle " + got
	})
	simtest.Eventually(t, waitBound, "replacement", func() (bool, string) {
		ins := groupInstances(t, r)
		return len(ins) == 1, fmt.Sprintf("group instances %+v", ins)
	})
	idle(t, r)
	if s := instanceState(t, r, id).State.Name; s != ec2types.InstanceStateNameTerminated {
		t.Fatalf("abandoned instance %s", s)
	}
}

func TestGroupReplacesKilledAndUnhealthyInstances(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, aws.Int32(100), termHook)
	out, err := a.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
	if err != nil {
		t.Fatal(err)
	}
	g := out.AutoScalingGroups[0]
	if g.InstanceMaintenancePolicy == nil || *g.InstanceMaintenancePolicy.MinHealthyPercentage != 100 || *g.VPCZoneIdentifier != "subnet-a,subnet-b" || len(g.AvailabilityZones) != 2 {
		t.Fatalf("group: %+v", g)
	}
	idle(t, r)
	id := *groupInstances(t, r)[0].InstanceId
	if got := lifecycleOf(t, r, id); got != "InService" {
		t.Fatalf("without launch hook: %s", got)
	}
	// Launch before terminate: the unhealthy instance stays until the new one is InService (held
	// pending here, so that the two looks below see the same state).
	releaseStart := r.Hold(InstanceStart, "")
	if _, err := a.SetInstanceHealth(ctx, &autoscaling.SetInstanceHealthInput{InstanceId: aws.String(id), HealthStatus: aws.String("Unhealthy")}); err != nil {
		t.Fatal(err)
	}
	// One read: the old instance may move on to Terminating as soon as the new one is in service.
	ins := groupInstances(t, r)
	oldState := ""
	for _, in := range ins {
		if *in.InstanceId == id {
			oldState = string(in.LifecycleState)
		}
	}
	if len(ins) != 2 || oldState != "InService" {
		t.Fatalf("launch before terminate: old instance %s, %d instances: %+v", oldState, len(ins), ins)
	}
	releaseStart()
	simtest.Eventually(t, waitBound, "old instance terminating", func() (bool, string) {
		got := lifecycleOf(t, r, id)
		return got == "Terminating:Wait", "lifecycle " + got
	})
	if _, err := a.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String("down"), InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	ins = groupInstances(t, r)
	if len(ins) != 1 || *ins[0].InstanceId == id {
		t.Fatalf("after replacement: %+v", ins)
	}
	// Killed: no hook, replaced.
	killed := *ins[0].InstanceId
	if err := r.KillInstance(killed); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	ins = groupInstances(t, r)
	if len(ins) != 1 || *ins[0].InstanceId == killed || ins[0].LifecycleState != "InService" {
		t.Fatalf("after kill: %+v", ins)
	}
	// Terminated through EC2: replaced too.
	if _, err := ec2Client(r).TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{*ins[0].InstanceId}}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if got := groupInstances(t, r); len(got) != 1 || *got[0].InstanceId == *ins[0].InstanceId {
		t.Fatalf("after EC2 terminate: %+v", got)
	}
	_, err = a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(*groupInstances(t, r)[0].InstanceId),
		ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantCode(t, err, "ValidationError")
	_, err = a.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("web")})
	wantCode(t, err, "ResourceInUse")
	if _, err := a.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), ForceDelete: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	out, err = a.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{})
	if err != nil || len(out.AutoScalingGroups) != 0 {
		t.Fatalf("after force delete: %+v %v", out, err)
	}
}

func TestGroupValidation(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, nil)
	_, err := a.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"),
		MinSize: aws.Int32(1), MaxSize: aws.Int32(1), LaunchTemplate: &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web")},
		AvailabilityZones: []string{"us-east-1a"}})
	wantCode(t, err, "AlreadyExists")
	_, err = a.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), DesiredCapacity: aws.Int32(5)})
	wantCode(t, err, "ValidationError")
	_, err = a.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("nope"), DesiredCapacity: aws.Int32(1)})
	wantCode(t, err, "ValidationError")
	_, err = a.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("web"), LifecycleHookName: aws.String("h"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"), HeartbeatTimeout: aws.Int32(5)})
	wantCode(t, err, "ValidationError")
	if _, err := a.PutLifecycleHook(ctx, &autoscaling.PutLifecycleHookInput{AutoScalingGroupName: aws.String("web"), LifecycleHookName: aws.String("h"),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING")}); err != nil {
		t.Fatal(err)
	}
	hooks, err := a.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String("web")})
	if err != nil || *hooks.LifecycleHooks[0].HeartbeatTimeout != 3600 || *hooks.LifecycleHooks[0].DefaultResult != "ABANDON" {
		t.Fatalf("hook defaults: %+v %v", hooks, err)
	}
	if _, err := a.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), DesiredCapacity: aws.Int32(2)}); err != nil {
		t.Fatal(err)
	}
	ins := groupInstances(t, r)
	if len(ins) != 2 || *ins[0].AvailabilityZone == *ins[1].AvailabilityZone {
		t.Fatalf("two instances over two zones: %+v", ins)
	}
}

// An instance launched by a group reports the template version "$Latest" resolved to, and EC2's
// aws:ec2launchtemplate tags, as AWS does; the group itself keeps "$Latest".
func TestGroupInstanceTemplateVersion(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	makeGroup(t, r, nil)
	idle(t, r)
	ins := groupInstances(t, r)
	if len(ins) != 1 || ins[0].LaunchTemplate == nil || aws.ToString(ins[0].LaunchTemplate.Version) != "1" {
		t.Fatalf("instance launch template: %+v", ins)
	}
	out, err := ec2Client(r).DescribeInstances(ctxT(t), &ec2.DescribeInstancesInput{InstanceIds: []string{*ins[0].InstanceId}})
	if err != nil {
		t.Fatal(err)
	}
	tags := map[string]string{}
	for _, tg := range out.Reservations[0].Instances[0].Tags {
		tags[*tg.Key] = *tg.Value
	}
	if tags["aws:ec2launchtemplate:version"] != "1" || tags["aws:ec2launchtemplate:id"] == "" || tags["aws:autoscaling:groupName"] != "web" {
		t.Errorf("instance tags: %v", tags)
	}
	// The caller may tag such an instance: AWS's own aws: tags are not the caller's to refuse, and do not
	// count against the 50 tags. Creating an aws: tag is refused.
	if _, err := ec2Client(r).CreateTags(ctxT(t), &ec2.CreateTagsInput{Resources: []string{*ins[0].InstanceId},
		Tags: []ec2types.Tag{{Key: aws.String("handover:launch-hook"), Value: aws.String("launch")}}}); err != nil {
		t.Errorf("CreateTags on a group's instance: %v", err)
	}
	_, err = ec2Client(r).CreateTags(ctxT(t), &ec2.CreateTagsInput{Resources: []string{*ins[0].InstanceId},
		Tags: []ec2types.Tag{{Key: aws.String("aws:mine"), Value: aws.String("x")}}})
	wantCode(t, err, "InvalidParameterValue")
}

func TestGroupReplacesImpairedInstance(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	makeGroup(t, r, nil)
	idle(t, r)
	id := *groupInstances(t, r)[0].InstanceId
	if err := r.SetInstanceStatus(id, "", "impaired"); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	ins := groupInstances(t, r)
	if len(ins) != 1 || *ins[0].InstanceId == id || ins[0].LifecycleState != "InService" {
		t.Fatalf("an impaired member should be replaced: %+v", ins)
	}
}
