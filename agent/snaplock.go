package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// --lock-snapshots: down and snapshot lock each consistent snapshot they take with EBS snapshot lock in
// governance mode (cloud/snapshot_lock.go), so that neither retention nor a mistaken delete removes the
// one a recovery needs; retention never tries to delete a locked snapshot. A crash-consistent snapshot is
// not locked: it is what is left when keeping the data still failed, and the next consistent one
// supersedes it.

// lockDays is --lock-snapshots: how long to lock, in whole days (EBS's LockDuration unit), 0 for off.
// It takes "30d" or a Go duration that is a whole number of days ("720h").
type lockDays int

func (d *lockDays) String() string {
	if d == nil || *d == 0 {
		return ""
	}
	return strconv.Itoa(int(*d)) + "d"
}

func (d *lockDays) Set(s string) error {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" || s == "off" {
		*d = 0
		return nil
	}
	var days int
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.Atoi(n)
		if err != nil {
			return fmt.Errorf("want a number of days such as 30d, or a duration such as 720h")
		}
		days = v
	} else {
		v, err := time.ParseDuration(s)
		if err != nil || v%(24*time.Hour) != 0 {
			return fmt.Errorf("want whole days: 30d, or a duration such as 720h (EBS locks snapshots by the day)")
		}
		days = int(v / (24 * time.Hour))
	}
	if days < 1 || days > cloud.MaxLockDays {
		return fmt.Errorf("want 1 to %d days", cloud.MaxLockDays)
	}
	*d = lockDays(days)
	return nil
}

// registerLock declares --lock-snapshots.
func registerLock(f *flags, d *lockDays) {
	f.fs.Var(d, "lock-snapshots", "lock each consistent snapshot for this long (30d, or 720h) with EBS snapshot lock in governance mode, so that retention or a mistaken delete cannot remove it (ec2:LockSnapshot); default off")
}

// lockSnapshots locks each slot's consistent snapshot of this run for days. It returns one line per slot
// for the output, and the failures joined: the snapshots exist either way, unlocked.
func (in *thisInstance) lockSnapshots(ctx context.Context, log *slog.Logger, slots []*slotRelease, days lockDays) ([]string, error) {
	if days == 0 {
		return nil, nil
	}
	var lines []string
	var errs []error
	for _, s := range slots {
		if s.Snapshot.ID == "" {
			continue
		}
		vlog := log.With(logkey.Step, "lock", logkey.Slot, s.Spec.Slot, logkey.Snapshot, s.Snapshot.ID)
		if !s.Consistent {
			vlog.Warn("snapshot not locked: it is crash-consistent (--lock-snapshots locks consistent ones only)")
			lines = append(lines, fmt.Sprintf("slot %s: snapshot %s not locked (crash-consistent)", s.Spec.Slot, s.Snapshot.ID))
			continue
		}
		l, err := cloud.LockSnapshot(ctx, in.clients.EC2, s.Snapshot.ID, int(days))
		if err != nil {
			vlog.Error("could not lock the snapshot; it exists, unlocked", logkey.Error, err.Error())
			errs = append(errs, err)
			continue
		}
		until := "its completion plus " + days.String()
		if !l.Expires.IsZero() {
			until = l.Expires.UTC().Format(time.RFC3339)
		}
		vlog.Info("snapshot locked", logkey.State, l.State, "until", until)
		lines = append(lines, fmt.Sprintf("slot %s: snapshot %s locked (%s) until %s", s.Spec.Slot, s.Snapshot.ID, l.State, until))
	}
	if len(errs) > 0 {
		return lines, fail.Failed("the snapshots were taken but not all could be locked (grant ec2:LockSnapshot, or drop --lock-snapshots)", errors.Join(errs...))
	}
	return lines, nil
}

// printLines writes lines to w, one each.
func printLines(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
}

// keepLocked turns retention's deletions of locked snapshots into kept ones: EBS would refuse them, and
// the lock is someone's decision to keep them.
func keepLocked(verdicts []retentionVerdict, locks map[string]cloud.SnapshotLock) {
	for i, v := range verdicts {
		l, ok := locks[v.Snapshot.ID]
		if !v.Delete || !ok {
			continue
		}
		until := "until its lock starts"
		if !l.Expires.IsZero() {
			until = "until " + l.Expires.UTC().Format(time.RFC3339)
		}
		verdicts[i].Delete, verdicts[i].Why = false, fmt.Sprintf("locked (%s) %s: never deleted", l.State, until)
	}
}
