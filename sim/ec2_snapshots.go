package sim

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func (r *Region) findSnapshot(id string) (*snapshot, *apiError) {
	if !validID("snap", id) {
		return nil, badRequest("InvalidSnapshotID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"snap-...\")", id))
	}
	s := r.w.Snapshots[id]
	if s == nil {
		return nil, snapshotNotFound(id)
	}
	return s, nil
}

func snapshotNotFound(id string) *apiError {
	return badRequest("InvalidSnapshot.NotFound", fmt.Sprintf("The snapshot '%s' does not exist.", id))
}

// createSnapshot copies the volume image at this instant: like EBS, the
// snapshot is point-in-time and crash-consistent, whatever the instance is
// doing; the data that was not yet written to the device (page cache,
// unfrozen filesystems) is not in it.
func (r *Region) createSnapshot(c *reqCtx) ([]node, *apiError) {
	if c.p.get("VolumeId") == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter VolumeId")
	}
	v, aerr := r.lookupVolume(c, c.p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if v.State == "creating" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("The volume '%s' is 'creating'.", v.ID))
	}
	if aerr := r.snapshotAllowed(v, c); aerr != nil {
		return nil, aerr
	}
	tags, aerr := c.p.specTags("snapshot")
	if aerr != nil {
		return nil, aerr
	}
	s := &snapshot{
		ID: newID("snap"), VolumeID: v.ID, VolumeSize: v.Size, State: "pending", Start: c.now,
		Duration: r.delay(r.opts.Delays.Snapshot), Description: c.p.get("Description"),
		Encrypted: v.Encrypted, KmsKeyID: v.KmsKeyID, Tags: tags,
	}
	if err := copySparse(r.snapshotImage(s.ID), r.volumeImage(v.ID), 0); err != nil {
		return nil, errf(500, "InternalError", err.Error())
	}
	r.w.Snapshots[s.ID] = s
	v.LastSnapshot = c.now
	r.scheduleSnapshotDone(s, s.Duration)
	return snapshotFields(s, c.now), nil
}

// pendingSnapshotLimit is how many pending snapshots one volume may have: "a
// limit of five pending snapshots for a single gp2, io1, or Magnetic volume,
// and one pending snapshot for a single st1 or sc1 volume"
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html).
func pendingSnapshotLimit(volumeType string) int {
	if volumeType == "st1" || volumeType == "sc1" {
		return 1
	}
	return 5
}

// snapshotAllowed applies EBS's per-volume snapshot limits, both client
// errors (HTTP 400) that clear on their own, so a caller retries them
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html):
// SnapshotCreationPerVolumeRateExceeded within Options.SnapshotInterval of the
// volume's previous snapshot (AWS: "Wait at least 15 seconds between
// concurrent volume snapshots"; the sim divides the interval by Speed like
// every delay, so a fast region keeps the rule's shape, not its wall-clock
// length), and ConcurrentSnapshotLimitExceeded at pendingSnapshotLimit.
func (r *Region) snapshotAllowed(v *volume, c *reqCtx) *apiError {
	if iv := r.opts.SnapshotInterval; iv > 0 && !v.LastSnapshot.IsZero() &&
		c.now.Sub(v.LastSnapshot) < time.Duration(float64(iv)/r.opts.Speed) {
		return badRequest("SnapshotCreationPerVolumeRateExceeded",
			"The maximum per volume CreateSnapshot request rate has been exceeded. Use an increasing or variable sleep interval between requests.")
	}
	pending := 0
	for _, s := range r.w.Snapshots {
		if s.VolumeID == v.ID && s.State == "pending" {
			pending++
		}
	}
	if pending >= pendingSnapshotLimit(v.Type) {
		return badRequest("ConcurrentSnapshotLimitExceeded", "Maximum allowed in-progress snapshots for a single volume exceeded.")
	}
	return nil
}

func (r *Region) scheduleSnapshotDone(s *snapshot, d time.Duration) {
	r.scheduleLocked("snapshot/"+s.ID, SnapshotComplete, d, true, func() {
		if s.State == "pending" {
			s.State = "completed"
			s.startLockLocked(time.Now())
		}
	})
}

// FailSnapshot puts a snapshot into the "error" state, as EBS does when a
// snapshot cannot complete, so tests can check that callers skip it.
func (r *Region) FailSnapshot(id string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.w.Snapshots[id]
	if s == nil {
		return fmt.Errorf("sim: no snapshot %s", id)
	}
	r.cancelLocked("snapshot/" + id)
	s.State = "error"
	r.afterChangeLocked()
	return nil
}

// progress grows from 0% to 100% over the snapshot's duration.
func (s *snapshot) progress(now time.Time) string {
	switch s.State {
	case "completed":
		return "100%"
	case "error":
		return "0%"
	}
	if s.Duration <= 0 {
		return "99%"
	}
	pct := int(100 * now.Sub(s.Start) / s.Duration)
	return strconv.Itoa(min(99, max(0, pct))) + "%"
}

func snapshotFields(s *snapshot, now time.Time) []node {
	return []node{
		tx("snapshotId", s.ID), tx("volumeId", s.VolumeID), tx("status", s.State), ts("startTime", s.Start),
		tx("progress", s.progress(now)), tx("ownerId", accountID), num("volumeSize", s.VolumeSize),
		tx("description", s.Description), boolean("encrypted", s.Encrypted), opt("kmsKeyId", s.KmsKeyID),
		ec2TagSet(s.Tags), tx("storageTier", "standard"),
	}
}

func snapshotField(s *snapshot, now time.Time) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "snapshot-id":
			return []string{s.ID}, true
		case "volume-id":
			return []string{s.VolumeID}, true
		case "status":
			return []string{s.State}, true
		case "owner-id":
			return []string{accountID}, true
		case "owner-alias":
			return nil, true
		case "description":
			return []string{s.Description}, true
		case "progress":
			return []string{s.progress(now)}, true
		case "start-time":
			return []string{awsTime(s.Start)}, true
		case "volume-size":
			return []string{strconv.Itoa(s.VolumeSize)}, true
		case "encrypted":
			return []string{strconv.FormatBool(s.Encrypted)}, true
		case "storage-tier":
			return []string{"standard"}, true
		}
		return nil, false
	}
}

func (r *Region) describeSnapshots(c *reqCtx) ([]node, *apiError) {
	owners := c.p.list("Owner")
	if len(owners) > 0 && !slices.ContainsFunc(owners, func(o string) bool { return o == "self" || o == accountID }) {
		// Only our own snapshots exist in the simulated region.
		return []node{list("snapshotSet", "item", nil)}, nil
	}
	snaps, aerr := selectVisible(r, c, c.p.list("SnapshotId"), r.w.Snapshots, r.findSnapshot, func(s *snapshot) (time.Time, string) { return s.Start, s.ID },
		"InvalidSnapshot.NotFound", func(missing []string) string {
			return fmt.Sprintf("The snapshot '%s' does not exist.", strings.Join(missing, "', '"))
		})
	if aerr != nil {
		return nil, aerr
	}
	matched, aerr := matching(c.p.filters(), snaps, func(s *snapshot) (map[string]string, fieldFunc) { return s.Tags, snapshotField(s, c.now) })
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, matched, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, s := range pg {
		items = append(items, el("", snapshotFields(s, c.now)...))
	}
	return []node{list("snapshotSet", "item", items), opt("nextToken", next)}, nil
}

func (r *Region) deleteSnapshot(c *reqCtx) ([]node, *apiError) {
	s, aerr := r.lookupSnapshot(c, c.p.get("SnapshotId"))
	if aerr != nil {
		return nil, aerr
	}
	if s.locked(c.now) {
		// ec2_snapshot_lock.go: AWS does not document the code.
		return nil, badRequest("SnapshotLocked", fmt.Sprintf("The snapshot '%s' is locked (%s) and can't be deleted until the lock expires or it is unlocked.", s.ID, s.Lock.state(c.now)))
	}
	r.cancelLocked("snapshot/" + s.ID)
	r.dropFastRestoresLocked(s.ID)
	delete(r.w.Snapshots, s.ID)
	_ = os.Remove(r.snapshotImage(s.ID))
	return []node{boolean("return", true)}, nil
}
