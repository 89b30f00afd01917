package sim

import "time"

// saveSoonLocked saves the state after a change: at once by default, or, with Options.SaveInterval, at
// most once per interval (the first change of an interval schedules the save; Close saves whatever is
// left). A region of thousands of resources (a mass-recovery benchmark) otherwise spends its time, under
// r.mu, encoding state.json after every call.
func (r *Region) saveSoonLocked() {
	iv := r.opts.SaveInterval
	if iv <= 0 {
		r.saveLocked()
		return
	}
	if r.savePending {
		return
	}
	r.savePending = true
	time.AfterFunc(iv, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.savePending = false
		if !r.closed {
			r.saveLocked()
		}
	})
}
