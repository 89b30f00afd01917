package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// The operations `handover down` releases a slot's volume and the group's address with.

// Attachment states a volume leaving an instance goes through, as Attachment.State holds them.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_VolumeAttachment.html
const (
	AttachmentDetaching = string(ec2types.VolumeAttachmentStateDetaching)
	AttachmentDetached  = string(ec2types.VolumeAttachmentStateDetached)
)

// AttachmentTo returns the volume's attachment to instanceID, if it has one.
func (v Volume) AttachmentTo(instanceID string) (Attachment, bool) {
	for _, a := range v.Attachments {
		if a.InstanceID == instanceID {
			return a, true
		}
	}
	return Attachment{}, false
}

// FindAttachedSlotVolume returns the slot's volume attached to instanceID, or nil when none is. Several
// is a precondition failure that lists them: handover will not guess which one is the live data.
func FindAttachedSlotVolume(ctx context.Context, c EC2, group, slot, instanceID string) (*Volume, error) {
	filters := append(SlotFilters(group, slot), ec2types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{instanceID}})
	res, err := c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: filters})
	if err != nil {
		return nil, fmt.Errorf("describe volumes of %s/%s attached to %s: %w", group, slot, instanceID, err)
	}
	switch len(res.Volumes) {
	case 0:
		return nil, nil
	case 1:
		v := ToSlotVolume(res.Volumes[0])
		return &v, nil
	}
	var ids []string
	for _, v := range res.Volumes {
		ids = append(ids, aws.ToString(v.VolumeId))
	}
	return nil, fail.Precondition(fmt.Sprintf("%d volumes tagged %s=%s, %s=%s are attached to %s (%s): detach all but the live one",
		len(ids), TagGroup, group, TagSlot, slot, instanceID, strings.Join(ids, ", ")), nil)
}

// DetachVolume detaches a volume from instanceID without Force. The observing is the caller's: it
// found the volume attached (FindAttachedSlotVolume) and checked that nothing on the instance mounts it,
// for a detach while mounted can lose writes the filesystem has not flushed.
// https://docs.aws.amazon.com/ebs/latest/userguide/ebs-detaching-volume.html
// A volume already detaching or detached (IncorrectState, InvalidAttachment.NotFound: an earlier run, or
// the termination, was first) reports already. It does not wait for the detach to finish: whoever
// attaches the volume next waits for it to be available, which verifies it.
func DetachVolume(ctx context.Context, c EC2, volumeID, instanceID string) (already bool, err error) {
	_, err = c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(volumeID), InstanceId: aws.String(instanceID)})
	switch {
	case err == nil:
		return false, nil
	case HasCode(err, CodeIncorrectState, CodeAttachmentNotFound):
		return true, nil
	}
	return false, fmt.Errorf("detach %s from %s: %w", volumeID, instanceID, err)
}

// AddressRelease says what ReleaseAddress found and did.
type AddressRelease struct {
	Address  Address // the group's address, as found before
	Released bool    // false: it was not on the instance, and was left alone
}

// ReleaseAddress disassociates the group's Elastic IP when instanceID holds it (observe, act, verify). An
// address held elsewhere is left alone; one whose association went meanwhile
// (InvalidAssociationID.NotFound) counts as released once a fresh Describe agrees.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DisassociateAddress.html
func ReleaseAddress(ctx context.Context, log *slog.Logger, c EC2, group, instanceID string) (AddressRelease, error) {
	log = log.With(logkey.Step, "address")
	a, err := FindGroupAddress(ctx, c, group)
	if err != nil {
		return AddressRelease{}, err
	}
	log = log.With(logkey.Allocation, a.AllocationID)
	if a.InstanceID != instanceID {
		log.Info("Elastic IP not on this instance: nothing to release", "holder", dashIfEmpty(a.InstanceID))
		return AddressRelease{Address: a}, nil
	}
	_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(a.AssociationID)})
	if err != nil && !HasCode(err, CodeAssociationNotFound) {
		return AddressRelease{}, fmt.Errorf("disassociate %s from %s: %w", a.AllocationID, instanceID, err)
	}
	after, err := FindGroupAddress(ctx, c, group)
	if err != nil {
		return AddressRelease{}, err
	}
	if after.InstanceID == instanceID {
		return AddressRelease{}, fmt.Errorf("disassociated %s but it is still on %s; rerun down", a.AllocationID, instanceID)
	}
	log.Info("Elastic IP released", logkey.PublicIP, a.PublicIP)
	return AddressRelease{Address: a, Released: true}, nil
}
