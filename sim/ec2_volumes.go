package sim

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// accountID is the owner of everything in the simulated region.
const accountID = "123456789012"

// Volume types and their size and performance limits, from "Amazon EBS
// volume types" (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-volume-types.html).
var volumeSizeLimits = map[string][2]int{
	"gp2": {1, 16384}, "gp3": {1, 16384}, "io1": {4, 16384}, "io2": {4, 65536},
	"st1": {125, 16384}, "sc1": {125, 16384}, "standard": {1, 1024},
}

func (r *Region) invisible(created time.Time, c *reqCtx) bool {
	return c.cfg.ConsistencyDelay > 0 && c.now.Sub(created) < c.cfg.ConsistencyDelay
}

func (r *Region) findVolume(id string) (*volume, *apiError) {
	if !validID("vol", id) {
		return nil, badRequest("InvalidVolumeID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"vol-...\")", id))
	}
	v := r.w.Volumes[id]
	if v == nil {
		return nil, badRequest("InvalidVolume.NotFound", fmt.Sprintf("The volume '%s' does not exist.", id))
	}
	return v, nil
}

func (r *Region) validAZ(az string) bool { return slices.Contains(r.opts.AZs, az) }

// volumeParams is the canonical form of a CreateVolume request, compared
// when a ClientToken is reused.
func volumeParams(c *reqCtx) string {
	var b strings.Builder
	for _, k := range []string{"AvailabilityZone", "Size", "SnapshotId", "VolumeType", "Iops", "Throughput", "Encrypted", "KmsKeyId"} {
		b.WriteString(k + "=" + c.p.get(k) + ";")
	}
	return b.String()
}

func (r *Region) createVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	if tok := p.get("ClientToken"); tok != "" {
		// "Ensuring idempotency": the same token with the same parameters
		// returns the original volume; with other parameters it fails.
		if prev, ok := r.w.ClientTokens["CreateVolume/"+tok]; ok {
			if prev.Params != volumeParams(c) {
				return nil, badRequest("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted or has different parameters.")
			}
			if v := r.w.Volumes[prev.ResourceID]; v != nil {
				return volumeFields(v, r), nil
			}
			return nil, badRequest("IdempotentParameterMismatch", "The client token you have provided is associated with a resource that is already deleted.")
		}
	}
	az := p.get("AvailabilityZone")
	if az == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter AvailabilityZone")
	}
	if !r.validAZ(az) {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Invalid availability zone: [%s]", az))
	}
	vt := p.get("VolumeType")
	if vt == "" {
		vt = "gp2"
	}
	limits, ok := volumeSizeLimits[vt]
	if !ok {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter volumeType is invalid. Allowed values are [standard, io1, io2, gp2, sc1, st1, gp3].", vt))
	}
	size, aerr := p.integer("Size", 0)
	if aerr != nil {
		return nil, aerr
	}
	var snap *snapshot
	if sid := p.get("SnapshotId"); sid != "" {
		if snap, aerr = r.findSnapshot(sid); aerr != nil {
			return nil, aerr
		}
		if snap.State != "completed" {
			return nil, badRequest("IncorrectState", fmt.Sprintf("Snapshot is in invalid state - %s", snap.State))
		}
		if size == 0 {
			size = snap.VolumeSize
		}
		if size < snap.VolumeSize {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("The volume size is invalid for snapshots. It must be at least %d GiB.", snap.VolumeSize))
		}
	} else if size == 0 {
		return nil, badRequest("MissingParameter", "The request must contain the parameter size or snapshotId")
	}
	if size < limits[0] || size > limits[1] {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Volume of %dGiB is not in the range %d-%d for %s volumes.", size, limits[0], limits[1], vt))
	}
	iops, aerr := p.integer("Iops", 0)
	if aerr != nil {
		return nil, aerr
	}
	throughput, aerr := p.integer("Throughput", 0)
	if aerr != nil {
		return nil, aerr
	}
	switch vt {
	case "gp3":
		if iops == 0 {
			iops = 3000
		}
		if throughput == 0 {
			throughput = 125
		}
		if iops < 3000 || iops > 16000 {
			return nil, badRequest("InvalidParameterValue", "gp3 volumes support 3000 to 16000 IOPS.")
		}
		if throughput < 125 || throughput > 1000 {
			return nil, badRequest("InvalidParameterValue", "gp3 volumes support a throughput of 125 to 1000 MiB/s.")
		}
	case "io1", "io2":
		if iops == 0 {
			return nil, badRequest("MissingParameter", fmt.Sprintf("The parameter iops must be specified for %s volumes.", vt))
		}
	default:
		if iops != 0 {
			return nil, badRequest("InvalidParameterCombination", fmt.Sprintf("The parameter iops is not supported for %s volumes.", vt))
		}
		if vt == "gp2" {
			iops = min(16000, max(100, 3*size))
		}
	}
	if throughput != 0 && vt != "gp3" {
		return nil, badRequest("InvalidParameterCombination", fmt.Sprintf("The parameter throughput is not supported for %s volumes.", vt))
	}
	encrypted := p.boolean("Encrypted") || (snap != nil && snap.Encrypted)
	kms := p.get("KmsKeyId")
	if kms != "" && !encrypted {
		return nil, badRequest("InvalidParameterDependency", "The parameter KmsKeyId requires the parameter Encrypted to be set.")
	}
	if encrypted && kms == "" {
		if snap != nil && snap.KmsKeyID != "" {
			kms = snap.KmsKeyID
		} else {
			kms = "arn:aws:kms:" + r.opts.Region + ":" + accountID + ":key/00000000-0000-4000-8000-0000000000eb"
		}
	}
	tags, aerr := p.specTags("volume")
	if aerr != nil {
		return nil, aerr
	}
	v := &volume{
		ID: newID("vol"), AZ: az, Size: size, Type: vt, Iops: iops, Throughput: throughput,
		Encrypted: encrypted, KmsKeyID: kms, State: "creating", Created: c.now, Tags: tags,
	}
	delay := r.opts.Delays.CreateVolume
	if snap != nil {
		v.SnapshotID = snap.ID
		delay = r.opts.Delays.CreateVolumeFromSnapshot
		if err := copySparse(r.volumeImage(v.ID), r.snapshotImage(snap.ID), size); err != nil {
			return nil, errf(500, "InternalError", err.Error())
		}
	} else if err := createSparse(r.volumeImage(v.ID), size); err != nil {
		return nil, errf(500, "InternalError", err.Error())
	}
	r.w.Volumes[v.ID] = v
	if tok := p.get("ClientToken"); tok != "" {
		r.w.ClientTokens["CreateVolume/"+tok] = clientToken{ResourceID: v.ID, Params: volumeParams(c)}
	}
	r.scheduleVolumeCreated(v, r.delay(delay))
	return volumeFields(v, r), nil
}

func (r *Region) scheduleVolumeCreated(v *volume, d time.Duration) {
	r.scheduleLocked("volume/"+v.ID, d, true, func() {
		if v.State == "creating" && r.w.Volumes[v.ID] == v {
			v.State = "available"
		}
	})
}

// volumeFields are the elements of a volume, shared by CreateVolume's
// response and DescribeVolumes' items.
func volumeFields(v *volume, r *Region) []node {
	status := v.State
	if v.Attachment != nil {
		status = "in-use"
	}
	var atts []node
	if a := v.Attachment; a != nil {
		atts = append(atts, el("", tx("volumeId", v.ID), tx("instanceId", a.InstanceID), tx("device", a.Device),
			tx("status", a.State), ts("attachTime", a.Time), boolean("deleteOnTermination", false)))
	}
	out := []node{
		tx("volumeId", v.ID), num("size", v.Size), tx("snapshotId", v.SnapshotID),
		tx("availabilityZone", v.AZ), tx("availabilityZoneId", r.azID(v.AZ)), tx("status", status), ts("createTime", v.Created),
		list("attachmentSet", "item", atts), ec2TagSet(v.Tags), tx("volumeType", v.Type),
		boolean("encrypted", v.Encrypted), opt("kmsKeyId", v.KmsKeyID), boolean("multiAttachEnabled", false),
	}
	if v.Iops > 0 {
		out = append(out, num("iops", v.Iops))
	}
	if v.Throughput > 0 {
		out = append(out, num("throughput", v.Throughput))
	}
	return out
}

func volumeField(v *volume) fieldFunc {
	return func(name string) ([]string, bool) {
		status := v.State
		if v.Attachment != nil {
			status = "in-use"
		}
		switch name {
		case "volume-id":
			return []string{v.ID}, true
		case "availability-zone":
			return []string{v.AZ}, true
		case "status":
			return []string{status}, true
		case "volume-type":
			return []string{v.Type}, true
		case "snapshot-id":
			return []string{v.SnapshotID}, true
		case "size":
			return []string{strconv.Itoa(v.Size)}, true
		case "encrypted":
			return []string{strconv.FormatBool(v.Encrypted)}, true
		case "create-time":
			return []string{awsTime(v.Created)}, true
		case "multi-attach-enabled":
			return []string{"false"}, true
		case "attachment.instance-id", "attachment.status", "attachment.device", "attachment.attach-time", "attachment.delete-on-termination":
			if v.Attachment == nil {
				return nil, true
			}
			a := v.Attachment
			return []string{map[string]string{
				"attachment.instance-id": a.InstanceID, "attachment.status": a.State, "attachment.device": a.Device,
				"attachment.attach-time": awsTime(a.Time), "attachment.delete-on-termination": "false",
			}[name]}, true
		}
		return nil, false
	}
}

func (r *Region) describeVolumes(c *reqCtx) ([]node, *apiError) {
	ids := c.p.list("VolumeId")
	if len(ids) > 0 && c.p.has("MaxResults") {
		return nil, badRequest("InvalidParameterCombination", "The parameter volumeSet cannot be used with the parameter maxResults")
	}
	var vols []*volume
	if len(ids) > 0 {
		var missing []string
		for _, id := range ids {
			v, aerr := r.findVolume(id)
			if aerr != nil && aerr.Code != "InvalidVolume.NotFound" {
				return nil, aerr
			}
			if v == nil || r.invisible(v.Created, c) {
				missing = append(missing, id)
				continue
			}
			vols = append(vols, v)
		}
		if len(missing) > 0 {
			return nil, badRequest("InvalidVolume.NotFound", fmt.Sprintf("The volume '%s' does not exist.", strings.Join(missing, "', '")))
		}
	} else {
		for _, v := range r.w.Volumes {
			if !r.invisible(v.Created, c) {
				vols = append(vols, v)
			}
		}
	}
	sortByCreation(vols, func(v *volume) (time.Time, string) { return v.Created, v.ID })
	var items []node
	filters := c.p.filters()
	var matched []*volume
	for _, v := range vols {
		ok, aerr := matchFilters(filters, v.Tags, volumeField(v))
		if aerr != nil {
			return nil, aerr
		}
		if ok {
			matched = append(matched, v)
		}
	}
	pg, next, aerr := page(c.p, matched, 5, 500)
	if aerr != nil {
		return nil, aerr
	}
	for _, v := range pg {
		items = append(items, el("", volumeFields(v, r)...))
	}
	return []node{list("volumeSet", "item", items), opt("nextToken", next)}, nil
}

func sortByCreation[T any](s []T, key func(T) (time.Time, string)) {
	slices.SortFunc(s, func(a, b T) int {
		ta, ia := key(a)
		tb, ib := key(b)
		if c := ta.Compare(tb); c != 0 {
			return c
		}
		return strings.Compare(ia, ib)
	})
}

func (r *Region) attachVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	for _, k := range []string{"VolumeId", "InstanceId", "Device"} {
		if p.get(k) == "" {
			return nil, badRequest("MissingParameter", "The request must contain the parameter "+k)
		}
	}
	v, aerr := r.findVolume(p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	in, aerr := r.findInstance(p.get("InstanceId"))
	if aerr != nil {
		return nil, aerr
	}
	device := p.get("Device")
	if !strings.HasPrefix(device, "/dev/") && !strings.HasPrefix(device, "xvd") {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter device is invalid. %s is not a valid EBS device name.", device, device))
	}
	if v.AZ != in.AZ {
		return nil, badRequest("InvalidVolume.ZoneMismatch", fmt.Sprintf("The volume '%s' is not in the same availability zone as instance '%s'", v.ID, in.ID))
	}
	if v.Attachment != nil {
		return nil, badRequest("VolumeInUse", fmt.Sprintf("%s is already attached to an instance", v.ID))
	}
	if v.State != "available" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("The volume '%s' is not 'available'.", v.ID))
	}
	if in.State != "running" && in.State != "stopped" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("Instance '%s' is not 'running'.", in.ID))
	}
	for _, o := range r.w.Volumes {
		if o.Attachment != nil && o.Attachment.InstanceID == in.ID && o.Attachment.Device == device {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Invalid value '%s' for unixDevice. Attachment point %s is already in use", device, device))
		}
	}
	v.Attachment = &attachment{InstanceID: in.ID, Device: device, State: "attaching", Time: c.now}
	v.State = "in-use"
	r.scheduleAttached(v, r.delay(r.opts.Delays.Attach))
	return attachmentFields(v), nil
}

func (r *Region) scheduleAttached(v *volume, d time.Duration) {
	r.scheduleLocked("attach/"+v.ID, d, true, func() {
		if v.Attachment == nil || v.Attachment.State != "attaching" {
			return
		}
		v.Attachment.State = "attached"
		if in := r.w.Instances[v.Attachment.InstanceID]; in != nil && deviceVisible(in) {
			r.addDeviceLocked(v)
		}
	})
}

// deviceVisible says whether an instance's OS is up to see block devices.
func deviceVisible(in *instance) bool {
	return in.State == "running" || in.State == "stopping" || in.State == "shutting-down"
}

func attachmentFields(v *volume) []node {
	a := v.Attachment
	return []node{ts("attachTime", a.Time), tx("device", a.Device), tx("instanceId", a.InstanceID),
		tx("status", a.State), tx("volumeId", v.ID), boolean("deleteOnTermination", false)}
}

func (r *Region) detachVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	if p.get("VolumeId") == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter VolumeId")
	}
	v, aerr := r.findVolume(p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if iid := p.get("InstanceId"); iid != "" {
		if _, aerr := r.findInstance(iid); aerr != nil {
			return nil, aerr
		}
	}
	a := v.Attachment
	if a == nil {
		return nil, badRequest("IncorrectState", fmt.Sprintf("Volume '%s' is in the '%s' state.", v.ID, v.State))
	}
	if iid := p.get("InstanceId"); iid != "" && iid != a.InstanceID {
		return nil, badRequest("InvalidAttachment.NotFound", fmt.Sprintf("The volume '%s' is not attached to instance '%s'.", v.ID, iid))
	}
	if dev := p.get("Device"); dev != "" && dev != a.Device {
		return nil, badRequest("InvalidAttachment.NotFound", fmt.Sprintf("The volume '%s' is not attached to '%s'.", v.ID, dev))
	}
	if a.State != "detaching" {
		r.beginDetachLocked(v)
	}
	return attachmentFields(v), nil
}

// beginDetachLocked moves an attachment to detaching; after the Detach delay
// the device goes away and the volume is available.
func (r *Region) beginDetachLocked(v *volume) {
	v.Attachment.State = "detaching"
	r.cancelLocked("attach/" + v.ID)
	r.scheduleLocked("detach/"+v.ID, r.delay(r.opts.Delays.Detach), true, func() {
		if v.Attachment == nil || v.Attachment.State != "detaching" {
			return
		}
		r.removeDeviceLocked(v)
		v.Attachment = nil
		v.State = "available"
	})
}

func (r *Region) deleteVolume(c *reqCtx) ([]node, *apiError) {
	v, aerr := r.findVolume(c.p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if v.Attachment != nil {
		return nil, badRequest("VolumeInUse", fmt.Sprintf("Volume %s is currently attached to %s", v.ID, v.Attachment.InstanceID))
	}
	if v.State == "creating" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("The volume '%s' is 'creating'.", v.ID))
	}
	r.cancelLocked("volume/" + v.ID)
	delete(r.w.Volumes, v.ID)
	_ = os.Remove(r.volumeImage(v.ID))
	return []node{boolean("return", true)}, nil
}

// modifyVolume applies Elastic Volumes changes
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modify-volume.html):
// the new size is usable at once (the image and loop device grow), the
// modification itself stays "modifying" for the ModifyVolume delay.
func (r *Region) modifyVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	v, aerr := r.findVolume(p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if v.Modifying {
		return nil, badRequest("IncorrectModificationState", fmt.Sprintf("Volume %s is already being modified.", v.ID))
	}
	if v.State == "creating" {
		return nil, badRequest("IncorrectState", fmt.Sprintf("The volume '%s' is 'creating'.", v.ID))
	}
	size, aerr := p.integer("Size", v.Size)
	if aerr != nil {
		return nil, aerr
	}
	if size < v.Size {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("New size cannot be smaller than existing size (%d GiB).", v.Size))
	}
	vt := p.get("VolumeType")
	if vt == "" {
		vt = v.Type
	}
	if _, ok := volumeSizeLimits[vt]; !ok {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter volumeType is invalid.", vt))
	}
	iops, aerr := p.integer("Iops", v.Iops)
	if aerr != nil {
		return nil, aerr
	}
	throughput, aerr := p.integer("Throughput", v.Throughput)
	if aerr != nil {
		return nil, aerr
	}
	v.OrigSize, v.OrigType = v.Size, v.Type
	v.Size, v.Type, v.Iops, v.Throughput = size, vt, iops, throughput
	v.Modifying, v.ModifyStart = true, c.now
	if v.Size > v.OrigSize {
		if err := os.Truncate(r.volumeImage(v.ID), int64(v.Size)*gib); err != nil {
			return nil, errf(500, "InternalError", err.Error())
		}
		r.resizeDeviceLocked(v)
	}
	r.scheduleLocked("modify/"+v.ID, r.delay(r.opts.Delays.ModifyVolume), true, func() { v.Modifying = false })
	return []node{el("volumeModification",
		tx("volumeId", v.ID), tx("modificationState", "modifying"),
		num("targetSize", v.Size), tx("targetVolumeType", v.Type), num("targetIops", v.Iops), num("targetThroughput", v.Throughput),
		num("originalSize", v.OrigSize), tx("originalVolumeType", v.OrigType),
		num("progress", 0), ts("startTime", v.ModifyStart))}, nil
}
