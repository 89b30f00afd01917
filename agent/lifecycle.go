package agent

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
	hookContinue = "CONTINUE"
	hookAbandon  = "ABANDON"
)

// groupMembership is this instance's place in an Auto Scaling group.
type groupMembership struct {
	ASGName        string // "" when the instance is not in a group
	LifecycleState string // "Pending:Wait", "InService", "Terminating:Wait", ...
}

// asgMembership looks the instance up in Auto Scaling.
func asgMembership(ctx context.Context, as AutoScaling, instanceID string) (groupMembership, error) {
	out, err := as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		return groupMembership{}, fmt.Errorf("describe Auto Scaling instance %s: %w", instanceID, err)
	}
	for _, i := range out.AutoScalingInstances {
		if aws.ToString(i.InstanceId) == instanceID {
			return groupMembership{ASGName: aws.ToString(i.AutoScalingGroupName), LifecycleState: aws.ToString(i.LifecycleState)}, nil
		}
	}
	return groupMembership{}, nil
}

// hookKind is the lifecycle transition of a hook handover completes, and the flag that names the hook.
type hookKind struct {
	flag       string
	transition string
}

var (
	launchHookKind    = hookKind{flag: "--launch-hook", transition: "autoscaling:EC2_INSTANCE_LAUNCHING"}
	terminateHookKind = hookKind{flag: "--terminate-hook", transition: "autoscaling:EC2_INSTANCE_TERMINATING"}
)

// lifecycleAction is one pending lifecycle action (launch or termination) of this instance.
type lifecycleAction struct {
	as         AutoScaling
	log        *slog.Logger
	kind       hookKind
	asgName    string
	hook       string
	instanceID string
}

// heartbeat extends the action's timeout by the hook's heartbeat timeout.
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_RecordLifecycleActionHeartbeat.html
func (a *lifecycleAction) heartbeat(ctx context.Context) error {
	_, err := a.as.RecordLifecycleActionHeartbeat(ctx, &autoscaling.RecordLifecycleActionHeartbeatInput{
		AutoScalingGroupName: aws.String(a.asgName),
		LifecycleHookName:    aws.String(a.hook),
		InstanceId:           aws.String(a.instanceID),
	})
	if err != nil {
		return fmt.Errorf("heartbeat for lifecycle hook %s: %w", a.hook, err)
	}
	return nil
}

// complete ends the action with result. It returns "" when it did, and otherwise why there was no active
// action to complete. Auto Scaling answers ValidationError for all three reasons there can be: the action
// was already completed (by an earlier run), it timed out, or the group has no hook of that name (a typo
// in --launch-hook or --terminate-hook). The first two are reported and are not a failure of this run's
// work, so the caller decides what they mean; the third is bad configuration, told apart by checkHook
// (exit 2). https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html
func (a *lifecycleAction) complete(ctx context.Context, result string) (inactive string, err error) {
	_, err = a.as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(a.asgName),
		LifecycleHookName:     aws.String(a.hook),
		InstanceId:            aws.String(a.instanceID),
		LifecycleActionResult: aws.String(result),
	})
	if hasCode(err, codeValidationError) {
		inactive, cerr := a.checkHook(ctx)
		if cerr != nil {
			return "", cerr
		}
		a.log.Warn("no active lifecycle action to complete", logkey.Step, "lifecycle", "hook", a.hook, "result", result, "why", inactive)
		return inactive, nil
	}
	if err != nil {
		return "", fmt.Errorf("complete lifecycle hook %s with %s: %w", a.hook, result, err)
	}
	a.log.Info("lifecycle action completed", logkey.Step, "lifecycle", "hook", a.hook, "result", result)
	return "", nil
}

// checkHook looks the hook up in the group after CompleteLifecycleAction found no active action. A hook
// that does not exist, or that belongs to the other transition, is bad configuration: an error (exit 2)
// naming the group's hooks. Otherwise it says why there was no action: already completed or timed out,
// or, when the hooks cannot be read (autoscaling:DescribeLifecycleHooks not allowed), any of the three.
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeLifecycleHooks.html
func (a *lifecycleAction) checkHook(ctx context.Context) (inactive string, err error) {
	out, err := a.as.DescribeLifecycleHooks(ctx, &autoscaling.DescribeLifecycleHooksInput{AutoScalingGroupName: aws.String(a.asgName)})
	if err != nil {
		a.log.Warn("could not read the group's lifecycle hooks to tell why there is no active action", logkey.Step, "lifecycle", "asg", a.asgName, "error", err.Error())
		return fmt.Sprintf("no active lifecycle action: already completed, timed out, or no hook named %s on group %s", a.hook, a.asgName), nil
	}
	var hooks []string
	for _, h := range out.LifecycleHooks {
		name, transition := aws.ToString(h.LifecycleHookName), aws.ToString(h.LifecycleTransition)
		if name == a.hook && transition != a.kind.transition {
			return "", fail.Usage(fmt.Sprintf("%s %s: hook %s on group %s is for %s, not %s: give the group's %s hook",
				a.kind.flag, a.hook, a.hook, a.asgName, transition, a.kind.transition, a.kind.transition))
		}
		if name == a.hook {
			return fmt.Sprintf("no active lifecycle action (already completed, or timed out; hook %s exists on group %s)", a.hook, a.asgName), nil
		}
		hooks = append(hooks, name+" ("+transition+")")
	}
	have := "it has none"
	if len(hooks) > 0 {
		have = "its hooks: " + strings.Join(hooks, ", ")
	}
	return "", fail.Usage(fmt.Sprintf("%s %s: no hook named %s on group %s (%s); fix the name, or create the hook with aws autoscaling put-lifecycle-hook",
		a.kind.flag, a.hook, a.hook, a.asgName, have))
}

// keepAlive sends a heartbeat every interval until the returned stop is called. Heartbeat errors are logged
// and retried at the next tick: a missed heartbeat only matters if every one fails for a whole heartbeat
// timeout, and the work itself must not stop for it.
func (a *lifecycleAction) keepAlive(ctx context.Context, interval time.Duration) (stop func()) {
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
					a.log.Warn("lifecycle heartbeat failed; retrying at the next tick", logkey.Step, "lifecycle", "hook", a.hook, "error", err.Error())
				} else if err == nil {
					a.log.Debug("lifecycle heartbeat sent", logkey.Step, "lifecycle", "hook", a.hook)
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}
