package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// attachVolume attaches a volume to this instance at the configured device name. On Nitro instances the
// kernel names the device /dev/nvmeXn1 whatever name is given here, and waitForDevice finds it by volume
// ID; the name still matters to EC2, which refuses a name already in use on the instance.
// https://docs.aws.amazon.com/ebs/latest/userguide/ebs-attaching-volume.html
//
// VolumeInUse and IncorrectState mean the volume changed since it was described (another instance
// attached it, or it is not available yet): not an error here, the caller observes again and plans.
func attachVolume(ctx context.Context, log *slog.Logger, c EC2, volumeID, instanceID, device string) error {
	_, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{
		VolumeId:   aws.String(volumeID),
		InstanceId: aws.String(instanceID),
		Device:     aws.String(device),
	})
	switch {
	case err == nil:
		log.Info("attaching", logkey.Step, "attach", logkey.Volume, volumeID, logkey.Device, device)
		return nil
	case HasCode(err, CodeInstanceNotFound, codeVolumeNotFound):
		// A just-launched instance or a just-created volume may not be visible to AttachVolume yet
		// (eventual consistency): observe again. https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
		log.Info("not visible to AttachVolume yet; looking again", logkey.Step, "attach", logkey.Volume, volumeID, "code", errorCode(err))
		return nil
	case HasCode(err, codeVolumeInUse, CodeIncorrectState):
		log.Info("volume changed before it could be attached; looking again", logkey.Step, "attach", logkey.Volume, volumeID, "code", errorCode(err))
		return nil
	}
	return fmt.Errorf("attach %s to %s at %s: %w", volumeID, instanceID, device, err)
}

// detachFromStopped detaches a volume from a stopped instance. That is safe without Force: the instance's
// operating system is not running, so nothing is mounted or being written.
// https://docs.aws.amazon.com/ebs/latest/userguide/ebs-detaching-volume.html
func detachFromStopped(ctx context.Context, log *slog.Logger, c EC2, volumeID, instanceID string) error {
	_, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volumeID), InstanceId: aws.String(instanceID)})
	switch {
	case err == nil:
		log.Info("detaching from stopped instance", logkey.Step, "attach", logkey.Volume, volumeID, logkey.From, instanceID)
		return nil
	case HasCode(err, CodeIncorrectState, CodeAttachmentNotFound):
		return nil // already detaching or detached: the next observation says which
	}
	return fmt.Errorf("detach %s from stopped %s: %w", volumeID, instanceID, err)
}

// attachmentState is the state of the volume's attachment to instanceID, or "" when it has none.
func attachmentState(v Volume, instanceID string) string {
	for _, a := range v.Attachments {
		if a.InstanceID == instanceID {
			return a.State
		}
	}
	return ""
}

// volumeTransition says what a volume is in the middle of, for the log.
func volumeTransition(v Volume, self string) string {
	if len(v.Attachments) == 0 {
		return v.State
	}
	a := v.Attachments[0] // EBS volumes handover uses are never multi-attached
	if a.InstanceID == self {
		return a.State + " here"
	}
	return a.State + " on " + a.InstanceID
}

// volumeWait is one wait on a volume: until Still reports false, or until Device reports the volume's
// block device on this host.
type volumeWait struct {
	ID, What string
	Still    func(Volume) bool
	// Initial and Max shape the DescribeVolumes schedule; zero: every 250 ms.
	Initial, Max time.Duration
	// Device, when set (an attach to this instance, with the host's devices to look at), reports that the
	// volume's block device is here with the volume's serial: the attachment complete as this instance
	// sees it, known from a stat every 50 ms at no API cost. Until it appears the API is asked after 1 s,
	// 2 s and 4 s, then every 5 s (an attach that fails, a device that never comes); once it has, at once
	// and every 250 ms, and
	// the wait ends when DescribeVolumes reads "attached" too (EC2 is eventually consistent, and AWS does
	// not document which of the two comes first). Polls a mass recovery's hundreds of instances would
	// otherwise spend from the one bucket they share.
	// https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html
	Device func() bool
	// Group and Slot, when set, make each check list the slot's volumes (ListSlotVolumes) rather than
	// describe the one volume: the same one call, and the listing the run needs next anyway (the race
	// checks read the slot's generations), so the step after the wait does not list them again.
	Group, Slot string
}

// deviceAPIEvery is how often, at most, an attach wait that watches the device asks the API too.
const deviceAPIEvery = 5 * time.Second

// waitVolume polls one volume until still reports false, every 250 ms (waitVolumeFor).
func waitVolume(ctx context.Context, log *slog.Logger, c EC2, id, what string, still func(Volume) bool) error {
	_, _, err := waitVolumeFor(ctx, log, c, volumeWait{ID: id, What: what, Still: still})
	return err
}

// waitVolumeFor waits as w says and returns the volume as last described (zero when it never was), and
// whether the device was seen before the wait ended. EBS state changes (creating, attaching,
// detaching) take one to ten seconds and sit on the recovery's critical path, so the default schedule
// polls every 250 ms (±20% jitter): it overshoots the change by 125 ms on average, where the SDK waiters'
// 15 s minimum would add seconds to every recovery. The calls are filtered (describeVolume), so they
// come from the non-mutating bucket (refill 20 a second), not the unfiltered one; throttling slows the
// schedule down (wait.Poll's pressure). Waits that take minutes (snapshots, other instances) use Poll's
// slower schedule.
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
//
// A volume just created may be missing from DescribeVolumes for a while (eventual consistency); that
// counts as still waiting, for at most tokenVisibilityBound, after which the caller observes again.
// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
func waitVolumeFor(ctx context.Context, log *slog.Logger, c EC2, w volumeWait) (last Volume, byDevice bool, err error) {
	last, _, byDevice, err = waitVolumeListing(ctx, log, c, w)
	return last, byDevice, err
}

// waitVolumeListing is waitVolumeFor that also returns the slot's last listing (w.Group and w.Slot set).
func waitVolumeListing(ctx context.Context, log *slog.Logger, c EC2, w volumeWait) (last Volume, listing []Volume, byDevice bool, err error) {
	var missingSince, asked time.Time
	apiCalls := 0
	spec := wait.Spec{What: "volume " + w.ID + " " + w.What, Bound: volumeTransitionBound, Step: "volume",
		Initial: w.Initial, Max: w.Max}
	if spec.Initial == 0 {
		spec.Initial, spec.Max = 250*time.Millisecond, 250*time.Millisecond
	}
	if w.Device != nil {
		// The first API call waits as long: an attach just answered is attaching.
		spec.Initial, spec.Max, asked = 50*time.Millisecond, 50*time.Millisecond, time.Now()
	}
	progress := "attaching"
	err = Poll(ctx, log, spec, func(ctx context.Context) (bool, string, error) {
		if w.Device != nil && !byDevice && w.Device() {
			// The device is here: ask the API now, and every 250 ms from now on, until it reads the
			// attachment attached. Ending the wait on the device alone would leave EC2 reading no
			// attachment for a while (eventual consistency), and a down or snapshot run in that window
			// would find no volume of the slot attached here to snapshot.
			byDevice, asked = true, time.Time{}
			log.Info("the volume's block device is on this host; reading the attachment from EC2", logkey.Step, "volume", logkey.Volume, w.ID)
		}
		every := min(deviceAPIEvery, time.Second<<apiCalls) // 1 s, 2 s, 4 s, then every 5 s
		if byDevice {
			every = 250 * time.Millisecond
		}
		if w.Device != nil && !asked.IsZero() && time.Since(asked) < every {
			return false, progress, nil
		}
		asked = time.Now()
		apiCalls++
		var v Volume
		if w.Slot != "" {
			vols, lerr := ListSlotVolumes(ctx, c, w.Group, w.Slot, throttleToCaller)
			err = lerr
			if lerr == nil {
				err = errNotListed
				for _, x := range vols {
					if x.ID == w.ID {
						v, err, listing = x, nil, vols
					}
				}
			}
		} else {
			v, err = describeVolume(ctx, c, w.ID, throttleToCaller)
		}
		if HasCode(err, codeVolumeNotFound) || errors.Is(err, errNotListed) {
			if missingSince.IsZero() {
				missingSince = time.Now()
			}
			progress = "not visible yet"
			return time.Since(missingSince) > tokenVisibilityBound, progress, nil
		}
		if err != nil {
			return false, "", err
		}
		missingSince, last = time.Time{}, v
		if v.State == string(ec2types.VolumeStateError) {
			return true, "", nil // the plan refuses a volume in error
		}
		progress = volumeTransition(v, "")
		return !w.Still(v), progress, nil
	})
	return last, listing, byDevice, err
}

// errNotListed: the slot's listing does not have the volume yet (eventual consistency).
var errNotListed = errors.New("not in the slot's listing yet")
