package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/handover/handover/internal/logkey"
	"golang.org/x/sys/unix"
)

// A hung EBS device (an impaired volume, a detach forced from the console, a dying instance) makes the
// system calls that flush or freeze a filesystem block in the kernel, uninterruptibly: no signal or
// context ends sync(2), umount(2) or the FIFREEZE ioctl. down and snapshot must still end within their
// --timeout, so each of these calls runs in its own goroutine and the command stops waiting for it when
// its context ends (CallBounded). The goroutine stays blocked until the kernel returns; a freeze that
// completes after handover gave up on it is thawed at once by that goroutine, so that no filesystem is
// left frozen behind a command that has moved on.

// FSCalls are the filesystem system calls that can block on a hung device. They are fields so that tests
// can substitute calls that block; RealFSCalls returns the real ones.
type FSCalls struct {
	Sync    func()                                  // sync(2): flush every filesystem
	Unmount func(mountPoint string) error           // umount(2)
	Freeze  func(mountPoint string) (Thawer, error) // FIFREEZE; the result thaws it
}

// Thawer is a frozen filesystem; thaw undoes the freeze and does nothing when called again.
type Thawer interface {
	Thaw() error
}

// RealFSCalls are the kernel's calls.
func RealFSCalls() FSCalls {
	return FSCalls{
		Sync:    unix.Sync,
		Unmount: func(mp string) error { return unix.Unmount(mp, 0) },
		Freeze: func(mp string) (Thawer, error) {
			z, err := Freeze(mp)
			if err != nil {
				return nil, err // not a nil *Frozen in a non-nil interface
			}
			return z, nil
		},
	}
}

// UnfinishedError is a step that handover stopped waiting for because its context ended: the command's
// bound passed (context.DeadlineExceeded) or it was stopped (context.Canceled). The call itself may still
// be running.
type UnfinishedError struct {
	Step string // the step, as the log names it: "sync", "unmount", "freeze", ...
	What string // what did not return, for the operator
	Err  error  // the context's error
}

func (e *UnfinishedError) Error() string { return e.What + " did not return: " + e.Err.Error() }

func (e *UnfinishedError) Unwrap() error { return e.Err }

// CallBounded runs call in its own goroutine and waits for it until ctx ends; then it returns an
// *UnfinishedError naming step and what, and leaves the call to finish on its own. late, when not nil,
// receives what such an abandoned call returns once it does (a freeze that completes after its caller
// gave up must be thawed at once). A call that returns as ctx ends is either returned here or handed to
// late, never both and never neither.
func CallBounded[T any](ctx context.Context, step, what string, call func() (T, error), late func(T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var (
		mu        sync.Mutex
		abandoned bool
	)
	done := make(chan result, 1)
	go func() {
		v, err := call()
		mu.Lock()
		gaveUp := abandoned
		if !gaveUp {
			done <- result{v, err} // buffered: never blocks
		}
		mu.Unlock()
		if gaveUp && late != nil {
			late(v, err)
		}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
	}
	mu.Lock()
	defer mu.Unlock()
	select {
	case r := <-done: // it returned just as ctx ended: use it
		return r.v, r.err
	default:
		abandoned = true
		var zero T
		return zero, &UnfinishedError{Step: step, What: what, Err: ctx.Err()}
	}
}

// Sync flushes every filesystem's dirty data to its device (sync(2)), waiting at most until ctx ends:
// sync cannot be interrupted, so it runs in its own goroutine (CallBounded) and a hung device does not
// hold down past its bound.
func (l *Linux) Sync(ctx context.Context, log *slog.Logger) error {
	start := time.Now()
	_, err := CallBounded(ctx, "sync", "sync(2)", func() (struct{}, error) {
		l.calls().Sync()
		return struct{}{}, nil
	}, nil)
	if err != nil {
		return err
	}
	log.Info("synced", logkey.Step, "sync", logkey.Elapsed, time.Since(start).Round(time.Millisecond).String())
	return nil
}

// Unmount unmounts every mount of a device, the most recent first (a bind mount on top of the data
// goes before the data). A mount point that is already gone counts as done. EBUSY (something still has
// files open there) is returned as ErrBusy so that the caller can freeze instead. Each umount(2) is waited
// for at most until ctx ends (an *UnfinishedError then): on a hung device it does not return.
func (l *Linux) Unmount(ctx context.Context, log *slog.Logger, mounts []Mount) error {
	for i := len(mounts) - 1; i >= 0; i-- {
		mp := mounts[i].MountPoint
		_, err := CallBounded(ctx, "unmount", "unmount "+mp, func() (struct{}, error) {
			return struct{}{}, l.calls().Unmount(mp)
		}, nil)
		var unfinished *UnfinishedError
		switch {
		case err == nil:
			log.Info("unmounted", logkey.Step, "release", logkey.MountPoint, mp)
		case errors.As(err, &unfinished):
			return err
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			log.Info("already unmounted", logkey.Step, "release", logkey.MountPoint, mp)
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("unmount %s: %w (a process still uses it; see `fuser -vm %s`)", mp, ErrBusy, mp)
		default:
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}

var ErrBusy = errors.New("busy")

// FIFREEZE and FITHAW from linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int). x/sys/unix does
// not export them; the values hold for the generic ioctl encoding that amd64 and arm64, the EC2
// architectures, use.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// Frozen is a filesystem handover froze; thaw undoes it.
type Frozen struct {
	mountPoint string
	f          *os.File
	once       sync.Once
	thawErr    error
}

// Freeze freezes the filesystem mounted at mountPoint: the kernel flushes it, blocks new writes and
// makes it consistent on the device, as fsfreeze(8) does. https://docs.kernel.org/filesystems/vfs.html
func Freeze(mountPoint string) (*Frozen, error) {
	f, err := os.Open(mountPoint)
	if err != nil {
		return nil, fmt.Errorf("freeze %s: %w", mountPoint, err)
	}
	// FIFREEZE freezes whatever filesystem the directory is on: a directory that is no longer a mount
	// point (its filesystem was unmounted meanwhile) would freeze its parent, the root filesystem.
	var st, parent unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("freeze %s: %w", mountPoint, err)
	}
	if err := unix.Stat(filepath.Join(mountPoint, ".."), &parent); err != nil {
		f.Close()
		return nil, fmt.Errorf("freeze %s: %w", mountPoint, err)
	}
	if st.Dev == parent.Dev {
		f.Close()
		return nil, fmt.Errorf("freeze %s: not a mount point (on the same filesystem as its parent); refusing to freeze that filesystem", mountPoint)
	}
	if err := unix.IoctlSetInt(int(f.Fd()), ioctlFIFREEZE, 0); err != nil {
		f.Close()
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("freeze %s: already frozen (by another tool, or by a handover run that was killed; thaw it with `fsfreeze -u %s`): %w", mountPoint, mountPoint, err)
		}
		return nil, fmt.Errorf("freeze %s: %w", mountPoint, err)
	}
	return &Frozen{mountPoint: mountPoint, f: f}, nil
}

// Thaw thaws the filesystem; calling it again does nothing.
func (z *Frozen) Thaw() error {
	z.once.Do(func() {
		err := unix.IoctlSetInt(int(z.f.Fd()), ioctlFITHAW, 0)
		if errors.Is(err, unix.EINVAL) {
			err = nil // not frozen any more
		}
		if err != nil {
			z.thawErr = fmt.Errorf("thaw %s (run `fsfreeze -u %s` now): %w", z.mountPoint, z.mountPoint, err)
		}
		z.f.Close()
	})
	return z.thawErr
}

// thawBound is how long handover waits for FITHAW. A thaw that does not return in time stays in flight
// and thaws the filesystem once the device answers; handover reports it and goes on.
const thawBound = 30 * time.Second

// WhileFrozen freezes every mount point in mountPoints, calls fn, and thaws every filesystem it froze
// right after fn returns: also when fn fails, when it panics (the deferred thaw runs while the panic
// unwinds), and when ctx ends (SIGTERM cancels ctx, the API call in fn returns, then the thaw runs).
// fn gets a context bounded by bound, so a throttled or unreachable API cannot keep writers blocked: when
// the bound passes, fn's call fails and the filesystems thaw. frozen tells fn which mount points are
// frozen; one that cannot be frozen is logged and left out, and fn decides what that means.
//
// Each FIFREEZE is waited for at most until ctx ends: then whileFrozen thaws what it froze and returns an
// *UnfinishedError without calling fn, and the goroutine left in FIFREEZE thaws the filesystem itself as
// soon as the freeze completes.
//
// Before each FIFREEZE it writes a freeze marker (freezemark.go), removed after the thaw: should the process
// die while a filesystem is frozen, the next run that takes the instance lock thaws it (ThawLeftFrozen). A
// filesystem whose marker cannot be written is not frozen.
func (l *Linux) WhileFrozen(ctx context.Context, log *slog.Logger, mountPoints []string, bound time.Duration,
	fn func(ctx context.Context, frozen map[string]bool) error,
) (err error) {
	type held struct {
		mountPoint string
		z          Thawer
		marker     string // the freeze marker (freezemark.go), removed once thawed
	}
	var holds []held
	defer func() {
		for _, h := range holds {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawBound)
			_, terr := CallBounded(tctx, "thaw", "thaw "+h.mountPoint, func() (struct{}, error) { return struct{}{}, h.z.Thaw() }, nil)
			cancel()
			var unfinished *UnfinishedError
			if errors.As(terr, &unfinished) {
				terr = fmt.Errorf("%w within %s; it stays in flight: if writes to %s still block, run `fsfreeze -u %s`",
					terr, thawBound, h.mountPoint, h.mountPoint)
			}
			if terr != nil {
				// The marker stays: the next run (or watch) thaws the filesystem.
				log.Error("thaw failed", logkey.Step, "release", logkey.MountPoint, h.mountPoint, logkey.Error, terr.Error())
				err = errors.Join(err, terr)
				continue
			}
			unmarkFrozen(log, h.marker)
			log.Info("thawed", logkey.Step, "release", logkey.MountPoint, h.mountPoint)
		}
	}()
	frozen := map[string]bool{}
	for _, mp := range mountPoints {
		// The marker first: a run killed while the filesystem is frozen leaves it for the next run to thaw.
		marker, merr := l.markFrozen(mp)
		if merr != nil {
			log.Warn("could not record the freeze, so not freezing (a filesystem left frozen by a crash must be findable)", logkey.Step, "release", logkey.MountPoint, mp, logkey.Error, merr.Error())
			continue
		}
		z, ferr := CallBounded(ctx, "freeze", "freeze "+mp, func() (Thawer, error) { return l.calls().Freeze(mp) },
			func(z Thawer, err error) {
				if err != nil {
					unmarkFrozen(log, marker)
					return // the freeze failed late: nothing is frozen
				}
				if terr := z.Thaw(); terr != nil {
					log.Error("a freeze handover had stopped waiting for completed, and thawing it failed", logkey.Step, "release", logkey.MountPoint, mp, logkey.Error, terr.Error())
					return
				}
				unmarkFrozen(log, marker)
				log.Warn("a freeze handover had stopped waiting for completed; thawed it at once", logkey.Step, "release", logkey.MountPoint, mp)
			})
		var unfinished *UnfinishedError
		if errors.As(ferr, &unfinished) {
			log.Error("freeze did not return; giving up on it (the filesystem is thawed as soon as it does)", logkey.Step, "release", logkey.MountPoint, mp)
			return ferr
		}
		if ferr != nil {
			unmarkFrozen(log, marker)
			log.Warn("could not freeze the filesystem", logkey.Step, "release", logkey.MountPoint, mp, logkey.Error, ferr.Error())
			continue
		}
		holds = append(holds, held{mountPoint: mp, z: z, marker: marker})
		frozen[mp] = true
		log.Info("frozen", logkey.Step, "release", logkey.MountPoint, mp)
	}
	fctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	return fn(fctx, frozen)
}

// ThawMountPoint thaws the filesystem mounted at mountPoint (FITHAW), as `fsfreeze -u` does; one that is
// not frozen is left as it is.
func ThawMountPoint(mountPoint string) error {
	f, err := os.Open(mountPoint)
	if err != nil {
		return fmt.Errorf("thaw %s: %w", mountPoint, err)
	}
	defer f.Close()
	if err := unix.IoctlSetInt(int(f.Fd()), ioctlFITHAW, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("thaw %s: %w", mountPoint, err)
	}
	return nil
}
