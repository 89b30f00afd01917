package sim

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Block devices. Every volume is a sparse image file of its full size
// (StateDir/volumes/vol-x.img), so a 100 GiB volume costs only the blocks
// written to it. While a volume is attached to a running instance it appears
// in the instance's device directory the way the Nitro NVMe driver and udev
// present EBS volumes
// (https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html):
//
//	StateDir/instances/i-x/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123... -> /dev/loopN
//	StateDir/instances/i-x/sys/class/block/loopN/device/serial = "vol0123..." (NVMe serial)
//
// As root the link points at a loop device (losetup), so mkfs and mount are
// real; otherwise it points at the image file itself. Detaching removes the
// link and serial and detaches the loop device with "losetup -d". A detach
// does not complete while the loop device is mounted (deviceMountedLocked:
// the attachment is busy, as on EBS), unless it is forced; a forced detach of
// a mounted device is completed lazily by the kernel (autoclear), so that
// mount keeps reading the image until it is unmounted rather than seeing I/O
// errors.

func (r *Region) volumeImage(id string) string {
	return filepath.Join(r.opts.StateDir, "volumes", id+".img")
}

func (r *Region) snapshotImage(id string) string {
	return filepath.Join(r.opts.StateDir, "snapshots", id+".img")
}

// nvmeLinkName is the udev by-id name of an EBS volume on a Nitro instance.
func nvmeLinkName(volID string) string {
	return "nvme-Amazon_Elastic_Block_Store_" + strings.ReplaceAll(volID, "-", "")
}

const gib = int64(1) << 30

// createSparse makes an empty image of sizeGiB without allocating blocks.
func createSparse(path string, sizeGiB int) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create volume image: %w", err)
	}
	if err := f.Truncate(int64(sizeGiB) * gib); err != nil {
		_ = f.Close()
		return fmt.Errorf("size volume image: %w", err)
	}
	return f.Close()
}

// copySparse copies src to dst, skipping holes (SEEK_DATA/SEEK_HOLE) so a
// mostly empty image copies in milliseconds, then sizes dst to sizeGiB (a
// restored volume may be larger than its snapshot).
func copySparse(dst, src string, sizeGiB int) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open image: %w", err)
	}
	defer func() { _ = in.Close() }()
	st, err := in.Stat()
	if err != nil {
		return fmt.Errorf("stat image: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create image: %w", err)
	}
	size := st.Size()
	if err := out.Truncate(max(size, int64(sizeGiB)*gib)); err != nil {
		_ = out.Close()
		return fmt.Errorf("size image: %w", err)
	}
	fd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			// The filesystem cannot report holes: copy the rest whole.
			data = off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := io.Copy(io.NewOffsetWriter(out, data), io.NewSectionReader(in, data, hole-data)); err != nil {
			_ = out.Close()
			return fmt.Errorf("copy image: %w", err)
		}
		off = hole
	}
	return out.Close()
}

// probeLoop reports whether loop devices can be used: root, losetup present
// and a free loop device.
func probeLoop() bool {
	if os.Geteuid() != 0 {
		return false
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return false
	}
	return exec.Command("losetup", "--find").Run() == nil
}

// addDeviceLocked makes an attached volume visible to its running instance.
func (r *Region) addDeviceLocked(v *volume) {
	// After Close no device may appear: a request still being served would attach a loop device that
	// nothing detaches any more.
	if v.Attachment == nil || r.closed {
		return
	}
	id := v.Attachment.InstanceID
	target := r.volumeImage(v.ID)
	if r.loopOK {
		if loop := r.loops[v.ID]; loop != "" {
			target = loop
		} else if out, err := exec.Command("losetup", "--find", "--show", target).Output(); err == nil {
			target = strings.TrimSpace(string(out))
			r.loops[v.ID] = target
		} else {
			r.log.Warn("losetup failed; linking the image file instead", "volume", v.ID, "err", err)
		}
	}
	byID := r.instanceDir(id, "dev", "disk", "by-id")
	link := filepath.Join(byID, nvmeLinkName(v.ID))
	serialDir := r.instanceDir(id, "sys", "class", "block", filepath.Base(target), "device")
	if err := os.MkdirAll(byID, 0o755); err != nil {
		r.log.Error("device dir", "err", err)
		return
	}
	_ = os.Remove(link)
	if err := os.Symlink(target, link); err != nil {
		r.log.Error("device link", "volume", v.ID, "err", err)
		return
	}
	if err := os.MkdirAll(serialDir, 0o755); err != nil {
		r.log.Error("serial dir", "err", err)
		return
	}
	// NVMe serials are 20 characters, space padded; "vol" + 17 hex digits
	// fills them exactly.
	serial := fmt.Sprintf("%-20s\n", strings.ReplaceAll(v.ID, "-", ""))
	if err := os.WriteFile(filepath.Join(serialDir, "serial"), []byte(serial), 0o644); err != nil {
		r.log.Error("device serial", "volume", v.ID, "err", err)
	}
	r.log.Debug("device attached", "volume", v.ID, "instance", id, "target", target)
}

// removeDeviceLocked removes the link and serial of v from the instance it
// is attached to and detaches its loop device.
func (r *Region) removeDeviceLocked(v *volume) {
	if v.Attachment == nil {
		return
	}
	id := v.Attachment.InstanceID
	target := r.volumeImage(v.ID)
	if loop := r.loops[v.ID]; loop != "" {
		target = loop
	}
	_ = os.Remove(filepath.Join(r.instanceDir(id, "dev", "disk", "by-id"), nvmeLinkName(v.ID)))
	_ = os.RemoveAll(r.instanceDir(id, "sys", "class", "block", filepath.Base(target)))
	if loop := r.loops[v.ID]; loop != "" {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			r.log.Warn("losetup -d failed", "loop", loop, "err", err, "out", string(out))
		}
		delete(r.loops, v.ID)
	}
}

// deviceMountedLocked says whether v's loop device is mounted in this mount
// namespace: a /proc/self/mountinfo line whose major:minor is the device's.
// Without a loop device (not root) nothing can be mounted.
func (r *Region) deviceMountedLocked(v *volume) bool {
	loop := r.loops[v.ID]
	if loop == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		return false
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		r.log.Warn("read mountinfo", "err", err)
		return false
	}
	for _, line := range strings.Split(string(info), "\n") {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": the third field is major:minor.
		if f := strings.Fields(line); len(f) > 2 && f[2] == dev {
			return true
		}
	}
	return false
}

// resizeDeviceLocked tells the loop driver that the image grew.
func (r *Region) resizeDeviceLocked(v *volume) {
	if loop := r.loops[v.ID]; loop != "" {
		_ = exec.Command("losetup", "-c", loop).Run()
	}
}
