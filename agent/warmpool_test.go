package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"

	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim/simtest"
)

// warmInstance gives group a warm pool of one instance kept in state pool and returns that instance once it
// runs (held in Warmed:Pending:Wait by the group's launch hook).
func (w *downWorld) warmInstance(asgName string, pool astypes.WarmPoolState) string {
	w.t.Helper()
	if _, err := w.as.PutWarmPool(w.ctx(), &autoscaling.PutWarmPoolInput{
		AutoScalingGroupName: aws.String(asgName), MinSize: aws.Int32(1), PoolState: pool,
	}); err != nil {
		w.t.Fatalf("PutWarmPool: %v", err)
	}
	var id string
	simtest.Eventually(w.t, waitBound, "a warmed instance", func() (bool, string) {
		out, err := w.as.DescribeWarmPool(w.ctx(), &autoscaling.DescribeWarmPoolInput{AutoScalingGroupName: aws.String(asgName)})
		if err != nil || len(out.Instances) == 0 {
			return false, fmt.Sprintf("DescribeWarmPool: %+v %v", out, err)
		}
		id = aws.ToString(out.Instances[0].InstanceId)
		return true, ""
	})
	w.waitInstanceState(id, "running")
	return id
}

// TestWarmPoolInstanceStaysOutOfTheWay: an instance launched into the group's warm pool
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html) is not the live
// one: up only completes its launch hook with CONTINUE and exits 0 saying why, with no address claim and
// no volume; watch on it does not run down for the pool's target states, Warmed:Terminated included.
func TestWarmPoolInstanceStaysOutOfTheWay(t *testing.T) {
	t.Parallel()
	w := newDownWorld(t)
	alloc := w.allocateAddress(testGroup)
	w.launchGroup("orders-asg", nil) // its instance waits in Pending:Wait: nobody runs up on it here
	warm := w.warmInstance("orders-asg", astypes.WarmPoolStateRunning)
	if s := w.lifecycleState(warm); s != warmPoolHookState {
		t.Fatalf("warmed instance in %s, want %s", s, warmPoolHookState)
	}

	res := w.runAgent(w.ctx(), warm, nil, w.upArgs(warm, "--launch-hook", "launch")...)
	if res.code != fail.CodeOK {
		t.Fatalf("up on a warmed instance exited %d, want 0\n%s", res.code, res.stderr)
	}
	for _, want := range []string{"warm pool", warmPoolHookState, "neither the Elastic IP nor a volume", "hook launch completed with CONTINUE"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("up's line lacks %q:\n%s", want, res.stderr)
		}
	}
	if h := w.addressHolder(alloc); h != "" {
		t.Errorf("the address went to %s", h)
	}
	if n := len(w.slotVolumes()); n != 0 {
		t.Errorf("%d volumes made, want none", n)
	}
	for _, action := range []string{"AssociateAddress", "CreateVolume", "AttachVolume"} {
		if n := len(w.callsBy(action, warm)); n != 0 {
			t.Errorf("%d %s calls by the warmed instance, want none", n, action)
		}
	}
	simtest.Eventually(t, waitBound, "the warmed instance Warmed:Running", func() (bool, string) {
		s := w.lifecycleState(warm)
		return s == "Warmed:Running", s
	})

	// A termination hook holds the pool's instance in Warmed:Terminating:Wait (target Warmed:Terminated)
	// for as long as the watcher needs to see it.
	if _, err := w.as.PutLifecycleHook(w.ctx(), &autoscaling.PutLifecycleHookInput{
		AutoScalingGroupName: aws.String("orders-asg"), LifecycleHookName: aws.String(terminateHook),
		LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"), HeartbeatTimeout: aws.Int32(7200),
	}); err != nil {
		t.Fatal(err)
	}
	run := w.startWatch(warm, w.mountPoint(warm))
	run.waitLog(t, "to=\"target Warmed:Running (warm pool: nothing to hand over)\"")
	if _, err := w.as.DeleteWarmPool(w.ctx(), &autoscaling.DeleteWarmPoolInput{AutoScalingGroupName: aws.String("orders-asg")}); err != nil {
		t.Fatal(err)
	}
	run.waitLog(t, "to=\"target Warmed:Terminated (warm pool: nothing to hand over)\"")
	if code := run.stop(t); code != fail.CodeOK {
		t.Errorf("watch exit %d, want 0", code)
	}
	if strings.Contains(run.stderr.String(), "hand-over triggered") {
		t.Errorf("watch ran down on a warmed instance:\n%s", run.stderr.String())
	}
	for _, action := range []string{"CreateSnapshot", "DetachVolume", "RecordLifecycleActionHeartbeat"} {
		if n := len(w.callsBy(action, warm)); n != 0 {
			t.Errorf("%d %s calls by the warmed instance's watch, want none", n, action)
		}
	}
}
