package cloud

import (
	"context"
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
	// volume's block device is here with the volume's serial. That is the attachment complete as this
	// instance sees it, known from a stat every 50 ms at no API cost and before DescribeVolumes says
	// "attached" (EC2 is eventually consistent; AWS does not document which of the two comes first). The
	// API is then asked once a second only, to see an attach that fails.
	// https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html
	Device func() bool
}

// deviceAPIEvery is how often an attach wait that watches the device asks the API too.
const deviceAPIEvery = time.Second

// waitVolume polls one volume until still reports false, every 250 ms (waitVolumeFor).
func waitVolume(ctx context.Context, log *slog.Logger, c EC2, id, what string, still func(Volume) bool) error {
	_, _, err := waitVolumeFor(ctx, log, c, volumeWait{ID: id, What: what, Still: still})
	return err
}

// waitVolumeFor waits as w says and returns the volume as last described (zero when it never was), and
// whether the wait ended on the device (the volume then still reads as attaching, perhaps). EBS state changes (creating, attaching,
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
	var missingSince, asked time.Time
	spec := wait.Spec{What: "volume " + w.ID + " " + w.What, Bound: volumeTransitionBound, Step: "volume",
		Initial: w.Initial, Max: w.Max}
	if spec.Initial == 0 {
		spec.Initial, spec.Max = 250*time.Millisecond, 250*time.Millisecond
	}
	if w.Device != nil {
		// The first API call waits a second too: an attach just answered is attaching.
		spec.Initial, spec.Max, asked = 50*time.Millisecond, 50*time.Millisecond, time.Now()
	}
	progress := "attaching"
	err = Poll(ctx, log, spec, func(ctx context.Context) (bool, string, error) {
		if w.Device != nil && w.Device() {
			byDevice = true
			return true, "", nil
		}
		if w.Device != nil && !asked.IsZero() && time.Since(asked) < deviceAPIEvery {
			return false, progress, nil
		}
		asked = time.Now()
		v, err := describeVolume(ctx, c, w.ID, throttleToCaller)
		if HasCode(err, codeVolumeNotFound) {
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
	return last, byDevice, err
}
