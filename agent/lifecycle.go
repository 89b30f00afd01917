package agent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
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

// lifecycleAction is one pending lifecycle action (launch or termination) of this instance.
type lifecycleAction struct {
	as         AutoScaling
	log        *slog.Logger
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

// complete ends the action with result. An action that is no longer active (already completed by an
// earlier run, or timed out) answers ValidationError: that is reported, not retried, and is not a failure
// of this run's work, so the caller decides what it means.
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CompleteLifecycleAction.html
func (a *lifecycleAction) complete(ctx context.Context, result string) (active bool, err error) {
	_, err = a.as.CompleteLifecycleAction(ctx, &autoscaling.CompleteLifecycleActionInput{
		AutoScalingGroupName:  aws.String(a.asgName),
		LifecycleHookName:     aws.String(a.hook),
		InstanceId:            aws.String(a.instanceID),
		LifecycleActionResult: aws.String(result),
	})
	if hasCode(err, codeValidationError) {
		a.log.Warn("no active lifecycle action to complete (already completed, or timed out)", keyStep, "lifecycle", "hook", a.hook, "result", result)
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("complete lifecycle hook %s with %s: %w", a.hook, result, err)
	}
	a.log.Info("lifecycle action completed", keyStep, "lifecycle", "hook", a.hook, "result", result)
	return true, nil
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
					a.log.Warn("lifecycle heartbeat failed; retrying at the next tick", keyStep, "lifecycle", "hook", a.hook, "error", err.Error())
				} else if err == nil {
					a.log.Debug("lifecycle heartbeat sent", keyStep, "lifecycle", "hook", a.hook)
				}
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}
