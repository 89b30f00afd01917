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

// One Auto Scaling setting deadlocks handover: an instance maintenance policy that launches the
// replacement before it terminates the instance being replaced ("Launch before terminating",
// MinHealthyPercentage 100). The old instance then keeps the Elastic IP and the volume while the group
// waits for the new one to be InService, and the new one waits for the old one to let go. Without a
// policy, or with a lower minimum, the group terminates first and launches at the same time.
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-instance-maintenance-policy.html

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

// CheckMaintenancePolicy fails (exit 3) when asgName launches replacements before terminating, naming the
// setting to change; a minimum that may round up to the same effect on a group this small is a warning.
func CheckMaintenancePolicy(ctx context.Context, log *slog.Logger, as AutoScaling, asgName string) error {
	out, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{asgName}})
	if err != nil {
		return fmt.Errorf("describe Auto Scaling group %s: %w", asgName, err)
	}
	for _, g := range out.AutoScalingGroups {
		if aws.ToString(g.AutoScalingGroupName) != asgName || g.InstanceMaintenancePolicy == nil {
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
