package sim

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/handover/handover/sim/simtest"
)

// Capacity Rebalancing
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-capacity-rebalancing.html): on a
// rebalance recommendation the group launches a replacement first and terminates the old instance only
// once the new one is InService. With a launch hook that waits for the old instance's resources (what
// handover up does), that is a deadlock until the hook times out: the old instance is never told to go.
func TestCapacityRebalanceLaunchesFirst(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{}) // Speed 1000: the 600 s launch hook times out (held) in 0.6 s
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, nil, launchHook, termHook)
	describe := func() asgtypes.AutoScalingGroup {
		out, err := a.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
		if err != nil {
			t.Fatal(err)
		}
		return out.AutoScalingGroups[0]
	}
	if g := describe(); g.CapacityRebalance == nil || *g.CapacityRebalance {
		t.Fatalf("CapacityRebalance by default: %v", g.CapacityRebalance)
	}
	if _, err := a.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"),
		CapacityRebalance: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	if g := describe(); !aws.ToBool(g.CapacityRebalance) {
		t.Fatal("UpdateAutoScalingGroup CapacityRebalance true: DescribeAutoScalingGroups says false")
	}
	old := inServiceMember(t, r, true)
	m := imdsClient(t, r, old)

	release := r.Hold(HookTimeout, "")
	defer release()
	if err := r.SetRebalance(old, time.Now()); err != nil {
		t.Fatal(err)
	}
	ids, _, view := others(t, r, old)
	if len(ids) != 1 || lifecycleOf(t, r, ids[0]) != "Pending:Wait" || lifecycleOf(t, r, old) != "InService" {
		t.Fatalf("rebalance: want a replacement in Pending:Wait and the old instance InService: %s", view)
	}
	repl := ids[0]
	// The replacement's launch hook runs out (held): the old instance is still InService and its IMDS
	// does not say Terminated, so nothing tells it to release what the replacement waits for.
	if _, err := r.WaitHeld(ctx, HookTimeout, repl); err != nil {
		t.Fatal(err)
	}
	if got := lifecycleOf(t, r, old); got != "InService" {
		t.Fatalf("old instance while the replacement waits: %s", got)
	}
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "InService" {
		t.Fatalf("old instance's target-lifecycle-state while the replacement waits: %q", got)
	}
	// Once the replacement is InService the old instance goes through its termination hook.
	completeHook(t, r, "up", repl)
	simtest.Eventually(t, waitBound, "old instance terminating", func() (bool, string) {
		got := lifecycleOf(t, r, old)
		return got == "Terminating:Wait", "lifecycle " + got
	})
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "Terminated" {
		t.Fatalf("target-lifecycle-state %q", got)
	}
	completeHook(t, r, "down", old)
	release()
	idle(t, r)
	if ins := groupInstances(t, r); len(ins) != 1 || *ins[0].InstanceId != repl || ins[0].LifecycleState != "InService" {
		t.Fatalf("after rebalancing: %+v", ins)
	}
}

// Without Capacity Rebalancing a recommendation changes nothing; CreateAutoScalingGroup takes the setting.
func TestCapacityRebalanceOffAndCreate(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	makeGroup(t, r, nil)
	old := inServiceMember(t, r, false)
	if err := r.SetRebalance(old, time.Now()); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if ins := groupInstances(t, r); len(ins) != 1 || *ins[0].InstanceId != old {
		t.Fatalf("rebalance recommendation without Capacity Rebalancing: %+v", ins)
	}
	a := asgClient(r)
	if _, err := a.CreateAutoScalingGroup(ctxT(t), &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("cr"),
		MinSize: aws.Int32(0), MaxSize: aws.Int32(1), CapacityRebalance: aws.Bool(true), AvailabilityZones: []string{"us-east-1a"},
		LaunchTemplate: &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("web")}}); err != nil {
		t.Fatal(err)
	}
	out, err := a.DescribeAutoScalingGroups(ctxT(t), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"cr"}})
	if err != nil || !aws.ToBool(out.AutoScalingGroups[0].CapacityRebalance) {
		t.Fatalf("created with CapacityRebalance: %+v %v", out, err)
	}
}
