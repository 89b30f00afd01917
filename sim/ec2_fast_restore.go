package sim

import (
	"fmt"
	"slices"
	"time"
)

// Fast snapshot restore (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-fast-snapshot-restore.html):
// enabled per snapshot and Availability Zone, a volume created from the snapshot in that zone is fully
// initialized at creation. Its states
// (https://docs.aws.amazon.com/ebs/latest/userguide/view-fsr-enabled-snapshots.html):
//
//	enabling    a request was made to enable it
//	optimizing  being enabled: "It takes 60 minutes per TiB to optimize a snapshot"
//	enabled     a volume created now is fully initialized
//	disabling   a request was made to disable it
//	disabled
//
// The sim spends Delays.FastSnapshotRestore in enabling and in disabling, and 60 minutes per TiB of the
// snapshot's size (at least Delays.FastSnapshotRestore) in optimizing, each divided by Speed. Volume
// creation credits (how many volumes per hour get the full benefit) are not modelled: every volume made
// from an enabled snapshot is fully initialized. Deleting a snapshot disables it: "When you delete a
// snapshot that you own, fast snapshot restore is automatically disabled for that snapshot"
// (https://docs.aws.amazon.com/ebs/latest/userguide/manage-fsr-enable.html).

// fastRestore is the fast snapshot restore of one snapshot in one zone.
type fastRestore struct {
	SnapshotID     string    `json:"snapshotId"`
	AZ             string    `json:"az"`
	State          string    `json:"state"`
	Reason         string    `json:"reason"`
	EnablingTime   time.Time `json:"enablingTime,omitzero"`
	OptimizingTime time.Time `json:"optimizingTime,omitzero"`
	EnabledTime    time.Time `json:"enabledTime,omitzero"`
	DisablingTime  time.Time `json:"disablingTime,omitzero"`
	DisabledTime   time.Time `json:"disabledTime,omitzero"`
}

// The reasons AWS gives for a state: "Client.UserInitiated - The state successfully transitioned to
// enabling or disabling", "Client.UserInitiated - Lifecycle state transition - ... optimizing, enabled, or
// disabled" (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeFastSnapshotRestoreSuccessItem.html).
const (
	fsrUserInitiated = "Client.UserInitiated"
	fsrLifecycle     = "Client.UserInitiated - Lifecycle state transition"
)

func fastRestoreKey(snapshotID, az string) string { return snapshotID + "/" + az }

// fastRestoreEnabledLocked reports whether fast snapshot restore of the snapshot is enabled in az.
func (r *Region) fastRestoreEnabledLocked(snapshotID, az string) bool {
	f := r.w.FastRestores[fastRestoreKey(snapshotID, az)]
	return f != nil && f.State == "enabled"
}

// fastRestoreRequest reads AvailabilityZone.N and SourceSnapshotId.N, both required.
func fastRestoreRequest(c *reqCtx) ([]string, []string, *apiError) {
	azs, snaps := c.p.list("AvailabilityZone"), c.p.list("SourceSnapshotId")
	if len(azs) == 0 {
		return nil, nil, badRequest("MissingParameter", "The request must contain the parameter AvailabilityZone")
	}
	if len(snaps) == 0 {
		return nil, nil, badRequest("MissingParameter", "The request must contain the parameter SourceSnapshotId")
	}
	return azs, snaps, nil
}

// stateError is one unsuccessful snapshot and zone of Enable/DisableFastSnapshotRestores, which answer
// per item rather than failing the call.
type stateError struct{ az, code, msg string }

// changeFastRestores is EnableFastSnapshotRestores (enable true) and DisableFastSnapshotRestores.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EnableFastSnapshotRestores.html
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DisableFastSnapshotRestores.html
func (r *Region) changeFastRestores(c *reqCtx, enable bool) ([]node, *apiError) {
	azs, snaps, aerr := fastRestoreRequest(c)
	if aerr != nil {
		return nil, aerr
	}
	var ok, bad []node
	for _, sid := range snaps {
		s, aerr := r.lookupSnapshot(c, sid)
		var errs []stateError
		for _, az := range azs {
			switch {
			case aerr != nil:
				errs = append(errs, stateError{az, aerr.Code, aerr.Message})
			case !r.validAZ(az):
				errs = append(errs, stateError{az, "InvalidParameterValue", fmt.Sprintf("Invalid availability zone: [%s]", az)})
			case enable:
				ok = append(ok, el("", fastRestoreFields(r, r.enableFastRestoreLocked(s, az, c.now))...))
			default:
				f := r.w.FastRestores[fastRestoreKey(sid, az)]
				if f == nil || f.State == "disabled" {
					errs = append(errs, stateError{az, "IncorrectState", fmt.Sprintf("Fast snapshot restores are not enabled for snapshot %s in %s.", sid, az)})
					continue
				}
				r.disableFastRestoreLocked(f, c.now)
				ok = append(ok, el("", fastRestoreFields(r, f)...))
			}
		}
		if len(errs) > 0 {
			var items []node
			for _, e := range errs {
				items = append(items, el("", tx("availabilityZone", e.az), el("error", tx("code", e.code), tx("message", e.msg))))
			}
			bad = append(bad, el("", tx("snapshotId", sid), list("fastSnapshotRestoreStateErrorSet", "item", items)))
		}
	}
	return []node{list("successful", "item", ok), list("unsuccessful", "item", bad)}, nil
}

// enableFastRestoreLocked starts enabling fast snapshot restore of s in az; one already enabled, or on its
// way there, stays as it is.
func (r *Region) enableFastRestoreLocked(s *snapshot, az string, now time.Time) *fastRestore {
	key := fastRestoreKey(s.ID, az)
	f := r.w.FastRestores[key]
	if f != nil && slices.Contains([]string{"enabling", "optimizing", "enabled"}, f.State) {
		return f
	}
	f = &fastRestore{SnapshotID: s.ID, AZ: az, State: "enabling", Reason: fsrUserInitiated, EnablingTime: now}
	r.w.FastRestores[key] = f
	r.scheduleFastRestoreLocked(f, s.VolumeSize)
	return f
}

func (r *Region) disableFastRestoreLocked(f *fastRestore, now time.Time) {
	if f.State == "disabling" {
		return
	}
	f.State, f.Reason, f.DisablingTime = "disabling", fsrUserInitiated, now
	r.scheduleFastRestoreLocked(f, 0)
}

// scheduleFastRestoreLocked moves f to its next state after its delay: enabling -> optimizing ->
// enabled, disabling -> disabled. sizeGiB is the snapshot's, for the optimizing time.
func (r *Region) scheduleFastRestoreLocked(f *fastRestore, sizeGiB int) {
	step := r.opts.Delays.FastSnapshotRestore
	var d time.Duration
	var next func(now time.Time)
	switch f.State {
	case "enabling":
		d = step
		next = func(now time.Time) { f.State, f.Reason, f.OptimizingTime = "optimizing", fsrLifecycle, now }
	case "optimizing":
		d = max(step, time.Duration(float64(sizeGiB)/1024*float64(time.Hour)))
		next = func(now time.Time) { f.State, f.Reason, f.EnabledTime = "enabled", fsrLifecycle, now }
	case "disabling":
		d = step
		next = func(now time.Time) { f.State, f.Reason, f.DisabledTime = "disabled", fsrLifecycle, now }
	default:
		return
	}
	key := fastRestoreKey(f.SnapshotID, f.AZ)
	r.scheduleLocked("fsr/"+key, FastRestoreEnable, r.delay(d), true, func() {
		if r.w.FastRestores[key] != f {
			return
		}
		next(time.Now())
		r.scheduleFastRestoreLocked(f, sizeGiB)
	})
}

// dropFastRestoresLocked forgets the fast snapshot restores of a deleted snapshot.
func (r *Region) dropFastRestoresLocked(snapshotID string) {
	for key, f := range r.w.FastRestores {
		if f.SnapshotID == snapshotID {
			r.cancelLocked("fsr/" + key)
			delete(r.w.FastRestores, key)
		}
	}
}

// resumeFastRestoresLocked restarts the timers of fast snapshot restores under way.
func (r *Region) resumeFastRestoresLocked() {
	for _, f := range r.w.FastRestores {
		size := 0
		if s := r.w.Snapshots[f.SnapshotID]; s != nil {
			size = s.VolumeSize
		}
		r.scheduleFastRestoreLocked(f, size)
	}
}

func fastRestoreFields(r *Region, f *fastRestore) []node {
	return []node{
		tx("snapshotId", f.SnapshotID), tx("availabilityZone", f.AZ), tx("availabilityZoneId", r.azID(f.AZ)),
		tx("state", f.State), tx("stateTransitionReason", f.Reason), tx("ownerId", accountID),
		optTime("enablingTime", f.EnablingTime), optTime("optimizingTime", f.OptimizingTime), optTime("enabledTime", f.EnabledTime),
		optTime("disablingTime", f.DisablingTime), optTime("disabledTime", f.DisabledTime),
	}
}

// optTime is a timestamp element, left out when t is zero.
func optTime(name string, t time.Time) node {
	if t.IsZero() {
		return opt(name, "")
	}
	return ts(name, t)
}

// describeFastSnapshotRestores lists the fast snapshot restores, filtered by snapshot-id,
// availability-zone, owner-id and state, and paginated (MaxResults 0 to 200).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeFastSnapshotRestores.html
func (r *Region) describeFastSnapshotRestores(c *reqCtx) ([]node, *apiError) {
	all := make([]*fastRestore, 0, len(r.w.FastRestores))
	for _, f := range r.w.FastRestores {
		all = append(all, f)
	}
	sortByCreation(all, func(f *fastRestore) (time.Time, string) { return f.EnablingTime, fastRestoreKey(f.SnapshotID, f.AZ) })
	matched, aerr := matching(c.p.filters(), all, func(f *fastRestore) (map[string]string, fieldFunc) {
		return nil, func(name string) ([]string, bool) {
			switch name {
			case "snapshot-id":
				return []string{f.SnapshotID}, true
			case "availability-zone":
				return []string{f.AZ}, true
			case "owner-id":
				return []string{accountID}, true
			case "state":
				return []string{f.State}, true
			}
			return nil, false
		}
	})
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, matched, 0, 200)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, f := range pg {
		items = append(items, el("", fastRestoreFields(r, f)...))
	}
	return []node{list("fastSnapshotRestoreSet", "item", items), opt("nextToken", next)}, nil
}
