package agent

import (
	"context"
	"sync"

	"golang.org/x/sys/unix"
)

// A hung EBS device (an impaired volume, a detach forced from the console, a dying instance) makes the
// system calls that flush or freeze a filesystem block in the kernel, uninterruptibly: no signal or
// context ends sync(2), umount(2) or the FIFREEZE ioctl. down and snapshot must still end within their
// --timeout, so each of these calls runs in its own goroutine and the command stops waiting for it when
// its context ends (callBounded). The goroutine stays blocked until the kernel returns; a freeze that
// completes after handover gave up on it is thawed at once by that goroutine, so that no filesystem is
// left frozen behind a command that has moved on.

// fsCalls are the filesystem system calls that can block on a hung device. They are fields so that tests
// can substitute calls that block; hostFSCalls are the real ones.
type fsCalls struct {
	sync    func()                                  // sync(2): flush every filesystem
	unmount func(mountPoint string) error           // umount(2)
	freeze  func(mountPoint string) (thawer, error) // FIFREEZE; the result thaws it
}

// thawer is a frozen filesystem; thaw undoes the freeze and does nothing when called again.
type thawer interface {
	thaw() error
}

var hostFSCalls = fsCalls{
	sync:    unix.Sync,
	unmount: func(mp string) error { return unix.Unmount(mp, 0) },
	freeze: func(mp string) (thawer, error) {
		z, err := freezeFS(mp)
		if err != nil {
			return nil, err // not a nil *frozenFS in a non-nil interface
		}
		return z, nil
	},
}

// unfinishedError is a step that handover stopped waiting for because its context ended: the command's
// bound passed (context.DeadlineExceeded) or it was stopped (context.Canceled). The call itself may still
// be running.
type unfinishedError struct {
	Step string // the step, as the log names it: "sync", "unmount", "freeze", ...
	What string // what did not return, for the operator
	Err  error  // the context's error
}

func (e *unfinishedError) Error() string { return e.What + " did not return: " + e.Err.Error() }

func (e *unfinishedError) Unwrap() error { return e.Err }

// callBounded runs call in its own goroutine and waits for it until ctx ends; then it returns an
// *unfinishedError naming step and what, and leaves the call to finish on its own. late, when not nil,
// receives what such an abandoned call returns once it does (a freeze that completes after its caller
// gave up must be thawed at once). A call that returns as ctx ends is either returned here or handed to
// late, never both and never neither.
func callBounded[T any](ctx context.Context, step, what string, call func() (T, error), late func(T, error)) (T, error) {
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
		return zero, &unfinishedError{Step: step, What: what, Err: ctx.Err()}
	}
}
