package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/handover/handover/internal/logkey"
	"golang.org/x/sys/unix"
)

// How down (and snapshot) keep a volume's data still for the instant of CreateSnapshot: stop the service
// with the pre-stop command, flush with sync, then unmount the filesystem or freeze it (FIFREEZE) and thaw
// it (FITHAW) as soon as CreateSnapshot returns.
//
// An EBS snapshot is point-in-time as of the CreateSnapshot call: blocks written after the call returns are
// not in it, even while the snapshot is still pending, so the filesystem needs to be still only for the
// call itself. https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html

// Release modes (--release).
const (
	releaseUnmount = "unmount"
	releaseFreeze  = "freeze"
)

// preStopSpec is the command that stops the service before its data is snapshotted.
type preStopSpec struct {
	Command string        // e.g. "systemctl stop postgresql"
	Shell   bool          // run through /bin/sh -c (for quoting, pipes, &&)
	Timeout time.Duration // bound on the whole command
}

// preStopGrace is how long a timed-out pre-stop command's process group has between SIGTERM and SIGKILL,
// and how long its output pipes may stay open after it exits (a daemon it started keeps them open).
const preStopGrace = 5 * time.Second

// preStopOutputTail bounds how much of the command's output is kept for the log.
const preStopOutputTail = 4096

// errPreStopTimeout is wrapped when the pre-stop command outlives its timeout.
var errPreStopTimeout = errors.New("timed out")

// runPreStop runs the pre-stop command and waits for it at most spec.Timeout. Without Shell the command is
// split on white space and executed directly, so no shell parses an operator's string by surprise. The
// command runs in its own process group: on timeout (or when ctx ends) the whole group gets SIGTERM, then
// SIGKILL after preStopGrace, so a hung `systemctl stop` or a child it forked cannot hold down up.
// The last lines of its output are logged.
func runPreStop(ctx context.Context, log *slog.Logger, spec preStopSpec) error {
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

	log.Info("running pre-stop command", "command", spec.Command, "shell", spec.Shell, "timeout", spec.Timeout.String())
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
		log.Info("pre-stop command done", logkey.Elapsed, elapsed, "output", tail)
		return nil
	case errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success():
		// It exited 0 but left a child holding its output open: the stop itself worked.
		log.Warn("pre-stop command succeeded but left a process holding its output", logkey.Elapsed, elapsed, "output", tail)
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("pre-stop command %q stopped after %s: %w", spec.Command, elapsed, ctx.Err())
	case cctx.Err() != nil:
		log.Error("pre-stop command timed out; its process group was killed", logkey.Elapsed, elapsed, "output", tail)
		return fmt.Errorf("pre-stop command %q did not finish within %s (raise --pre-stop-timeout or fix the command): %w",
			spec.Command, spec.Timeout, errPreStopTimeout)
	default:
		log.Error("pre-stop command failed", logkey.Elapsed, elapsed, "error", err.Error(), "output", tail)
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

// syncAll flushes every filesystem's dirty data to its device (sync(2)), waiting at most until ctx ends:
// sync cannot be interrupted, so it runs in its own goroutine (callBounded) and a hung device does not
// hold down past its bound.
func syncAll(ctx context.Context, log *slog.Logger, fsys fsCalls) error {
	start := time.Now()
	_, err := callBounded(ctx, "sync", "sync(2)", func() (struct{}, error) {
		fsys.sync()
		return struct{}{}, nil
	}, nil)
	if err != nil {
		return err
	}
	log.Info("synced", logkey.Step, "sync", logkey.Elapsed, time.Since(start).Round(time.Millisecond).String())
	return nil
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Major, Minor uint32
	MountPoint   string
	FSType       string
	Source       string
}

// mountInfoPath is the calling process's mount table.
const mountInfoPath = "/proc/self/mountinfo"

// mountsOfDevice returns where the block device at devPath is mounted, in mount order. It matches on the
// device number, not on names: the same NVMe device appears as /dev/nvme1n1, a by-id link and, on Xen,
// /dev/xvdf, and mountinfo shows whichever name mount was given.
func mountsOfDevice(devPath string) ([]mountEntry, error) {
	var st unix.Stat_t
	if err := unix.Stat(devPath, &st); err != nil {
		return nil, fmt.Errorf("stat device %s: %w", devPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("%s is not a block device", devPath)
	}
	all, err := readMountInfo(mountInfoPath)
	if err != nil {
		return nil, err
	}
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	var out []mountEntry
	for _, m := range all {
		if m.Major == major && m.Minor == minor {
			out = append(out, m)
		}
	}
	return out, nil
}

// mountedAt returns the entry mounted at dir (the last one, which is what a path lookup sees), if any.
func mountedAt(dir string) (mountEntry, bool, error) {
	all, err := readMountInfo(mountInfoPath)
	if err != nil {
		return mountEntry{}, false, err
	}
	dir = filepath.Clean(dir)
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].MountPoint == dir {
			return all[i], true, nil
		}
	}
	return mountEntry{}, false, nil
}

// readMountInfo parses a mountinfo file (proc(5)):
// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue".
func readMountInfo(path string) ([]mountEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	return parseMountInfo(b)
}

func parseMountInfo(b []byte) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 {
			continue
		}
		majMin := strings.SplitN(fields[2], ":", 2)
		if len(majMin) != 2 {
			return nil, fmt.Errorf("mountinfo: bad device field %q", fields[2])
		}
		major, err1 := strconv.ParseUint(majMin[0], 10, 32)
		minor, err2 := strconv.ParseUint(majMin[1], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("mountinfo: bad device field %q", fields[2])
		}
		// Optional fields end at the "-" separator; then fstype and source.
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) {
			return nil, fmt.Errorf("mountinfo: no separator in %q", sc.Text())
		}
		out = append(out, mountEntry{
			Major: uint32(major), Minor: uint32(minor),
			MountPoint: unescapeMountInfo(fields[4]),
			FSType:     fields[sep+1],
			Source:     unescapeMountInfo(fields[sep+2]),
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescapeMountInfo undoes the kernel's octal escapes of space, tab, newline and backslash (\040 ...).
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmountAll unmounts every mount of a device, the most recent first (a bind mount on top of the data
// goes before the data). A mount point that is already gone counts as done. EBUSY (something still has
// files open there) is returned as errBusy so that the caller can freeze instead. Each umount(2) is waited
// for at most until ctx ends (an *unfinishedError then): on a hung device it does not return.
func unmountAll(ctx context.Context, log *slog.Logger, fsys fsCalls, mounts []mountEntry) error {
	for i := len(mounts) - 1; i >= 0; i-- {
		mp := mounts[i].MountPoint
		_, err := callBounded(ctx, "unmount", "unmount "+mp, func() (struct{}, error) {
			return struct{}{}, fsys.unmount(mp)
		}, nil)
		var unfinished *unfinishedError
		switch {
		case err == nil:
			log.Info("unmounted", logkey.Step, "release", "mount_point", mp)
		case errors.As(err, &unfinished):
			return err
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			log.Info("already unmounted", logkey.Step, "release", "mount_point", mp)
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("unmount %s: %w (a process still uses it; see `fuser -vm %s`)", mp, errBusy, mp)
		default:
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	return nil
}

var errBusy = errors.New("busy")

// FIFREEZE and FITHAW from linux/fs.h: _IOWR('X', 119, int) and _IOWR('X', 120, int). x/sys/unix does
// not export them; the values hold for the generic ioctl encoding that amd64 and arm64, the EC2
// architectures, use.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// frozenFS is a filesystem handover froze; thaw undoes it.
type frozenFS struct {
	mountPoint string
	f          *os.File
	once       sync.Once
	thawErr    error
}

// freezeFS freezes the filesystem mounted at mountPoint: the kernel flushes it, blocks new writes and
// makes it consistent on the device, as fsfreeze(8) does. https://docs.kernel.org/filesystems/vfs.html
func freezeFS(mountPoint string) (*frozenFS, error) {
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
	return &frozenFS{mountPoint: mountPoint, f: f}, nil
}

// thaw thaws the filesystem; calling it again does nothing.
func (z *frozenFS) thaw() error {
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

// whileFrozen freezes every mount point in mountPoints, calls fn, and thaws every filesystem it froze
// right after fn returns: also when fn fails, when it panics (the deferred thaw runs while the panic
// unwinds), and when ctx ends (SIGTERM cancels ctx, the API call in fn returns, then the thaw runs).
// fn gets a context bounded by bound, so a throttled or unreachable API cannot keep writers blocked: when
// the bound passes, fn's call fails and the filesystems thaw. frozen tells fn which mount points are
// frozen; one that cannot be frozen is logged and left out, and fn decides what that means.
//
// Each FIFREEZE is waited for at most until ctx ends: then whileFrozen thaws what it froze and returns an
// *unfinishedError without calling fn, and the goroutine left in FIFREEZE thaws the filesystem itself as
// soon as the freeze completes.
func whileFrozen(ctx context.Context, log *slog.Logger, fsys fsCalls, mountPoints []string, bound time.Duration,
	fn func(ctx context.Context, frozen map[string]bool) error,
) (err error) {
	type held struct {
		mountPoint string
		z          thawer
	}
	var holds []held
	defer func() {
		for _, h := range holds {
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), thawBound)
			_, terr := callBounded(tctx, "thaw", "thaw "+h.mountPoint, func() (struct{}, error) { return struct{}{}, h.z.thaw() }, nil)
			cancel()
			var unfinished *unfinishedError
			if errors.As(terr, &unfinished) {
				terr = fmt.Errorf("%w within %s; it stays in flight: if writes to %s still block, run `fsfreeze -u %s`",
					terr, thawBound, h.mountPoint, h.mountPoint)
			}
			if terr != nil {
				log.Error("thaw failed", logkey.Step, "release", "mount_point", h.mountPoint, "error", terr.Error())
				err = errors.Join(err, terr)
				continue
			}
			log.Info("thawed", logkey.Step, "release", "mount_point", h.mountPoint)
		}
	}()
	frozen := map[string]bool{}
	for _, mp := range mountPoints {
		z, ferr := callBounded(ctx, "freeze", "freeze "+mp, func() (thawer, error) { return fsys.freeze(mp) },
			func(z thawer, err error) {
				if err != nil {
					return // the freeze failed late: nothing is frozen
				}
				if terr := z.thaw(); terr != nil {
					log.Error("a freeze handover had stopped waiting for completed, and thawing it failed", logkey.Step, "release", "mount_point", mp, "error", terr.Error())
					return
				}
				log.Warn("a freeze handover had stopped waiting for completed; thawed it at once", logkey.Step, "release", "mount_point", mp)
			})
		var unfinished *unfinishedError
		if errors.As(ferr, &unfinished) {
			log.Error("freeze did not return; giving up on it (the filesystem is thawed as soon as it does)", logkey.Step, "release", "mount_point", mp)
			return ferr
		}
		if ferr != nil {
			log.Warn("could not freeze the filesystem", logkey.Step, "release", "mount_point", mp, "error", ferr.Error())
			continue
		}
		holds = append(holds, held{mountPoint: mp, z: z})
		frozen[mp] = true
		log.Info("frozen", logkey.Step, "release", "mount_point", mp)
	}
	fctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	return fn(fctx, frozen)
}
