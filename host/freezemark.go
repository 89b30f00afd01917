package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/handover/handover/internal/logkey"
	"golang.org/x/sys/unix"
)

// Freeze markers: a filesystem left frozen by a killed run is thawed by the next one.
//
// WhileFrozen thaws what it froze however fn ends, but not when the process itself dies (kill -9, the OOM
// killer, a panic in another goroutine): the kernel keeps a frozen filesystem frozen after the freezer is
// gone, and every write of the service blocks until someone runs `fsfreeze -u`. So before each FIFREEZE,
// WhileFrozen writes a marker file (the mount point and the device number of its filesystem) in the
// Linux.FreezeMarkers directory, and removes it once that filesystem is thawed. A marker that is still
// there is a freeze whose thaw may never have run.
//
// The rule that makes thawing one safe: handover freezes only inside down and snapshot, which hold the
// instance lock (--lock-file) for as long as anything is frozen, and the kernel releases a flock when its
// holder dies. So a marker seen by a run that holds the instance lock belongs to a run that is gone, and
// ThawLeftFrozen, called with the lock held (by up, down and snapshot right after they take it, and by
// watch at start and at every poll when it can take the lock at once), thaws its filesystem (FITHAW; a
// filesystem that is not frozen answers EINVAL and is left as it is) and removes the marker. It thaws
// only the filesystem the marker names: when the mount point now holds another filesystem (different
// device number) or none, the marker is removed and nothing is thawed. The directory defaults to
// <lock file without .lock>.frozen (/run/handover.frozen): on /run, a tmpfs, markers go with a reboot,
// and so does every freeze.

// FreezeMarkerDir is the marker directory that goes with the instance lock at lockFile.
func FreezeMarkerDir(lockFile string) string {
	return strings.TrimSuffix(lockFile, ".lock") + ".frozen"
}

// freezeMarker is what a marker file holds.
type freezeMarker struct {
	MountPoint string    `json:"mount_point"`
	Dev        uint64    `json:"dev"` // st_dev of the frozen filesystem's root
	PID        int       `json:"pid"`
	FrozenAt   time.Time `json:"frozen_at"`
}

// markFrozen records, before FIFREEZE, that mountPoint is about to be frozen, and returns the marker's path.
// No directory configured: "" and no error (tests of the host layer alone).
func (l *Linux) markFrozen(mountPoint string) (string, error) {
	if l.FreezeMarkers == "" {
		return "", nil
	}
	var st unix.Stat_t
	if err := unix.Stat(mountPoint, &st); err != nil {
		return "", fmt.Errorf("freeze marker for %s: %w", mountPoint, err)
	}
	if err := os.MkdirAll(l.FreezeMarkers, 0o700); err != nil {
		return "", fmt.Errorf("freeze marker for %s: %w", mountPoint, err)
	}
	now := time.Now()
	b, err := json.Marshal(freezeMarker{MountPoint: mountPoint, Dev: uint64(st.Dev), PID: os.Getpid(), FrozenAt: now.UTC()})
	if err != nil {
		return "", err
	}
	// One file per freeze: removing it after the thaw can never remove another freeze's marker.
	name := SystemdEscapePath(mountPoint) + "." + strconv.Itoa(os.Getpid()) + "." + strconv.FormatInt(now.UnixNano(), 10) + ".frozen"
	path := filepath.Join(l.FreezeMarkers, name)
	if err := writeFileSynced(path, b); err != nil {
		return "", fmt.Errorf("freeze marker for %s: %w", mountPoint, err)
	}
	return path, nil
}

// unmarkFrozen removes a marker once its filesystem is thawed (or was never frozen).
func unmarkFrozen(log *slog.Logger, path string) {
	if path == "" {
		return
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.Warn("could not remove the freeze marker; the next run finds the filesystem thawed and removes it", "marker", path, logkey.Error, err.Error())
	}
}

// writeFileSynced writes a new file at path, its contents and its directory entry synced, so that a crash
// right after leaves the whole marker or none.
func writeFileSynced(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ThawLeftFrozen thaws every filesystem a freeze marker names, and removes the markers: the freezes of
// runs that died before their thaw. The caller must hold the instance lock (see above). Each FITHAW is
// waited for at most thawBound (on a hung device it may not return); a marker whose thaw fails stays, for
// the next run. It returns the mount points it thawed.
func (l *Linux) ThawLeftFrozen(ctx context.Context, log *slog.Logger) ([]string, error) {
	if l.FreezeMarkers == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(l.FreezeMarkers)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read freeze markers: %w", err)
	}
	var thawed []string
	var errs []error
	for _, e := range entries {
		path := filepath.Join(l.FreezeMarkers, e.Name())
		if strings.HasSuffix(e.Name(), ".tmp") {
			os.Remove(path) // a marker whose writer died before it was complete: nothing was frozen yet
			continue
		}
		if !strings.HasSuffix(e.Name(), ".frozen") {
			continue
		}
		mp, done, err := l.thawMarked(ctx, log, path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if done {
			thawed = append(thawed, mp)
		}
	}
	return thawed, errors.Join(errs...)
}

// thawMarked thaws the filesystem of one marker and removes the marker; done is false when there was
// nothing to thaw.
func (l *Linux) thawMarked(ctx context.Context, log *slog.Logger, path string) (mountPoint string, done bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("read freeze marker %s: %w", path, err)
	}
	var m freezeMarker
	if err := json.Unmarshal(b, &m); err != nil || !filepath.IsAbs(m.MountPoint) {
		log.Warn("freeze marker unreadable; removed, nothing thawed", logkey.Step, "thaw", "marker", path)
		unmarkFrozen(log, path)
		return "", false, nil
	}
	mlog := log.With(logkey.Step, "thaw", logkey.MountPoint, m.MountPoint, "frozen_by_pid", m.PID, "frozen_at", m.FrozenAt.Format(time.RFC3339))
	// Only the filesystem that was frozen: the mount point may hold another one now, or none (FITHAW on a
	// plain directory would thaw whatever filesystem it is on).
	dev, isMount, err := mountPointDev(m.MountPoint)
	if err != nil || !isMount || dev != m.Dev {
		mlog.Info("freeze marker of a filesystem that is no longer mounted there; removed, nothing thawed")
		unmarkFrozen(log, path)
		return "", false, nil
	}
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawBound)
	defer cancel()
	wasFrozen, err := CallBounded(tctx, "thaw", "thaw "+m.MountPoint, func() (bool, error) { return thawIfFrozen(m.MountPoint) }, nil)
	if err != nil {
		mlog.Error("could not thaw a filesystem a killed handover run left frozen; writes to it block until it is thawed (fsfreeze -u)", logkey.Error, err.Error())
		return "", false, fmt.Errorf("thaw %s, left frozen by a handover run that did not finish (run `fsfreeze -u %s`): %w", m.MountPoint, m.MountPoint, err)
	}
	unmarkFrozen(log, path)
	if !wasFrozen {
		mlog.Info("freeze marker of a filesystem that is not frozen; removed")
		return "", false, nil
	}
	mlog.Warn("thawed a filesystem that a handover run which did not finish had left frozen")
	return m.MountPoint, true, nil
}

// mountPointDev is the device number of the filesystem mounted at dir, and whether dir is a mount point
// at all (its filesystem differs from its parent's).
func mountPointDev(dir string) (uint64, bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, false, err
	}
	if err := unix.Stat(filepath.Join(dir, ".."), &parent); err != nil {
		return 0, false, err
	}
	return uint64(st.Dev), st.Dev != parent.Dev, nil
}

// thawIfFrozen is FITHAW on the filesystem at mountPoint; wasFrozen is false when it was not frozen (EINVAL).
func thawIfFrozen(mountPoint string) (wasFrozen bool, err error) {
	f, err := os.Open(mountPoint)
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), ioctlFITHAW, 0)
	if errors.Is(err, unix.EINVAL) {
		return false, nil
	}
	return err == nil, err
}
