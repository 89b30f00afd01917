package sim

import (
	"fmt"
	"slices"
	"sort"
)

// createSnapshots is CreateSnapshots: one crash-consistent snapshot of each
// EBS volume attached to an instance, all of the same point in time ("Creates
// crash-consistent snapshots of multiple EBS volumes attached to an Amazon EC2
// instance. Volumes are chosen by specifying an instance. Each volume attached
// to the specified instance will produce one snapshot that is crash-consistent
// across the instance."
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshots.html,
// https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html#ebs-create-snapshot-multi-volume).
//
// The sim copies every image under the region lock, so no write lands between
// two of them, and gives them one start time. As on AWS:
//   - InstanceSpecification.InstanceId is required; an unknown one answers
//     InvalidInstanceID.NotFound (a malformed one .Malformed);
//   - ExcludeDataVolumeId.N names data volumes attached to the instance; the
//     root volume there fails the request ("If you specify the ID of the root
//     volume, the request fails",
//     https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceSpecification.html),
//     at most 40 of them. The sim's instances have no root volume of their own
//     (RootDeviceName /dev/xvda with nothing attached there), so
//     ExcludeBootVolume changes nothing here; a volume attached at /dev/xvda
//     counts as the root one;
//   - CopyTagsFromSource=volume copies each volume's tags to its snapshot; the
//     TagSpecifications tags go on every snapshot (taking precedence on a key
//     both give: not documented, the sim's choice);
//   - each volume's own limits (SnapshotCreationPerVolumeRateExceeded,
//     ConcurrentSnapshotLimitExceeded) fail the whole call: nothing is made.
//
// AWS does not document the instance states the call accepts; the sim takes
// running and stopped (as AttachVolume), and answers IncorrectInstanceState
// otherwise.
func (r *Region) createSnapshots(c *reqCtx) ([]node, *apiError) {
	id := c.p.get("InstanceSpecification.InstanceId")
	if id == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter InstanceSpecification.InstanceId")
	}
	in, aerr := r.lookupInstance(c, id)
	if aerr != nil {
		return nil, aerr
	}
	if in.State != "running" && in.State != "stopped" {
		return nil, badRequest("IncorrectInstanceState", fmt.Sprintf("The instance '%s' is not in a valid state for this operation.", in.ID))
	}
	switch cp := c.p.get("CopyTagsFromSource"); cp {
	case "", "volume":
	default:
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter CopyTagsFromSource is invalid.", cp))
	}
	excludeBoot := c.p.boolean("InstanceSpecification.ExcludeBootVolume")
	exclude := c.p.list("InstanceSpecification.ExcludeDataVolumeId")
	if len(exclude) > 40 {
		return nil, badRequest("InvalidParameterValue", "You can specify up to 40 volume IDs in ExcludeDataVolumeId.")
	}
	attached := r.attachedVolumes(in.ID)
	for _, x := range exclude {
		i := slices.IndexFunc(attached, func(v *volume) bool { return v.ID == x })
		switch {
		case i < 0:
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("The volume '%s' is not attached to instance '%s'.", x, in.ID))
		case attached[i].Attachment.Device == rootDevice:
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("The volume '%s' is the root volume of instance '%s': use ExcludeBootVolume.", x, in.ID))
		}
	}
	var vols []*volume
	for _, v := range attached {
		if slices.Contains(exclude, v.ID) || (excludeBoot && v.Attachment.Device == rootDevice) {
			continue
		}
		if st := v.Attachment.State; st != "attached" && st != "attaching" {
			continue // detaching: no longer the instance's
		}
		if aerr := r.snapshotAllowed(v, c); aerr != nil {
			return nil, aerr
		}
		vols = append(vols, v)
	}
	if len(vols) == 0 {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("No volumes of instance '%s' are left to snapshot.", in.ID))
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].Attachment.Device < vols[j].Attachment.Device })
	specTags, aerr := c.p.specTags("snapshot")
	if aerr != nil {
		return nil, aerr
	}
	var made []*snapshot
	for _, v := range vols {
		tags := map[string]string{}
		if c.p.get("CopyTagsFromSource") == "volume" {
			tags = copyTags(v.Tags)
		}
		for k, val := range specTags {
			tags[k] = val
		}
		if aerr := checkTagCount(tags); aerr != nil {
			return nil, aerr
		}
		made = append(made, &snapshot{
			ID: newID("snap"), VolumeID: v.ID, VolumeSize: v.Size, State: "pending", Start: c.now,
			Duration: r.delay(r.opts.Delays.Snapshot), Description: c.p.get("Description"),
			Encrypted: v.Encrypted, KmsKeyID: v.KmsKeyID, Tags: tags,
		})
	}
	// Copy every image before any snapshot exists: one instant for all (the region lock is held), and a
	// failed copy leaves nothing behind.
	for i, s := range made {
		if err := copySparse(r.snapshotImage(s.ID), r.volumeImage(vols[i].ID), 0); err != nil {
			return nil, errf(500, "InternalError", err.Error())
		}
	}
	var items []node
	for i, s := range made {
		r.w.Snapshots[s.ID] = s
		vols[i].LastSnapshot = c.now
		r.scheduleSnapshotDone(s, s.Duration)
		items = append(items, el("", tx("snapshotId", s.ID), tx("volumeId", s.VolumeID), tx("state", s.State),
			ts("startTime", s.Start), tx("progress", s.progress(c.now)), tx("ownerId", accountID), num("volumeSize", s.VolumeSize),
			tx("description", s.Description), boolean("encrypted", s.Encrypted), ec2TagSet(s.Tags)))
	}
	return []node{list("snapshotSet", "item", items)}, nil
}

// rootDevice is the sim's instances' RootDeviceName (DescribeInstances).
const rootDevice = "/dev/xvda"
