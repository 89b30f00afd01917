package cloud

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// Two Auto Scaling settings deadlock handover, because both launch the replacement before they terminate
// the instance being replaced; the old instance then keeps the Elastic IP and the volume while the group
// waits for the new one to be InService, and the new one waits for the old one to let go:
//   - an instance maintenance policy that launches before terminating ("Launch before terminating",
//     MinHealthyPercentage 100). Without a policy, or with a lower minimum, the group terminates first and
//     launches at the same time.
//     https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-instance-maintenance-policy.html
//   - Capacity Rebalancing: on a rebalance recommendation the group launches a replacement and terminates
//     the old instance only once the new one has passed its health checks ("After launching a new
//     instance, it then terminates an old instance", CreateAutoScalingGroup's CapacityRebalance).
//     `watch --on-rebalance=replace` asks for the same replacement, terminate first.
//     https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-capacity-rebalancing.html
//     https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_CreateAutoScalingGroup.html

// MaintenancePolicy is a group's instance maintenance policy; -1 means not set.
type MaintenancePolicy struct {
	MinHealthy, MaxHealthy int
	Desired                int
}

// LaunchesFirst reports whether replacing an instance keeps it until its replacement is in service.
func (p MaintenancePolicy) LaunchesFirst() bool { return p.MinHealthy >= 100 }

// MayLaunchFirst reports whether the minimum, rounded up to whole instances, still keeps every instance of
// a group this small: a singleton group with any minimum above 0 might.
func (p MaintenancePolicy) MayLaunchFirst() bool {
	return p.MinHealthy > 0 && p.Desired > 0 && (p.Desired*p.MinHealthy+99)/100 >= p.Desired
}

// CheckReplacementOrder fails (exit 3) when asgName launches replacements before terminating (Capacity
// Rebalancing on, or a maintenance policy that launches first), naming the setting to change; a minimum
// that may round up to the same effect on a group this small is a warning.
func CheckReplacementOrder(ctx context.Context, log *slog.Logger, as AutoScaling, asgName string) error {
	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
	if err != nil {
		return fmt.Errorf("describe Auto Scaling group %s: %w", asgName, err)
	}
	for _, g := range out.AutoScalingGroups {
		if aws.ToString(g.AutoScalingGroupName) != asgName {
			continue
		}
		if aws.ToBool(g.CapacityRebalance) {
			return fail.Precondition(fmt.Sprintf(
				"Auto Scaling group %s has Capacity Rebalancing on: on a rebalance recommendation it launches the replacement and waits for it before terminating the old instance, which keeps the Elastic IP and the volume meanwhile; turn it off (aws autoscaling update-auto-scaling-group --auto-scaling-group-name %s --no-capacity-rebalance) and let handover watch --on-rebalance=replace ask for the replacement instead",
				asgName, asgName), nil)
		}
		if g.InstanceMaintenancePolicy == nil {
			continue
		}
		p := MaintenancePolicy{
			MinHealthy: int(aws.ToInt32(g.InstanceMaintenancePolicy.MinHealthyPercentage)),
			MaxHealthy: int(aws.ToInt32(g.InstanceMaintenancePolicy.MaxHealthyPercentage)),
			Desired:    int(aws.ToInt32(g.DesiredCapacity)),
		}
		if g.InstanceMaintenancePolicy.MinHealthyPercentage == nil {
			p.MinHealthy = -1
		}
		switch {
		case p.LaunchesFirst():
			return fail.Precondition(fmt.Sprintf(
				"Auto Scaling group %s launches replacements before terminating (instance maintenance policy MinHealthyPercentage=%d, MaxHealthyPercentage=%d): the old instance would keep the Elastic IP and the volume while the group waits for this one; set MinHealthyPercentage to 0 (aws autoscaling update-auto-scaling-group --auto-scaling-group-name %s --instance-maintenance-policy MinHealthyPercentage=0,MaxHealthyPercentage=100) or remove the policy (-1,-1)",
				asgName, p.MinHealthy, p.MaxHealthy, asgName), nil)
		case p.MayLaunchFirst():
			log.Warn("the group's instance maintenance policy may keep the old instance until this one is in service; MinHealthyPercentage=0 is the safe setting for a handover group",
				logkey.Step, "asg-policy", logkey.ASG, asgName, "min_healthy_percentage", p.MinHealthy, "max_healthy_percentage", p.MaxHealthy, "desired", p.Desired)
		}
	}
	return nil
}
