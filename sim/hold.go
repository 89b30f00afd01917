package sim

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Transition names a family of the simulator's timed state changes, for Hold
// and WaitHeld.
type Transition string

// The transitions a test can hold. Each is one timer per resource.
const (
	VolumeCreate      Transition = "volume-create"      // volume creating -> available
	VolumeAttach      Transition = "volume-attach"      // attachment attaching -> attached
	VolumeDetach      Transition = "volume-detach"      // attachment detaching -> gone, volume available
	VolumeModify      Transition = "volume-modify"      // modification modifying -> optimizing
	VolumeOptimize    Transition = "volume-optimize"    // modification optimizing -> completed
	SnapshotComplete  Transition = "snapshot-complete"  // snapshot pending -> completed
	InstanceStart     Transition = "instance-start"     // instance pending -> running
	InstanceStop      Transition = "instance-stop"      // instance stopping -> stopped
	InstanceTerminate Transition = "instance-terminate" // instance shutting-down -> terminated
	HookTimeout       Transition = "hook-timeout"       // Pending:Wait / Terminating:Wait -> the hook's default result
	SpotInterruption  Transition = "spot-interruption"  // a Spot notice's action is carried out
	VolumeInitialize  Transition = "volume-initialize"  // a restored volume's initialization reaches 100%
	FastRestoreEnable Transition = "fast-restore"       // fast snapshot restore enabling -> optimizing -> enabled, disabling -> disabled
)

var transitions = []Transition{VolumeCreate, VolumeAttach, VolumeDetach, VolumeModify, VolumeOptimize, SnapshotComplete,
	InstanceStart, InstanceStop, InstanceTerminate, HookTimeout, SpotInterruption, VolumeInitialize, FastRestoreEnable}

// hold is one active Hold call.
type hold struct {
	kind Transition
	id   string // "" for every resource
}

func (h *hold) matches(kind Transition, id string) bool {
	return h.kind == kind && (h.id == "" || h.id == id)
}

// Hold keeps transitions of kind on the resource id ("" or "*": on every
// resource) in their intermediate state until release is called, so a test
// can look at a volume creating, an attachment attaching, a snapshot pending
// or an instance in Pending:Wait for as long as it needs, and then let it go.
//
// Holding changes only when a change happens, never what it is: the timer
// runs as usual, and when its delay is over the change waits (a snapshot
// shows 99% meanwhile, as a slow one does on AWS). release applies every
// waiting change at once, in a fixed order, unless another Hold still
// covers it; a transition whose delay is not over yet keeps its timer. A call
// that replaces or cancels the transition while it waits (a heartbeat that
// restarts the hook timeout, DeleteSnapshot) does so as without the hold.
//
// A held transition is scheduled: WaitIdle waits for it. Holds belong to
// this Region value and are not saved; Close+New+Start resumes the
// transitions with none. Calling release more than once is harmless.
func (r *Region) Hold(kind Transition, id string) (release func()) {
	if id == "*" {
		id = ""
	}
	h := &hold{kind: kind, id: id}
	r.mu.Lock()
	r.holds = append(r.holds, h)
	r.mu.Unlock()
	released := false
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if released {
			return
		}
		released = true
		r.holds = slices.DeleteFunc(r.holds, func(x *hold) bool { return x == h })
		r.notifyLocked()
		r.releaseDueLocked()
	}
}

// ParseTransition checks a transition name (for the admin path).
func ParseTransition(s string) (Transition, error) {
	if t := Transition(s); slices.Contains(transitions, t) {
		return t, nil
	}
	return "", fmt.Errorf("sim: unknown transition %q (want one of %v)", s, transitions)
}

// WaitHeld returns the id of a resource whose transition of kind has run its
// delay and now waits for a Hold's release (id "" or "*": any resource, else
// only that one). It is how a test knows, without sleeping, that for example
// the agent has called CreateVolume and the volume is creating. It fails when
// ctx ends or the region closes first.
func (r *Region) WaitHeld(ctx context.Context, kind Transition, id string) (string, error) {
	if id == "*" {
		id = ""
	}
	for {
		r.mu.Lock()
		found := ""
		for _, st := range r.timers {
			if st.due && st.kind == kind && (id == "" || st.id == id) && (found == "" || st.id < found) {
				found = st.id
			}
		}
		ch, closed := r.changed, r.closed
		r.mu.Unlock()
		if found != "" {
			return found, nil
		}
		if closed {
			return "", errors.New("sim: region closed before a held transition was due")
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return "", fmt.Errorf("sim: wait for a held %s of %q: %w", kind, id, ctx.Err())
		}
	}
}

func (r *Region) heldLocked(st *simTimer) bool {
	for _, h := range r.holds {
		if h.matches(st.kind, st.id) {
			return true
		}
	}
	return false
}

// releaseDueLocked applies the waiting changes no Hold covers any more.
// Applying one may schedule or cancel others, so each is looked up again.
func (r *Region) releaseDueLocked() {
	if r.closed {
		return
	}
	var keys []string
	for k, st := range r.timers {
		if st.due && !r.heldLocked(st) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // the same order on every run
	for _, k := range keys {
		if st := r.timers[k]; st != nil && st.due && !r.heldLocked(st) {
			st.due = false
			r.fireLocked(k, st)
		}
	}
}
