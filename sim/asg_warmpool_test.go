package sim

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/simtest"
)

func describeWarm(t *testing.T, r *Region) *autoscaling.DescribeWarmPoolOutput {
	t.Helper()
	out, err := asgClient(r).DescribeWarmPool(ctxT(t), &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String("web")})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func asgInstanceState(t *testing.T, r *Region, id string) string {
	t.Helper()
	out, err := asgClient(r).DescribeAutoScalingInstances(ctxT(t), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AutoScalingInstances) != 1 {
		return "gone"
	}
	return aws.ToString(out.AutoScalingInstances[0].LifecycleState)
}

// A warm pool (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html) of a
// group of one (max 2): its instance runs the launch hook in Warmed:Pending:Wait with
// target-lifecycle-state Warmed:Stopped, then stops in Warmed:Stopped; a replacement takes it (launch hook
// again, target InService); DeleteWarmPool empties the pool.
func TestWarmPoolLifecycle(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, nil, launchHook)
	old := inServiceMember(t, r, true)
	if out := describeWarm(t, r); out.WarmPoolConfiguration != nil || len(out.Instances) != 0 {
		t.Fatalf("no warm pool yet: %+v", out)
	}
	_, err := a.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("web"), PoolState: "Frozen"})
	wantCode(t, err, "ValidationError")
	_, err = a.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("nope")})
	wantCode(t, err, "ValidationError")
	if _, err := a.PutWarmPool(ctx, &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("web")}); err != nil {
		t.Fatal(err)
	}
	wp := describeWarm(t, r)
	if c := wp.WarmPoolConfiguration; c == nil || c.PoolState != asgtypes.WarmPoolStateStopped || aws.ToInt32(c.MinSize) != 0 ||
		c.MaxGroupPreparedCapacity != nil || len(wp.Instances) != 1 {
		t.Fatalf("warm pool: %+v", wp)
	}
	warm := *wp.Instances[0].InstanceId
	if got := *wp.Instances[0].AvailabilityZone; got != "us-east-1b" {
		t.Errorf("warmed instance in %s, want the zone the group's instance is not in", got)
	}
	if got := asgInstanceState(t, r, warm); got != "Warmed:Pending:Wait" {
		t.Fatalf("warmed instance: %s, want Warmed:Pending:Wait", got)
	}
	if ids, _, view := others(t, r, old); len(ids) != 0 {
		t.Fatalf("DescribeAutoScalingGroups lists the warm pool: %s", view)
	}
	if got, _ := metadata(t, imdsClient(t, r, warm), "autoscaling/target-lifecycle-state"); got != "Warmed:Stopped" {
		t.Fatalf("target-lifecycle-state in Warmed:Pending:Wait: %q", got)
	}
	completeHook(t, r, "up", warm)
	idle(t, r)
	if got := asgInstanceState(t, r, warm); got != "Warmed:Stopped" {
		t.Fatalf("after the hook: %s", got)
	}
	if s := instanceState(t, r, warm).State.Name; s != ec2types.InstanceStateNameStopped {
		t.Fatalf("warmed instance %s, want stopped", s)
	}
	if got := lifecycleOf(t, r, old); got != "InService" {
		t.Fatalf("a stopped warmed instance must not make the group replace anything: %s", got)
	}

	// The replacement (balanced into us-east-1b) comes from the pool and runs the launch hook again.
	if _, err := a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(old),
		ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
		t.Fatal(err)
	}
	if got := lifecycleOf(t, r, warm); got != "Pending:Wait" {
		t.Fatalf("warmed instance taken by the group: %s, want Pending:Wait", got)
	}
	simtest.Eventually(t, waitBound, "taken instance running", func() (bool, string) {
		s := instanceState(t, r, warm).State.Name
		return s == ec2types.InstanceStateNameRunning, fmt.Sprint(s)
	})
	if got, _ := metadata(t, imdsClient(t, r, warm), "autoscaling/target-lifecycle-state"); got != "InService" {
		t.Fatalf("target-lifecycle-state of the taken instance: %q", got)
	}
	completeHook(t, r, "up", warm)
	// The pool refills, in the zone the group is not in now.
	var refill string
	simtest.Eventually(t, waitBound, "pool refilled", func() (bool, string) {
		wp := describeWarm(t, r)
		for _, in := range wp.Instances {
			if *in.InstanceId != warm && in.LifecycleState == "Warmed:Pending:Wait" {
				refill = *in.InstanceId
				if *in.AvailabilityZone != "us-east-1a" {
					return false, "refill in " + *in.AvailabilityZone
				}
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", wp.Instances)
	})
	if got := lifecycleOf(t, r, warm); got != "InService" {
		t.Fatalf("taken instance: %s", got)
	}

	// DeleteWarmPool: PendingDelete while the pool's instances terminate (held here), then no pool.
	release := r.Hold(InstanceTerminate, refill)
	if _, err := a.DeleteWarmPool(ctx, &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: aws.String("web")}); err != nil {
		t.Fatal(err)
	}
	if wp := describeWarm(t, r); wp.WarmPoolConfiguration == nil || wp.WarmPoolConfiguration.Status != asgtypes.WarmPoolStatusPendingDelete {
		t.Fatalf("deleting: %+v", wp.WarmPoolConfiguration)
	}
	release()
	idle(t, r)
	if wp := describeWarm(t, r); wp.WarmPoolConfiguration != nil || len(wp.Instances) != 0 {
		t.Fatalf("after delete: %+v", wp)
	}
	if s := instanceState(t, r, refill).State.Name; s != ec2types.InstanceStateNameTerminated {
		t.Fatalf("pool instance after delete: %s", s)
	}
	_, err = a.DeleteWarmPool(ctx, &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: aws.String("web")})
	wantCode(t, err, "ValidationError")
}

// PoolState Running: the warmed instance keeps running in Warmed:Running, and IMDS says so.
func TestWarmPoolRunning(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	a := asgClient(r)
	makeGroup(t, r, nil, launchHook)
	inServiceMember(t, r, true)
	if _, err := a.PutWarmPool(ctxT(t), &autoscaling.PutWarmPoolInput{AutoScalingGroupName: aws.String("web"),
		PoolState: asgtypes.WarmPoolStateRunning, MinSize: aws.Int32(1), MaxGroupPreparedCapacity: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	wp := describeWarm(t, r)
	if len(wp.Instances) != 1 || aws.ToInt32(wp.WarmPoolConfiguration.MaxGroupPreparedCapacity) != 1 {
		t.Fatalf("MinSize 1 keeps one warmed instance even though MaxGroupPreparedCapacity - desired is 0: %+v", wp)
	}
	warm := *wp.Instances[0].InstanceId
	m := imdsClient(t, r, warm)
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "Warmed:Running" {
		t.Fatalf("target-lifecycle-state: %q", got)
	}
	completeHook(t, r, "up", warm)
	idle(t, r)
	if got := asgInstanceState(t, r, warm); got != "Warmed:Running" {
		t.Fatalf("after the hook: %s", got)
	}
	if got, _ := metadata(t, m, "autoscaling/target-lifecycle-state"); got != "Warmed:Running" {
		t.Fatalf("target-lifecycle-state: %q", got)
	}
	// ForceDelete of the group takes the pool with it.
	if _, err := a.DeleteAutoScalingGroup(ctxT(t), &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), ForceDelete: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	if s := instanceState(t, r, warm).State.Name; s != ec2types.InstanceStateNameTerminated {
		t.Fatalf("warmed instance after ForceDelete: %s", s)
	}
}
