package sim

import (
	"slices"
	"strings"
	"time"
)

// Warm pools, enough for a group of one, after "Decrease latency for
// applications with long boot times using warm pools"
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html),
// "Warm pool instance lifecycle"
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html) and the
// API reference of PutWarmPool, DescribeWarmPool and DeleteWarmPool:
//
//	into the pool: Warmed:Pending -> Warmed:Pending:Wait (launch hook) -> Warmed:Pending:Proceed
//	               -> Warmed:Stopped | Warmed:Running | Warmed:Hibernated (PoolState; stopped in EC2 unless Running)
//	out of it:     Warmed:* -> Pending -> Pending:Wait (launch hook again) -> Pending:Proceed -> InService
//	removed:       Warmed:Terminating -> Warmed:Terminating:Wait (termination hook) -> Warmed:Terminating:Proceed
//	               -> Warmed:Terminated
//
// The pool keeps max(MinSize, MaxGroupPreparedCapacity - desired) instances
// (MaxGroupPreparedCapacity unset: the group's MaxSize), as PutWarmPool's
// reference says. A launch takes a warmed instance of the zone it chose, else
// launches a new one; a warmed instance of another zone stays in the pool.
// Not modelled: instance reuse on scale in (ReuseOnScaleIn is stored and
// described only), hibernation (Hibernated stops the instance), the warm
// pool's own scaling activities.

// warmPool is a group's warm pool configuration.
type warmPool struct {
	MinSize     int    `json:"minSize"`
	MaxPrepared int    `json:"maxPrepared"` // -1: unset (the group's MaxSize)
	PoolState   string `json:"poolState"`   // Stopped, Running, Hibernated
	Reuse       bool   `json:"reuse,omitempty"`
	Deleting    bool   `json:"deleting,omitempty"` // Status PendingDelete
}

func init() {
	// The warm pool actions, next to the others of asgActions (actions.go).
	asgActions["PutWarmPool"] = func(r *Region, c *reqCtx) ([]node, *apiError) { return r.putWarmPool(c) }
	asgActions["DescribeWarmPool"] = func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeWarmPool(c) }
	asgActions["DeleteWarmPool"] = func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteWarmPool(c) }
}

// warmed says the instance is in the group's warm pool.
func warmed(in *instance) bool { return strings.HasPrefix(in.Lifecycle, "Warmed:") }

// warmPrefix is "Warmed:" for an instance of the warm pool, else "".
func warmPrefix(in *instance) string {
	if warmed(in) {
		return "Warmed:"
	}
	return ""
}

// warmMembers are the instances of the group's warm pool, oldest first.
func (r *Region) warmMembers(g *group) []*instance {
	var out []*instance
	for _, in := range r.w.Instances {
		if in.Group == g.Name && warmed(in) && in.Lifecycle != "Warmed:Terminated" {
			out = append(out, in)
		}
	}
	sortByCreation(out, func(in *instance) (time.Time, string) { return in.LaunchTime, in.ID })
	return out
}

// warmTarget is the lifecycle state a warmed instance ends in.
func warmTarget(g *group) string {
	if g.WarmPool == nil {
		return "Warmed:Stopped"
	}
	return "Warmed:" + g.WarmPool.PoolState
}

// warmReady says a warmed instance has finished its way into the pool.
func warmReady(in *instance) bool {
	switch in.Lifecycle {
	case "Warmed:Stopped", "Warmed:Running", "Warmed:Hibernated":
		return true
	}
	return false
}

// stepWarmLocked advances an instance of the warm pool.
func (r *Region) stepWarmLocked(g *group, in *instance, now time.Time) {
	switch in.Lifecycle {
	case "Warmed:Pending":
		r.enterHookLocked(g, in, now, "autoscaling:EC2_INSTANCE_LAUNCHING", "Warmed:Pending")
	case "Warmed:Pending:Proceed":
		target := warmTarget(g)
		switch {
		case target == "Warmed:Running" && in.State == "running":
			in.Lifecycle = target
		case target != "Warmed:Running" && in.State == "running":
			r.beginStopLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
		case target != "Warmed:Running" && in.State == "stopped":
			in.Lifecycle = target
		}
	case "Warmed:Terminating":
		r.enterHookLocked(g, in, now, "autoscaling:EC2_INSTANCE_TERMINATING", "Warmed:Terminating")
	case "Warmed:Terminating:Proceed":
		if in.State == "stopping" {
			return // terminated once stopped
		}
		r.beginTerminateLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
	}
	if in.State == "terminated" {
		in.Lifecycle = "Warmed:Terminated"
	}
}

// takeWarmLocked moves a warmed instance of az from the pool into the group
// (it is started if stopped and runs the launch hook again), or returns nil.
func (r *Region) takeWarmLocked(g *group, az string, now time.Time) *instance {
	if g.WarmPool == nil || g.WarmPool.Deleting {
		return nil
	}
	for _, in := range r.warmMembers(g) {
		if !warmReady(in) || in.AZ != az {
			continue
		}
		if in.State == "stopped" {
			in.State, in.StateReason = "pending", ""
			r.startIMDSLocked(in)
			r.scheduleRunning(in, r.delay(r.opts.Delays.InstanceStart))
		}
		in.Lifecycle = "Pending"
		r.log.Info("group took instance from its warm pool", "group", g.Name, "instance", in.ID, "az", az)
		r.stepMemberLocked(g, in, now)
		return in
	}
	return nil
}

// reconcileWarmPoolLocked keeps the pool at its size, and empties it when
// it is deleted.
func (r *Region) reconcileWarmPoolLocked(g *group, now time.Time) {
	wp := g.WarmPool
	if wp == nil || r.w.Groups[g.Name] != g {
		return
	}
	var live []*instance
	for _, in := range r.warmMembers(g) {
		if !terminating(in) {
			live = append(live, in)
		}
	}
	if wp.Deleting || g.Deleting {
		for _, in := range live {
			r.cancelLocked("hook/" + in.ID)
			in.Hook, in.Lifecycle = nil, "Warmed:Terminating"
			r.stepWarmLocked(g, in, now)
		}
		if len(r.warmMembers(g)) == 0 {
			g.WarmPool = nil
		}
		return
	}
	prepared := wp.MaxPrepared
	if prepared < 0 {
		prepared = g.Max
	}
	want := max(wp.MinSize, prepared-g.Desired, 0)
	for n := len(live); n < want; n++ {
		az := r.warmAZ(g, live)
		live = append(live, r.newGroupInstanceLocked(g, az, "Warmed:Pending", now))
	}
	if extra := len(live) - want; extra > 0 {
		for _, in := range slices.Backward(live) {
			if extra == 0 {
				break
			}
			r.cancelLocked("hook/" + in.ID)
			in.Hook, in.Lifecycle = nil, "Warmed:Terminating"
			r.stepWarmLocked(g, in, now)
			extra--
		}
	}
}

// warmAZ balances the pool's launches over the group's zones, counting the
// group's instances and the pool's: a group of one in one zone gets its
// warmed instance in another.
func (r *Region) warmAZ(g *group, live []*instance) string {
	count := map[string]int{}
	for _, in := range append(r.groupMembers(g), live...) {
		if !terminating(in) {
			count[in.AZ]++
		}
	}
	az := g.AZs[0]
	for _, z := range g.AZs {
		if count[z] < count[az] {
			az = z
		}
	}
	return az
}

func (r *Region) putWarmPool(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	if g.WarmPool != nil && g.WarmPool.Deleting {
		return nil, asgValidation("The warm pool of AutoScalingGroup %s is being deleted.", g.Name)
	}
	wp := warmPool{MaxPrepared: -1, PoolState: "Stopped"}
	if g.WarmPool != nil {
		wp = *g.WarmPool
	}
	if c.p.has("MinSize") {
		if wp.MinSize, aerr = c.p.integer("MinSize", 0); aerr != nil {
			return nil, aerr
		}
		if wp.MinSize < 0 {
			return nil, asgValidation("1 validation error detected: Value '%d' at 'minSize' failed to satisfy constraint: Member must have value greater than or equal to 0", wp.MinSize)
		}
	}
	if c.p.has("MaxGroupPreparedCapacity") {
		if wp.MaxPrepared, aerr = c.p.integer("MaxGroupPreparedCapacity", -1); aerr != nil {
			return nil, aerr
		}
		if wp.MaxPrepared < -1 {
			return nil, asgValidation("1 validation error detected: Value '%d' at 'maxGroupPreparedCapacity' failed to satisfy constraint: Member must have value greater than or equal to -1", wp.MaxPrepared)
		}
	}
	if s := c.p.get("PoolState"); s != "" {
		if !slices.Contains([]string{"Stopped", "Running", "Hibernated"}, s) {
			return nil, asgValidation("1 validation error detected: Value '%s' at 'poolState' failed to satisfy constraint: Member must satisfy enum value set: [Hibernated, Running, Stopped]", s)
		}
		wp.PoolState = s
	}
	if c.p.has("InstanceReusePolicy.ReuseOnScaleIn") {
		wp.Reuse = c.p.boolean("InstanceReusePolicy.ReuseOnScaleIn")
	}
	g.WarmPool = &wp
	return nil, nil
}

func (r *Region) describeWarmPool(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	if g.WarmPool == nil {
		return []node{list("Instances", "member", nil)}, nil
	}
	pg, next, aerr := pageWith(c.p, "MaxRecords", "ValidationError", r.warmMembers(g), 1, 50)
	if aerr != nil {
		return nil, aerr
	}
	var ins []node
	for _, in := range pg {
		ins = append(ins, r.groupInstanceNode(g, in))
	}
	wp := g.WarmPool
	status := node{skip: true}
	if wp.Deleting {
		status = tx("Status", "PendingDelete")
	}
	maxPrepared := node{skip: true}
	if wp.MaxPrepared >= 0 {
		maxPrepared = num("MaxGroupPreparedCapacity", wp.MaxPrepared)
	}
	return []node{
		el("WarmPoolConfiguration", maxPrepared, num("MinSize", wp.MinSize), tx("PoolState", wp.PoolState), status,
			el("InstanceReusePolicy", boolean("ReuseOnScaleIn", wp.Reuse))),
		list("Instances", "member", ins), opt("NextToken", next),
	}, nil
}

// deleteWarmPool marks the pool PendingDelete and terminates its instances
// (through the termination hook); the pool goes once they are gone.
// ForceDelete terminates them without waiting for hooks.
func (r *Region) deleteWarmPool(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	if g.WarmPool == nil {
		return nil, asgValidation("No warm pool found for AutoScalingGroup %s.", g.Name)
	}
	g.WarmPool.Deleting = true
	if c.p.boolean("ForceDelete") {
		for _, in := range r.warmMembers(g) {
			r.cancelLocked("hook/" + in.ID)
			in.Hook, in.Lifecycle = nil, "Warmed:Terminating:Proceed"
			r.stepWarmLocked(g, in, time.Now())
		}
	}
	return nil, nil
}
