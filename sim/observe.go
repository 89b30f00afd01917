package sim

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Test probes: an observer of the changes a safety rule is about, and holds on API calls. Neither is
// an AWS behaviour: they let a test see every moment of a run (not only the ones it polls) and stop a
// client at a chosen call, to kill it there.

// Observation is one change of an Elastic IP's association, or a DetachVolume, as the region made it.
type Observation struct {
	Time time.Time
	Kind string // ObserveAssociate, ObserveDisassociate or ObserveDetach
	// The address (associate, disassociate).
	AllocationID, PublicIP, AssociationID string
	// Associate: the new holder; disassociate: the instance it left; detach: the volume's instance.
	InstanceID string
	// Associate: the instance the address was taken from (AllowReassociation), "" when it was free.
	Replaced string
	// Associate, disassociate: every instance whose public IP is the address right after the change,
	// read from the instances (what DescribeInstances and the instances' metadata show).
	Holders []string
	// Detach: the volume, whether its device was mounted when DetachVolume was called (in the
	// simulator's mount namespace: the instances' devices are loop devices of this host), and Force.
	VolumeID string
	Mounted  bool
	Force    bool
	Caller   string
}

// The kinds of Observation.
const (
	ObserveAssociate    = "associate"
	ObserveDisassociate = "disassociate"
	ObserveDetach       = "detach"
)

// probes are the observers and the call holds of a Region.
type probes struct {
	mu        sync.Mutex
	observers map[int]func(Observation)
	next      int
	holds     []*callHold
	changed   chan struct{} // closed and replaced when a call is held or let go
}

// callHold is one active HoldCalls.
type callHold struct {
	action  string
	after   bool
	seen    []string      // callers of every call held so far
	release chan struct{} // closed by release
}

// Observe calls fn with every association change of an Elastic IP and every DetachVolume, in the order
// they happen, under the region's lock (fn must be quick and must not call the Region). stop ends it.
func (r *Region) Observe(fn func(Observation)) (stop func()) {
	r.probes.mu.Lock()
	defer r.probes.mu.Unlock()
	if r.probes.observers == nil {
		r.probes.observers = map[int]func(Observation){}
	}
	id := r.probes.next
	r.probes.next++
	r.probes.observers[id] = fn
	return func() {
		r.probes.mu.Lock()
		defer r.probes.mu.Unlock()
		delete(r.probes.observers, id)
	}
}

// observeLocked reports o to the observers; r.mu is held.
func (r *Region) observeLocked(o Observation) {
	r.probes.mu.Lock()
	fns := make([]func(Observation), 0, len(r.probes.observers))
	ids := make([]int, 0, len(r.probes.observers))
	for id := range r.probes.observers {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		fns = append(fns, r.probes.observers[id])
	}
	r.probes.mu.Unlock()
	for _, fn := range fns {
		fn(o)
	}
}

// observeAddressLocked reports a change of a's association made at now.
func (r *Region) observeAddressLocked(kind string, a *address, instanceID, replaced string, now time.Time) {
	if !r.observed() {
		return
	}
	var holders []string
	for _, in := range r.w.Instances {
		if r.publicIP(in) == a.PublicIP {
			holders = append(holders, in.ID)
		}
	}
	slices.Sort(holders)
	r.observeLocked(Observation{Time: now, Kind: kind, AllocationID: a.AllocationID, PublicIP: a.PublicIP,
		AssociationID: a.AssociationID, InstanceID: instanceID, Replaced: replaced, Holders: holders})
}

// observeDetachLocked reports a DetachVolume of v that starts a detach.
func (r *Region) observeDetachLocked(v *volume, c *reqCtx, force bool) {
	if !r.observed() {
		return
	}
	r.observeLocked(Observation{Time: c.now, Kind: ObserveDetach, VolumeID: v.ID, InstanceID: v.Attachment.InstanceID,
		Mounted: r.deviceMountedLocked(v), Force: force, Caller: c.caller})
}

func (r *Region) observed() bool {
	r.probes.mu.Lock()
	defer r.probes.mu.Unlock()
	return len(r.probes.observers) > 0
}

// HoldCalls holds every API call of action until release: before it is carried out (the request is
// in flight), or, with after, once it is carried out and before it is answered (the answer is in
// flight). WaitCall says when one is held, so a test can kill the client at that call. A call held
// before it is carried out whose client goes away meanwhile is dropped, not carried out (the call log
// shows it with code ClientGone); one held after is carried out either way. release lets every held
// call go on; calling it more than once is harmless.
func (r *Region) HoldCalls(action string, after bool) (release func()) {
	h := &callHold{action: action, after: after, release: make(chan struct{})}
	p := &r.probes
	p.mu.Lock()
	p.holds = append(p.holds, h)
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.holds = slices.DeleteFunc(p.holds, func(x *callHold) bool { return x == h })
			p.mu.Unlock()
			close(h.release)
		})
	}
}

// WaitCall returns the caller (access key) of the first call of action a HoldCalls holds, once it is
// held, or fails when ctx ends first. Calls held and let go before WaitCall count too.
func (r *Region) WaitCall(ctx context.Context, action string) (string, error) {
	p := &r.probes
	for {
		p.mu.Lock()
		for _, h := range p.holds {
			if h.action == action && len(h.seen) > 0 {
				caller := h.seen[0]
				p.mu.Unlock()
				return caller, nil
			}
		}
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("sim: wait for a held %s call: %w", action, ctx.Err())
		}
	}
}

// holdCall blocks a call of action by caller while a HoldCalls of that phase (after: carried out)
// covers it. It returns false when the client went away while the call was held.
func (r *Region) holdCall(ctx context.Context, action, caller string, after bool) bool {
	p := &r.probes
	p.mu.Lock()
	var h *callHold
	for _, x := range p.holds {
		if x.action == action && x.after == after {
			h = x
			break
		}
	}
	if h == nil {
		p.mu.Unlock()
		return true
	}
	h.seen = append(h.seen, caller)
	p.notifyLocked()
	p.mu.Unlock()
	gone := false
	select {
	case <-h.release:
	case <-ctx.Done():
		gone = true
	}
	return !gone
}

func (p *probes) notifyLocked() {
	if p.changed != nil {
		close(p.changed)
	}
	p.changed = make(chan struct{})
}
