package sim

import "time"

// resumeLocked rebuilds what a restart lost: IMDS servers and block devices
// of live instances, and the timers of every transition that was under way
// (restarted with their full delay, except snapshots, volume modifications
// and lifecycle actions, which keep their recorded deadlines).
func (r *Region) resumeLocked() {
	for _, in := range r.w.Instances {
		switch in.State {
		case "pending":
			r.startIMDSLocked(in)
			r.scheduleRunning(in, r.delay(r.opts.Delays.InstanceStart))
		case "running":
			r.startIMDSLocked(in)
		case "stopping":
			r.startIMDSLocked(in)
			r.beginStopLocked(in, in.StateReason)
		case "shutting-down":
			r.startIMDSLocked(in)
			in.State = "running" // beginTerminateLocked starts from a live state
			r.beginTerminateLocked(in, in.StateReason)
		}
		if in.Hook != nil && in.Hook.Result == "" {
			r.scheduleHookTimeoutLocked(in)
		}
		if in.SpotAction != "" && in.State != "terminated" {
			r.scheduleSpotLocked(in)
		}
	}
	for _, v := range r.w.Volumes {
		if v.State == "creating" {
			d := r.opts.Delays.CreateVolume
			if v.SnapshotID != "" {
				d = r.opts.Delays.CreateVolumeFromSnapshot
			}
			r.scheduleVolumeCreated(v, r.delay(d))
		}
		if v.Mod != nil {
			r.scheduleModificationLocked(v)
		}
		r.scheduleInitLocked(v) // a restored volume still loading its blocks

		if a := v.Attachment; a != nil {
			in := r.w.Instances[a.InstanceID]
			switch a.State {
			case "attaching":
				r.scheduleAttached(v, r.delay(r.opts.Delays.Attach))
			case "detaching", "busy":
				r.beginDetachLocked(v)
			}
			if a.State != "attaching" && in != nil && deviceVisible(in) {
				r.addDeviceLocked(v)
			}
		}
	}
	for _, s := range r.w.Snapshots {
		if s.State == "pending" {
			r.scheduleSnapshotDone(s, max(0, time.Until(s.Start.Add(s.Duration))))
		}
	}
	r.resumeFastRestoresLocked()
}
