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

// waitVolume polls one volume until still reports false. EBS state changes (creating, attaching,
// detaching) take one to ten seconds and sit on the recovery's critical path, so this wait polls every
// 250 ms (±20% jitter): it overshoots the change by 125 ms on average, where the SDK waiters' 15 s
// minimum would add seconds to every recovery, and four Describe calls a second stay far below the
// non-mutating request bucket (refill 20 a second). Waits that take minutes (snapshots, other instances)
// use poll's slower schedule.
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
//
// A volume just created may be missing from DescribeVolumes for a while (eventual consistency); that
// counts as still waiting, for at most tokenVisibilityBound, after which the caller observes again.
// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
func waitVolume(ctx context.Context, log *slog.Logger, c EC2, id, what string, still func(Volume) bool) error {
	var missingSince time.Time
	return Poll(ctx, log, wait.Spec{What: "volume " + id + " " + what, Bound: volumeTransitionBound, Step: "volume",
		Initial: 250 * time.Millisecond, Max: 250 * time.Millisecond},
		func(ctx context.Context) (bool, string, error) {
			v, err := describeVolume(ctx, c, id)
			if HasCode(err, codeVolumeNotFound) {
				if missingSince.IsZero() {
					missingSince = time.Now()
				}
				return time.Since(missingSince) > tokenVisibilityBound, "not visible yet", nil
			}
			if err != nil {
				return false, "", err
			}
			missingSince = time.Time{}
			if v.State == string(ec2types.VolumeStateError) {
				return true, "", nil // the plan refuses a volume in error
			}
			return !still(v), volumeTransition(v, ""), nil
		})
}
