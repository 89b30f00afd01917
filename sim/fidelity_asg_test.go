package sim

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/handover/handover/sim/simtest"
)

// autoScalingScenario: a launch template, a group over two zones with tags
// that propagate (or not), lifecycle hooks, health and termination.
func autoScalingScenario(t *testing.T, aws *awsCLI, caps capabilities, o *outcome) {
	const group = "fid-asg"
	lt := aws.ok("ec2", "create-launch-template", "--launch-template-name", "fid-lt",
		"--launch-template-data", `{"ImageId":"ami-12345678","InstanceType":"t3.micro","MetadataOptions":{"HttpTokens":"required","InstanceMetadataTags":"enabled"}}`)
	o.rec("create-launch-template", map[string]any{
		"name": jstr(lt, "LaunchTemplate", "LaunchTemplateName"), "default": jnum(lt, "LaunchTemplate", "DefaultVersionNumber"),
		"latest": jnum(lt, "LaunchTemplate", "LatestVersionNumber"),
	})
	if !strings.HasPrefix(jstr(lt, "LaunchTemplate", "LaunchTemplateId"), "lt-") {
		t.Fatalf("create-launch-template: got %v", lt)
	}
	create := []string{"autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", group,
		"--launch-template", "LaunchTemplateName=fid-lt,Version=$Latest",
		"--min-size", "1", "--max-size", "4", "--desired-capacity", "2", "--availability-zones", "us-east-1a", "us-east-1b",
		"--tags", "Key=role,Value=asg,PropagateAtLaunch=true", "Key=team,Value=fidelity,PropagateAtLaunch=false"}
	if caps.lifecycle {
		create = append(create, "--lifecycle-hook-specification-list",
			"LifecycleHookName=launch,LifecycleTransition=autoscaling:EC2_INSTANCE_LAUNCHING,HeartbeatTimeout=3600,DefaultResult=ABANDON")
	}
	if out := aws.ok(create...); out != nil {
		t.Errorf("create-auto-scaling-group: want no output, got %v", out)
	}
	if caps.asgValidation {
		aws.fails("AlreadyExists", create...)
	}

	describe := func() any {
		return jget(aws.ok("autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", group), "AutoScalingGroups", 0)
	}
	members := func(g any, state string) []string {
		var ids []string
		for _, in := range jlist(g, "Instances") {
			if state == "" || jstr(in, "LifecycleState") == state {
				ids = append(ids, jstr(in, "InstanceId"))
			}
		}
		sort.Strings(ids)
		return ids
	}
	if caps.lifecycle {
		var waiting []string
		simtest.Eventually(t, fidelityBound, "two instances in Pending:Wait", func() (bool, string) {
			waiting = members(describe(), "Pending:Wait")
			return len(waiting) == 2, fmt.Sprintf("in Pending:Wait: %v", waiting)
		})
		aws.ok("autoscaling", "record-lifecycle-action-heartbeat", "--auto-scaling-group-name", group,
			"--lifecycle-hook-name", "launch", "--instance-id", waiting[0])
		for _, id := range waiting {
			aws.ok("autoscaling", "complete-lifecycle-action", "--auto-scaling-group-name", group,
				"--lifecycle-hook-name", "launch", "--instance-id", id, "--lifecycle-action-result", "CONTINUE")
		}
		aws.fails("ValidationError", "autoscaling", "complete-lifecycle-action", "--auto-scaling-group-name", group,
			"--lifecycle-hook-name", "launch", "--instance-id", waiting[0], "--lifecycle-action-result", "CONTINUE")
	}
	var g any
	simtest.Eventually(t, fidelityBound, "two instances InService", func() (bool, string) {
		g = describe()
		return len(members(g, "InService")) == 2, fmt.Sprintf("group %v", g)
	})
	ids := members(g, "InService")
	var zones, health []string
	for _, in := range jlist(g, "Instances") {
		zones = append(zones, jstr(in, "AvailabilityZone"))
		health = append(health, jstr(in, "HealthStatus"))
	}
	sort.Strings(zones)
	var gtags []any
	for _, tg := range jlist(g, "Tags") {
		gtags = append(gtags, map[string]any{"key": jstr(tg, "Key"), "value": jstr(tg, "Value"), "propagate": jget(tg, "PropagateAtLaunch"),
			"resource": jstr(tg, "ResourceId"), "type": jstr(tg, "ResourceType")})
	}
	sort.Slice(gtags, func(i, j int) bool { return jstr(gtags[i], "key") < jstr(gtags[j], "key") })
	o.rec("describe-auto-scaling-groups", map[string]any{
		"min": jnum(g, "MinSize"), "max": jnum(g, "MaxSize"), "desired": jnum(g, "DesiredCapacity"),
		"zones": jget(g, "AvailabilityZones"), "tags": gtags, "instances": len(ids), "health": health,
		"template": jstr(g, "LaunchTemplate", "LaunchTemplateName"), "healthCheck": jstr(g, "HealthCheckType"),
	})
	if jnum(g, "DesiredCapacity") != 2 || len(gtags) != 2 {
		t.Errorf("describe-auto-scaling-groups: got %v", g)
	}
	if caps.azBalance && !slices.Equal(zones, []string{"us-east-1a", "us-east-1b"}) {
		t.Errorf("group instances: zones %v, want one in each of us-east-1a and us-east-1b", zones)
	}
	ins := instancesOf(aws.ok("ec2", "describe-instances", "--filters", "Name=tag:aws:autoscaling:groupName,Values="+group,
		"Name=instance-state-name,Values=running"))
	var itags []any
	for _, in := range ins {
		itags = append(itags, tagMap(jget(in, "Tags"), false))
		tm := tagMap(jget(in, "Tags"), true)
		if tm["role"] != "asg" || tm["team"] != "" || tm["aws:autoscaling:groupName"] != group {
			t.Errorf("group instance %s: tags %v, want role=asg propagated, team not, aws:autoscaling:groupName=%s", jstr(in, "InstanceId"), tm, group)
		}
	}
	o.rec("group instance tags", itags)
	if got := idsOf(ins, "InstanceId"); !slices.Equal(got, ids) {
		t.Errorf("describe-instances tag:aws:autoscaling:groupName: got %v, want %v", got, ids)
	}

	asi := jlist(aws.ok("autoscaling", "describe-auto-scaling-instances", "--instance-ids", ids[0], ids[1]), "AutoScalingInstances")
	var asiView []any
	for _, in := range asi {
		h := jstr(in, "HealthStatus")
		if caps.asgInstanceHealthUpper && h != "HEALTHY" {
			t.Errorf("describe-auto-scaling-instances %s: HealthStatus %q, want HEALTHY", jstr(in, "InstanceId"), h)
		}
		asiView = append(asiView, map[string]any{"group": jstr(in, "AutoScalingGroupName"), "state": jstr(in, "LifecycleState"),
			"health": strings.ToUpper(h), "template": jstr(in, "LaunchTemplate", "LaunchTemplateName")})
	}
	o.rec("describe-auto-scaling-instances", asiView)
	if len(asi) != 2 {
		t.Errorf("describe-auto-scaling-instances: got %v", asi)
	}

	aws.ok("autoscaling", "put-lifecycle-hook", "--auto-scaling-group-name", group, "--lifecycle-hook-name", "term",
		"--lifecycle-transition", "autoscaling:EC2_INSTANCE_TERMINATING", "--heartbeat-timeout", "3600", "--default-result", "CONTINUE")
	hooks := jlist(aws.ok("autoscaling", "describe-lifecycle-hooks", "--auto-scaling-group-name", group, "--lifecycle-hook-names", "term"), "LifecycleHooks")
	var hookView []any
	for _, h := range hooks {
		hookView = append(hookView, map[string]any{"name": jstr(h, "LifecycleHookName"), "transition": jstr(h, "LifecycleTransition"),
			"heartbeat": jnum(h, "HeartbeatTimeout"), "global": jnum(h, "GlobalTimeout"), "default": jstr(h, "DefaultResult")})
	}
	o.rec("describe-lifecycle-hooks", hookView)
	if len(hooks) != 1 || jnum(hooks[0], "HeartbeatTimeout") != 3600 || jstr(hooks[0], "DefaultResult") != "CONTINUE" {
		t.Errorf("describe-lifecycle-hooks: got %v", hooks)
	}

	if caps.asgValidation {
		aws.fails("ValidationError", "autoscaling", "set-instance-health", "--instance-id", missingInstance, "--health-status", "Unhealthy")
	}

	// An unhealthy instance is replaced (the termination hook holds it first).
	sick, keep := ids[0], ids[1]
	aws.ok("autoscaling", "set-instance-health", "--instance-id", sick, "--health-status", "Unhealthy")
	if caps.azBalance {
		if caps.lifecycle {
			simtest.Eventually(t, fidelityBound, "unhealthy instance in Terminating:Wait", func() (bool, string) {
				g := describe()
				return slices.Contains(members(g, "Terminating:Wait"), sick), fmt.Sprintf("group %v", g)
			})
			aws.ok("autoscaling", "record-lifecycle-action-heartbeat", "--auto-scaling-group-name", group,
				"--lifecycle-hook-name", "term", "--instance-id", sick)
			aws.ok("autoscaling", "complete-lifecycle-action", "--auto-scaling-group-name", group,
				"--lifecycle-hook-name", "term", "--instance-id", sick, "--lifecycle-action-result", "CONTINUE")
		}
		simtest.Eventually(t, fidelityBound, "a replacement for the unhealthy instance", func() (bool, string) {
			g = describe()
			in := members(g, "")
			if caps.lifecycle {
				for _, id := range members(g, "Pending:Wait") {
					aws.ok("autoscaling", "complete-lifecycle-action", "--auto-scaling-group-name", group,
						"--lifecycle-hook-name", "launch", "--instance-id", id, "--lifecycle-action-result", "CONTINUE")
				}
			}
			return !slices.Contains(in, sick) && len(members(g, "InService")) == 2, fmt.Sprintf("group %v", g)
		})
		aws.fails("ValidationError", "autoscaling", "set-instance-health", "--instance-id", sick, "--health-status", "Healthy")
	}

	// Terminate one member and decrement the desired capacity.
	act := aws.ok("autoscaling", "terminate-instance-in-auto-scaling-group", "--instance-id", keep, "--should-decrement-desired-capacity")
	o.rec("terminate-instance-in-auto-scaling-group", map[string]any{
		"group": jstr(act, "Activity", "AutoScalingGroupName"), "hasActivity": jstr(act, "Activity", "ActivityId") != "",
	})
	if !strings.Contains(jstr(act, "Activity", "Description"), keep) {
		t.Errorf("terminate-instance-in-auto-scaling-group: activity %v does not name %s", act, keep)
	}
	if caps.lifecycle {
		simtest.Eventually(t, fidelityBound, "terminated member in Terminating:Wait", func() (bool, string) {
			g := describe()
			return slices.Contains(members(g, "Terminating:Wait"), keep), fmt.Sprintf("group %v", g)
		})
		aws.ok("autoscaling", "complete-lifecycle-action", "--auto-scaling-group-name", group,
			"--lifecycle-hook-name", "term", "--instance-id", keep, "--lifecycle-action-result", "CONTINUE")
	}
	simtest.Eventually(t, fidelityBound, "group down to one instance", func() (bool, string) {
		g = describe()
		return jnum(g, "DesiredCapacity") == 1 && !slices.Contains(members(g, ""), keep), fmt.Sprintf("group %v", g)
	})
	o.rec("group after terminate", map[string]any{"desired": jnum(g, "DesiredCapacity"), "min": jnum(g, "MinSize")})
	warmPoolScenario(t, aws)
	if caps.transitions {
		simtest.Eventually(t, fidelityBound, "terminated member terminated in EC2", func() (bool, string) {
			in := instancesOf(aws.ok("ec2", "describe-instances", "--instance-ids", keep))
			return len(in) == 1 && jstr(in[0], "State", "Name") == "terminated", fmt.Sprintf("instances %v", in)
		})
	}
}

// warmPoolScenario: CapacityRebalance at creation, and a warm pool's configuration put, described and
// deleted, on an empty group (moto launches no warmed instances, so none are asked for).
func warmPoolScenario(t *testing.T, aws *awsCLI) {
	const group = "fid-warm"
	aws.ok("autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", group,
		"--launch-template", "LaunchTemplateName=fid-lt,Version=$Latest", "--min-size", "0", "--max-size", "1",
		"--desired-capacity", "0", "--availability-zones", "us-east-1a", "us-east-1b", "--capacity-rebalance")
	g := jget(aws.ok("autoscaling", "describe-auto-scaling-groups", "--auto-scaling-group-names", group), "AutoScalingGroups", 0)
	if jget(g, "CapacityRebalance") != true {
		t.Errorf("create-auto-scaling-group --capacity-rebalance: CapacityRebalance %v", jget(g, "CapacityRebalance"))
	}
	aws.ok("autoscaling", "put-warm-pool", "--auto-scaling-group-name", group, "--max-group-prepared-capacity", "0",
		"--min-size", "0", "--pool-state", "Running")
	wp := aws.ok("autoscaling", "describe-warm-pool", "--auto-scaling-group-name", group)
	if jstr(wp, "WarmPoolConfiguration", "PoolState") != "Running" || jnum(wp, "WarmPoolConfiguration", "MinSize") != 0 ||
		jnum(wp, "WarmPoolConfiguration", "MaxGroupPreparedCapacity") != 0 || len(jlist(wp, "Instances")) != 0 {
		t.Errorf("describe-warm-pool: got %v", wp)
	}
	aws.ok("autoscaling", "delete-warm-pool", "--auto-scaling-group-name", group)
	simtest.Eventually(t, fidelityBound, "warm pool deleted", func() (bool, string) {
		wp = aws.ok("autoscaling", "describe-warm-pool", "--auto-scaling-group-name", group)
		return jget(wp, "WarmPoolConfiguration") == nil, fmt.Sprintf("describe-warm-pool %v", wp)
	})
	aws.ok("autoscaling", "delete-auto-scaling-group", "--auto-scaling-group-name", group)
}
