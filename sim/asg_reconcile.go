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
	return strings.HasPrefix(in.Lifecycle, "Terminat")
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
	members := r.groupMembers(g)
	if g.Deleting {
		if len(members) == 0 {
			delete(r.w.Groups, g.Name)
		}
		return
	}
	// Healthy capacity: launching or in service, not marked for replacement.
	var healthy []*instance
	for _, in := range members {
		if (launching(in) || inService(in)) && !in.Replace {
			healthy = append(healthy, in)
		}
	}
	for n := len(healthy); n < g.Desired; n++ {
		in := r.launchForGroupLocked(g, healthy, now)
		healthy = append(healthy, in)
	}
	if extra := len(healthy) - g.Desired; extra > 0 {
		for _, in := range r.scaleInOrder(g, healthy)[:extra] {
			r.beginGroupTerminationLocked(g, in)
		}
	}
	// Replacements. With MinHealthyPercentage 100 the group launches first
	// and terminates the old instance only once the new ones are InService;
	// otherwise it terminates first.
	launchFirst := g.MinHealthy >= 100
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
		if launchFirst && ready < g.Desired {
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

// launchForGroupLocked launches into the zone with the fewest healthy
// instances, as the group balances zones. Ties go to the zone with fewer
// instances on their way out (a replacement avoids the zone its predecessor
// is leaving, which is what a singleton group usually shows), then to the
// zone listed first.
func (r *Region) launchForGroupLocked(g *group, healthy []*instance, now time.Time) *instance {
	count, leaving := map[string]int{}, map[string]int{}
	for _, in := range healthy {
		count[in.AZ]++
	}
	for _, in := range r.groupMembers(g) {
		if terminating(in) || in.Replace {
			leaving[in.AZ]++
		}
	}
	az := g.AZs[0]
	for _, z := range g.AZs {
		if count[z] < count[az] || count[z] == count[az] && leaving[z] < leaving[az] {
			az = z
		}
	}
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
	in.Group, in.Lifecycle, in.Health = g.Name, "Pending", "Healthy"
	r.log.Info("group launched instance", "group", g.Name, "instance", in.ID, "az", az)
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
		in.Lifecycle = "Terminated"
		return
	case "shutting-down":
		if !terminating(in) {
			r.cancelLocked("hook/" + in.ID)
			in.Hook = nil
			in.Health = "Unhealthy"
			in.Lifecycle = "Terminating:Proceed"
		}
	case "stopping", "stopped":
		if !terminating(in) && in.Health != "Unhealthy" {
			in.Health, in.Replace = "Unhealthy", true
		}
	}
	switch in.Lifecycle {
	case "Pending":
		if h := firstHook(g, "autoscaling:EC2_INSTANCE_LAUNCHING"); h != nil {
			r.startHookLocked(in, h, now, "Pending:Wait")
		} else {
			in.Lifecycle = "Pending:Proceed"
			r.stepMemberLocked(g, in, now)
		}
	case "Pending:Proceed":
		if in.State == "running" {
			in.Lifecycle = "InService"
		}
	case "Terminating":
		if h := firstHook(g, "autoscaling:EC2_INSTANCE_TERMINATING"); h != nil && in.State != "shutting-down" && in.State != "terminated" {
			r.startHookLocked(in, h, now, "Terminating:Wait")
		} else {
			in.Lifecycle = "Terminating:Proceed"
			r.stepMemberLocked(g, in, now)
		}
	case "Terminating:Proceed":
		r.beginTerminateLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
	}
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
	}
	r.stepMemberLocked(g, in, now)
}
