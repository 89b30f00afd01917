package sim

import (
	"crypto/rand"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// EC2 instance state codes
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceState.html).
var stateCodes = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

func (r *Region) findInstance(id string) (*instance, *apiError) {
	if !validID("i", id) {
		return nil, badRequest("InvalidInstanceID.Malformed", fmt.Sprintf("Invalid id: \"%s\"", id))
	}
	in := r.w.Instances[id]
	if in == nil {
		return nil, instanceNotFound(id)
	}
	return in, nil
}

func instanceNotFound(id string) *apiError {
	return badRequest("InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id))
}

// launchSpec is what RunInstances and Auto Scaling launches agree on.
type launchSpec struct {
	ImageID      string
	Type         string
	AZ           string
	Subnet       string
	Tags         map[string]string
	MetadataTags bool
	HTTPTokens   string
	TemplateID   string
}

// launchLocked creates one instance in pending; it runs after the
// InstanceStart delay. Its IMDS serves from pending on, as on AWS where
// cloud-init reads it during boot.
func (r *Region) launchLocked(s launchSpec, now time.Time, reservation string) *instance {
	mac := make([]byte, 5)
	_, _ = rand.Read(mac)
	n := len(r.w.Instances)
	in := &instance{
		ID: newID("i"), ImageID: s.ImageID, Type: s.Type, AZ: s.AZ, SubnetID: s.Subnet, State: "pending",
		PrivateIP:  fmt.Sprintf("10.0.%d.%d", 1+indexOf(r.opts.AZs, s.AZ), 10+n%240),
		MAC:        fmt.Sprintf("0e:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4]),
		ENI:        newID("eni"),
		LaunchTime: now, Tags: copyTags(s.Tags), MetadataTags: s.MetadataTags, HTTPTokens: s.HTTPTokens,
		TemplateID: s.TemplateID, Reservation: reservation,
	}
	if in.HTTPTokens == "" {
		in.HTTPTokens = "required"
	}
	if in.Type == "" {
		in.Type = "t3.micro"
	}
	r.w.Instances[in.ID] = in
	r.writeHostSysLocked(in)
	r.startIMDSLocked(in)
	r.scheduleRunning(in, r.delay(r.opts.Delays.InstanceStart))
	return in
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func (r *Region) scheduleRunning(in *instance, d time.Duration) {
	r.scheduleLocked("instance/"+in.ID, InstanceStart, d, true, func() {
		if in.State != "pending" {
			return
		}
		in.State = "running"
		in.RunningSince = time.Now()
		r.startIMDSLocked(in)
		for _, v := range r.w.Volumes {
			if v.Attachment != nil && v.Attachment.InstanceID == in.ID && v.Attachment.State == "attached" {
				r.addDeviceLocked(v)
			}
		}
	})
}

// beginStopLocked: running -> stopping -> stopped. EBS volumes stay
// attached; their devices and the IMDS go away with the OS. An instance
// whose shutdown hangs (HangShutdown) stays stopping until it is released or
// the stop is forced.
func (r *Region) beginStopLocked(in *instance, reason string) {
	in.State = "stopping"
	in.StateReason = reason
	r.scheduleStoppedLocked(in)
}

func (r *Region) scheduleStoppedLocked(in *instance) {
	if in.HangShutdown && !in.StopForced {
		r.cancelLocked("instance/" + in.ID)
		return
	}
	r.scheduleLocked("instance/"+in.ID, InstanceStop, r.delay(r.opts.Delays.InstanceStop), true, func() {
		if in.State != "stopping" {
			return
		}
		in.State = "stopped"
		in.StopForced = false
		in.RunningSince = time.Time{}
		r.stopIMDSLocked(in.ID)
		for _, v := range r.w.Volumes {
			if v.Attachment != nil && v.Attachment.InstanceID == in.ID {
				r.removeDeviceLocked(v)
			}
		}
	})
}

// beginTerminateLocked: -> shutting-down -> terminated. The IMDS and the
// devices stay during shutting-down (the OS is still shutting down); on
// terminated, non-root volumes (DeleteOnTermination false) detach and stay,
// and an associated Elastic IP is disassociated. An instance whose shutdown
// hangs (HangShutdown) stays shutting-down, its volumes attached, until
// released.
func (r *Region) beginTerminateLocked(in *instance, reason string) {
	if in.State == "terminated" || in.State == "shutting-down" {
		return
	}
	in.State = "shutting-down"
	in.StateReason = reason
	r.scheduleTerminatedLocked(in)
}

func (r *Region) scheduleTerminatedLocked(in *instance) {
	if in.HangShutdown {
		r.cancelLocked("instance/" + in.ID)
		return
	}
	r.scheduleLocked("instance/"+in.ID, InstanceTerminate, r.delay(r.opts.Delays.InstanceTerminate), true, func() {
		if in.State != "shutting-down" {
			return
		}
		in.State = "terminated"
		in.RunningSince = time.Time{}
		r.stopIMDSLocked(in.ID)
		r.cancelLocked("spot/" + in.ID)
		for _, v := range r.w.Volumes {
			if v.Attachment != nil && v.Attachment.InstanceID == in.ID {
				r.removeDeviceLocked(v)
				if !detachInProgress(v.Attachment) {
					r.beginDetachLocked(v)
				}
			}
		}
		for _, a := range r.w.Addresses {
			if a.InstanceID == in.ID {
				a.AssociationID, a.InstanceID, a.ENI, a.PrivateIP = "", "", "", ""
				r.observeAddressLocked(ObserveDisassociate, a, in.ID, "", time.Now())
			}
		}
	})
}

// HangShutdown makes an instance's shutdown hang (on) or lets it go (off),
// like an instance stuck in an impaired zone: TerminateInstances leaves it
// shutting-down and StopInstances stopping, with its volumes attached and its
// devices present, until HangShutdown(id, false), which carries the waiting
// change out after its usual delay; StopInstances with Force=true ends a hung
// stop. AWS documents no such switch: it is the simulator's way to produce the
// state.
func (r *Region) HangShutdown(instanceID string, on bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	in.HangShutdown = on
	switch in.State {
	case "shutting-down":
		r.scheduleTerminatedLocked(in)
	case "stopping":
		r.scheduleStoppedLocked(in)
	}
	r.afterChangeLocked()
	return nil
}

func (r *Region) runInstances(c *reqCtx) ([]node, *apiError) {
	p := c.p
	s := launchSpec{
		ImageID: p.get("ImageId"), Type: p.get("InstanceType"), AZ: p.get("Placement.AvailabilityZone"),
		Subnet: p.get("SubnetId"), HTTPTokens: p.get("MetadataOptions.HttpTokens"),
		MetadataTags: p.get("MetadataOptions.InstanceMetadataTags") == "enabled",
	}
	if ltID, ltName := p.get("LaunchTemplate.LaunchTemplateId"), p.get("LaunchTemplate.LaunchTemplateName"); ltID != "" || ltName != "" {
		lt, aerr := r.findTemplate(ltID, ltName)
		if aerr != nil {
			return nil, aerr
		}
		s.TemplateID = lt.ID
		if s.ImageID == "" {
			s.ImageID = lt.ImageID
		}
		if s.Type == "" {
			s.Type = lt.InstanceType
		}
		if !p.has("MetadataOptions.InstanceMetadataTags") {
			s.MetadataTags = lt.MetadataTags
		}
		if s.HTTPTokens == "" {
			s.HTTPTokens = lt.HTTPTokens
		}
		s.Tags = copyTags(lt.TagSpecs["instance"])
	}
	if s.ImageID == "" {
		return nil, badRequest("MissingParameter", "The request must contain the parameter ImageId")
	}
	minCount, aerr := p.integer("MinCount", 0)
	if aerr != nil {
		return nil, aerr
	}
	maxCount, aerr := p.integer("MaxCount", 0)
	if aerr != nil {
		return nil, aerr
	}
	if minCount < 1 || maxCount < minCount {
		return nil, badRequest("InvalidParameterValue", "MinCount must be at least 1 and MaxCount at least MinCount")
	}
	if s.Subnet != "" {
		az, aerr := r.subnetAZ(s.Subnet)
		if aerr != nil {
			return nil, aerr
		}
		if s.AZ != "" && s.AZ != az {
			return nil, badRequest("InvalidParameterCombination", "The specified Availability Zone does not match the subnet's zone")
		}
		s.AZ = az
	}
	if s.AZ == "" {
		s.AZ = r.opts.AZs[len(r.w.Instances)%len(r.opts.AZs)]
	}
	if !r.validAZ(s.AZ) {
		return nil, badRequest("InvalidParameterValue", fmt.Sprintf("Invalid availability zone: [%s]", s.AZ))
	}
	if s.Subnet == "" {
		s.Subnet = subnetFor(s.AZ)
	}
	specs := p.tagSpecs("TagSpecification")
	for rt := range specs {
		if rt != "instance" && rt != "volume" && rt != "network-interface" {
			return nil, badRequest("InvalidParameterValue", fmt.Sprintf("'%s' is not a valid taggable resource type for this operation.", rt))
		}
	}
	if err := checkTags(specs["instance"]); err != nil {
		return nil, err
	}
	if s.Tags == nil {
		s.Tags = map[string]string{}
	}
	for k, v := range specs["instance"] {
		s.Tags[k] = v
	}
	res := newID("r")
	var items []node
	for range maxCount {
		in := r.launchLocked(s, c.now, res)
		items = append(items, el("", r.instanceFields(in)...))
	}
	return []node{tx("reservationId", res), tx("ownerId", accountID), list("groupSet", "item", nil),
		list("instancesSet", "item", items)}, nil
}

func (r *Region) publicIP(in *instance) string {
	for _, a := range r.w.Addresses {
		if a.InstanceID == in.ID {
			return a.PublicIP
		}
	}
	return ""
}

func stateNode(name, state string) node {
	return el(name, num("code", stateCodes[state]), tx("name", state))
}

func (r *Region) instanceFields(in *instance) []node {
	var bdm []node
	for _, v := range r.attachedVolumes(in.ID) {
		a := v.Attachment
		status := a.State
		if status == "busy" { // EbsInstanceBlockDevice's AttachmentStatus has no busy
			status = "detaching"
		}
		bdm = append(bdm, el("", tx("deviceName", a.Device), el("ebs", tx("volumeId", v.ID), tx("status", status),
			ts("attachTime", a.Time), boolean("deleteOnTermination", false))))
	}
	pub := r.publicIP(in)
	var assoc node
	if pub != "" {
		assoc = el("association", tx("publicIp", pub), tx("ipOwnerId", accountID))
	} else {
		assoc = node{skip: true}
	}
	tagsState := "disabled"
	if in.MetadataTags {
		tagsState = "enabled"
	}
	var reason node
	if in.StateReason != "" {
		code, msg, _ := strings.Cut(in.StateReason, ": ")
		reason = el("stateReason", tx("code", code), tx("message", msg))
	} else {
		reason = node{skip: true}
	}
	return []node{
		tx("instanceId", in.ID), tx("imageId", in.ImageID), stateNode("instanceState", in.State),
		tx("privateDnsName", "ip-"+strings.ReplaceAll(in.PrivateIP, ".", "-")+".ec2.internal"), tx("dnsName", ""),
		tx("reason", ""), num("amiLaunchIndex", 0), list("productCodes", "item", nil), tx("instanceType", in.Type),
		ts("launchTime", in.LaunchTime),
		el("placement", tx("availabilityZone", in.AZ), tx("availabilityZoneId", r.azID(in.AZ)), tx("groupName", ""), tx("tenancy", "default")),
		el("monitoring", tx("state", "disabled")), tx("subnetId", in.SubnetID), tx("vpcId", "vpc-0sim"),
		tx("privateIpAddress", in.PrivateIP), opt("ipAddress", pub), boolean("sourceDestCheck", true),
		list("groupSet", "item", nil), reason, tx("architecture", "x86_64"), tx("rootDeviceType", "ebs"),
		tx("rootDeviceName", "/dev/xvda"), list("blockDeviceMapping", "item", bdm),
		tx("virtualizationType", "hvm"), tx("hypervisor", "xen"), ec2TagSet(in.Tags), boolean("ebsOptimized", false),
		list("networkInterfaceSet", "item", []node{el("",
			tx("networkInterfaceId", in.ENI), tx("subnetId", in.SubnetID), tx("vpcId", "vpc-0sim"), tx("ownerId", accountID),
			tx("status", "in-use"), tx("macAddress", in.MAC), tx("privateIpAddress", in.PrivateIP), assoc)}),
		el("metadataOptions", tx("state", "applied"), tx("httpTokens", in.HTTPTokens), num("httpPutResponseHopLimit", 2),
			tx("httpEndpoint", "enabled"), tx("httpProtocolIpv6", "disabled"), tx("instanceMetadataTags", tagsState)),
	}
}

func (r *Region) attachedVolumes(instanceID string) []*volume {
	var out []*volume
	for _, v := range r.w.Volumes {
		if v.Attachment != nil && v.Attachment.InstanceID == instanceID {
			out = append(out, v)
		}
	}
	sortByCreation(out, func(v *volume) (time.Time, string) { return v.Attachment.Time, v.ID })
	return out
}

func (r *Region) instanceField(in *instance) fieldFunc {
	return func(name string) ([]string, bool) {
		switch name {
		case "instance-id":
			return []string{in.ID}, true
		case "instance-state-name":
			return []string{in.State}, true
		case "instance-state-code":
			return []string{strconv.Itoa(stateCodes[in.State])}, true
		case "availability-zone":
			return []string{in.AZ}, true
		case "instance-type":
			return []string{in.Type}, true
		case "image-id":
			return []string{in.ImageID}, true
		case "private-ip-address":
			return []string{in.PrivateIP}, true
		case "ip-address":
			return []string{r.publicIP(in)}, true
		case "subnet-id":
			return []string{in.SubnetID}, true
		case "vpc-id":
			return []string{"vpc-0sim"}, true
		case "reservation-id":
			return []string{in.Reservation}, true
		case "network-interface.network-interface-id":
			return []string{in.ENI}, true
		case "block-device-mapping.volume-id":
			var ids []string
			for _, v := range r.attachedVolumes(in.ID) {
				ids = append(ids, v.ID)
			}
			return ids, true
		case "metadata-options.instance-metadata-tags":
			if in.MetadataTags {
				return []string{"enabled"}, true
			}
			return []string{"disabled"}, true
		}
		return nil, false
	}
}

// selectInstances resolves InstanceId.N (all must exist) or all instances,
// hiding those still inside the consistency delay.
func (r *Region) selectInstances(c *reqCtx) ([]*instance, *apiError) {
	out, aerr := selectVisible(r, c, c.p.list("InstanceId"), r.w.Instances, r.findInstance, func(in *instance) (time.Time, string) { return in.LaunchTime, in.ID },
		"InvalidInstanceID.NotFound", func(missing []string) string {
			return fmt.Sprintf("The instance IDs '%s' do not exist", strings.Join(missing, ", "))
		})
	if aerr != nil {
		return nil, aerr
	}
	return matching(c.p.filters(), out, func(in *instance) (map[string]string, fieldFunc) { return in.Tags, r.instanceField(in) })
}

func (r *Region) describeInstances(c *reqCtx) ([]node, *apiError) {
	if len(c.p.list("InstanceId")) > 0 && c.p.has("MaxResults") {
		return nil, badRequest("InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
	}
	ins, aerr := r.selectInstances(c)
	if aerr != nil {
		return nil, aerr
	}
	pg, next, aerr := page(c.p, ins, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, in := range pg {
		items = append(items, el("", tx("reservationId", in.Reservation), tx("ownerId", accountID),
			list("groupSet", "item", nil), list("instancesSet", "item", []node{el("", r.instanceFields(in)...)})))
	}
	return []node{list("reservationSet", "item", items), opt("nextToken", next)}, nil
}

// changeStates runs fn on each listed instance and answers with the
// previous and current state of each, the shape Start/Stop/TerminateInstances share.
func (r *Region) changeStates(c *reqCtx, fn func(in *instance) *apiError) ([]node, *apiError) {
	ids := c.p.list("InstanceId")
	if len(ids) == 0 {
		return nil, badRequest("MissingParameter", "The request must contain the parameter InstanceId")
	}
	var ins []*instance
	for _, id := range ids {
		in, aerr := r.lookupInstance(c, id)
		if aerr != nil {
			return nil, aerr
		}
		ins = append(ins, in)
	}
	var items []node
	for _, in := range ins {
		prev := in.State
		if aerr := fn(in); aerr != nil {
			return nil, aerr
		}
		items = append(items, el("", tx("instanceId", in.ID), stateNode("currentState", in.State), stateNode("previousState", prev)))
	}
	return []node{list("instancesSet", "item", items)}, nil
}

func (r *Region) startInstances(c *reqCtx) ([]node, *apiError) {
	return r.changeStates(c, func(in *instance) *apiError {
		switch in.State {
		case "running", "pending":
			return nil
		case "stopped":
			in.State = "pending"
			in.StateReason = ""
			r.startIMDSLocked(in)
			r.scheduleRunning(in, r.delay(r.opts.Delays.InstanceStart))
			return nil
		}
		return badRequest("IncorrectInstanceState", fmt.Sprintf("The instance '%s' is not in a state from which it can be started.", in.ID))
	})
}

// stopInstances stops instances; Force=true stops without a clean shutdown
// ("The instance does not have an opportunity to flush file system caches or
// file system metadata",
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StopInstances.html):
// the same end state, volumes stay attached, and the way a stop stuck in
// stopping (HangShutdown) ends.
func (r *Region) stopInstances(c *reqCtx) ([]node, *apiError) {
	force := c.p.boolean("Force")
	return r.changeStates(c, func(in *instance) *apiError {
		switch in.State {
		case "stopped":
			return nil
		case "stopping":
			if force && !in.StopForced {
				in.StopForced = true
				r.scheduleStoppedLocked(in)
			}
			return nil
		case "running", "pending":
			in.StopForced = force
			r.beginStopLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
			return nil
		}
		return badRequest("IncorrectInstanceState", fmt.Sprintf("This instance '%s' is not in a state from which it can be stopped.", in.ID))
	})
}

func (r *Region) terminateInstances(c *reqCtx) ([]node, *apiError) {
	return r.changeStates(c, func(in *instance) *apiError {
		r.beginTerminateLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
		return nil
	})
}

// describeInstanceStatus reports status checks: "initializing" for a while
// after the instance runs, then "ok"; "not-applicable" when not running.
// SetInstanceStatus overrides either check of a running instance.
// Without IncludeAllInstances only running instances are listed, as on AWS.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceStatusSummary.html
func (r *Region) describeInstanceStatus(c *reqCtx) ([]node, *apiError) {
	ins, aerr := r.selectInstances(c)
	if aerr != nil {
		return nil, aerr
	}
	all := c.p.boolean("IncludeAllInstances")
	initTime := time.Duration(float64(r.opts.Delays.InstanceStart) / r.opts.Speed / 3)
	var shown []*instance
	for _, in := range ins {
		if all || in.State == "running" {
			shown = append(shown, in)
		}
	}
	pg, next, aerr := page(c.p, shown, 5, 1000)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, in := range pg {
		auto := "not-applicable"
		if in.State == "running" {
			auto = "initializing"
			if c.now.Sub(in.RunningSince) >= initTime {
				auto = "ok"
			}
		}
		check := func(name, forced string) node {
			status := auto
			if forced != "" && in.State == "running" {
				status = forced
			}
			var detail node
			switch status {
			case "not-applicable":
				return el(name, tx("status", status))
			case "ok":
				detail = el("", tx("name", "reachability"), tx("status", "passed"))
			case "impaired":
				detail = el("", tx("name", "reachability"), tx("status", "failed"), ts("impairedSince", in.StatusSince))
			default: // initializing, insufficient-data
				detail = el("", tx("name", "reachability"), tx("status", status))
			}
			return el(name, tx("status", status), list("details", "item", []node{detail}))
		}
		items = append(items, el("", tx("instanceId", in.ID), tx("availabilityZone", in.AZ), stateNode("instanceState", in.State),
			check("systemStatus", in.SystemStatus), check("instanceStatus", in.InstanceStatus), list("eventsSet", "item", nil)))
	}
	return []node{list("instanceStatusSet", "item", items), opt("nextToken", next)}, nil
}

// statusCheckValues are what SetInstanceStatus accepts ("" = automatic).
var statusCheckValues = map[string]bool{"": true, "ok": true, "impaired": true, "insufficient-data": true, "initializing": true}

// SetInstanceStatus forces the system and the instance status check of an
// instance, as DescribeInstanceStatus reports them while it runs: "ok",
// "impaired", "insufficient-data" or "initializing"; "" gives that check
// back to the automatic behaviour (initializing shortly after start, then
// ok). An impaired Auto Scaling group member in service turns Unhealthy and
// is replaced, as with the group's EC2 health checks
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-health-checks.html).
func (r *Region) SetInstanceStatus(instanceID, system, instance string) error {
	if !statusCheckValues[system] || !statusCheckValues[instance] {
		return fmt.Errorf("sim: status checks %q/%q: each must be ok, impaired, insufficient-data, initializing or empty", system, instance)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	if in.SystemStatus != system || in.InstanceStatus != instance {
		in.StatusSince = time.Now().UTC().Truncate(time.Second)
	}
	in.SystemStatus, in.InstanceStatus = system, instance
	if (system == "impaired" || instance == "impaired") && in.Group != "" && in.Lifecycle == "InService" {
		in.Health, in.Replace = "Unhealthy", true
	}
	r.afterChangeLocked()
	return nil
}

// KillInstance makes an instance die abruptly, like a hardware failure: it
// goes shutting-down -> terminated without any lifecycle hook; a group it
// belongs to replaces it.
func (r *Region) KillInstance(instanceID string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	if in.Group != "" && !strings.HasPrefix(in.Lifecycle, "Terminat") {
		in.Lifecycle, in.Health, in.Hook = "Terminating", "Unhealthy", nil
		r.cancelLocked("hook/" + in.ID)
	}
	r.beginTerminateLocked(in, "Server.InternalError: Internal error on launch")
	r.afterChangeLocked()
	return nil
}

// SetSpotAction publishes a Spot interruption notice in the instance's IMDS
// (spot/instance-action) and carries it out at "at": "terminate", "stop" or
// "hibernate" (hibernate is modelled as stop). "" clears the notice.
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
func (r *Region) SetSpotAction(instanceID, action string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	switch action {
	case "":
		r.cancelLocked("spot/" + in.ID)
		in.SpotAction, in.SpotTime = "", time.Time{}
	case "terminate", "stop", "hibernate":
		in.SpotAction, in.SpotTime = action, at.UTC().Truncate(time.Second)
		r.scheduleSpotLocked(in)
	default:
		return fmt.Errorf("sim: spot action %q is not terminate, stop or hibernate", action)
	}
	r.afterChangeLocked()
	return nil
}

func (r *Region) scheduleSpotLocked(in *instance) {
	r.scheduleLocked("spot/"+in.ID, SpotInterruption, max(0, time.Until(in.SpotTime)), false, func() {
		switch in.SpotAction {
		case "terminate":
			if in.Group != "" && !strings.HasPrefix(in.Lifecycle, "Terminat") {
				in.Lifecycle, in.Health = "Terminating", "Unhealthy"
			}
			r.beginTerminateLocked(in, "Server.SpotInstanceTermination: Spot instance termination")
		case "stop", "hibernate":
			if in.State == "running" || in.State == "pending" {
				r.beginStopLocked(in, "Server.SpotInstanceShutdown: Spot instance shutdown")
			}
		}
	})
}

// SetRebalance publishes an EC2 instance rebalance recommendation in the
// instance's IMDS (events/recommendations/rebalance); a zero time clears it.
func (r *Region) SetRebalance(instanceID string, at time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	in.RebalanceTime = at.UTC().Truncate(time.Second)
	r.afterChangeLocked()
	return nil
}
