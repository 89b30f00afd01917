package host

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Finding an attached EBS volume's block device. On Nitro instances EBS volumes are NVMe devices whose
// kernel names (/dev/nvme1n1, ...) depend on attachment order, not on the device name given to
// AttachVolume; udev links each one as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<ID without the
// dash>, from the NVMe serial number, which is the volume ID.
// https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html
//
// A link can be stale: udev has not caught up yet after a detach and an attach, and the name still points
// at a device that now holds another volume. So the device the link resolves to is accepted only when its
// own serial (/sys/class/block/NAME/device/serial) is the volume ID, as the EBS CSI driver does before it
// formats or mounts anything.

// DeviceBound is how long a freshly attached volume may take to show up as a block device.
const DeviceBound = 2 * time.Minute

// NVMeSerial is the NVMe serial number of an EBS volume: its ID without the dash ("vol0123...").
func NVMeSerial(volumeID string) string { return strings.ReplaceAll(volumeID, "-", "") }

// DeviceLink is the udev by-id link of a volume under devDir.
func DeviceLink(devDir, volumeID string) string {
	return filepath.Join(devDir, "disk", "by-id", "nvme-Amazon_Elastic_Block_Store_"+NVMeSerial(volumeID))
}

// ErrNotBlockDevice: the link resolves to something that is not a block device; waiting will not help.
var ErrNotBlockDevice = errors.New("not a block device")

// FindVolumeDevice looks once for the volume's block device. It returns the device path, or "" and what it
// saw ("no link yet", "stale link to ...") when the device is not there yet.
func (l *Linux) FindVolumeDevice(volumeID string) (string, string, error) {
	link := DeviceLink(l.DevDir, volumeID)
	st, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "no " + filepath.Base(link) + " yet", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("look for the device of %s: %w", volumeID, err)
	}
	if st.Mode()&os.ModeSymlink == 0 {
		return "", "", fmt.Errorf("%s is not a symbolic link: %w", link, ErrNotBlockDevice)
	}
	dev, err := filepath.EvalSymlinks(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "dangling " + filepath.Base(link), nil
	}
	if err != nil {
		return "", "", fmt.Errorf("resolve %s: %w", link, err)
	}
	dst, err := os.Stat(dev)
	if err != nil {
		return "", "", fmt.Errorf("stat %s: %w", dev, err)
	}
	if dst.Mode()&os.ModeDevice == 0 || dst.Mode()&os.ModeCharDevice != 0 {
		return "", "", fmt.Errorf("%s resolves to %s: %w", link, dev, ErrNotBlockDevice)
	}
	serialPath := filepath.Join(l.SysDir, "class", "block", filepath.Base(dev), "device", "serial")
	b, err := os.ReadFile(serialPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", "no serial for " + dev + " yet", nil
	}
	if err != nil {
		return "", "", fmt.Errorf("read the serial of %s: %w", dev, err)
	}
	// NVMe serials are padded with spaces to 20 characters.
	if serial := strings.TrimSpace(string(b)); serial != NVMeSerial(volumeID) {
		return "", fmt.Sprintf("stale link to %s (serial %s)", dev, serial), nil
	}
	return dev, "", nil
}

// WaitForDevice waits, at most bound, for the volume's block device and returns its path.
func (l *Linux) WaitForDevice(ctx context.Context, log *slog.Logger, volumeID string, bound time.Duration) (string, error) {
	var dev string
	err := wait.Poll(ctx, log.With(logkey.Volume, volumeID), wait.Spec{What: "block device of " + volumeID, Bound: bound, Step: "device",
		Initial: 100 * time.Millisecond, Max: 500 * time.Millisecond},
		func(context.Context) (bool, string, error) {
			d, seen, err := l.FindVolumeDevice(volumeID)
			if err != nil {
				return false, "", backoff.Permanent(err)
			}
			dev = d
			return d != "", seen, nil
		})
	if errors.Is(err, wait.ErrTimeout) {
		return "", &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("%s is attached but its device %s did not appear with serial %s within %s (is this a Nitro instance with udev running?)",
			volumeID, DeviceLink(l.DevDir, volumeID), NVMeSerial(volumeID), bound), Err: err}
	}
	return dev, err
}
