package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// A rebalance recommendation says a Spot instance is at elevated risk of interruption
// (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html). Capacity
// Rebalancing answers it by launching first, which handover refuses (CheckReplacementOrder); instead the
// watcher may ask the group to replace the instance the way handover needs: terminate first, through the
// termination hook, with the replacement launched meanwhile. TerminateInstanceInAutoScalingGroup with
// ShouldDecrementDesiredCapacity=false does that: without the decrement "Amazon EC2 Auto Scaling launches
// instances to replace the ones that are terminated", and the instance goes through Terminating (and its
// hook) like any other termination. "This operation cannot be called on instances in a warm pool."
// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_TerminateInstanceInAutoScalingGroup.html

// WarmedState reports whether an Auto Scaling lifecycle state (or an IMDS target lifecycle state) is one of
// a warm pool's: such an instance is prepared for the group but is not its live member.
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html
func WarmedState(state string) bool { return strings.HasPrefix(state, "Warmed:") }

// Replacement is what RequestReplacement found and did.
type Replacement struct {
	ASGName   string
	State     string // the lifecycle state it observed
	Requested bool   // it called TerminateInstanceInAutoScalingGroup
	Note      string // why not, when it did not
}

// RequestReplacement asks instanceID's group to replace it, once: it observes the instance's lifecycle state
// first and calls TerminateInstanceInAutoScalingGroup (without decrement) only for a member in service or in
// standby. An instance already terminating needs no request; a warmed one holds nothing worth replacing. An
// instance the group is still launching is not replaced yet: the error is one a later attempt heals.
// Not being in a group at all is exit 3: nothing would replace it.
func RequestReplacement(ctx context.Context, log *slog.Logger, as AutoScaling, instanceID string) (Replacement, error) {
	m, err := MembershipOf(ctx, as, instanceID)
	if err != nil {
		return Replacement{}, err
	}
	r := Replacement{ASGName: m.ASGName, State: m.LifecycleState}
	switch st := m.LifecycleState; {
	case m.ASGName == "":
		return r, fail.Precondition(fmt.Sprintf("instance %s is in no Auto Scaling group, so nothing would replace it: use --on-rebalance=snapshot", instanceID), nil)
	case strings.HasPrefix(st, "Terminating"), st == "Terminated":
		r.Note = "the group is already terminating it (" + st + ")"
		return r, nil
	case WarmedState(st):
		r.Note = "it is in the group's warm pool (" + st + "): it holds no data and is not in service"
		return r, nil
	case strings.HasPrefix(st, "Pending"):
		return r, fail.Failed(fmt.Sprintf("instance %s is still being launched (%s): its replacement is requested once it is in service", instanceID, st), nil)
	}
	if _, err := as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId:                     aws.String(instanceID),
		ShouldDecrementDesiredCapacity: aws.Bool(false),
	}); err != nil {
		return r, fmt.Errorf("ask Auto Scaling group %s to replace instance %s (TerminateInstanceInAutoScalingGroup): %w", m.ASGName, instanceID, err)
	}
	r.Requested = true
	log.Info("asked the group to replace this instance; its termination hook hands over", logkey.Step, "replace", logkey.ASG, m.ASGName, logkey.State, m.LifecycleState)
	return r, nil
}
