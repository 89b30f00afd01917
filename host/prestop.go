package host

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/handover/handover/internal/logkey"
	"golang.org/x/sys/unix"
)

// PreStop is the command that stops the service before its data is snapshotted.
type PreStop struct {
	Command string        // e.g. "systemctl stop postgresql"
	Shell   bool          // run through /bin/sh -c (for quoting, pipes, &&)
	Timeout time.Duration // bound on the whole command
}

// preStopGrace is how long a timed-out pre-stop command's process group has between SIGTERM and SIGKILL,
// and how long its output pipes may stay open after it exits (a daemon it started keeps them open).
const preStopGrace = 5 * time.Second

// preStopOutputTail bounds how much of the command's output is kept for the log.
const preStopOutputTail = 4096

// ErrPreStopTimeout is wrapped when the pre-stop command outlives its timeout.
var ErrPreStopTimeout = errors.New("timed out")

// RunPreStop runs the pre-stop command and waits for it at most spec.Timeout. Without Shell the command is
// split on white space and executed directly, so no shell parses an operator's string by surprise. The
// command runs in its own process group: on timeout (or when ctx ends) the whole group gets SIGTERM, then
// SIGKILL after preStopGrace, so a hung `systemctl stop` or a child it forked cannot hold down up.
// The last lines of its output are logged.
func (l *Linux) RunPreStop(ctx context.Context, log *slog.Logger, spec PreStop) error {
	log = log.With(logkey.Step, "pre-stop")
	argv := strings.Fields(spec.Command)
	if spec.Shell {
		argv = []string{"/bin/sh", "-c", spec.Command}
	}
	if len(argv) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	out := &tailBuffer{max: preStopOutputTail}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &unix.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGTERM) }
	cmd.WaitDelay = preStopGrace

	log.Info("running pre-stop command", "command", spec.Command, "shell", spec.Shell, logkey.Timeout, spec.Timeout.String())
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start).Round(time.Millisecond).String()
	if cctx.Err() != nil && cmd.Process != nil {
		// Whatever is left of the group after SIGTERM and the grace period.
		_ = unix.Kill(-cmd.Process.Pid, unix.SIGKILL)
	}
	tail := out.String()
	switch {
	case err == nil:
		log.Info("pre-stop command done", logkey.Elapsed, elapsed, logkey.Output, tail)
		return nil
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success():
		// It exited 0 but left a child holding its output open: the stop itself worked.
		log.Warn("pre-stop command succeeded but left a process holding its output", logkey.Elapsed, elapsed, logkey.Output, tail)
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("pre-stop command %q stopped after %s: %w", spec.Command, elapsed, ctx.Err())
	case cctx.Err() != nil:
		log.Error("pre-stop command timed out; its process group was killed", logkey.Elapsed, elapsed, logkey.Output, tail)
		return fmt.Errorf("pre-stop command %q did not finish within %s (raise --pre-stop-timeout or fix the command): %w",
			spec.Command, spec.Timeout, ErrPreStopTimeout)
	default:
		log.Error("pre-stop command failed", logkey.Elapsed, elapsed, logkey.Error, err.Error(), logkey.Output, tail)
		return fmt.Errorf("pre-stop command %q failed: %w", spec.Command, err)
	}
}

// tailBuffer keeps the last max bytes written to it. exec writes stdout and stderr from two goroutines.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.b))
}
