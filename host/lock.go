package host

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/handover/handover/internal/fail"
	"golang.org/x/sys/unix"
)

// DefaultLockFile serialises up and down on one instance (user data and the systemd unit can both start
// `up` at boot). /run is a tmpfs, so a lock left by a crashed process cannot outlive a reboot, and flock
// locks are released by the kernel when the holder dies.
const DefaultLockFile = "/run/handover.lock"

// Lock is a held flock.
type Lock struct{ f *os.File }

// Lock takes the exclusive lock at path, waiting at most bound for another up/down to finish.
func (l *Linux) Lock(ctx context.Context, path string, bound time.Duration) (*Lock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, lockFileError(path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, lockFileError(path, err)
	}
	deadline := time.Now().Add(bound)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			_ = f.Truncate(0)
			_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
			return &Lock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("another handover up/down holds %s (waited %s); let it finish, then rerun", path, bound)}
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// lockFileError says why the lock file cannot be made. A directory that is read-only, full or not
// handover's to write is the host's configuration, which no rerun heals (exit 3), and nothing has been
// changed yet: the lock is taken before anything else.
func lockFileError(path string, err error) error {
	for _, e := range []error{unix.EISDIR, unix.ENOTDIR} {
		if errors.Is(err, e) {
			return fail.Precondition(fmt.Sprintf("lock %s: %v: give --lock-file the path of a file (default %s)", path, e, DefaultLockFile), nil)
		}
	}
	for _, e := range []error{unix.EROFS, unix.ENOSPC, unix.EDQUOT, unix.EACCES, unix.EPERM} {
		if errors.Is(err, e) {
			return fail.Precondition(fmt.Sprintf("lock %s: %v: make its directory writable, or give --lock-file a path on a writable filesystem (default %s, a tmpfs)",
				path, e, DefaultLockFile), nil)
		}
	}
	return fmt.Errorf("lock %s: %w", path, err)
}

// Unlock releases the lock.
func (k *Lock) Unlock() {
	if k != nil && k.f != nil {
		_ = unix.Flock(int(k.f.Fd()), unix.LOCK_UN)
		k.f.Close()
	}
}
