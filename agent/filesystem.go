package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

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
	ext := strings.HasPrefix(sig.Type, "ext")
	if !mounted {
		if ext {
			// ext grows before the mount: offline resize2fs needs no capability beyond opening the device.
			res.Grown = h.Grow(ctx, log, req.Device, "", sig.Type, false)
		}
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
	if !ext || mounted {
		if g := h.Grow(ctx, log, req.Device, req.Spec.MountPoint, sig.Type, true); g != "" {
			res.Grown = g
		}
	}
	if req.UnitDir != unitDirNone {
		unit, err := h.WriteMountUnit(req.UnitDir, host.MountUnit{Group: req.Group, Slot: req.Spec.Slot, UUID: sig.UUID,
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

// checkMountPoint refuses, before up changes anything (its precheck), a mount point that cannot take the
// slot's volume: a path that is an existing file other than a directory (or lies under one, or under a
// symbolic link), or one that something else is mounted on. Found only after the attach, either used to
// end the run with exit 1 and the volume attached here, the address taken. What is mounted there is the
// slot's own volume when it is a mount of the device of one of the slot's volumes attached to this
// instance (a rerun after success).
func checkMountPoint(h host.Host, spec volumeSpec, attachedHere []cloud.Volume) error {
	problem, err := h.MountPointProblem(spec.MountPoint)
	if err != nil {
		return err
	}
	if problem != "" {
		return fail.Precondition(fmt.Sprintf("slot %s: mount point %s %s: remove it, or choose another mount point in --volume (HANDOVER_VOLUME)",
			spec.Slot, spec.MountPoint, problem), nil)
	}
	m, mounted, err := h.MountedAt(spec.MountPoint)
	if err != nil || !mounted {
		return err
	}
	for _, v := range attachedHere {
		dev, _, err := h.FindVolumeDevice(v.ID)
		if err != nil || dev == "" {
			continue
		}
		mounts, err := h.MountsOf(dev)
		if err != nil {
			continue
		}
		for _, own := range mounts {
			if own.MountPoint == m.MountPoint {
				return nil
			}
		}
	}
	return fail.Precondition(fmt.Sprintf("slot %s: %s already has %s (%s) mounted on it, not the slot's volume: unmount it, or choose another mount point in --volume (HANDOVER_VOLUME)",
		spec.Slot, spec.MountPoint, m.Source, m.FSType), nil)
}

// attachedTo lists the volumes attached (or attaching) to instance.
func attachedTo(vols []cloud.Volume, instance string) []cloud.Volume {
	var out []cloud.Volume
	for _, v := range vols {
		for _, a := range v.Attachments {
			if a.InstanceID == instance {
				out = append(out, v)
				break
			}
		}
	}
	return out
}
