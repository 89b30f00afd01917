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

// Filesystems and mounts. The one rule that matters most: handover never formats a volume that may hold
// data. A format is the one mistake that cannot be undone, so the rule is written out here and in
// FENCING.md ("When handover formats"), and decideFormat is it, as one table.
//
// handover makes a filesystem only on a volume that
//  1. it created blank: tagged handover:created-blank=true at creation (CreateVolume with no snapshot),
//     so EBS made it empty and every block reads as zeros; and
//  2. it has never handed out: no handover:handed-out tag. That tag is set (CreateTags, waited for until
//     DescribeVolumes shows it) before the volume's first mount and before `up --no-mount` reports it
//     attached, and handover never removes it. No one but handover has had the volume before then: up
//     holds the group's lease (FENCING.md), EBS attaches the volume to this one instance, and nothing is
//     told of it until up hands it out. So a volume without the tag has had no writer but handover; and
//  3. either (a) no mkfs of handover's has started on it: no handover:formatting tag, no filesystem
//     signature, no partition table, and its first and last MiB and 62 MiB sampled in between read as
//     zeros (a defence in depth behind 1 and 2: a volume someone attached and wrote by hand is seen where
//     the writes touch a sample); or (b) handover's own mkfs started on it and may have been interrupted:
//     handover:formatting=true, set before mkfs. By 2 the bytes on it are that mkfs's, whatever they are
//     (a killed mkfs leaves some, with or without a signature), so handover wipes their signatures and
//     makes the filesystem again: a crash during mkfs no longer strands the volume.
//
// Anything else without a recognisable filesystem — a restore of a broken snapshot, a volume someone else
// made, one handed out raw and written to (data in the middle, zero ends), a disk with partitions — is
// refused with exit 3 and left untouched. The tags live on the volume, so a replacement instance reads
// the same record; an instance role that may tag volumes can set handover:formatting on any volume, but
// cannot remove handover:handed-out without ec2:DeleteTags, which handover neither needs nor asks for.
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

// blankState is what a volume's tags record of its life as a blank volume (the rule above).
type blankState struct {
	CreatedBlank bool // handover:created-blank=true: made empty by handover
	Formatting   bool // handover:formatting=true: handover's mkfs started on it
	HandedOut    bool // handover:handed-out=true: given for use; never formatted again
}

func blankStateOf(v cloud.Volume) blankState {
	return blankState{CreatedBlank: v.CreatedBlank, Formatting: v.Tags[cloud.TagFormatting] == "true", HandedOut: v.Tags[cloud.TagHandedOut] == "true"}
}

// formatAction is what prepareFilesystem does with what it found on a volume.
type formatAction string

const (
	useAsIs   formatAction = "use"    // it holds a filesystem: mount it
	makeFresh formatAction = "make"   // rule 3a: make a filesystem if its bytes read as zeros
	makeAgain formatAction = "remake" // rule 3b: handover's own mkfs was interrupted: wipe and make again
	refuse    formatAction = "refuse" // never format it; the reason says why
)

// decideFormat is the rule above as a table, from the device's signature and the volume's tags. The
// byte check of 3a is prepareFilesystem's, on the device.
func decideFormat(volumeID, dev string, sig host.Signature, b blankState) (formatAction, string) {
	switch {
	case sig.PTType != "":
		return refuse, fmt.Sprintf("%s (%s) holds a %s partition table, not a filesystem: handover mounts whole-device filesystems only and will not touch it",
			volumeID, dev, sig.PTType)
	case b.CreatedBlank && !b.HandedOut && b.Formatting:
		return makeAgain, ""
	case sig.Type == "" && !b.CreatedBlank:
		return refuse, fmt.Sprintf("%s (%s) has no filesystem and handover did not create it blank (no %s=true tag): refusing to format it; check the snapshot it came from, or make the filesystem yourself if it really is empty",
			volumeID, dev, cloud.TagCreatedBlank)
	case sig.Type == "" && b.HandedOut:
		return refuse, fmt.Sprintf("%s (%s) has no filesystem, and handover handed it out before (%s=true: mounted, or attached raw by up --no-mount): what is on it may be data written to the raw device; refusing to format it; inspect it by hand, or make the filesystem yourself",
			volumeID, dev, cloud.TagHandedOut)
	case sig.Type == "":
		return makeFresh, ""
	case sig.Usage != "" && sig.Usage != "filesystem":
		return refuse, fmt.Sprintf("%s (%s) holds %s (%s), not a filesystem handover can mount", volumeID, dev, sig.Type, sig.Usage)
	}
	return useAsIs, ""
}

// fsRequest is one slot's device to make ready.
type fsRequest struct {
	Device   string
	VolumeID string
	Blank    blankState                  // what the volume's tags record (the rule above)
	Fence    func(context.Context) error // the lease check before mkfs and before mount; nil: none
	// Mark records key=true on the volume (cloud.MarkVolume): handover:formatting before mkfs,
	// handover:handed-out before the first mount. nil: a volume that needs a mark is an error.
	Mark    func(ctx context.Context, key string) error
	Spec    volumeSpec
	FS      string // what to make on a blank volume: ext4 or xfs
	UnitDir string // where to persist the mount, or unitDirNone
	Group   string
}

func (r fsRequest) fence(ctx context.Context) error {
	if r.Fence == nil {
		return nil
	}
	return r.Fence(ctx)
}

func (r fsRequest) mark(ctx context.Context, key string) error {
	if r.Mark == nil {
		return fmt.Errorf("%s: no way to record %s=true on it", r.VolumeID, key)
	}
	return r.Mark(ctx, key)
}

// handOut records, before a volume handover created blank is first given for use (mounted here, or
// attached raw for `up --no-mount`), that it is handed out: from then on it is never formatted.
func (r *fsRequest) handOut(ctx context.Context) error {
	if !r.Blank.CreatedBlank || r.Blank.HandedOut {
		return nil
	}
	if err := r.mark(ctx, cloud.TagHandedOut); err != nil {
		return fmt.Errorf("record that %s is handed out, before it is: %w", r.VolumeID, err)
	}
	r.Blank.HandedOut = true
	return nil
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

// prepareFilesystem makes the slot's device a mounted, persisted filesystem: probe, make one only where
// decideFormat allows it, record the hand-out, grow it when the volume is larger, mount it, write the unit.
func prepareFilesystem(ctx context.Context, log *slog.Logger, h host.Host, req fsRequest) (fsResult, error) {
	log = log.With(logkey.Step, "filesystem", logkey.Volume, req.VolumeID, logkey.Device, req.Device)
	res := fsResult{MountPoint: req.Spec.MountPoint}
	sig, err := h.Probe(ctx, req.Device)
	if err != nil {
		return res, err
	}
	action, why := decideFormat(req.VolumeID, req.Device, sig, req.Blank)
	switch action {
	case refuse:
		return res, fail.Precondition(why, nil)
	case makeFresh:
		// Defence in depth behind the tags: a volume EBS made empty reads as zeros.
		if used, err := h.HoldsData(req.Device); err != nil {
			return res, err
		} else if used != "" {
			return res, fail.Precondition(fmt.Sprintf("%s (%s) was created blank by handover but holds data (%s) and no filesystem signature: refusing to format it; inspect it by hand",
				req.VolumeID, req.Device, used), nil)
		}
		// The intent first, on the volume itself: should this mkfs be interrupted, the next run, here or
		// on a replacement, knows whose bytes are on it.
		if err := req.mark(ctx, cloud.TagFormatting); err != nil {
			return res, fmt.Errorf("record that handover is making a filesystem on %s, before it does: %w", req.VolumeID, err)
		}
		if sig, err = makeFilesystem(ctx, log, h, req, false); err != nil {
			return res, err
		}
		res.Formatted = true
	case makeAgain:
		log.Warn("handover's own mkfs on this volume did not finish (tagged "+cloud.TagFormatting+", never handed out): making the filesystem again",
			"found", orDash(sig.Type))
		if sig, err = makeFilesystem(ctx, log, h, req, true); err != nil {
			return res, err
		}
		res.Formatted = true
	}
	res.Type, res.UUID = sig.Type, sig.UUID

	mounted, err := checkMountState(h, req.Device, req.Spec.MountPoint, req.VolumeID)
	if err != nil {
		return res, err
	}
	if err := req.handOut(ctx); err != nil {
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

// makeFilesystem makes req.FS on the device (wiping the signatures of an interrupted mkfs first when
// again), after the lease check, and returns the new signature.
func makeFilesystem(ctx context.Context, log *slog.Logger, h host.Host, req fsRequest, again bool) (host.Signature, error) {
	if err := req.fence(ctx); err != nil {
		return host.Signature{}, err
	}
	if again {
		if err := h.WipeSignatures(ctx, log, req.Device); err != nil {
			return host.Signature{}, err
		}
	}
	if err := h.MakeFilesystem(ctx, log, req.Device, req.FS); err != nil {
		return host.Signature{}, err
	}
	sig, err := h.Probe(ctx, req.Device)
	if err != nil {
		return sig, err
	}
	if sig.Type == "" {
		return sig, fmt.Errorf("mkfs.%s on %s left no filesystem signature", req.FS, req.Device)
	}
	return sig, nil
}

// handOutRaw is `up --no-mount`'s hand-out: the volume is the user's from now on, raw, so it is recorded
// as handed out before up reports it attached (the rule above).
func handOutRaw(ctx context.Context, vol cloud.Volume, mark func(context.Context, string) error) error {
	req := fsRequest{VolumeID: vol.ID, Blank: blankStateOf(vol), Mark: mark}
	return req.handOut(ctx)
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
