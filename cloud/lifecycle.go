package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// Lifecycle hook results. https://docs.aws.amazon.com/autoscaling/ec2/userguide/completing-lifecycle-hooks.html
const (
	HookContinue = "CONTINUE"
	HookAbandon  = "ABANDON"
)

// Membership is this instance's place in an Auto Scaling group.
type Membership struct {
	ASGName        string // "" when the instance is not in a group
	LifecycleState string // "Pending:Wait", "InService", "Terminating:Wait", ...
}

// MembershipOf looks the instance up in Auto Scaling.
func MembershipOf(ctx context.Context, as AutoScaling, instanceID string) (Membership, error) {
	out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		return Membership{}, fmt.Errorf("describe Auto Scaling instance %s: %w", instanceID, err)
	}
	for _, i := range out.AutoScalingInstances {
		if aws.ToString(i.InstanceId) == instanceID {
			return Membership{ASGName: aws.ToString(i.AutoScalingGroupName), LifecycleState: aws.ToString(i.LifecycleState)}, nil
		}
	}
	return Membership{}, nil
}

// hookKind is the lifecycle transition of a hook handover completes, and the flag that names the hook.
type hookKind struct {
	flag       string
	transition string
}

var (
	LaunchHookKind    = hookKind{flag: "--launch-hook", transition: "autoscaling:EC2_INSTANCE_LAUNCHING"}
	TerminateHookKind = hookKind{flag: "--terminate-hook", transition: "autoscaling:EC2_INSTANCE_TERMINATING"}
)

// LifecycleAction is one pending lifecycle action (launch or termination) of this instance.
type LifecycleAction struct {
	As         AutoScaling
	Log        *slog.Logger
	Kind       hookKind
	AsgName    string
	Hook       string
	InstanceID string
}

// heartbeat extends the action's timeout by the hook's heartbeat timeout.
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_RecordLifecycleActionHeartbeat.html
func (a *LifecycleAction) heartbeat(ctx context.Context) error {
	_, err := a.As.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(a.AsgName),
		LifecycleHookName:    aws.String(a.Hook),
		InstanceId:           aws.String(a.InstanceID),
	})
	if err != nil {
		return fmt.Errorf("heartbeat for lifecycle hook %s: %w", a.Hook, err)
	}
	return nil
}

// Complete ends the action with result. It returns "" when it did, and otherwise why there was no active
// action to complete. Auto Scaling answers ValidationError for all three reasons there can be: the action
// was already completed (by an earlier run), it timed out, or the group has no hook of that name (a typo
// in --launch-hook or --terminate-hook). The first two are reported and are not a failure of this run's
// work, so the caller decides what they mean; the third is bad configuration, told apart by checkHook
// (exit 2). https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html
func (a *LifecycleAction) Complete(ctx context.Context, result string) (inactive string, err error) {
	_, err = a.As.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(a.AsgName),
		LifecycleHookName:     aws.String(a.Hook),
		InstanceId:            aws.String(a.InstanceID),
		LifecycleActionResult: aws.String(result),
	})
	if HasCode(err, codeValidationError) {
		inactive, cerr := a.checkHook(ctx)
		if cerr != nil {
			return "", cerr
		}
		a.Log.Warn("no active lifecycle action to complete", logkey.Step, "lifecycle", logkey.Hook, a.Hook, logkey.Result, result, logkey.Why, inactive)
		return inactive, nil
	}
	if err != nil {
		return "", fmt.Errorf("complete lifecycle hook %s with %s: %w", a.Hook, result, err)
	}
	a.Log.Info("lifecycle action completed", logkey.Step, "lifecycle", logkey.Hook, a.Hook, logkey.Result, result)
	return "", nil
}

// checkHook looks the hook up in the group after CompleteLifecycleAction found no active action. A hook
// that does not exist, or that belongs to the other transition, is bad configuration: an error (exit 2)
// naming the group's hooks. Otherwise it says why there was no action: already completed or timed out,
// or, when the hooks cannot be read (autoscaling:DescribeLifecycleHooks not allowed), any of the three.
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeLifecycleHooks.html
func (a *LifecycleAction) checkHook(ctx context.Context) (inactive string, err error) {
	out, err := a.As.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(a.AsgName)})
	if err != nil {
		a.Log.Warn("could not read the group's lifecycle hooks to tell why there is no active action", logkey.Step, "lifecycle", logkey.ASG, a.AsgName, logkey.Error, err.Error())
		return fmt.Sprintf("no active lifecycle action: already completed, timed out, or no hook named %s on group %s", a.Hook, a.AsgName), nil
	}
	var hooks []string
	for _, h := range out.LifecycleHooks {
		name, transition := aws.ToString(h.LifecycleHookName), aws.ToString(h.LifecycleTransition)
		if name == a.Hook && transition != a.Kind.transition {
			return "", fail.Usage(fmt.Sprintf("%s %s: hook %s on group %s is for %s, not %s: give the group's %s hook",
				a.Kind.flag, a.Hook, a.Hook, a.AsgName, transition, a.Kind.transition, a.Kind.transition))
		}
		if name == a.Hook {
			return fmt.Sprintf("no active lifecycle action (already completed, or timed out; hook %s exists on group %s)", a.Hook, a.AsgName), nil
		}
		hooks = append(hooks, name+" ("+transition+")")
	}
	have := "it has none"
	if len(hooks) > 0 {
		have = "its hooks: " + strings.Join(hooks, ", ")
	}
	return "", fail.Usage(fmt.Sprintf("%s %s: no hook named %s on group %s (%s); fix the name, or create the hook with aws autoscaling put-lifecycle-hook",
		a.Kind.flag, a.Hook, a.Hook, a.AsgName, have))
}

// KeepAlive sends a heartbeat every interval until the returned stop is called. Heartbeat errors are logged
// and retried at the next tick: a missed heartbeat only matters if every one fails for a whole heartbeat
// timeout, and the work itself must not stop for it.
func (a *LifecycleAction) KeepAlive(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				hctx, hcancel := context.WithTimeout(ctx, interval)
				err := a.heartbeat(hctx)
				hcancel()
				if err != nil && ctx.Err() == nil {
					a.Log.Warn("lifecycle heartbeat failed; retrying at the next tick", logkey.Step, "lifecycle", logkey.Hook, a.Hook, logkey.Error, err.Error())
				} else if err == nil {
					a.Log.Debug("lifecycle heartbeat sent", logkey.Step, "lifecycle", logkey.Hook, a.Hook)
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// TerminationHookTimeout is the heartbeat timeout of the group's termination lifecycle hook (the longest,
// if it has several), 0 when it has none.
func TerminationHookTimeout(ctx context.Context, as AutoScaling, asgName string) (time.Duration, error) {
	out, err := as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(asgName)})
	if err != nil {
		return 0, fmt.Errorf("describe the lifecycle hooks of %s: %w", asgName, err)
	}
	var longest time.Duration
	for _, h := range out.LifecycleHooks {
		if aws.ToString(h.LifecycleTransition) == TerminateHookKind.transition {
			longest = max(longest, time.Duration(aws.ToInt32(h.HeartbeatTimeout))*time.Second)
		}
	}
	return longest, nil
}
