package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Which resources each API call is authorized against, and with which condition keys, per the Service
// Authorization Reference:
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html
//
// An action is authorized against each resource type it lists for the call: AttachVolume against the
// instance and the volume, AssociateAddress against the Elastic IP, the instance and its network
// interface, CreateVolume against the new volume and, from a snapshot, the snapshot. A resource that
// exists brings its tags (aws:ResourceTag/KEY, and the services' own ec2:ResourceTag/KEY and
// autoscaling:ResourceTag/KEY); one being created has none yet, and its ARN ends in "*". Tags in the
// request (TagSpecifications, CreateTags, DeleteTags) are aws:RequestTag/KEY and aws:TagKeys, for every
// resource of the call. Tags given at creation need ec2:CreateTags as well, authorized on the new
// resource with ec2:CreateAction set to the creating action:
// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
//
// A call this file does not model (RunInstances, launch templates, CreateAutoScalingGroup: setup, which
// handover never makes) is authorized against "*" with no resource keys, which only a statement on "*"
// allows: stricter than AWS, never looser. A resource named in the call that does not exist is left out
// of the authorization, so the call answers the NotFound code it answers without a policy: AWS does not
// document which of the two errors comes first, and handover's fencing reacts to the NotFound codes (an
// association or a volume another instance removed), which a policy must not change.

// iamRequest is one authorization an API call needs: an IAM action on each of a set of resources.
type iamRequest struct {
	action    string // "ec2:AttachVolume"
	resources []iamResource
	keys      iamContext // the request's keys, for every resource
}

// iamResource is one resource of a request, with its own condition keys.
type iamResource struct {
	arn  string
	keys iamContext
}

// instanceRole is the role name in the principal ARN of a denied call's message.
const instanceRole = "sim-instance-role"

// SetInstancePolicy attaches an IAM policy document to the role of instanceID's credentials (InstanceEnv):
// from then on every EC2 and Auto Scaling call made with them is authorized against it, and a call it does
// not allow answers UnauthorizedOperation (EC2) or AccessDenied (Auto Scaling), HTTP 403. A nil doc
// detaches it. Like Faults, policies are not saved in the state directory.
func (r *Region) SetInstancePolicy(instanceID string, doc []byte) error {
	r.mu.Lock()
	_, ok := r.w.Instances[instanceID]
	r.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: no instance %s", instanceID)
	}
	var p *Policy
	if doc != nil {
		var err error
		if p, err = ParsePolicy(doc); err != nil {
			return fmt.Errorf("sim: policy for %s: %w", instanceID, err)
		}
	}
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	if r.policies == nil {
		r.policies = map[string]*Policy{}
	}
	key := instanceAccessKey(instanceID)
	if p == nil {
		delete(r.policies, key)
	} else {
		r.policies[key] = p
	}
	return nil
}

// instanceAccessKey is the access key InstanceEnv gives instanceID's agent.
func instanceAccessKey(instanceID string) string {
	return "AKID" + strings.ReplaceAll(instanceID, "-", "")
}

// authorize answers the error IAM would for a call by caller, or nil when the caller has no policy or
// the policy allows every authorization the call needs.
func (r *Region) authorize(caller, action string, isASG bool, p params) *apiError {
	r.cfgMu.Lock()
	pol := r.policies[caller]
	r.cfgMu.Unlock()
	if pol == nil {
		return nil
	}
	r.mu.Lock()
	reqs := r.iamRequestsLocked(action, isASG, p)
	r.mu.Unlock()
	for _, q := range reqs {
		for _, res := range q.resources {
			ctx := iamContext{}
			for k, v := range q.keys {
				ctx[k] = v
			}
			for k, v := range res.keys {
				ctx[k] = v
			}
			if d := pol.decide(q.action, res.arn, ctx); d != allowed {
				return deniedError(caller, q.action, res.arn, d, isASG)
			}
		}
	}
	return nil
}

// deniedError is AWS's answer to a call the policy does not allow, with the message IAM gives:
// "User: ARN is not authorized to perform: ACTION on resource: ARN because no identity-based policy allows
// the ACTION action" (or "with an explicit deny in an identity-based policy"). EC2 prefixes it with "You
// are not authorized to perform this operation." (its encoded authorization message is left out).
// https://repost.aws/knowledge-center/ec2-not-auth-launch
func deniedError(caller, action, resource string, d iamDecision, isASG bool) *apiError {
	why := "because no identity-based policy allows the " + action + " action"
	if d == explicitDeny {
		why = "with an explicit deny in an identity-based policy"
	}
	principal := fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", accountID, instanceRole, callerInstance(caller))
	msg := fmt.Sprintf("User: %s is not authorized to perform: %s on resource: %s %s", principal, action, resource, why)
	if isASG {
		return errf(http.StatusForbidden, "AccessDenied", msg)
	}
	return errf(http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation. "+msg)
}

func (r *Region) ec2ARN(kind, id string) string {
	if kind == "snapshot" || kind == "image" { // public kinds: no account in the ARN
		return "arn:aws:ec2:" + r.opts.Region + "::" + kind + "/" + id
	}
	return "arn:aws:ec2:" + r.opts.Region + ":" + accountID + ":" + kind + "/" + id
}

// tagKeys are a resource's tags as condition keys, under each of the prefixes.
func tagKeys(tags map[string]string, prefixes ...string) iamContext {
	ctx := iamContext{}
	for k, v := range tags {
		for _, p := range prefixes {
			ctx[strings.ToLower(p+"/"+k)] = []string{v}
		}
	}
	return ctx
}

// requestTagKeys are the tags of a request: aws:RequestTag/KEY for each tag with a value, aws:TagKeys for
// every key.
func requestTagKeys(tags map[string]string, keysOnly []string) iamContext {
	ctx := iamContext{}
	var keys []string
	for k, v := range tags {
		ctx[strings.ToLower("aws:RequestTag/"+k)] = []string{v}
		keys = append(keys, k)
	}
	keys = append(keys, keysOnly...)
	if len(keys) > 0 {
		ctx["aws:tagkeys"] = keys
	}
	return ctx
}

func (r *Region) ec2Resource(kind, id string, tags map[string]string) iamResource {
	return iamResource{arn: r.ec2ARN(kind, id), keys: tagKeys(tags, "aws:ResourceTag", "ec2:ResourceTag")}
}

// The resources of a call, each a list of none (no such resource) or one.

// taggableLocked is the resource a tag call names by id.
func (r *Region) taggableLocked(id string) []iamResource {
	prefix, _, _ := strings.Cut(id, "-")
	switch prefix {
	case "vol":
		return r.volumeLocked(id)
	case "snap":
		return r.snapshotLocked(id)
	case "i":
		return r.instanceLocked(id)
	case "eipalloc":
		return r.addressLocked(r.w.Addresses[id])
	case "lt":
		if lt := r.w.Templates[id]; lt != nil {
			return []iamResource{r.ec2Resource("launch-template", id, lt.Tags)}
		}
	}
	return nil
}

func (r *Region) volumeLocked(id string) []iamResource {
	if v := r.w.Volumes[id]; v != nil {
		return []iamResource{r.ec2Resource("volume", id, v.Tags)}
	}
	return nil
}

func (r *Region) snapshotLocked(id string) []iamResource {
	if s := r.w.Snapshots[id]; s != nil {
		return []iamResource{r.ec2Resource("snapshot", id, s.Tags)}
	}
	return nil
}

func (r *Region) instanceLocked(id string) []iamResource {
	if in := r.w.Instances[id]; in != nil {
		return []iamResource{r.ec2Resource("instance", id, in.Tags)}
	}
	return nil
}

func (r *Region) addressLocked(a *address) []iamResource {
	if a == nil {
		return nil
	}
	return []iamResource{r.ec2Resource("elastic-ip", a.AllocationID, a.Tags)}
}

// addressOfLocked finds the address a call names by AllocationId or PublicIp (nil when none).
func (r *Region) addressOfLocked(p params) *address {
	if id := p.get("AllocationId"); id != "" {
		return r.w.Addresses[id]
	}
	if ip := p.get("PublicIp"); ip != "" {
		a, _ := r.addressByIP(ip)
		return a
	}
	return nil
}

func (r *Region) groupLocked(name string) []iamResource {
	g := r.w.Groups[name]
	if g == nil {
		return nil
	}
	tags := map[string]string{}
	for _, t := range g.Tags {
		tags[t.Key] = t.Value
	}
	return []iamResource{{arn: g.ARN, keys: tagKeys(tags, "aws:ResourceTag", "autoscaling:ResourceTag")}}
}

func concat(lists ...[]iamResource) []iamResource {
	var out []iamResource
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// atCreation is the ec2:CreateTags authorization of tags given when a resource is created.
func atCreation(creating string, created iamResource, tags map[string]string) []iamRequest {
	if len(tags) == 0 {
		return nil
	}
	keys := requestTagKeys(tags, nil)
	keys["ec2:createaction"] = []string{creating}
	return []iamRequest{{action: "ec2:CreateTags", resources: []iamResource{created}, keys: keys}}
}

// iamRequestsLocked is what one API call is authorized for.
func (r *Region) iamRequestsLocked(action string, isASG bool, p params) []iamRequest {
	if isASG {
		return r.asgRequestsLocked(action, p)
	}
	ec2 := func(res ...[]iamResource) []iamRequest {
		return []iamRequest{{action: "ec2:" + action, resources: concat(res...), keys: iamContext{}}}
	}
	// creating is a call that creates a resource of kind, with the tags of its TagSpecifications, and
	// uses the others.
	creating := func(kind string, others ...[]iamResource) []iamRequest {
		tags := p.tagSpecs("TagSpecification")[kind]
		created := r.ec2Resource(kind, "*", nil)
		reqs := ec2(append([][]iamResource{{created}}, others...)...)
		reqs[0].keys = requestTagKeys(tags, nil)
		return append(reqs, atCreation(action, created, tags)...)
	}
	switch action {
	case "CreateTags", "DeleteTags":
		var res []iamResource
		for _, id := range p.list("ResourceId") {
			res = append(res, r.taggableLocked(id)...)
		}
		tags := p.tags("Tag")
		var keysOnly []string
		if action == "DeleteTags" {
			// A tag to delete may name its key only; only one with a value is a request tag.
			tags = map[string]string{}
			for _, n := range p.indexes("Tag") {
				pre := fmt.Sprintf("Tag.%d", n)
				if p.has(pre + ".Value") {
					tags[p.get(pre+".Key")] = p.get(pre + ".Value")
				} else {
					keysOnly = append(keysOnly, p.get(pre+".Key"))
				}
			}
		}
		return []iamRequest{{action: "ec2:" + action, resources: res, keys: requestTagKeys(tags, keysOnly)}}
	case "CreateVolume":
		var from []iamResource
		if sid := p.get("SnapshotId"); sid != "" {
			from = r.snapshotLocked(sid)
		}
		return creating("volume", from)
	case "CreateSnapshot":
		return creating("snapshot", r.volumeLocked(p.get("VolumeId")))
	case "CreateSnapshots":
		// The instance, each volume of it the call snapshots, and the snapshots it makes
		// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html#amazonec2-CreateSnapshots).
		// The simulator has no root volume: every attached volume not excluded is a data volume.
		iid := p.get("InstanceSpecification.InstanceId")
		excluded := map[string]bool{}
		for _, id := range p.list("InstanceSpecification.ExcludeDataVolumeId") {
			excluded[id] = true
		}
		var vols []iamResource
		for id, v := range r.w.Volumes {
			if v.Attachment != nil && v.Attachment.InstanceID == iid && !excluded[id] {
				vols = append(vols, r.volumeLocked(id)...)
			}
		}
		return creating("snapshot", r.instanceLocked(iid), vols)
	case "LockSnapshot":
		return ec2(r.snapshotLocked(p.get("SnapshotId")))
	case "AllocateAddress":
		return creating("elastic-ip")
	case "AttachVolume":
		return ec2(r.instanceLocked(p.get("InstanceId")), r.volumeLocked(p.get("VolumeId")))
	case "DetachVolume":
		vid, iid := p.get("VolumeId"), p.get("InstanceId")
		if v := r.w.Volumes[vid]; iid == "" && v != nil && v.Attachment != nil {
			iid = v.Attachment.InstanceID // the instance it is detached from
		}
		return ec2(r.instanceLocked(iid), r.volumeLocked(vid))
	case "DeleteVolume", "ModifyVolume":
		return ec2(r.volumeLocked(p.get("VolumeId")))
	case "DeleteSnapshot":
		return ec2(r.snapshotLocked(p.get("SnapshotId")))
	case "StartInstances", "StopInstances", "TerminateInstances":
		var res []iamResource
		for _, id := range p.list("InstanceId") {
			res = append(res, r.instanceLocked(id)...)
		}
		return ec2(res)
	case "ReleaseAddress":
		return ec2(r.addressLocked(r.addressOfLocked(p)))
	case "AssociateAddress":
		eni := p.get("NetworkInterfaceId")
		iid := p.get("InstanceId")
		if in := r.w.Instances[iid]; in != nil && eni == "" {
			eni = in.ENI // the instance's primary network interface is the one the address goes to
		}
		var nic []iamResource
		if eni != "" {
			nic = []iamResource{r.ec2Resource("network-interface", eni, nil)} // the simulator keeps no interface tags
		}
		return ec2(r.addressLocked(r.addressOfLocked(p)), r.instanceLocked(iid), nic)
	case "DisassociateAddress":
		var a *address
		if assoc := p.get("AssociationId"); assoc != "" {
			for _, x := range r.w.Addresses {
				if x.AssociationID == assoc {
					a = x
				}
			}
		} else {
			a = r.addressOfLocked(p)
		}
		var nic []iamResource
		if a != nil && a.ENI != "" {
			nic = []iamResource{r.ec2Resource("network-interface", a.ENI, nil)}
		}
		return ec2(r.addressLocked(a), nic)
	}
	return ec2([]iamResource{{arn: "*"}}) // Describe* (no resource types) and what is not modelled
}

func (r *Region) asgRequestsLocked(action string, p params) []iamRequest {
	req := func(res []iamResource) []iamRequest {
		return []iamRequest{{action: "autoscaling:" + action, resources: res, keys: iamContext{}}}
	}
	switch action {
	case "CompleteLifecycleAction", "RecordLifecycleActionHeartbeat", "PutLifecycleHook", "DeleteLifecycleHook",
		"UpdateAutoScalingGroup", "SetDesiredCapacity", "DeleteAutoScalingGroup":
		return req(r.groupLocked(p.get("AutoScalingGroupName")))
	case "TerminateInstanceInAutoScalingGroup", "SetInstanceHealth":
		if in := r.w.Instances[p.get("InstanceId")]; in != nil {
			return req(r.groupLocked(in.Group))
		}
		return nil
	}
	return req([]iamResource{{arn: "*"}})
}

// serveIAMPolicy is the admin path of SetInstancePolicy, for scripts and the AWS CLI:
//
//	POST /sim/iam-policy?instance=i-..   body: the policy document (an empty body detaches it)
func (r *Region) serveIAMPolicy(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if req.Method != http.MethodPost {
		w.WriteHeader(http.StatusMethodNotAllowed)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "POST the policy document"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err == nil {
		var doc []byte
		if len(bytes.TrimSpace(body)) > 0 {
			doc = body
		}
		err = r.SetInstancePolicy(req.URL.Query().Get("instance"), doc)
	}
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "ok"})
}
