package sim

import (
	"fmt"
	"slices"
)

// Replacement is what the simulator must choose, and AWS does not fix, when
// a group replaces a member (an unhealthy instance, one terminated with
// TerminateInstanceInAutoScalingGroup without decrement, one that died, a
// launch its hook abandoned). Tests run both ways because handover must work
// whichever AWS does. The zero value is the default: "balance", "at-once".
type Replacement struct {
	// AZ of the replacement:
	//   - "balance" (default): AWS's zone balancing ("Auto Scaling maintains an
	//     equal number of instances across enabled Availability Zones",
	//     https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-availability-zone-balanced.html).
	//     For a group of one the zones tie at zero; AWS does not say how it
	//     breaks the tie. The sim prefers the zone with fewer instances on
	//     their way out, then the zone listed first, so a replacement launched
	//     while the old instance is still terminating ("at-once") goes to
	//     another zone, and one launched after it is gone ("after-gone") goes
	//     to the first zone of the group, which may be the old one's.
	//   - "same": the zone of the instance being replaced.
	//   - "other": another zone of the group (balanced among the others).
	// Without an instance being replaced (first launch, scale-out) every
	// choice balances.
	AZ string
	// Launch is when the replacement is launched, for groups whose instance
	// maintenance policy does not say (none, or MinHealthyPercentage < 100):
	//   - "at-once" (default): as soon as the old instance enters Terminating.
	//     AWS documents this default for groups without a policy: for a health
	//     check failure it will "Terminate and launch", where "new instances are
	//     provisioned at the same time your existing instances are terminated"
	//     (https://docs.aws.amazon.com/autoscaling/ec2/userguide/instance-maintenance-policy-overview-and-considerations.html,
	//     linked from https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-instance-maintenance-policy.html).
	//   - "after-gone": only once the old instance is Terminated (its
	//     termination hook done). "At the same time" does not rule it out when
	//     the termination waits on a hook, so handover must cope with it too.
	// MinHealthyPercentage 100 (launch before terminate) and Capacity
	// Rebalancing launch first whatever this says: AWS documents both.
	Launch string
}

// Values of Replacement.
const (
	ReplaceAZBalance     = "balance"
	ReplaceAZSame        = "same"
	ReplaceAZOther       = "other"
	ReplaceLaunchAtOnce  = "at-once"
	ReplaceLaunchAfterGo = "after-gone"
)

// Validate reports a value Replacement does not know.
func (p Replacement) Validate() error {
	if !slices.Contains([]string{"", ReplaceAZBalance, ReplaceAZSame, ReplaceAZOther}, p.AZ) {
		return fmt.Errorf("sim: replacement zone %q is not balance, same or other", p.AZ)
	}
	if !slices.Contains([]string{"", ReplaceLaunchAtOnce, ReplaceLaunchAfterGo}, p.Launch) {
		return fmt.Errorf("sim: replacement launch %q is not at-once or after-gone", p.Launch)
	}
	return nil
}

// replaced says the member leaves to be replaced (not by a scale-in): marked
// for replacement, or unhealthy (died, abandoned, failed a health check).
func replaced(in *instance) bool {
	return in.Replace || in.Health == "Unhealthy"
}

// replacedAZ is the zone of the instance a launch replaces: the oldest
// member leaving to be replaced, else the member the group last lost that
// way (for "after-gone"); "" when the launch replaces nothing.
func (r *Region) replacedAZ(g *group, members []*instance) string {
	for _, in := range members {
		if replaced(in) && (terminating(in) || in.Replace) {
			return in.AZ
		}
	}
	var last *instance
	for _, in := range r.w.Instances {
		if in.Group == g.Name && in.Lifecycle == "Terminated" && replaced(in) &&
			(last == nil || in.LaunchTime.After(last.LaunchTime) || in.LaunchTime.Equal(last.LaunchTime) && in.ID > last.ID) {
			last = in
		}
	}
	if last != nil {
		return last.AZ
	}
	return ""
}

// replacementAZ applies Options.Replacement.AZ to the zone balancing chose
// among zones (the group's zones in balancing order).
func (r *Region) replacementAZ(g *group, members []*instance, balanced []string) string {
	old := r.replacedAZ(g, members)
	switch r.opts.Replacement.AZ {
	case ReplaceAZSame:
		if old != "" && slices.Contains(g.AZs, old) {
			return old
		}
	case ReplaceAZOther:
		for _, z := range balanced {
			if old != "" && z != old {
				return z
			}
		}
	case "", ReplaceAZBalance:
	default:
		r.log.Error("unknown Options.Replacement.AZ; balancing", "value", r.opts.Replacement.AZ)
	}
	return balanced[0]
}

// waitForGone says a launch must wait: "after-gone", and a member leaving
// to be replaced without launch-before-terminate is not Terminated yet.
func (r *Region) waitForGone(g *group, members []*instance) bool {
	if r.opts.Replacement.Launch != ReplaceLaunchAfterGo {
		return false
	}
	for _, in := range members {
		if replaced(in) && (terminating(in) || in.Replace && !launchFirst(g, in)) {
			return true
		}
	}
	return false
}

// rebalancing says Capacity Rebalancing replaces in: the group has it on and
// EC2 has sent in a rebalance recommendation.
func rebalancing(g *group, in *instance) bool {
	return g.CapacityRebalance && !in.RebalanceTime.IsZero()
}
