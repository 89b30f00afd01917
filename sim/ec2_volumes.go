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

// volumePerformance checks the IOPS and throughput asked for a volume of
// type vt and size GiB (0 = not asked) and fills in the defaults: gp3 3000
// IOPS and 125 MiB/s, gp2 its baseline of 3 IOPS per GiB (100..16000).
// CreateVolume and ModifyVolume share these rules.
func volumePerformance(vt string, size, iops, throughput int) (int, int, *apiError) {
	switch vt {
	case "gp3":
		if iops == 0 {
			iops = 3000
		}
		if throughput == 0 {
			throughput = 125
		}
		if iops < 3000 || iops > 16000 {
			return 0, 0, badRequest("InvalidParameterValue", "gp3 volumes support 3000 to 16000 IOPS.")
		}
		if throughput < 125 || throughput > 1000 {
			return 0, 0, badRequest("InvalidParameterValue", "gp3 volumes support a throughput of 125 to 1000 MiB/s.")
		}
	case "io1", "io2":
		if iops == 0 {
			return 0, 0, badRequest("MissingParameter", fmt.Sprintf("The parameter iops must be specified for %s volumes.", vt))
		}
	default:
		if iops != 0 {
			return 0, 0, badRequest("InvalidParameterCombination", fmt.Sprintf("The parameter iops is not supported for %s volumes.", vt))
		}
		if vt == "gp2" {
			iops = min(16000, max(100, 3*size))
		}
	}
	if throughput != 0 && vt != "gp3" {
		return 0, 0, badRequest("InvalidParameterCombination", fmt.Sprintf("The parameter throughput is not supported for %s volumes.", vt))
	}
	return iops, throughput, nil
}

func (r *Region) findVolume(id string) (*volume, *apiError) {
	if !validID("vol", id) {
		return nil, badRequest("InvalidVolumeID.Malformed", fmt.Sprintf("Invalid id: \"%s\" (expecting \"vol-...\")", id))
	}
	v := r.w.Volumes[id]
	if v == nil {
		return nil, volumeNotFound(id)
	}
	return v, nil
}

func volumeNotFound(id string) *apiError {
	return badRequest("InvalidVolume.NotFound", fmt.Sprintf("The volume '%s' does not exist.", id))
}

func (r *Region) validAZ(az string) bool { return slices.Contains(r.opts.AZs, az) }

// volumeParams is the canonical form of a CreateVolume request, compared
// when a ClientToken is reused. The zone is not in it: a retry fails with
// IdempotentParameterMismatch only when "one or more of the parameters other
// than the Region or Availability Zone is different"
// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).
func volumeParams(c *reqCtx) string {
	var b strings.Builder
	for _, k := range []string{"Size", "SnapshotId", "VolumeType", "Iops", "Throughput", "Encrypted", "KmsKeyId", "VolumeInitializationRate"} {
		b.WriteString(k + "=" + c.p.get(k) + ";")
	}
	return b.String()
}

// volumeTokenKey is where a CreateVolume ClientToken is remembered. What a
// token reused from another zone does AWS does not document: with
// Options.TokenAcrossAZ "first" the token is region-wide and the retry gets
// the first volume back, in its own zone (the caller must notice); with "new"
// the token is per zone and the other zone gets a volume of its own.
func (r *Region) volumeTokenKey(tok, az string) string {
	if r.opts.TokenAcrossAZ == TokenNew {
		return "CreateVolume/" + az + "/" + tok
	}
	return "CreateVolume/" + tok
}

func (r *Region) createVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	tok := p.get("ClientToken")
	if tok != "" {
		// "Ensuring idempotency": the same token with the same parameters
		// returns the original volume; with other parameters it fails.
		if prev, ok := r.w.ClientTokens[r.volumeTokenKey(tok, p.get("AvailabilityZone"))]; ok {
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
		if snap, aerr = r.lookupSnapshot(c, sid); aerr != nil {
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
	rate, aerr := initializationRate(p, snap != nil)
	if aerr != nil {
		return nil, aerr
	}
	iops, aerr := p.integer("Iops", 0)
	if aerr != nil {
		return nil, aerr
	}
	throughput, aerr := p.integer("Throughput", 0)
	if aerr != nil {
		return nil, aerr
	}
	if iops, throughput, aerr = volumePerformance(vt, size, iops, throughput); aerr != nil {
		return nil, aerr
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
		// Fully initialized at creation from a snapshot enabled for fast snapshot restore in this zone,
		// unless a rate was asked for (ec2_volume_init.go).
		v.FastRestored = rate == 0 && r.fastRestoreEnabledLocked(snap.ID, az)
		v.Init = r.newVolumeInit(snap.VolumeSize, rate, v.FastRestored)
		delay = r.opts.Delays.CreateVolumeFromSnapshot
		if err := copySparse(r.volumeImage(v.ID), r.snapshotImage(snap.ID), size); err != nil {
			return nil, errf(500, "InternalError", err.Error())
		}
	} else if err := createSparse(r.volumeImage(v.ID), size); err != nil {
		return nil, errf(500, "InternalError", err.Error())
	}
	r.w.Volumes[v.ID] = v
	if tok != "" {
		r.w.ClientTokens[r.volumeTokenKey(tok, az)] = clientToken{ResourceID: v.ID, Params: volumeParams(c)}
	}
	r.scheduleVolumeCreated(v, r.delay(delay))
	return volumeFields(v, r), nil
}

func (r *Region) scheduleVolumeCreated(v *volume, d time.Duration) {
	r.scheduleLocked("volume/"+v.ID, VolumeCreate, d, true, func() {
		if v.State == "creating" && r.w.Volumes[v.ID] == v {
			v.State = "available"
			if v.Encrypted && r.kmsKeyUnusableLocked(v.KmsKeyID) {
				// "Amazon Web Services authenticates the KMS key asynchronously. Therefore, if you specify an
				// identifier that is not valid, the action can appear to complete, but eventually fails."
				// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateVolume.html
				v.State = "error"
			} else {
				r.startInitLocked(v, time.Now())
			}
		}
	})
}

// kmsKeyStates are the states of a KMS key
// (https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html); only Enabled can encrypt.
var kmsKeyStates = map[string]bool{"Enabled": true, "Disabled": true, "PendingDeletion": true, "PendingImport": true, "Unavailable": true}

func (r *Region) kmsKeyUnusableLocked(keyID string) bool {
	s, ok := r.w.KMSKeyStates[keyID]
	return ok && s != "Enabled"
}

// SetKMSKeyState sets the state of the KMS key keyID (as CreateVolume's KmsKeyId names it, or a
// snapshot's key that a restore inherits): a volume created encrypted with a key that is not Enabled
// is accepted by CreateVolume and ends in the error state instead of available, as EBS does when it
// cannot use the key. The sim has no KMS API; "Enabled" makes the key usable again.
func (r *Region) SetKMSKeyState(keyID, state string) error {
	if !kmsKeyStates[state] {
		return fmt.Errorf("KMS key state %q: want Enabled, Disabled, PendingDeletion, PendingImport or Unavailable", state)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.w.KMSKeyStates == nil {
		r.w.KMSKeyStates = map[string]string{}
	}
	r.w.KMSKeyStates[keyID] = state
	r.afterChangeLocked()
	return nil
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
	if v.SnapshotID != "" {
		out = append(out, boolean("fastRestored", v.FastRestored))
	}
	if v.Init != nil && v.Init.Rate > 0 {
		out = append(out, num("volumeInitializationRate", v.Init.Rate))
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
	vols, aerr := selectVisible(r, c, ids, r.w.Volumes, r.findVolume, func(v *volume) (time.Time, string) { return v.Created, v.ID },
		"InvalidVolume.NotFound", func(missing []string) string {
			return fmt.Sprintf("The volume '%s' does not exist.", strings.Join(missing, "', '"))
		})
	if aerr != nil {
		return nil, aerr
	}
	for i, v := range vols {
		vols[i] = r.volumeView(v, c)
	}
	var items []node
	matched, aerr := matching(c.p.filters(), vols, func(v *volume) (map[string]string, fieldFunc) { return v.Tags, volumeField(v) })
	if aerr != nil {
		return nil, aerr
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

// selectVisible resolves ids with find, or takes every resource in all when ids is empty, leaving out
// those still inside the consistency delay; created gives a resource's creation time and ID, and the
// result is sorted by them. Every one of ids must name a visible resource: those that do not are named
// together in one notFound error, whose message is notFoundMsg(missing). An error of find other than
// notFound (a malformed ID) is returned as it is.
func selectVisible[T any](r *Region, c *reqCtx, ids []string, all map[string]T, find func(string) (T, *apiError),
	created func(T) (time.Time, string), notFound string, notFoundMsg func(missing []string) string) ([]T, *apiError) {
	visible := func(x T) bool {
		t, _ := created(x)
		return !r.invisible(t, c)
	}
	var out []T
	if len(ids) > 0 {
		var missing []string
		for _, id := range ids {
			x, aerr := find(id)
			if aerr != nil && aerr.Code != notFound {
				return nil, aerr
			}
			if aerr != nil || !visible(x) {
				missing = append(missing, id)
				continue
			}
			out = append(out, x)
		}
		if len(missing) > 0 {
			return nil, badRequest(notFound, notFoundMsg(missing))
		}
	} else {
		for _, x := range all {
			if visible(x) {
				out = append(out, x)
			}
		}
	}
	sortByCreation(out, created)
	return out, nil
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
	v, aerr := r.lookupVolume(c, p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	in, aerr := r.lookupInstance(c, p.get("InstanceId"))
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
	r.noteVolumeChange(v, c)
	v.Attachment = &attachment{InstanceID: in.ID, Device: device, State: "attaching", Time: c.now}
	v.State = "in-use"
	r.scheduleAttached(v, r.delay(r.opts.Delays.Attach))
	return attachmentFields(v), nil
}

func (r *Region) scheduleAttached(v *volume, d time.Duration) {
	lag := time.Duration(float64(r.opts.DeviceLag) / r.opts.Speed)
	instance := v.Attachment.InstanceID
	addDevice := func() {
		if v.Attachment == nil || v.Attachment.InstanceID != instance || (v.Attachment.State != "attaching" && v.Attachment.State != "attached") {
			return // detached (or detaching) before its device was to appear
		}
		if in := r.w.Instances[instance]; in != nil && deviceVisible(in) {
			r.addDeviceLocked(v)
		}
	}
	r.scheduleLocked("attach/"+v.ID, VolumeAttach, d, true, func() {
		if v.Attachment == nil || v.Attachment.State != "attaching" {
			return
		}
		v.Attachment.State = "attached"
		if lag == 0 {
			addDevice()
		}
	})
	if lag != 0 {
		r.scheduleLocked("device/"+v.ID, VolumeAttach, max(d+lag, 0), false, addDevice)
	}
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
	v, aerr := r.lookupVolume(c, p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if iid := p.get("InstanceId"); iid != "" {
		if _, aerr := r.lookupInstance(c, iid); aerr != nil {
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
	force := p.boolean("Force")
	switch {
	case !detachInProgress(a):
		r.observeDetachLocked(v, c, force)
		r.noteVolumeChange(v, c)
		a.Force = force
		r.beginDetachLocked(v)
	case force && !a.Force:
		// A forced detach ends a detach stuck on a mounted device.
		a.Force = true
		r.scheduleDetachedLocked(v, false)
	}
	return attachmentFields(v), nil
}

func detachInProgress(a *attachment) bool { return a.State == "detaching" || a.State == "busy" }

// beginDetachLocked moves an attachment to detaching; after the Detach delay
// the device goes away and the volume is available. While the instance has
// the volume's device mounted the detach does not complete: "If the volume is
// mounted ... the volume can get stuck in the busy state (detaching)" until it
// is unmounted or the detach is forced
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-detaching-volume.html,
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DetachVolume.html).
// Meanwhile the attachment shows Options.DetachBusyState ("busy", a
// VolumeAttachmentState value, by default).
func (r *Region) beginDetachLocked(v *volume) {
	v.Attachment.State = "detaching"
	if !v.Attachment.Force && r.deviceMountedLocked(v) {
		v.Attachment.State = r.opts.DetachBusyState
	}
	r.cancelLocked("attach/" + v.ID)
	r.scheduleDetachedLocked(v, false)
}

// busyPoll is the least time between two looks at a busy detach's mount.
const busyPoll = 50 * time.Millisecond

// scheduleDetachedLocked completes a detach after the Detach delay, or, when
// poll, looks at a busy one's mount again.
func (r *Region) scheduleDetachedLocked(v *volume, poll bool) {
	d := r.delay(r.opts.Delays.Detach)
	if poll {
		d = max(d, busyPoll)
	}
	r.scheduleLocked("detach/"+v.ID, VolumeDetach, d, true, func() {
		a := v.Attachment
		if a == nil || !detachInProgress(a) {
			return
		}
		if !a.Force && r.deviceMountedLocked(v) {
			a.State = r.opts.DetachBusyState
			r.scheduleDetachedLocked(v, true) // look again until unmounted or forced
			return
		}
		r.removeDeviceLocked(v)
		v.Attachment = nil
		v.State = "available"
	})
}

func (r *Region) deleteVolume(c *reqCtx) ([]node, *apiError) {
	v, aerr := r.lookupVolume(c, c.p.get("VolumeId"))
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
	r.cancelLocked("init/" + v.ID)
	delete(r.w.Volumes, v.ID)
	_ = os.Remove(r.volumeImage(v.ID))
	return []node{boolean("return", true)}, nil
}

// modifyVolume applies Elastic Volumes changes
// (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-modify-volume.html,
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ModifyVolume.html):
// the new size is usable at once (the image and loop device grow); the
// modification is "modifying", then "optimizing", then "completed" over the
// ModifyVolume delay. IOPS and throughput follow CreateVolume's rules; when
// not given they keep their value if the type stays (gp3, io1, io2), else
// take the new type's default (io1/io2: 3000).
func (r *Region) modifyVolume(c *reqCtx) ([]node, *apiError) {
	p := c.p
	v, aerr := r.lookupVolume(c, p.get("VolumeId"))
	if aerr != nil {
		return nil, aerr
	}
	if v.Mod != nil && v.Mod.State != "completed" {
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
	limits, ok := volumeSizeLimits[vt]
	if !ok {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Value (%s) for parameter volumeType is invalid.", vt))
	}
	if size < limits[0] || size > limits[1] {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Volume of %dGiB is not in the range %d-%d for %s volumes.", size, limits[0], limits[1], vt))
	}
	keepIops := 0
	if vt == v.Type && (vt == "gp3" || vt == "io1" || vt == "io2") {
		keepIops = v.Iops
	} else if vt == "io1" || vt == "io2" {
		keepIops = 3000
	}
	keepThroughput := 0
	if vt == v.Type && vt == "gp3" {
		keepThroughput = v.Throughput
	}
	iops, aerr := p.integer("Iops", keepIops)
	if aerr != nil {
		return nil, aerr
	}
	throughput, aerr := p.integer("Throughput", keepThroughput)
	if aerr != nil {
		return nil, aerr
	}
	if iops, throughput, aerr = volumePerformance(vt, size, iops, throughput); aerr != nil {
		return nil, aerr
	}
	m := &modification{State: "modifying", Start: c.now, Duration: r.delay(r.opts.Delays.ModifyVolume),
		OrigSize: v.Size, OrigType: v.Type, OrigIops: v.Iops, OrigThroughput: v.Throughput}
	grow := size > v.Size
	v.Size, v.Type, v.Iops, v.Throughput, v.Mod = size, vt, iops, throughput, m
	if grow {
		if err := os.Truncate(r.volumeImage(v.ID), int64(v.Size)*gib); err != nil {
			return nil, errf(500, "InternalError", err.Error())
		}
		r.resizeDeviceLocked(v)
	}
	r.scheduleModificationLocked(v)
	return []node{el("volumeModification", modificationFields(v, c.now)...)}, nil
}

// scheduleModificationLocked moves v's modification on at its recorded
// times: optimizing halfway through, completed at the end.
func (r *Region) scheduleModificationLocked(v *volume) {
	m := v.Mod
	var next string
	var at time.Time
	kind := VolumeModify
	switch m.State {
	case "modifying":
		next, at = "optimizing", m.Start.Add(m.Duration/2)
	case "optimizing":
		next, at, kind = "completed", m.Start.Add(m.Duration), VolumeOptimize
	default:
		return
	}
	r.scheduleLocked("modify/"+v.ID, kind, max(0, time.Until(at)), true, func() {
		if v.Mod == m {
			m.State = next
			r.scheduleModificationLocked(v)
		}
	})
}

// progress grows from 0 to 100 over the modification's duration, and stays
// within its state's half (modifying below 50, optimizing from 50), also while
// a Hold keeps a state past its time.
func (m *modification) progress(now time.Time) int {
	lo, hi := 0, 49
	switch m.State {
	case "completed":
		return 100
	case "optimizing":
		lo, hi = 50, 99
	}
	if m.Duration <= 0 {
		return hi
	}
	return min(hi, max(lo, int(100*now.Sub(m.Start)/m.Duration)))
}

// modificationFields are the elements of a VolumeModification, shared by
// ModifyVolume and DescribeVolumesModifications. AWS leaves out IOPS for
// types without them and throughput for types other than gp3.
func modificationFields(v *volume, now time.Time) []node {
	m := v.Mod
	out := []node{tx("volumeId", v.ID), tx("modificationState", m.State),
		num("targetSize", v.Size), tx("targetVolumeType", v.Type)}
	if v.Iops > 0 {
		out = append(out, num("targetIops", v.Iops))
	}
	if v.Throughput > 0 {
		out = append(out, num("targetThroughput", v.Throughput))
	}
	out = append(out, boolean("targetMultiAttachEnabled", false), num("originalSize", m.OrigSize), tx("originalVolumeType", m.OrigType))
	if m.OrigIops > 0 {
		out = append(out, num("originalIops", m.OrigIops))
	}
	if m.OrigThroughput > 0 {
		out = append(out, num("originalThroughput", m.OrigThroughput))
	}
	out = append(out, boolean("originalMultiAttachEnabled", false), num("progress", m.progress(now)), ts("startTime", m.Start))
	if m.State == "completed" {
		out = append(out, ts("endTime", m.Start.Add(m.Duration)))
	}
	return out
}

// describeVolumesModifications lists the latest modification of each volume
// (VolumeId.N: each must exist and have one), filtered and paginated.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeVolumesModifications.html
func (r *Region) describeVolumesModifications(c *reqCtx) ([]node, *apiError) {
	var vols []*volume
	if ids := c.p.list("VolumeId"); len(ids) > 0 {
		for _, id := range ids {
			v, aerr := r.findVolume(id)
			if aerr != nil {
				return nil, aerr
			}
			if v.Mod == nil {
				return nil, badRequest("InvalidVolumeModification.NotFound", fmt.Sprintf("Modification for volume '%s' does not exist.", id))
			}
			vols = append(vols, v)
		}
	} else {
		for _, v := range r.w.Volumes {
			if v.Mod != nil {
				vols = append(vols, v)
			}
		}
		sortByCreation(vols, func(v *volume) (time.Time, string) { return v.Mod.Start, v.ID })
	}
	matched, aerr := matching(c.p.filters(), vols, func(v *volume) (map[string]string, fieldFunc) { return nil, modificationField(v) })
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, matched, 1, 500)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, v := range pg {
		items = append(items, el("", modificationFields(v, c.now)...))
	}
	return []node{list("volumeModificationSet", "item", items), opt("nextToken", next)}, nil
}

func modificationField(v *volume) fieldFunc {
	return func(name string) ([]string, bool) {
		m := v.Mod
		switch name {
		case "volume-id":
			return []string{v.ID}, true
		case "modification-state":
			return []string{m.State}, true
		case "target-size":
			return []string{strconv.Itoa(v.Size)}, true
		case "target-volume-type":
			return []string{v.Type}, true
		case "original-size":
			return []string{strconv.Itoa(m.OrigSize)}, true
		case "original-volume-type":
			return []string{m.OrigType}, true
		case "start-time":
			return []string{awsTime(m.Start)}, true
		}
		return nil, false
	}
}
