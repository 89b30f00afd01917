package sim

import (
	"fmt"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"

	"github.com/handover/handover/sim/simtest"
)

// inServiceMember waits for the group's first instance to be InService (completing its launch hook when
// the group has one) and returns it.
func inServiceMember(t *testing.T, r *Region, hooked bool) string {
	t.Helper()
	id := *groupInstances(t, r)[0].InstanceId
	if hooked {
		completeHook(t, r, "up", id)
	}
	simtest.Eventually(t, waitBound, "first instance InService", func() (bool, string) {
		got := lifecycleOf(t, r, id)
		return got == "InService", "lifecycle " + got
	})
	return id
}

func completeHook(t *testing.T, r *Region, hook, id string) {
	t.Helper()
	if _, err := asgClient(r).CompleteLifecycleAction(ctxT(t), &autoscaling.CompleteLifecycleActionInput{AutoScalingGroupName: aws.String("web"),
		LifecycleHookName: aws.String(hook), InstanceId: aws.String(id), LifecycleActionResult: aws.String("CONTINUE")}); err != nil {
		t.Fatal(err)
	}
}

// others are the group's members other than id, as "id@zone lifecycle".
func others(t *testing.T, r *Region, id string) (ids, zones []string, view string) {
	t.Helper()
	for _, in := range groupInstances(t, r) {
		view += fmt.Sprintf("%s@%s %s; ", *in.InstanceId, *in.AvailabilityZone, in.LifecycleState)
		if *in.InstanceId != id {
			ids, zones = append(ids, *in.InstanceId), append(zones, *in.AvailabilityZone)
		}
	}
	return ids, zones, view
}

// Options.Replacement: where and when the group of one (zones a and b, old instance in a) launches the
// replacement of a member terminated without decrement.
func TestReplacementPlacementAndTiming(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		az, launch, want string
	}{
		{"", "", "us-east-1b"}, // the default: balance, at-once
		{ReplaceAZBalance, ReplaceLaunchAtOnce, "us-east-1b"},
		{ReplaceAZSame, ReplaceLaunchAtOnce, "us-east-1a"},
		{ReplaceAZOther, ReplaceLaunchAtOnce, "us-east-1b"},
		{ReplaceAZBalance, ReplaceLaunchAfterGo, "us-east-1a"}, // nothing left to avoid: the first zone
		{ReplaceAZSame, ReplaceLaunchAfterGo, "us-east-1a"},
		{ReplaceAZOther, ReplaceLaunchAfterGo, "us-east-1b"},
	} {
		t.Run(tc.az+"/"+tc.launch, func(t *testing.T) {
			t.Parallel()
			r := startRegion(t, Options{Replacement: Replacement{AZ: tc.az, Launch: tc.launch}})
			makeGroup(t, r, nil, termHook)
			old := inServiceMember(t, r, false)
			if az := *groupInstances(t, r)[0].AvailabilityZone; az != "us-east-1a" {
				t.Fatalf("first instance in %s, want us-east-1a", az)
			}
			if _, err := asgClient(r).TerminateInstanceInAutoScalingGroup(ctxT(t), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
				InstanceId: aws.String(old), ShouldDecrementDesiredCapacity: aws.Bool(false)}); err != nil {
				t.Fatal(err)
			}
			if got := lifecycleOf(t, r, old); got != "Terminating:Wait" {
				t.Fatalf("old instance %s, want Terminating:Wait", got)
			}
			if tc.launch == ReplaceLaunchAfterGo {
				// Neither during the hook nor while EC2 shuts the instance down.
				if ids, _, view := others(t, r, old); len(ids) != 0 {
					t.Fatalf("after-gone: a replacement while the old instance waits in its hook: %s", view)
				}
				release := r.Hold(InstanceTerminate, old)
				completeHook(t, r, "down", old)
				if _, err := r.WaitHeld(ctxT(t), InstanceTerminate, old); err != nil {
					t.Fatal(err)
				}
				if ids, _, view := others(t, r, old); len(ids) != 0 {
					t.Fatalf("after-gone: a replacement while the old instance shuts down: %s", view)
				}
				release()
				simtest.Eventually(t, waitBound, "a replacement once the old instance is gone", func() (bool, string) {
					ids, _, view := others(t, r, old)
					return len(ids) == 1 && lifecycleOf(t, r, old) == "gone", view
				})
			}
			ids, zones, view := others(t, r, old)
			if len(ids) != 1 || zones[0] != tc.want {
				t.Fatalf("replacement: %s; want one in %s", view, tc.want)
			}
			if tc.launch != ReplaceLaunchAfterGo {
				completeHook(t, r, "down", old)
			}
			idle(t, r)
			if ins := groupInstances(t, r); len(ins) != 1 || *ins[0].InstanceId != ids[0] || ins[0].LifecycleState != "InService" {
				t.Fatalf("after the replacement: %+v", ins)
			}
		})
	}
	if err := (Replacement{AZ: "nearest"}).Validate(); err == nil {
		t.Error("Validate accepts zone nearest")
	}
	if err := (Replacement{Launch: "later"}).Validate(); err == nil {
		t.Error("Validate accepts launch later")
	}
}

// An instance maintenance policy of launch before terminate wins over "after-gone" (AWS documents it).
func TestReplacementLaunchBeforeTerminateWinsOverAfterGone(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{Replacement: Replacement{Launch: ReplaceLaunchAfterGo}})
	makeGroup(t, r, aws.Int32(100), termHook)
	old := inServiceMember(t, r, false)
	if _, err := asgClient(r).SetInstanceHealth(ctxT(t), &autoscaling.SetInstanceHealthInput{InstanceId: aws.String(old), HealthStatus: aws.String("Unhealthy")}); err != nil {
		t.Fatal(err)
	}
	simtest.Eventually(t, waitBound, "old instance terminating after its replacement is InService", func() (bool, string) {
		_, _, view := others(t, r, old)
		return lifecycleOf(t, r, old) == "Terminating:Wait", view
	})
	ids, _, view := others(t, r, old)
	if len(ids) != 1 || lifecycleOf(t, r, ids[0]) != "InService" {
		t.Fatalf("launch before terminate: %s", view)
	}
}

// TerminateInstanceInAutoScalingGroup
// (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_TerminateInstanceInAutoScalingGroup.html):
// the instance goes through the termination hook either way; with ShouldDecrementDesiredCapacity the
// desired capacity drops and nothing replaces it, refused below MinSize; the answer is the Activity.
func TestTerminateInstanceInAutoScalingGroup(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	a := asgClient(r)
	ctx := ctxT(t)
	makeGroup(t, r, nil, termHook)
	old := inServiceMember(t, r, false)
	_, err := a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(old),
		ShouldDecrementDesiredCapacity: aws.Bool(true)})
	wantCode(t, err, "ValidationError") // desired 1 = min 1
	_, err = a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String("i-0000000000000000f"),
		ShouldDecrementDesiredCapacity: aws.Bool(false)})
	wantCode(t, err, "ValidationError")
	if _, err := a.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("web"), MinSize: aws.Int32(0)}); err != nil {
		t.Fatal(err)
	}
	out, err := a.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{InstanceId: aws.String(old),
		ShouldDecrementDesiredCapacity: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	act := out.Activity
	if act == nil || aws.ToString(act.ActivityId) == "" || aws.ToString(act.AutoScalingGroupName) != "web" || act.StatusCode != "InProgress" ||
		aws.ToString(act.Description) != "Terminating EC2 instance: "+old || act.StartTime == nil {
		t.Fatalf("activity: %+v", act)
	}
	if got := lifecycleOf(t, r, old); got != "Terminating:Wait" {
		t.Fatalf("decremented: lifecycle %s, want Terminating:Wait", got)
	}
	if got, _ := metadata(t, imdsClient(t, r, old), "autoscaling/target-lifecycle-state"); got != "Terminated" {
		t.Fatalf("target-lifecycle-state %q", got)
	}
	g, err := a.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"web"}})
	if err != nil || *g.AutoScalingGroups[0].DesiredCapacity != 0 || len(g.AutoScalingGroups[0].Instances) != 1 {
		t.Fatalf("decremented group: %+v %v", g, err)
	}
	completeHook(t, r, "down", old)
	idle(t, r)
	if ins := groupInstances(t, r); len(ins) != 0 {
		t.Fatalf("decremented: replaced by %+v", ins)
	}
}
