package sim

import (
	"fmt"
	"time"
)

// EBS snapshot lock (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-snapshot-lock.html,
// https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-concepts.html): "While a snapshot is
// locked, it can't be deleted by any user, regardless of their IAM permissions."
//
//   - governance mode: locked at once, no cooling-off period; it can be unlocked (UnlockSnapshot) or its
//     lock changed at any time;
//   - compliance mode: after an optional cooling-off period (1 to 72 hours, during which it is
//     compliance-cooloff and behaves like governance) it can be neither unlocked nor shortened;
//   - a lock lasts LockDuration days (1 to 36500) or until ExpirationDate; "If you lock a snapshot that is
//     in the pending state, the lock duration starts only once the snapshot enters the completed state"
//     (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockedSnapshotsInfo.html); then its
//     state is expired and the snapshot can be deleted.
//
// Lock durations are calendar time: Speed does not divide them. DeleteSnapshot of a locked snapshot fails
// with a 400 whose code AWS does not document; the sim answers SnapshotLocked (handover never relies on
// the code: its retention reads DescribeLockedSnapshots and leaves locked snapshots alone).

// snapshotLock is a snapshot's lock.
type snapshotLock struct {
	Mode          string    `json:"mode"`                   // governance, compliance
	Days          int       `json:"days,omitempty"`         // LockDuration; 0 when ExpirationDate was given
	Until         time.Time `json:"until,omitzero"`         // ExpirationDate
	CoolOffHours  int       `json:"coolOffHours,omitempty"` // compliance only
	Created       time.Time `json:"created"`                // LockSnapshot
	DurationStart time.Time `json:"durationStart,omitzero"` // when the snapshot was completed (or locked, if later)
}

const (
	lockGovernance = "governance"
	lockCompliance = "compliance"
	maxLockDays    = 36500
)

// expires is when the lock ends; zero while it has not started (a pending snapshot's lock duration).
func (l *snapshotLock) expires() time.Time {
	if !l.Until.IsZero() {
		return l.Until
	}
	if l.DurationStart.IsZero() {
		return time.Time{}
	}
	return l.DurationStart.AddDate(0, 0, l.Days)
}

// coolOffEnds is the end of a compliance lock's cooling-off period (zero without one).
func (l *snapshotLock) coolOffEnds() time.Time {
	if l.Mode != lockCompliance || l.CoolOffHours == 0 {
		return time.Time{}
	}
	return l.Created.Add(time.Duration(l.CoolOffHours) * time.Hour)
}

// state is the lock's state at now: compliance-cooloff, governance, compliance or expired.
func (l *snapshotLock) state(now time.Time) string {
	if exp := l.expires(); !exp.IsZero() && !now.Before(exp) {
		return "expired"
	}
	if end := l.coolOffEnds(); !end.IsZero() && now.Before(end) {
		return "compliance-cooloff"
	}
	return l.Mode
}

// locked reports whether s cannot be deleted at now.
func (s *snapshot) locked(now time.Time) bool {
	return s.Lock != nil && s.Lock.state(now) != "expired"
}

// startLockLocked starts the lock duration of a snapshot that has just completed.
func (s *snapshot) startLockLocked(now time.Time) {
	if s.Lock != nil && s.Lock.DurationStart.IsZero() {
		s.Lock.DurationStart = now
	}
}

// lockSnapshot locks a snapshot, or changes the lock of one already locked as far as its state allows.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html
func (r *Region) lockSnapshot(c *reqCtx) ([]node, *apiError) {
	p := c.p
	if p.get("SnapshotId") == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter SnapshotId")
	}
	s, aerr := r.lookupSnapshot(c, p.get("SnapshotId"))
	if aerr != nil {
		return nil, aerr
	}
	if s.State == "error" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("Snapshot %s is in the error state and cannot be locked.", s.ID))
	}
	mode := p.get("LockMode")
	switch mode {
	case "":
		return nil, badRequest("MissingParameter", "The request must contain the parameter LockMode")
	case lockGovernance, lockCompliance:
	default:
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter lockMode is invalid. Allowed values are [governance, compliance].", mode))
	}
	days, aerr := p.integer("LockDuration", 0)
	if aerr != nil {
		return nil, aerr
	}
	var until time.Time
	if e := p.get("ExpirationDate"); e != "" {
		t, err := time.Parse(time.RFC3339, e)
		if err != nil {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter expirationDate is invalid.", e))
		}
		until = t
	}
	switch {
	case days != 0 && !until.IsZero():
		return nil, badRequest("InvalidParameterCombination", "Specify either lockDuration or expirationDate, not both.")
	case days == 0 && until.IsZero():
		return nil, badRequest("MissingParameter", "The request must contain the parameter lockDuration or expirationDate")
	case days != 0 && (days < 1 || days > maxLockDays):
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%d) for parameter lockDuration is invalid. It must be between 1 and %d days.", days, maxLockDays))
	case !until.IsZero() && !until.After(c.now):
		return nil, badRequest("InvalidParameterValue", "The expirationDate must be in the future.")
	}
	coolOff, aerr := p.integer("CoolOffPeriod", 0)
	if aerr != nil {
		return nil, aerr
	}
	switch {
	case coolOff != 0 && mode == lockGovernance:
		return nil, badRequest("InvalidParameterCombination", "The parameter coolOffPeriod is supported only in compliance mode.")
	case coolOff != 0 && (coolOff < 1 || coolOff > 72):
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%d) for parameter coolOffPeriod is invalid. It must be between 1 and 72 hours.", coolOff))
	}
	next := &snapshotLock{Mode: mode, Days: days, Until: until, CoolOffHours: coolOff, Created: c.now}
	if old := s.Lock; old != nil && old.state(c.now) != "expired" {
		next.Created, next.DurationStart = old.Created, old.DurationStart
		if old.state(c.now) == lockCompliance {
			// Past the cooling-off period a compliance lock can only be extended.
			if mode != lockCompliance || (!next.expires().IsZero() && next.expires().Before(old.expires())) || coolOff != 0 {
				return nil, badRequest("IncorrectState", fmt.Sprintf("Snapshot %s is locked in compliance mode: its lock can only be extended.", s.ID))
			}
		}
		if coolOff == 0 {
			next.CoolOffHours = old.CoolOffHours
		}
	}
	if s.State == "completed" && next.DurationStart.IsZero() {
		next.DurationStart = c.now
	}
	s.Lock = next
	return append([]node{tx("snapshotId", s.ID)}, lockFields(s.Lock, c.now)...), nil
}

// unlockSnapshot removes a governance lock, or a compliance lock still in its cooling-off period.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_UnlockSnapshot.html
func (r *Region) unlockSnapshot(c *reqCtx) ([]node, *apiError) {
	s, aerr := r.lookupSnapshot(c, c.p.get("SnapshotId"))
	if aerr != nil {
		return nil, aerr
	}
	if s.Lock == nil {
		return nil, badRequest("IncorrectState", fmt.Sprintf("Snapshot %s is not locked.", s.ID))
	}
	if s.Lock.state(c.now) == lockCompliance {
		return nil, badRequest("IncorrectState", fmt.Sprintf("Snapshot %s is locked in compliance mode and its cooling-off period has ended: it cannot be unlocked.", s.ID))
	}
	s.Lock = nil
	return []node{tx("snapshotId", s.ID)}, nil
}

func lockFields(l *snapshotLock, now time.Time) []node {
	out := []node{tx("lockState", l.state(now)), ts("lockCreatedOn", l.Created)}
	if l.Days > 0 {
		out = append(out, num("lockDuration", l.Days))
	}
	if l.CoolOffHours > 0 {
		out = append(out, num("coolOffPeriod", l.CoolOffHours), ts("coolOffPeriodExpiresOn", l.coolOffEnds()))
	}
	out = append(out, optTime("lockDurationStartTime", l.DurationStart), optTime("lockExpiresOn", l.expires()))
	return out
}

// describeLockedSnapshots lists the snapshots that have a lock (expired ones included), by SnapshotId.N or
// all, filtered by lock-state, paginated (MaxResults 5 to 1000).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeLockedSnapshots.html
func (r *Region) describeLockedSnapshots(c *reqCtx) ([]node, *apiError) {
	snaps, aerr := selectVisible(r, c, c.p.list("SnapshotId"), r.w.Snapshots, r.findSnapshot, func(s *snapshot) (time.Time, string) { return s.Start, s.ID },
		"InvalidSnapshot.NotFound", func(missing []string) string {
			return fmt.Sprintf("The snapshot '%s' does not exist.", missing[0])
		})
	if aerr != nil {
		return nil, aerr
	}
	var locked []*snapshot
	for _, s := range snaps {
		if s.Lock != nil {
			locked = append(locked, s)
		}
	}
	matched, aerr := matching(c.p.filters(), locked, func(s *snapshot) (map[string]string, fieldFunc) {
		return nil, func(name string) ([]string, bool) {
			if name == "lock-state" {
				return []string{s.Lock.state(c.now)}, true
			}
			return nil, false
		}
	})
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, matched, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, s := range pg {
		items = append(items, el("", append([]node{tx("ownerId", accountID), tx("snapshotId", s.ID)}, lockFields(s.Lock, c.now)...)...))
	}
	return []node{list("snapshotSet", "item", items), opt("nextToken", next)}, nil
}
