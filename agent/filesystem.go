package agent

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// Filesystems and mounts. The one rule that matters most: handover makes a filesystem only on a volume it
// created blank itself (tagged handover:created-blank=true) that still has no signature at all. Anything
// else without a recognisable filesystem — a restore of a broken snapshot, a volume someone else made, a
// disk with partitions — is refused with exit 3 and left untouched: a format is the one mistake that
// cannot be undone.
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

// fsRequest is one slot's device to make ready.
type fsRequest struct {
	Device       string
	VolumeID     string
	CreatedBlank bool                        // tagged handover:created-blank=true: the only kind of volume handover may format
	Fence        func(context.Context) error // the lease check before mkfs and before mount; nil: none
	Spec         volumeSpec
	FS           string // what to make on a blank volume: ext4 or xfs
	UnitDir      string // where to persist the mount, or unitDirNone
	Group        string
}

func (r fsRequest) fence(ctx context.Context) error {
	if r.Fence == nil {
		return nil
	}
	return r.Fence(ctx)
}

// fsResult is what prepareFilesystem found and did.
type fsResult struct {
	Type       string `json:"type,omitempty"`
	UUID       string `json:"uuid,omitempty"`
	MountPoint string `json:"mount_point,omitempty"`
	Formatted  bool   `json:"formatted,omitempty"`
	Mounted    string `json:"mounted,omitempty"` // "mounted" or "already mounted"
	Grown      string `json:"grown,omitempty"`
	Unit       string `json:"unit,omitempty"`
}

// prepareFilesystem makes the slot's device a mounted, persisted filesystem: probe, make one only on a
// blank volume of handover's, grow it when the volume is larger, mount it, write the unit.
func prepareFilesystem(ctx context.Context, log *slog.Logger, h host.Host, req fsRequest) (fsResult, error) {
	log = log.With(logkey.Step, "filesystem", logkey.Volume, req.VolumeID, logkey.Device, req.Device)
	res := fsResult{MountPoint: req.Spec.MountPoint}
	sig, err := h.Probe(ctx, req.Device)
	if err != nil {
		return res, err
	}
	switch {
	case sig.PTType != "":
		return res, fail.Precondition(fmt.Sprintf("%s (%s) holds a %s partition table, not a filesystem: handover mounts whole-device filesystems only and will not touch it",
			req.VolumeID, req.Device, sig.PTType), nil)
	case sig.Type == "" && !req.CreatedBlank:
		return res, fail.Precondition(fmt.Sprintf("%s (%s) has no filesystem and handover did not create it blank (no %s=true tag): refusing to format it; check the snapshot it came from, or make the filesystem yourself if it really is empty",
			req.VolumeID, req.Device, cloud.TagCreatedBlank), nil)
	case sig.Type == "":
		// Tagged blank is not enough: a blank volume that has since been used and lost its superblock must
		// not be formatted either. A volume EBS made empty reads as zeros.
		if used, err := h.HoldsData(req.Device); err != nil {
			return res, err
		} else if used != "" {
			return res, fail.Precondition(fmt.Sprintf("%s (%s) was created blank by handover but holds data (%s) and no filesystem signature: refusing to format it; inspect it by hand",
				req.VolumeID, req.Device, used), nil)
		}
		if err := req.fence(ctx); err != nil {
			return res, err
		}
		if err := h.MakeFilesystem(ctx, log, req.Device, req.FS); err != nil {
			return res, err
		}
		res.Formatted = true
		if sig, err = h.Probe(ctx, req.Device); err != nil {
			return res, err
		}
		if sig.Type == "" {
			return res, fmt.Errorf("mkfs.%s on %s left no filesystem signature", req.FS, req.Device)
		}
	case sig.Usage != "" && sig.Usage != "filesystem":
		return res, fail.Precondition(fmt.Sprintf("%s (%s) holds %s (%s), not a filesystem handover can mount", req.VolumeID, req.Device, sig.Type, sig.Usage), nil)
	}
	res.Type, res.UUID = sig.Type, sig.UUID

	mounted, err := checkMountState(h, req.Device, req.Spec.MountPoint, req.VolumeID)
	if err != nil {
		return res, err
	}
	if !mounted {
		if err := req.fence(ctx); err != nil {
			return res, err
		}
		if err := h.Mount(ctx, req.Device, req.Spec.MountPoint, sig.Type, req.Spec.Options); err != nil {
			return res, fmt.Errorf("mount %s (%s) at %s: %w", req.VolumeID, req.Device, req.Spec.MountPoint, err)
		}
		res.Mounted = "mounted"
		log.Info("mounted", logkey.MountPoint, req.Spec.MountPoint, logkey.FS, sig.Type, "uuid", sig.UUID)
	} else {
		res.Mounted = "already mounted"
	}
	// Mount first, then grow online (resize2fs on the mounted ext4, xfs_growfs): the service can start on
	// the data at once, and nothing reads the whole of a volume that EBS is still loading lazily from its
	// snapshot, as the offline e2fsck -f that an offline resize2fs demands would, on the critical path.
	// https://docs.aws.amazon.com/ebs/latest/userguide/recognize-expanded-volume-linux.html
	res.Grown = h.Grow(ctx, log, req.Device, req.Spec.MountPoint, sig.Type, true)
	if req.UnitDir != unitDirNone {
		unit, err := h.WriteMountUnit(ctx, log, req.UnitDir, host.MountUnit{Group: req.Group, Slot: req.Spec.Slot, UUID: sig.UUID,
			MountPoint: req.Spec.MountPoint, Type: sig.Type, Options: req.Spec.Options})
		if err != nil {
			return res, err
		}
		res.Unit = unit
	}
	return res, nil
}

// checkMountState reports whether dev is mounted at mountPoint already. Mounted anywhere else, or
// something else mounted there, is a state handover does not repair on its own (exit 3).
func checkMountState(h host.Host, dev, mountPoint, volumeID string) (bool, error) {
	mounts, err := h.MountsOf(dev)
	if err != nil {
		return false, err
	}
	for _, m := range mounts {
		if m.MountPoint == mountPoint {
			return true, nil
		}
	}
	if len(mounts) > 0 {
		return false, fail.Precondition(fmt.Sprintf("%s (%s) is mounted at %s, not at %s: unmount it, or change the mount point in --volume",
			volumeID, dev, mounts[0].MountPoint, mountPoint), nil)
	}
	if m, ok, err := h.MountedAt(mountPoint); err != nil {
		return false, err
	} else if ok {
		return false, fail.Precondition(fmt.Sprintf("%s is already a mount point of %s (%s), not of %s: unmount it, or change the mount point in --volume",
			mountPoint, m.Source, m.FSType, volumeID), nil)
	}
	return false, nil
}
