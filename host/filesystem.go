package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// Filesystems on a block device: probe, make, grow, mount, persist as a systemd mount unit. Which device
// may be formatted is the command's decision (agent: only a volume handover created blank); this layer
// only carries out what it is asked, with the guards that make a mistake fail rather than destroy (no
// force flags, an empty stdin that answers "no").

// Filesystems and mounts. The one rule that matters most, when a volume may be formatted, is the agent's
// (agent/filesystem.go, decideFormat; agent/FENCING.md, "When handover formats"): only a volume handover
// created blank and never handed out, either untouched or carrying its own interrupted mkfs. Anything else
// without a recognisable filesystem is refused with exit 3 and left untouched: a format is the one mistake
// that cannot be undone.
//
// Mounts are persisted as a systemd mount unit, not an fstab line: the unit is a file of handover's own,
// written atomically and compared before writing, so a rerun changes nothing and handover never edits a
// file that cloud-init and people also edit (a broken /etc/fstab can stop the next boot). Its Options
// carry nofail, so the next boot neither waits for nor fails on a volume that is not attached yet; it
// is wanted by local-fs.target like an fstab line with nofail would be.
// https://www.freedesktop.org/software/systemd/man/latest/systemd.mount.html
//
// The unit names the filesystem by UUID (a restore from a snapshot keeps the UUID, so the unit stays the
// same across generations); the mount made now uses the device node whose serial was just checked, so
// that two devices with the same UUID on one instance (an old generation attached for inspection) can
// never be confused.

// Signature is what blkid found on a device.
type Signature struct {
	Type   string // ext4, xfs, crypto_LUKS, ...; "" when none
	UUID   string
	Usage  string // filesystem, crypto, raid, ...
	PTType string // a partition table (gpt, dos) instead of a filesystem
}

// Probe reads the device's signature with low-level probing (blkid -p), which reads the device
// itself rather than a cache. blkid exits 2 when it finds nothing and 8 when signatures contradict each
// other. https://man7.org/linux/man-pages/man8/blkid.8.html
func (l *Linux) Probe(ctx context.Context, dev string) (Signature, error) {
	out, err := runTool(ctx, "blkid", "-p", "-o", "export", dev)
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case 2:
			return Signature{}, nil
		case 8:
			return Signature{}, fail.Precondition(fmt.Sprintf("%s carries contradictory signatures (blkid -p: ambivalent result): inspect it by hand; handover will neither mount nor format it", dev), nil)
		}
	}
	if err != nil {
		return Signature{}, err
	}
	var s Signature
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch k {
		case "TYPE":
			s.Type = v
		case "UUID":
			s.UUID = v
		case "USAGE":
			s.Usage = v
		case "PTTYPE":
			s.PTType = v
		}
	}
	return s, nil
}

// blankProbe is how much of each end of a device holdsData reads: every filesystem handover makes writes
// its superblock and first metadata within the first MiB, xfs and GPT also near the end.
const blankProbe = 1 << 20

// blankSamples is how many stretches of blankProbe bytes HoldsData reads between the two ends, spread
// evenly: data written to the raw device in its middle is seen when it touches one. 64 MiB at most.
const blankSamples = 62

// HoldsData reports where a device has a non-zero byte in its first or last MiB, or in one of the MiB it
// samples evenly in between ("" when all of them are zeros, as on a volume EBS created empty, whose
// unwritten blocks read as zeros). A sample proves nothing about the bytes it skips: this is a defence in
// depth behind the tags that record whether a volume was ever handed out (agent/filesystem.go).
func (l *Linux) HoldsData(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", dev, err)
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("size of %s: %w", dev, err)
	}
	buf := make([]byte, blankProbe)
	for _, off := range sampleOffsets(size) {
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read %s: %w", dev, err)
		}
		for i, b := range buf[:n] {
			if b != 0 {
				return fmt.Sprintf("non-zero byte at offset %d", off+int64(i)), nil
			}
		}
	}
	return "", nil
}

// sampleOffsets are where HoldsData reads: the first and the last blankProbe bytes, and blankSamples
// stretches evenly between them (all of a device smaller than that).
func sampleOffsets(size int64) []int64 {
	offs := []int64{0}
	if size <= blankProbe {
		return offs
	}
	last := size - blankProbe
	for i := int64(1); i <= blankSamples; i++ {
		off := last * i / (blankSamples + 1)
		off -= off % 4096 // block aligned
		if off > offs[len(offs)-1] {
			offs = append(offs, off)
		}
	}
	return append(offs, last)
}

// WipeSignatures erases every signature blkid finds on dev (wipefs --all): the start of a filesystem that
// handover's own mkfs left when it was killed part way, so that mkfs can run again without a force flag.
// Only for a volume whose tags prove that nothing but that mkfs ever wrote to it (agent/filesystem.go).
// https://man7.org/linux/man-pages/man8/wipefs.8.html
func (l *Linux) WipeSignatures(ctx context.Context, log *slog.Logger, dev string) error {
	if _, err := runTool(ctx, "wipefs", "--all", dev); err != nil {
		return fmt.Errorf("wipe the signatures of an interrupted mkfs on %s: %w", dev, err)
	}
	log.Info("signatures of an interrupted mkfs wiped")
	return nil
}

// MakeFilesystem formats a blank volume. No force flag: mkfs.xfs refuses a device with any signature, and
// mke2fs asks before overwriting one (and reads "no" from the empty stdin), a second guard behind the
// blkid check. Discard is skipped: a new EBS volume has nothing to discard, and discarding a large one
// takes minutes.
func (l *Linux) MakeFilesystem(ctx context.Context, log *slog.Logger, dev, fs string) error {
	var err error
	switch fs {
	case "xfs":
		_, err = runTool(ctx, "mkfs.xfs", "-q", "-K", dev)
	default:
		_, err = runTool(ctx, "mkfs.ext4", "-q", "-E", "nodiscard", dev)
	}
	if err != nil {
		return fmt.Errorf("make %s filesystem on %s: %w", fs, dev, err)
	}
	log.Info("filesystem made on a blank volume", logkey.FS, fs)
	return nil
}

// growSlack is how much larger than its filesystem a device must be before it is grown: less is
// rounding at the end of the device.
const growSlack = 64 << 20

// Grow grows the filesystem to the device when the volume is larger than it (a restore into a
// larger --size). up calls it mounted: resize2fs on a mounted ext4 resizes online (the kernel's
// EXT4_IOC_RESIZE_FS, which needs CAP_SYS_RESOURCE; a container may lack it), xfs_growfs grows a mounted
// xfs (the only way xfs grows). Unmounted (mounted false) ext grows offline, e2fsck -f first as resize2fs
// demands, which reads the whole filesystem: not for a volume EBS is still loading from its snapshot. A
// failure is logged and reported, not fatal: the data is intact and usable at the old size, and the next
// up (at boot) tries again. It returns what happened, "" when nothing was needed.
// https://docs.aws.amazon.com/ebs/latest/userguide/recognize-expanded-volume-linux.html
func (l *Linux) Grow(ctx context.Context, log *slog.Logger, dev, mountPoint, fsType string, mounted bool) string {
	devBytes, err := deviceSize(dev)
	if err != nil {
		log.Warn("could not read the device size; not growing", logkey.Error, err.Error())
		return ""
	}
	fsBytes, err := filesystemSize(ctx, dev, mountPoint, fsType)
	if err != nil {
		log.Warn("could not read the filesystem size; not growing", logkey.Error, err.Error())
		return ""
	}
	if devBytes-fsBytes < growSlack {
		return ""
	}
	var steps [][]string
	switch {
	case strings.HasPrefix(fsType, "ext") && !mounted:
		steps = [][]string{{"e2fsck", "-f", "-p", dev}, {"resize2fs", dev}}
	case strings.HasPrefix(fsType, "ext"):
		steps = [][]string{{"resize2fs", dev}} // mounted: online
	case fsType == "xfs" && mounted:
		steps = [][]string{{"xfs_growfs", mountPoint}}
	default:
		return ""
	}
	for _, s := range steps {
		if _, err := runTool(ctx, s[0], s[1:]...); err != nil {
			var exit *exec.ExitError
			if s[0] == "e2fsck" && errors.As(err, &exit) && exit.ExitCode() == 1 {
				continue // 1: errors corrected
			}
			log.Warn("filesystem not grown; it stays usable at its old size", logkey.FromBytes, fsBytes, logkey.ToBytes, devBytes, logkey.Error, err.Error())
			return fmt.Sprintf("not grown from %s to %s: %s", gib(fsBytes), gib(devBytes), oneLine(err.Error()))
		}
	}
	log.Info("filesystem grown to the volume", logkey.FromBytes, fsBytes, logkey.ToBytes, devBytes)
	return fmt.Sprintf("grown from %s to %s", gib(fsBytes), gib(devBytes))
}

func gib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB" }

// deviceSize is the size of a block device: seeking to its end reports it.
func deviceSize(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

var (
	ext4BlockCountRE = regexp.MustCompile(`(?m)^Block count:\s+(\d+)`)
	ext4BlockSizeRE  = regexp.MustCompile(`(?m)^Block size:\s+(\d+)`)
	xfsDataRE        = regexp.MustCompile(`(?m)^data\s+=\s+bsize=(\d+)\s+blocks=(\d+)`)
)

// filesystemSize is how many bytes of the device the filesystem covers.
func filesystemSize(ctx context.Context, dev, mountPoint, fsType string) (int64, error) {
	if strings.HasPrefix(fsType, "ext") {
		out, err := runTool(ctx, "dumpe2fs", "-h", dev)
		if err != nil {
			return 0, err
		}
		return parseExtSize(out)
	}
	if fsType == "xfs" && mountPoint != "" {
		out, err := runTool(ctx, "xfs_info", mountPoint)
		if err != nil {
			return 0, err
		}
		return parseXFSSize(out)
	}
	return 0, fmt.Errorf("size of a %s filesystem: not supported", fsType)
}

func parseExtSize(dumpe2fs string) (int64, error) {
	c, s := ext4BlockCountRE.FindStringSubmatch(dumpe2fs), ext4BlockSizeRE.FindStringSubmatch(dumpe2fs)
	if c == nil || s == nil {
		return 0, errors.New("dumpe2fs -h: no block count or block size")
	}
	count, _ := strconv.ParseInt(c[1], 10, 64)
	size, _ := strconv.ParseInt(s[1], 10, 64)
	return count * size, nil
}

func parseXFSSize(xfsInfo string) (int64, error) {
	m := xfsDataRE.FindStringSubmatch(xfsInfo)
	if m == nil {
		return 0, errors.New("xfs_info: no data section")
	}
	bsize, _ := strconv.ParseInt(m[1], 10, 64)
	blocks, _ := strconv.ParseInt(m[2], 10, 64)
	return bsize * blocks, nil
}

// runTool runs a system tool and returns its standard output. A failure carries the tool's last words.
func runTool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = nil // the empty stdin answers "no" to any question
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if len(msg) > 300 {
			msg = "..." + msg[len(msg)-300:]
		}
		return stdout.String(), &toolError{cmd: name + " " + strings.Join(args, " "), out: oneLine(msg), err: err}
	}
	return stdout.String(), nil
}

// toolError is a system tool that failed; it unwraps to the *exec.ExitError.
type toolError struct {
	cmd, out string
	err      error
}

func (e *toolError) Error() string {
	if e.out == "" {
		return e.cmd + ": " + e.err.Error()
	}
	return e.cmd + ": " + e.err.Error() + ": " + e.out
}

func (e *toolError) Unwrap() error { return e.err }

// MountUnit is the persisted mount of one slot.
type MountUnit struct {
	Group, Slot string
	UUID        string
	MountPoint  string
	Type        string
	Options     string
	// DeviceTimeout is how long systemd waits at boot for the device before it gives up on the mount
	// (and on the units that need it); 0 is DefaultDeviceTimeout.
	DeviceTimeout time.Duration
}

// DefaultDeviceTimeout is how long a boot waits for a mount unit's device: systemd's own default for
// device jobs, written down so that a machine whose DefaultTimeoutStartSec= is infinity (or whose
// DefaultDeviceTimeoutSec= is long) cannot hold the data's service forever when the volume is gone (it
// was handed over while the instance was stopped). A volume attached at boot shows up in seconds; a
// missing one is handover up's to attach, which waits for its device with its own bound.
const DefaultDeviceTimeout = 90 * time.Second

func (u MountUnit) Name() string { return SystemdEscapePath(u.MountPoint) + ".mount" }

// What is the device the unit mounts: the filesystem by UUID.
func (u MountUnit) What() string { return "/dev/disk/by-uuid/" + u.UUID }

// DeviceUnit is the name of the device unit systemd makes for What (the mount binds to it).
func (u MountUnit) DeviceUnit() string { return SystemdEscapePath(u.What()) + ".device" }

// DeviceDropIn is the drop-in that carries the device timeout, relative to the unit directory.
//
// x-systemd.device-timeout= is an fstab option only: systemd.mount(5) says it "will be ignored when part
// of the Options= setting in a unit file". systemd's generators turn it into a drop-in for the device
// unit that sets JobRunningTimeoutSec= (a device's start job runs from the moment it is queued, so that
// is the wait for the device); handover writes the same. Not TimeoutSec= in [Mount]: that bounds the
// mount command itself, which after a crash may replay a journal for a long time, and killing it helps
// no one. https://www.freedesktop.org/software/systemd/man/latest/systemd.mount.html
// https://www.freedesktop.org/software/systemd/man/latest/systemd.unit.html#JobTimeoutSec=
func (u MountUnit) DeviceDropIn() string {
	return filepath.Join(u.DeviceUnit()+".d", "50-handover-device-timeout.conf")
}

func (u MountUnit) deviceTimeout() time.Duration {
	if u.DeviceTimeout > 0 {
		return u.DeviceTimeout
	}
	return DefaultDeviceTimeout
}

func (u MountUnit) Content() string {
	opts := "nofail"
	if u.Options != "" {
		opts += "," + u.Options
	}
	return fmt.Sprintf(`# Written by handover up for group %s, slot %s; rewritten at every run: change --volume instead.
# nofail: boot neither waits for this volume nor fails without it; handover up attaches and mounts it.
# The wait for the device is bounded in %s (JobRunningTimeoutSec=%s):
# x-systemd.device-timeout= is ignored in a unit's Options=.
[Unit]
Description=handover volume %s/%s at %s

[Mount]
What=%s
Where=%s
Type=%s
Options=%s

[Install]
WantedBy=local-fs.target
`, u.Group, u.Slot, u.DeviceDropIn(), systemdSeconds(u.deviceTimeout()), u.Group, u.Slot, u.MountPoint, u.What(), u.MountPoint, u.Type, opts)
}

// DeviceDropInContent is the device unit's drop-in: the device timeout.
func (u MountUnit) DeviceDropInContent() string {
	return fmt.Sprintf(`# Written by handover up with %s: how long systemd waits for the device at boot
# (what x-systemd.device-timeout= does in fstab).
[Unit]
JobRunningTimeoutSec=%s
`, u.Name(), systemdSeconds(u.deviceTimeout()))
}

func systemdSeconds(d time.Duration) string {
	return strconv.FormatInt(int64(d.Round(time.Second)/time.Second), 10) + "s"
}

// Systemd is the running service manager, which must be told (daemon-reload) about a unit written or
// changed while it runs: until then it goes on with what it read at boot, and `systemctl status` and the
// RequiresMountsFor= of a service started now do not see the new mount unit. The fields are there so
// that tests need no systemd; zero values are the real ones.
type Systemd struct {
	// Booted reports whether systemd is the running service manager: /run/systemd/system exists
	// exactly then (sd_booted(3)). https://www.freedesktop.org/software/systemd/man/latest/sd_booted.html
	Booted func() bool
	// Reload is systemctl daemon-reload; it returns when the manager has reloaded.
	Reload func(ctx context.Context) error
	// Loads reports whether the manager loads units from dir.
	Loads func(dir string) bool
}

// RealSystemd is this machine's systemd.
func RealSystemd() Systemd {
	return Systemd{
		Booted: func() bool { fi, err := os.Stat("/run/systemd/system"); return err == nil && fi.IsDir() },
		Reload: func(ctx context.Context) error { _, err := runTool(ctx, "systemctl", "daemon-reload"); return err },
		Loads:  func(dir string) bool { return systemUnitDirs[filepath.Clean(dir)] },
	}
}

// daemonReloadBound bounds systemctl daemon-reload. A reload takes a second or two; past this bound the
// manager is in trouble, the mount is made already and the next boot loads the unit anyway.
const daemonReloadBound = time.Minute

// systemUnitDirs are the directories the system manager loads units from that an administrator may
// write to (systemd.unit(5), "Unit File Load Path"). A unit written anywhere else (a test's directory, an
// image being built under /mnt) is none of the running manager's business.
// https://www.freedesktop.org/software/systemd/man/latest/systemd.unit.html#Unit%20File%20Load%20Path
var systemUnitDirs = map[string]bool{
	"/etc/systemd/system": true, "/run/systemd/system": true,
	"/usr/local/lib/systemd/system": true, "/usr/lib/systemd/system": true, "/lib/systemd/system": true,
}

func (l *Linux) systemd() Systemd {
	s, real := l.Systemd, RealSystemd()
	if s.Booted == nil {
		s.Booted = real.Booted
	}
	if s.Reload == nil {
		s.Reload = real.Reload
	}
	if s.Loads == nil {
		s.Loads = real.Loads
	}
	return s
}

// WriteMountUnit writes the unit, its device's timeout drop-in and its local-fs.target.wants link (what
// `systemctl enable` does) when they differ from what is there, each file atomically (a temporary file
// renamed over the old one); the drop-in of the device a previous version of the unit named is removed.
// When anything changed in a directory the running systemd loads units from, it runs systemctl
// daemon-reload (bounded; a failure is a warning: the mount is made, and the next boot loads the unit).
// It returns the unit's path.
func (l *Linux) WriteMountUnit(ctx context.Context, log *slog.Logger, dir string, u MountUnit) (string, error) {
	path := filepath.Join(dir, u.Name())
	old, _ := os.ReadFile(path)
	changed, err := writeFileAtomic(path, u.Content())
	if err != nil {
		return "", fmt.Errorf("write mount unit %s: %w", path, err)
	}
	if prev := unitWhat(string(old)); prev != "" && prev != u.What() {
		// The slot's filesystem is another one now (a new blank volume): its old device's drop-in goes.
		stale := MountUnit{UUID: strings.TrimPrefix(prev, "/dev/disk/by-uuid/")}.DeviceDropIn()
		if err := os.Remove(filepath.Join(dir, stale)); err == nil {
			_ = os.Remove(filepath.Dir(filepath.Join(dir, stale))) // only if empty
			changed = true
		}
	}
	dropIn := filepath.Join(dir, u.DeviceDropIn())
	if err := os.MkdirAll(filepath.Dir(dropIn), 0o755); err != nil {
		return "", fmt.Errorf("write the device timeout of mount unit %s: %w", path, err)
	}
	c, err := writeFileAtomic(dropIn, u.DeviceDropInContent())
	if err != nil {
		return "", fmt.Errorf("write the device timeout of mount unit %s: %w", path, err)
	}
	changed = changed || c
	c, err = enableMountUnit(dir, u.Name())
	if err != nil {
		return "", err
	}
	if changed = changed || c; changed {
		l.reloadSystemd(ctx, log, dir, path)
	}
	return path, nil
}

// reloadSystemd tells a running systemd about the units written in dir.
func (l *Linux) reloadSystemd(ctx context.Context, log *slog.Logger, dir, unit string) {
	log = log.With(logkey.Step, "mount", "unit", unit)
	sd := l.systemd()
	switch {
	case !sd.Loads(dir):
		log.Info("mount unit written outside systemd's unit directories: no daemon-reload", "unit_dir", dir)
		return
	case !sd.Booted():
		log.Info("systemd is not running (no /run/systemd/system): no daemon-reload; it loads the mount unit when it starts")
		return
	}
	rctx, cancel := context.WithTimeout(ctx, daemonReloadBound)
	defer cancel()
	if err := sd.Reload(rctx); err != nil {
		log.Warn("mount unit written, but systemctl daemon-reload failed: systemd loads it at the next boot; run systemctl daemon-reload",
			logkey.Bound, daemonReloadBound.String(), logkey.Error, err.Error())
		return
	}
	log.Info("systemd reloaded: it knows the mount unit")
}

// unitWhat is the What= of a mount unit's text, "" when it has none.
func unitWhat(content string) string {
	for _, line := range strings.Split(content, "\n") {
		if v, ok := strings.CutPrefix(line, "What="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// writeFileAtomic writes content to path, unless it holds exactly that already, through a temporary file
// in the same directory renamed over it. It reports whether it wrote.
func writeFileAtomic(path, content string) (bool, error) {
	if have, err := os.ReadFile(path); err == nil && string(have) == content {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return false, err
	}
	_, werr := tmp.WriteString(content)
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil {
		os.Remove(tmp.Name())
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return false, err
	}
	return true, nil
}

// enableMountUnit makes the local-fs.target.wants link of the unit, as `systemctl enable` would. It
// reports whether it made it.
func enableMountUnit(dir, name string) (bool, error) {
	wants := filepath.Join(dir, "local-fs.target.wants")
	link := filepath.Join(wants, name)
	if target, err := os.Readlink(link); err == nil && target == filepath.Join("..", name) {
		return false, nil
	}
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return false, fmt.Errorf("enable mount unit: %w", err)
	}
	_ = os.Remove(link)
	if err := os.Symlink(filepath.Join("..", name), link); err != nil {
		return false, fmt.Errorf("enable mount unit: %w", err)
	}
	return true, nil
}

// SystemdEscapePath is `systemd-escape --path`: a mount unit must be named after its mount point, with
// "/" as "-" and every byte outside [A-Za-z0-9:_.] (and a leading ".") as \xNN.
// https://www.freedesktop.org/software/systemd/man/latest/systemd.unit.html#String%20Escaping%20for%20Inclusion%20in%20Unit%20Names
func SystemdEscapePath(p string) string {
	p = strings.Trim(filepath.Clean(p), "/")
	if p == "" {
		return "-"
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '/':
			b.WriteByte('-')
		case c == '.' && i == 0:
			fmt.Fprintf(&b, `\x%02x`, c)
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == ':', c == '_', c == '.':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// MountPointProblem says what makes dir unusable as a mount point, "" when nothing does: each part of the
// path that exists must be a directory (Mount makes the missing ones), and none may be a symbolic link,
// because mount(8) mounts on the path the link resolves to and the mount table then shows that path, so
// every later run would find the volume "mounted elsewhere". It changes nothing.
func (l *Linux) MountPointProblem(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "is not an absolute path", nil
	}
	dir = filepath.Clean(dir)
	parts := strings.Split(strings.TrimPrefix(dir, "/"), "/")
	p := "/"
	for _, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if errors.Is(err, os.ErrNotExist) {
			// Made by Mount, under the last part that exists: it must be writable there.
			if problem := WriteProblem(filepath.Dir(p)); problem != "" {
				return "cannot be made: " + problem, nil
			}
			return "", nil
		}
		if err != nil {
			return "", fmt.Errorf("mount point %s: %w", dir, err)
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := filepath.EvalSymlinks(p)
			if p == dir {
				return fmt.Sprintf("is a symbolic link to %s (mount would mount on that path instead)", orQuestion(target)), nil
			}
			return fmt.Sprintf("is under %s, a symbolic link to %s (mount would mount under that path instead)", p, orQuestion(target)), nil
		case !fi.IsDir() && p == dir:
			return fmt.Sprintf("is an existing %s, not a directory", fileKind(fi.Mode())), nil
		case !fi.IsDir():
			return fmt.Sprintf("is under %s, an existing %s, not a directory", p, fileKind(fi.Mode())), nil
		}
	}
	return "", nil
}

// WriteProblem says why a file could not be written in dir (or in the directories up to it, made when
// missing), "" when nothing is known to stop it: the nearest part of the path that exists is on a
// read-only filesystem, or not writable by this process (access(2) with W_OK, which reports both; a full
// filesystem it cannot see). It changes nothing.
func (l *Linux) WriteProblem(dir string) string { return WriteProblem(dir) }

// WriteProblem is Linux.WriteProblem, for callers without a Host.
func WriteProblem(dir string) string {
	p := filepath.Clean(dir)
	for {
		if _, err := os.Lstat(p); err == nil || p == "/" || p == "." {
			break
		}
		p = filepath.Dir(p)
	}
	switch err := unix.Access(p, unix.W_OK); {
	case err == nil:
		return ""
	case errors.Is(err, unix.EROFS):
		return p + " is on a read-only filesystem"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return p + " is not writable"
	default:
		return fmt.Sprintf("%s: %v", p, err)
	}
}

func orQuestion(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// fileKind names a file's type for a message.
func fileKind(m os.FileMode) string {
	switch {
	case m.IsRegular():
		return "regular file"
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		return "block device"
	case m&os.ModeCharDevice != 0:
		return "character device"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	}
	return "file that is not a directory"
}

// Mount mounts the filesystem of type fsType on dev at mountPoint (made if missing) with options
// (comma-separated, may be empty).
func (l *Linux) Mount(ctx context.Context, dev, mountPoint, fsType, options string) error {
	if err := os.MkdirAll(mountPoint, 0o755); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	args := []string{"-t", fsType}
	if options != "" {
		args = append(args, "-o", options)
	}
	_, err := runTool(ctx, "mount", append(args, dev, mountPoint)...)
	return err
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
