// Package host is handover's host layer: everything it does to the machine it runs on — find the block
// device of a volume by its serial, read the mount table, flush, freeze and thaw, unmount, probe, make,
// grow and mount filesystems, persist mounts as systemd units, run the pre-stop command, take the
// instance lock. Values in and out are plain (paths, device names, volume IDs as strings); it knows
// nothing of EC2 or Auto Scaling, and never imports the cloud layer.
//
// Commands use it through the Host interface, so a test that needs no real block device can substitute
// one; Linux is the implementation, holding the directories it works in.
package host

import (
	"context"
	"log/slog"
	"time"
)

// Host is what the commands do to this machine.
type Host interface {
	// WaitForDevice waits, at most bound, for the block device of an attached EBS volume and returns its path.
	WaitForDevice(ctx context.Context, log *slog.Logger, volumeID string, bound time.Duration) (string, error)
	// FindVolumeDevice looks once; "" and what it saw when the device is not there (yet).
	FindVolumeDevice(volumeID string) (dev, seen string, err error)
	MountsOf(dev string) ([]Mount, error)
	MountedAt(dir string) (Mount, bool, error)
	// MountPointProblem says what makes dir unusable as a mount point ("" when nothing does).
	MountPointProblem(dir string) (string, error)
	// WriteProblem says why nothing could be written in dir ("" when nothing is known to stop it).
	WriteProblem(dir string) string
	Sync(ctx context.Context, log *slog.Logger) error
	Unmount(ctx context.Context, log *slog.Logger, mounts []Mount) error
	WhileFrozen(ctx context.Context, log *slog.Logger, mountPoints []string, bound time.Duration,
		fn func(ctx context.Context, frozen map[string]bool) error) error
	Probe(ctx context.Context, dev string) (Signature, error)
	HoldsData(dev string) (string, error)
	WipeSignatures(ctx context.Context, log *slog.Logger, dev string) error
	MakeFilesystem(ctx context.Context, log *slog.Logger, dev, fs string) error
	Mount(ctx context.Context, dev, mountPoint, fsType, options string) error
	Grow(ctx context.Context, log *slog.Logger, dev, mountPoint, fsType string, mounted bool) string
	WriteMountUnit(ctx context.Context, log *slog.Logger, dir string, u MountUnit) (string, error)
	RunPreStop(ctx context.Context, log *slog.Logger, spec PreStop) error
	Lock(ctx context.Context, path string, bound time.Duration) (*Lock, error)
	// Storage says whether EBS volumes show as NVMe devices here (hypervisor.go).
	Storage() (Storage, error)
	// ThawLeftFrozen thaws what a run that died while frozen left frozen; call it holding the instance lock.
	ThawLeftFrozen(ctx context.Context, log *slog.Logger) ([]string, error)
}

var _ Host = (*Linux)(nil)

// Linux is the host on a Linux EC2 instance (or in the simulator, which points the directories elsewhere).
type Linux struct {
	DevDir    string  // holds disk/by-id: /dev
	SysDir    string  // holds class/block/*/device/serial: /sys
	MountInfo string  // the mount table; "" is /proc/self/mountinfo
	Calls     FSCalls // the calls that can block on a hung device; zero is the kernel's
	Systemd   Systemd // the service manager told about new mount units; zero is this machine's
	// FreezeMarkers is the directory of freeze markers (freezemark.go; FreezeMarkerDir of the lock file);
	// "" writes none.
	FreezeMarkers string
}

// New returns the host with its device and sysfs directories.
func New(devDir, sysDir string) *Linux { return &Linux{DevDir: devDir, SysDir: sysDir} }

func (l *Linux) calls() FSCalls {
	c, real := l.Calls, RealFSCalls()
	if c.Sync == nil {
		c.Sync = real.Sync
	}
	if c.Unmount == nil {
		c.Unmount = real.Unmount
	}
	if c.Freeze == nil {
		c.Freeze = real.Freeze
	}
	return c
}

func (l *Linux) mountInfo() string {
	if l.MountInfo == "" {
		return mountInfoPath
	}
	return l.MountInfo
}
