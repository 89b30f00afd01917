package agent

import (
	"fmt"
	"slices"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
)

// mountPointFree refuses, before anything changes, a slot whose mount point has something else mounted on
// it: up would otherwise take the address and make or attach the volume, and only then stop at the mount
// (exit 3) with all of that done. The slot's own volume, attached here and mounted there (a rerun), is
// what should be there.
func mountPointFree(h host.Host, spec volumeSpec, view cloud.SlotView, self string) error {
	m, ok, err := h.MountedAt(spec.MountPoint)
	if err != nil || !ok {
		return err
	}
	for _, v := range view.Volumes {
		if !slices.ContainsFunc(v.Attachments, func(a cloud.Attachment) bool { return a.InstanceID == self }) {
			continue
		}
		dev, _, err := h.FindVolumeDevice(v.ID)
		if err != nil || dev == "" {
			continue
		}
		mounts, err := h.MountsOf(dev)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(mounts, func(mm host.Mount) bool { return mm.MountPoint == spec.MountPoint }) {
			return nil
		}
	}
	return fail.Precondition(fmt.Sprintf("%s is already a mount point of %s (%s), not of slot %s's volume: unmount it, or change the mount point in --volume",
		spec.MountPoint, m.Source, m.FSType, spec.Slot), nil)
}
