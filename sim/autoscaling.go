package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Auto Scaling API (awsquery, 2011-01-01). The group's behaviour lives in
// asg_reconcile.go; this file parses and answers the calls.

func asgValidation(format string, a ...any) *apiError {
	return badRequest("ValidationError", fmt.Sprintf(format, a...))
}

func (r *Region) findGroup(name string) (*group, *apiError) {
	g := r.w.Groups[name]
	if g == nil || name == "" {
		return nil, asgValidation("AutoScalingGroup name not found - AutoScalingGroup '%s' not found", name)
	}
	return g, nil
}

// applyGroupParams reads the parameters CreateAutoScalingGroup and
// UpdateAutoScalingGroup share into g.
func (r *Region) applyGroupParams(g *group, p params, creating bool) *apiError {
	if id, name := p.get("LaunchTemplate.LaunchTemplateId"), p.get("LaunchTemplate.LaunchTemplateName"); id != "" || name != "" {
		lt, aerr := r.findTemplate(id, name)
		if aerr != nil {
			return asgValidation("You must use a valid fully-formed launch template. %s", aerr.Message)
		}
		g.TemplateID, g.TemplateName = lt.ID, lt.Name
		g.TemplateVersion = p.get("LaunchTemplate.Version")
		if g.TemplateVersion == "" {
			g.TemplateVersion = "$Default"
		}
	} else if creating {
		if p.get("LaunchConfigurationName") != "" || p.get("MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification.LaunchTemplateId") != "" {
			return asgValidation("The handover simulator supports only LaunchTemplate groups.")
		}
		return asgValidation("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, InstanceId or MixedInstancesPolicy parameter.")
	}
	var aerr *apiError
	if p.has("MinSize") || creating {
		if g.Min, aerr = p.integer("MinSize", 0); aerr != nil {
			return aerr
		}
	}
	if p.has("MaxSize") || creating {
		if g.Max, aerr = p.integer("MaxSize", 0); aerr != nil {
			return aerr
		}
	}
	if p.has("DesiredCapacity") {
		if g.Desired, aerr = p.integer("DesiredCapacity", 0); aerr != nil {
			return aerr
		}
	} else if creating {
		g.Desired = g.Min
	} else {
		// Update without DesiredCapacity clamps desired into the new range.
		g.Desired = min(max(g.Desired, g.Min), g.Max)
	}
	if g.Min > g.Max {
		return asgValidation("Max bound, %d, must be greater than or equal to min bound, %d", g.Max, g.Min)
	}
	if g.Desired < g.Min || g.Desired > g.Max {
		return asgValidation("Desired capacity:%d must be between the specified min size:%d and max size:%d", g.Desired, g.Min, g.Max)
	}
	azs := p.members("AvailabilityZones")
	if vz := p.get("VPCZoneIdentifier"); vz != "" {
		g.VPCZoneIdentifier = vz
		azs = nil
		for _, sn := range strings.Split(vz, ",") {
			az, aerr := r.subnetAZ(strings.TrimSpace(sn))
			if aerr != nil {
				return asgValidation("The subnet ID '%s' does not exist", strings.TrimSpace(sn))
			}
			if !slices.Contains(azs, az) {
				azs = append(azs, az)
			}
		}
	}
	for _, az := range azs {
		if !r.validAZ(az) {
			return asgValidation("The availability zone '%s' is not legal", az)
		}
	}
	if len(azs) > 0 {
		g.AZs = azs
	}
	if creating && len(g.AZs) == 0 {
		return asgValidation("At least one Availability Zone or VPC Subnet is required.")
	}
	if t := p.get("HealthCheckType"); t != "" {
		g.HealthCheckType = t
	}
	if p.has("HealthCheckGracePeriod") {
		if g.GracePeriod, aerr = p.integer("HealthCheckGracePeriod", 0); aerr != nil {
			return aerr
		}
	}
	if p.has("CapacityRebalance") {
		g.CapacityRebalance = p.boolean("CapacityRebalance")
	}
	// Instance maintenance policy
	// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-instance-maintenance-policy.html):
	// -1/-1 clears it; MinHealthyPercentage 100 means launch before terminate.
	if p.has("InstanceMaintenancePolicy.MinHealthyPercentage") || p.has("InstanceMaintenancePolicy.MaxHealthyPercentage") {
		mn, aerr := p.integer("InstanceMaintenancePolicy.MinHealthyPercentage", -1)
		if aerr != nil {
			return aerr
		}
		mx, aerr := p.integer("InstanceMaintenancePolicy.MaxHealthyPercentage", -1)
		if aerr != nil {
			return aerr
		}
		switch {
		case mn == -1 && mx == -1:
		case mn < 0 || mn > 100 || mx < 100 || mx > 200:
			return asgValidation("MinHealthyPercentage must be between 0 and 100 and MaxHealthyPercentage between 100 and 200.")
		case mx-mn > 100:
			return asgValidation("The difference between MaxHealthyPercentage and MinHealthyPercentage cannot exceed 100.")
		}
		g.MinHealthy, g.MaxHealthy = mn, mx
	}
	return nil
}

func (r *Region) groupTags(p params, name string) ([]groupTag, *apiError) {
	var tags []groupTag
	for _, n := range p.indexes("Tags.member") {
		pre := "Tags.member." + strconv.Itoa(n)
		k := p.get(pre + ".Key")
		if k == "" {
			return nil, asgValidation("Tag key cannot be empty")
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, asgValidation("Tag keys starting with 'aws:' are reserved for internal use")
		}
		tags = append(tags, groupTag{Key: k, Value: p.get(pre + ".Value"), PropagateAtLaunch: p.boolean(pre + ".PropagateAtLaunch")})
	}
	return tags, nil
}

func (r *Region) createAutoScalingGroup(c *reqCtx) ([]node, *apiError) {
	p := c.p
	name := p.get("AutoScalingGroupName")
	if name == "" {
		return nil, asgValidation("1 validation error detected: Value null at 'autoScalingGroupName' failed to satisfy constraint: Member must not be null")
	}
	if r.w.Groups[name] != nil {
		return nil, badRequest("AlreadyExists", fmt.Sprintf("AutoScalingGroup by this name already exists - A group with the name %s already exists", name))
	}
	g := &group{
		Name: name, MinHealthy: -1, MaxHealthy: -1, HealthCheckType: "EC2", GracePeriod: 300, Created: c.now,
		Hooks: map[string]*hook{},
		ARN:   fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:%s:autoScalingGroupName/%s", r.opts.Region, accountID, newRequestID(), name),
	}
	if aerr := r.applyGroupParams(g, p, true); aerr != nil {
		return nil, aerr
	}
	tags, aerr := r.groupTags(p, name)
	if aerr != nil {
		return nil, aerr
	}
	g.Tags = tags
	for _, n := range p.indexes("LifecycleHookSpecificationList.member") {
		pre := "LifecycleHookSpecificationList.member." + strconv.Itoa(n) + "."
		h, aerr := hookFromParams(p, pre, nil)
		if aerr != nil {
			return nil, aerr
		}
		g.Hooks[h.Name] = h
	}
	r.w.Groups[name] = g
	return nil, nil
}

// hookFromParams reads a lifecycle hook (PutLifecycleHook or a
// LifecycleHookSpecification); prev is the hook being updated, if any.
func hookFromParams(p params, pre string, prev *hook) (*hook, *apiError) {
	h := &hook{HeartbeatTimeout: 3600, DefaultResult: "ABANDON"}
	if prev != nil {
		*h = *prev
	}
	h.Name = p.get(pre + "LifecycleHookName")
	if h.Name == "" {
		return nil, asgValidation("LifecycleHookName is required")
	}
	if t := p.get(pre + "LifecycleTransition"); t != "" {
		h.Transition = t
	}
	if h.Transition != "autoscaling:EC2_INSTANCE_LAUNCHING" && h.Transition != "autoscaling:EC2_INSTANCE_TERMINATING" {
		return nil, asgValidation("Invalid Lifecycle Transition: '%s'", h.Transition)
	}
	if p.has(pre + "HeartbeatTimeout") {
		n, aerr := p.integer(pre+"HeartbeatTimeout", 3600)
		if aerr != nil {
			return nil, aerr
		}
		if n < 30 || n > 7200 {
			return nil, asgValidation("Heartbeat timeout must be between 30 and 7200 seconds")
		}
		h.HeartbeatTimeout = n
	}
	if d := p.get(pre + "DefaultResult"); d != "" {
		if d != "CONTINUE" && d != "ABANDON" {
			return nil, asgValidation("Valid values for DefaultResult are CONTINUE and ABANDON")
		}
		h.DefaultResult = d
	}
	if p.has(pre + "NotificationMetadata") {
		h.Metadata = p.get(pre + "NotificationMetadata")
	}
	return h, nil
}

func (r *Region) groupMembers(g *group) []*instance {
	var out []*instance
	for _, in := range r.w.Instances {
		if in.Group == g.Name && in.Lifecycle != "" && in.Lifecycle != "Terminated" && !warmed(in) {
			out = append(out, in)
		}
	}
	sortByCreation(out, func(in *instance) (time.Time, string) { return in.LaunchTime, in.ID })
	return out
}

func (r *Region) groupTemplateNode(g *group) node {
	return el("LaunchTemplate", tx("LaunchTemplateId", g.TemplateID), tx("LaunchTemplateName", g.TemplateName), tx("Version", g.TemplateVersion))
}

// instanceTemplateNode is the template an instance was launched with: unlike the group's, its version is
// the one "$Latest" or "$Default" resolved to at launch, as AWS reports it.
func (r *Region) instanceTemplateNode(g *group) node {
	return el("LaunchTemplate", tx("LaunchTemplateId", g.TemplateID), tx("LaunchTemplateName", g.TemplateName), tx("Version", launchedTemplateVersion(g)))
}

// launchedTemplateVersion resolves the group's template version. Simulated templates have one version.
func launchedTemplateVersion(g *group) string {
	switch g.TemplateVersion {
	case "", "$Latest", "$Default":
		return "1"
	}
	return g.TemplateVersion
}

func (r *Region) describeAutoScalingGroups(c *reqCtx) ([]node, *apiError) {
	names := c.p.members("AutoScalingGroupNames")
	var groups []*group
	for _, n := range sortedKeys(r.w.Groups) {
		g := r.w.Groups[n]
		if len(names) > 0 && !slices.Contains(names, n) {
			continue
		}
		tags := map[string]string{}
		for _, t := range g.Tags {
			tags[t.Key] = t.Value
		}
		var filters []filter
		for _, i := range c.p.indexes("Filters.member") {
			pre := "Filters.member." + strconv.Itoa(i)
			filters = append(filters, filter{Name: c.p.get(pre + ".Name"), Values: c.p.members(pre + ".Values")})
		}
		ok, aerr := matchFilters(filters, tags, func(string) ([]string, bool) { return nil, false })
		if aerr != nil {
			return nil, asgValidation("%s", aerr.Message)
		}
		if ok {
			groups = append(groups, g)
		}
	}
	pg, next, aerr := pageWith(c.p, "MaxRecords", "ValidationError", groups, 1, 100)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, g := range pg {
		var ins, tags []node
		for _, in := range r.groupMembers(g) {
			ins = append(ins, r.groupInstanceNode(g, in))
		}
		for _, t := range g.Tags {
			tags = append(tags, el("", tx("ResourceId", g.Name), tx("ResourceType", "auto-scaling-group"),
				tx("Key", t.Key), tx("Value", t.Value), boolean("PropagateAtLaunch", t.PropagateAtLaunch)))
		}
		var azs []node
		for _, az := range g.AZs {
			azs = append(azs, tx("", az))
		}
		policy := node{skip: true}
		if g.MinHealthy >= 0 {
			policy = el("InstanceMaintenancePolicy", num("MinHealthyPercentage", g.MinHealthy), num("MaxHealthyPercentage", g.MaxHealthy))
		}
		status := node{skip: true}
		if g.Deleting {
			status = tx("Status", "Delete in progress")
		}
		items = append(items, el("",
			tx("AutoScalingGroupName", g.Name), tx("AutoScalingGroupARN", g.ARN), r.groupTemplateNode(g),
			num("MinSize", g.Min), num("MaxSize", g.Max), num("DesiredCapacity", g.Desired), num("DefaultCooldown", 300),
			list("AvailabilityZones", "member", azs), list("LoadBalancerNames", "member", nil),
			list("TargetGroupARNs", "member", nil), tx("HealthCheckType", g.HealthCheckType),
			num("HealthCheckGracePeriod", g.GracePeriod), list("Instances", "member", ins), ts("CreatedTime", g.Created),
			list("SuspendedProcesses", "member", nil), opt("VPCZoneIdentifier", g.VPCZoneIdentifier),
			list("EnabledMetrics", "member", nil), list("Tags", "member", tags),
			list("TerminationPolicies", "member", []node{tx("", "Default")}), boolean("NewInstancesProtectedFromScaleIn", false),
			policy, status, boolean("CapacityRebalance", g.CapacityRebalance),
		))
	}
	return []node{list("AutoScalingGroups", "member", items), opt("NextToken", next)}, nil
}

// groupInstanceNode is a member (or a warmed instance) as DescribeAutoScalingGroups and DescribeWarmPool list it.
func (r *Region) groupInstanceNode(g *group, in *instance) node {
	return el("", tx("InstanceId", in.ID), tx("InstanceType", in.Type), tx("AvailabilityZone", in.AZ),
		tx("LifecycleState", in.Lifecycle), tx("HealthStatus", in.Health), r.instanceTemplateNode(g),
		boolean("ProtectedFromScaleIn", false))
}

// describeAutoScalingInstances lists the groups' members and their warm pools' instances.
func (r *Region) describeAutoScalingInstances(c *reqCtx) ([]node, *apiError) {
	ids := c.p.members("InstanceIds")
	var ins []*instance
	for _, n := range sortedKeys(r.w.Groups) {
		for _, in := range append(r.groupMembers(r.w.Groups[n]), r.warmMembers(r.w.Groups[n])...) {
			if len(ids) == 0 || slices.Contains(ids, in.ID) {
				ins = append(ins, in)
			}
		}
	}
	pg, next, aerr := pageWith(c.p, "MaxRecords", "ValidationError", ins, 1, 50)
	if aerr != nil {
		return nil, aerr
	}
	var items []node
	for _, in := range pg {
		g := r.w.Groups[in.Group]
		items = append(items, el("", tx("InstanceId", in.ID), tx("InstanceType", in.Type), tx("AutoScalingGroupName", g.Name),
			tx("AvailabilityZone", in.AZ), tx("LifecycleState", in.Lifecycle), tx("HealthStatus", strings.ToUpper(in.Health)),
			r.instanceTemplateNode(g), boolean("ProtectedFromScaleIn", false)))
	}
	return []node{list("AutoScalingInstances", "member", items), opt("NextToken", next)}, nil
}

func (r *Region) updateAutoScalingGroup(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	upd := *g
	if aerr := r.applyGroupParams(&upd, c.p, false); aerr != nil {
		return nil, aerr
	}
	*g = upd
	return nil, nil
}

func (r *Region) setDesiredCapacity(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	d, aerr := c.p.integer("DesiredCapacity", g.Desired)
	if aerr != nil {
		return nil, aerr
	}
	if d < g.Min || d > g.Max {
		return nil, asgValidation("New SetDesiredCapacity value %d is below min value %d or above max value %d for the AutoScalingGroup.", d, g.Min, g.Max)
	}
	g.Desired = d
	return nil, nil
}

func (r *Region) deleteAutoScalingGroup(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	members := append(r.groupMembers(g), r.warmMembers(g)...)
	if len(members) > 0 && !c.p.boolean("ForceDelete") {
		return nil, badRequest("ResourceInUse", "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.")
	}
	// ForceDelete terminates the instances without waiting and drops any
	// outstanding lifecycle actions.
	g.Deleting, g.Desired, g.Min = true, 0, 0
	for _, in := range members {
		r.cancelLocked("hook/" + in.ID)
		in.Hook = nil
		in.Lifecycle = warmPrefix(in) + "Terminating:Proceed"
		r.beginTerminateLocked(in, "Client.UserInitiatedShutdown: User initiated shutdown")
	}
	return nil, nil
}

func (r *Region) putLifecycleHook(c *reqCtx) ([]node, *apiError) {
	name := c.p.get("AutoScalingGroupName")
	g := r.w.Groups[name]
	if g == nil {
		return nil, asgValidation("No auto scaling group with the name %s", name)
	}
	h, aerr := hookFromParams(c.p, "", g.Hooks[c.p.get("LifecycleHookName")])
	if aerr != nil {
		return nil, aerr
	}
	if g.Hooks == nil {
		g.Hooks = map[string]*hook{}
	}
	g.Hooks[h.Name] = h
	return nil, nil
}

func (r *Region) deleteLifecycleHook(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	name := c.p.get("LifecycleHookName")
	if g.Hooks[name] == nil {
		return nil, asgValidation("No Lifecycle Hook found with name %s for group %s", name, g.Name)
	}
	delete(g.Hooks, name)
	return nil, nil
}

func globalTimeout(h *hook) int { return min(100*h.HeartbeatTimeout, 172800) }

func (r *Region) describeLifecycleHooks(c *reqCtx) ([]node, *apiError) {
	g, aerr := r.findGroup(c.p.get("AutoScalingGroupName"))
	if aerr != nil {
		return nil, aerr
	}
	names := c.p.members("LifecycleHookNames")
	var items []node
	for _, n := range sortedKeys(g.Hooks) {
		h := g.Hooks[n]
		if len(names) > 0 && !slices.Contains(names, n) {
			continue
		}
		items = append(items, el("", tx("LifecycleHookName", h.Name), tx("AutoScalingGroupName", g.Name),
			tx("LifecycleTransition", h.Transition), opt("NotificationMetadata", h.Metadata),
			num("HeartbeatTimeout", h.HeartbeatTimeout), num("GlobalTimeout", globalTimeout(h)), tx("DefaultResult", h.DefaultResult)))
	}
	return []node{list("LifecycleHooks", "member", items)}, nil
}

// activeAction finds the instance whose lifecycle action matches the call
// (by InstanceId or LifecycleActionToken).
func (r *Region) activeAction(c *reqCtx) (*instance, *apiError) {
	gname, hname := c.p.get("AutoScalingGroupName"), c.p.get("LifecycleHookName")
	id, tok := c.p.get("InstanceId"), c.p.get("LifecycleActionToken")
	if id == "" && tok == "" {
		return nil, asgValidation("Either InstanceId or LifecycleActionToken must be specified")
	}
	for _, in := range r.w.Instances {
		h := in.Hook
		if h == nil || h.Result != "" || in.Group != gname || h.Name != hname {
			continue
		}
		if (id != "" && in.ID == id) || (id == "" && h.Token == tok) {
			return in, nil
		}
	}
	if id != "" {
		return nil, asgValidation("No active Lifecycle Action found with instance ID %s", id)
	}
	return nil, asgValidation("No active Lifecycle Action found with token %s", tok)
}

func (r *Region) completeLifecycleAction(c *reqCtx) ([]node, *apiError) {
	res := c.p.get("LifecycleActionResult")
	if res != "CONTINUE" && res != "ABANDON" {
		return nil, asgValidation("Valid values for LifecycleActionResult are CONTINUE and ABANDON")
	}
	in, aerr := r.activeAction(c)
	if aerr != nil {
		return nil, aerr
	}
	r.finishHookLocked(in, res)
	return nil, nil
}

func (r *Region) recordLifecycleActionHeartbeat(c *reqCtx) ([]node, *apiError) {
	in, aerr := r.activeAction(c)
	if aerr != nil {
		return nil, aerr
	}
	g := r.w.Groups[in.Group]
	h := g.Hooks[in.Hook.Name]
	timeout := 3600
	if h != nil {
		timeout = h.HeartbeatTimeout
	}
	deadline := c.now.Add(r.delayExact(time.Duration(timeout) * time.Second))
	if deadline.After(in.Hook.GlobalDeadline) {
		deadline = in.Hook.GlobalDeadline
	}
	in.Hook.Deadline = deadline
	r.scheduleHookTimeoutLocked(in)
	return nil, nil
}

func (r *Region) setInstanceHealth(c *reqCtx) ([]node, *apiError) {
	id := c.p.get("InstanceId")
	in := r.w.Instances[id]
	if in == nil || in.Group == "" || in.Lifecycle == "" || in.Lifecycle == "Terminated" {
		return nil, asgValidation("Instance Id not found - No managed instance found for instance ID: %s", id)
	}
	switch c.p.get("HealthStatus") {
	case "Healthy":
		in.Health = "Healthy"
	case "Unhealthy":
		in.Health = "Unhealthy"
		in.Replace = true
	default:
		return nil, asgValidation("Valid values for HealthStatus are Healthy and Unhealthy")
	}
	return nil, nil
}

func (r *Region) terminateInstanceInAutoScalingGroup(c *reqCtx) ([]node, *apiError) {
	id := c.p.get("InstanceId")
	in := r.w.Instances[id]
	if in == nil || in.Group == "" || in.Lifecycle == "" || in.Lifecycle == "Terminated" {
		return nil, asgValidation("Instance Id not found - No managed instance found for instance ID: %s", id)
	}
	if !c.p.has("ShouldDecrementDesiredCapacity") {
		return nil, asgValidation("1 validation error detected: Value null at 'shouldDecrementDesiredCapacity' failed to satisfy constraint: Member must not be null")
	}
	g := r.w.Groups[in.Group]
	if !strings.HasPrefix(in.Lifecycle, "Terminat") {
		if c.p.boolean("ShouldDecrementDesiredCapacity") {
			if g.Desired-1 < g.Min {
				return nil, asgValidation("Currently, desiredSize equals minSize (%d). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.", g.Min)
			}
			g.Desired--
			r.beginGroupTerminationLocked(g, in)
		} else {
			// Replaced: with launch-before-terminate the replacement comes
			// first, else the instance goes now (reconcile decides).
			in.Replace = true
		}
	}
	return []node{el("Activity", tx("ActivityId", newRequestID()), tx("AutoScalingGroupName", g.Name),
		tx("Description", "Terminating EC2 instance: "+in.ID),
		tx("Cause", fmt.Sprintf("At %s instance %s was taken out of service in response to a user request.", awsTime(c.now), in.ID)),
		ts("StartTime", c.now), tx("StatusCode", "InProgress"), num("Progress", 0), tx("Details", "{}"))}, nil
}
