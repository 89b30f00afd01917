package sim

import (
	"slices"
	"strings"
	"time"
)

// The group's behaviour, after "Amazon EC2 Auto Scaling lifecycle hooks"
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html)
// and "Instance maintenance policies". reconcileGroupsLocked runs after every
// change (API call or timer) and moves each member one step:
//
//	launch:    Pending -> Pending:Wait (launch hook) -> Pending:Proceed -> InService (EC2 running)
//	terminate: Terminating -> Terminating:Wait (termination hook) -> Terminating:Proceed -> Terminated
//
// A lifecycle action ends with CompleteLifecycleAction or, after the
// heartbeat timeout (scaled by Speed, like every other delay), with the
// hook's default result; ABANDON on launch terminates the instance and the
// group launches another. Only the first hook (by name) of a transition is
// run. Instances that die outside the group (TerminateInstances, KillInstance,
// a Spot interruption) skip the termination hook and are replaced; stopped
// instances fail the EC2 health check and are replaced.

// delayExact scales d by Speed without jitter (for lifecycle timeouts).
func (r *Region) delayExact(d time.Duration) time.Duration {
	return time.Duration(float64(d) / r.opts.Speed)
}

func inService(in *instance) bool {
	return in.Lifecycle == "InService"
}

func launching(in *instance) bool {
	return strings.HasPrefix(in.Lifecycle, "Pending")
}

func terminating(in *instance) bool {
	return strings.HasPrefix(strings.TrimPrefix(in.Lifecycle, "Warmed:"), "Terminat")
}

// firstHook returns the group's hook for a transition.
func firstHook(g *group, transition string) *hook {
	for _, n := range sortedKeys(g.Hooks) {
		if g.Hooks[n].Transition == transition {
			return g.Hooks[n]
		}
	}
	return nil
}

func (r *Region) reconcileGroupsLocked() {
	if !r.started || r.closed {
		return
	}
	for _, name := range sortedKeys(r.w.Groups) {
		r.reconcileGroupLocked(r.w.Groups[name])
	}
}

func (r *Region) reconcileGroupLocked(g *group) {
	now := time.Now()
	for _, in := range r.groupMembers(g) {
		r.stepMemberLocked(g, in, now)
	}
	for _, in := range r.warmMembers(g) {
		r.stepMemberLocked(g, in, now)
	}
	defer r.reconcileWarmPoolLocked(g, now)
	members := r.groupMembers(g)
	if g.Deleting {
		if len(members) == 0 && len(r.warmMembers(g)) == 0 {
			delete(r.w.Groups, g.Name)
		}
		return
	}
	// Capacity Rebalancing: a member with a rebalance recommendation is
	// replaced, launch before terminate (launchFirst).
	// https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-capacity-rebalancing.html
	for _, in := range members {
		if rebalancing(g, in) && !in.Replace && (launching(in) || inService(in)) {
			r.log.Info("capacity rebalancing replaces instance", "group", g.Name, "instance", in.ID)
			in.Replace = true
		}
	}
	// Healthy capacity: launching or in service, not marked for replacement.
	var healthy []*instance
	for _, in := range members {
		if (launching(in) || inService(in)) && !in.Replace {
			healthy = append(healthy, in)
		}
	}
	for n := len(healthy); n < g.Desired && !r.waitForGone(g, members); n++ {
		in := r.launchForGroupLocked(g, healthy, now)
		healthy = append(healthy, in)
	}
	if extra := len(healthy) - g.Desired; extra > 0 {
		for _, in := range r.scaleInOrder(g, healthy)[:extra] {
			r.beginGroupTerminationLocked(g, in)
		}
	}
	// Replacements. Launching first (launchFirst), the group terminates the
	// old instance only once the new ones are InService; otherwise it
	// terminates at once (Options.Replacement.Launch says when the
	// replacement is launched).
	ready := 0
	for _, in := range healthy {
		if inService(in) {
			ready++
		}
	}
	for _, in := range members {
		if !in.Replace || terminating(in) {
			continue
		}
		if launchFirst(g, in) && ready < g.Desired {
			continue
		}
		r.beginGroupTerminationLocked(g, in)
	}
}

// scaleInOrder follows the default termination policy loosely: instances in
// the zone with the most instances first, oldest first.
func (r *Region) scaleInOrder(g *group, ins []*instance) []*instance {
	perAZ := map[string]int{}
	for _, in := range ins {
		perAZ[in.AZ]++
	}
	out := slices.Clone(ins)
	slices.SortStableFunc(out, func(a, b *instance) int {
		if perAZ[a.AZ] != perAZ[b.AZ] {
			return perAZ[b.AZ] - perAZ[a.AZ]
		}
		return a.LaunchTime.Compare(b.LaunchTime)
	})
	return out
}

// launchFirst says the group launches the replacement of in before it
// terminates in: the group's instance maintenance policy says launch before
// terminate (MinHealthyPercentage 100), or Capacity Rebalancing replaces an
// instance with a rebalance recommendation, which AWS documents as launch
// before terminate ("Rebalancing" in the table of
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/instance-maintenance-policy-overview-and-considerations.html).
func launchFirst(g *group, in *instance) bool {
	return g.MinHealthy >= 100 || rebalancing(g, in)
}

// balancedAZs orders the group's zones as zone balancing prefers them: the
// fewest healthy instances first; ties go to the zone with fewer instances on
// their way out, then to the zone listed first.
func (r *Region) balancedAZs(g *group, healthy, members []*instance) []string {
	count, leaving := map[string]int{}, map[string]int{}
	for _, in := range healthy {
		count[in.AZ]++
	}
	for _, in := range members {
		if terminating(in) || in.Replace {
			leaving[in.AZ]++
		}
	}
	out := slices.Clone(g.AZs)
	slices.SortStableFunc(out, func(a, b string) int {
		if count[a] != count[b] {
			return count[a] - count[b]
		}
		return leaving[a] - leaving[b]
	})
	return out
}

// launchForGroupLocked launches into the zone zone balancing and
// Options.Replacement choose, taking a warmed instance of that zone from the
// warm pool when there is one.
func (r *Region) launchForGroupLocked(g *group, healthy []*instance, now time.Time) *instance {
	members := r.groupMembers(g)
	az := r.replacementAZ(g, members, r.balancedAZs(g, healthy, members))
	if in := r.takeWarmLocked(g, az, now); in != nil {
		return in
	}
	return r.newGroupInstanceLocked(g, az, "Pending", now)
}

// newGroupInstanceLocked launches an instance of the group's template into az
// in the given first lifecycle state (Pending, or Warmed:Pending for the warm
// pool).
func (r *Region) newGroupInstanceLocked(g *group, az, lifecycle string, now time.Time) *instance {
	subnet := subnetFor(az)
	for _, sn := range strings.Split(g.VPCZoneIdentifier, ",") {
		if z, err := r.subnetAZ(strings.TrimSpace(sn)); err == nil && z == az {
			subnet = strings.TrimSpace(sn)
			break
		}
	}
	s := launchSpec{AZ: az, Subnet: subnet, TemplateID: g.TemplateID, Tags: map[string]string{}}
	if lt := r.w.Templates[g.TemplateID]; lt != nil {
		s.ImageID, s.Type, s.MetadataTags, s.HTTPTokens = lt.ImageID, lt.InstanceType, lt.MetadataTags, lt.HTTPTokens
		for k, v := range lt.TagSpecs["instance"] {
			s.Tags[k] = v
		}
	}
	for _, t := range g.Tags {
		if t.PropagateAtLaunch {
			s.Tags[t.Key] = t.Value
		}
	}
	// EC2 tags what it launches from a template with the template and the version it resolved.
	// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html (aws: prefixed tags)
	s.Tags["aws:autoscaling:groupName"] = g.Name
	s.Tags["aws:ec2launchtemplate:id"] = g.TemplateID
	s.Tags["aws:ec2launchtemplate:version"] = launchedTemplateVersion(g)
	in := r.launchLocked(s, now, newID("r"))
	in.Group, in.Lifecycle, in.Health = g.Name, lifecycle, "Healthy"
	r.log.Info("group launched instance", "group", g.Name, "instance", in.ID, "az", az, "lifecycle", lifecycle)
	r.stepMemberLocked(g, in, now)
	return in
}

// beginGroupTerminationLocked starts the group's termination of a member.
func (r *Region) beginGroupTerminationLocked(g *group, in *instance) {
	if terminating(in) {
		return
	}
	r.cancelLocked("hook/" + in.ID)
	in.Hook = nil
	in.Lifecycle = "Terminating"
	r.stepMemberLocked(g, in, time.Now())
}

// stepMemberLocked advances one member according to its EC2 state and its
// lifecycle action.
func (r *Region) stepMemberLocked(g *group, in *instance, now time.Time) {
	// Outside events first: the instance died or stopped.
	switch in.State {
	case "terminated":
		r.cancelLocked("hook/" + in.ID)
		in.Hook = nil
		in.Lifecycle = warmPrefix(in) + "Terminated"
		return
	case "shutting-down":
		if !terminating(in) {
			r.cancelLocked("hook/" + in.ID)
			in.Hook = nil
			in.Health = "Unhealthy"
			in.Lifecycle = warmPrefix(in) + "Terminating:Proceed"
		}
	case "stopping", "stopped":
		if !warmed(in) && !terminating(in) && in.Health != "Unhealthy" {
			in.Health, in.Replace = "Unhealthy", true
		}
	}
	if warmed(in) {
		r.stepWarmLocked(g, in, now)
		return
	}
	switch in.Lifecycle {
	case "Pending":
		r.enterHookLocked(g, in, now, "autoscaling:EC2_INSTANCE_LAUNCHING", "Pending")
	case "Pending:Proceed":
		if in.State == "running" {
			in.Lifecycle = "InService"
		}
	case "Terminating":
		r.enterHookLocked(g, in, now, "autoscaling:EC2_INSTANCE_TERMINATING", "Terminating")
	case "Terminating:Proceed":
		r.beginTerminateLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
	}
}

// enterHookLocked runs the group's first hook of transition on a member
// entering state (Pending, Terminating, or their Warmed: forms): it waits in
// state:Wait, or goes on to state:Proceed without a hook (and, terminating,
// when EC2 already shuts the instance down).
func (r *Region) enterHookLocked(g *group, in *instance, now time.Time, transition, state string) {
	dying := in.State == "shutting-down" || in.State == "terminated"
	if h := firstHook(g, transition); h != nil && !(dying && transition == "autoscaling:EC2_INSTANCE_TERMINATING") {
		r.startHookLocked(in, h, now, state+":Wait")
		return
	}
	in.Lifecycle = state + ":Proceed"
	r.stepMemberLocked(g, in, now)
}

func (r *Region) startHookLocked(in *instance, h *hook, now time.Time, waitState string) {
	in.Lifecycle = waitState
	in.Hook = &activeHook{
		Name: h.Name, Transition: h.Transition, Token: newRequestID(), DefaultResult: h.DefaultResult,
		Deadline:       now.Add(r.delayExact(time.Duration(h.HeartbeatTimeout) * time.Second)),
		GlobalDeadline: now.Add(r.delayExact(time.Duration(globalTimeout(h)) * time.Second)),
	}
	r.scheduleHookTimeoutLocked(in)
	r.log.Info("lifecycle action waiting", "instance", in.ID, "hook", h.Name, "state", waitState)
}

// scheduleHookTimeoutLocked applies the default result at the deadline.
func (r *Region) scheduleHookTimeoutLocked(in *instance) {
	r.scheduleLocked("hook/"+in.ID, HookTimeout, max(0, time.Until(in.Hook.Deadline)), false, func() {
		if in.Hook != nil && in.Hook.Result == "" {
			r.log.Info("lifecycle action timed out", "instance", in.ID, "hook", in.Hook.Name, "result", in.Hook.DefaultResult)
			r.finishHookLocked(in, in.Hook.DefaultResult)
		}
	})
}

// finishHookLocked ends a lifecycle action. On launch CONTINUE proceeds and
// ABANDON terminates (without the termination hook); on termination either
// result proceeds with the termination.
func (r *Region) finishHookLocked(in *instance, result string) {
	r.cancelLocked("hook/" + in.ID)
	h := in.Hook
	in.Hook = nil
	g := r.w.Groups[in.Group]
	if h == nil || g == nil {
		return
	}
	now := time.Now()
	switch {
	case in.Lifecycle == "Pending:Wait" && result == "CONTINUE":
		in.Lifecycle = "Pending:Proceed"
	case in.Lifecycle == "Pending:Wait":
		in.Lifecycle, in.Health = "Terminating:Proceed", "Unhealthy"
	case in.Lifecycle == "Terminating:Wait":
		in.Lifecycle = "Terminating:Proceed"
	case in.Lifecycle == "Warmed:Pending:Wait" && result == "CONTINUE":
		in.Lifecycle = "Warmed:Pending:Proceed"
	case in.Lifecycle == "Warmed:Pending:Wait":
		in.Lifecycle, in.Health = "Warmed:Terminating:Proceed", "Unhealthy"
	case in.Lifecycle == "Warmed:Terminating:Wait":
		in.Lifecycle = "Warmed:Terminating:Proceed"
	}
	r.stepMemberLocked(g, in, now)
}
