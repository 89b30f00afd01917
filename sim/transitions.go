package sim

import (
	"sort"
	"time"
)

// TransitionRecord is one timed state change the region carried out: a volume that went from creating to
// available, an attachment from attaching to attached, a snapshot from pending to completed, ... Start is
// when the change began (the call that started it, or a restart that resumed it), End when it took effect
// (after its delay, or at a Hold's release). Delay is the delay drawn for it, after Speed and Jitter.
//
// The records are what the region actually did, jitter included, so a benchmark can compute the least
// time a client could have taken (the transitions on its critical path) for the very run it measured,
// instead of from the configured delays. A change that was replaced or cancelled before it took effect
// (a lifecycle hook's timeout renewed by a heartbeat, a snapshot deleted while pending) is not recorded.
// Only transitions count (see scheduleLocked): hook timeouts and Spot deadlines are not recorded.
type TransitionRecord struct {
	Kind  Transition    `json:"kind"`
	ID    string        `json:"id"`
	Start time.Time     `json:"start"`
	End   time.Time     `json:"end"`
	Delay time.Duration `json:"delay"`
}

// Took is how long the change was under way.
func (t TransitionRecord) Took() time.Duration { return t.End.Sub(t.Start) }

// transitionLog keeps the transitions under way (by timer key) and those done, under r.mu.
type transitionLog struct {
	running map[string]TransitionRecord
	done    []TransitionRecord
}

// transitionBeganLocked notes a transition's start when its timer is scheduled.
func (r *Region) transitionBeganLocked(key string, st *simTimer, d time.Duration) {
	if !st.transition {
		return
	}
	if r.tlog.running == nil {
		r.tlog.running = map[string]TransitionRecord{}
	}
	r.tlog.running[key] = TransitionRecord{Kind: st.kind, ID: st.id, Start: time.Now(), Delay: d}
}

// transitionEndedLocked records a transition when its change is applied.
func (r *Region) transitionEndedLocked(key string, st *simTimer) {
	rec, ok := r.tlog.running[key]
	if !ok || !st.transition || rec.Kind != st.kind {
		return
	}
	delete(r.tlog.running, key)
	rec.End = time.Now()
	r.tlog.done = append(r.tlog.done, rec)
}

// Transitions returns the transitions carried out since the region started (or since
// ResetTransitions), in the order they took effect.
func (r *Region) Transitions() []TransitionRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]TransitionRecord(nil), r.tlog.done...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].End.Before(out[j].End) })
	return out
}

// ResetTransitions forgets the transitions done so far (those under way are still recorded when they end).
func (r *Region) ResetTransitions() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tlog.done = nil
}
