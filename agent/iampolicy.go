package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
)

// `handover iam-policy` prints the least-privilege IAM policy for the commands and options given: only the
// actions the code calls for them (awsCalls, the one table of them), each scoped to the group's resources
// by tag wherever EC2 and Auto Scaling let a condition do it. It reads no metadata and calls no AWS API.
//
// Which resource types and condition keys each action supports is the Service Authorization Reference's:
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html
// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html
// and, for the KMS grants of encrypted volumes,
// https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption-requirements.html
//
// What cannot be scoped, and why:
//   - every Describe* of EC2 and Auto Scaling: they support no resource type and no tag condition, only
//     "*" (statement DescribeCannotBeScoped);
//   - the network interface AssociateAddress and DisassociateAddress authorize against: Auto Scaling does
//     not tag the interfaces of the instances it launches, so no tag can tell the group's apart
//     (NetworkInterfaceCannotBeScopedToTheGroup). The address itself, the lease, is scoped, and so is the
//     instance an address goes to.
//
// Everything else requires the handover:group tag (the value --group gives, or any value with the default
// "*"): on the volumes, snapshots, Elastic IP, instances and Auto Scaling group it acts on
// (aws:ResourceTag), in the request that creates a volume or snapshot (aws:RequestTag), and CreateTags may
// set tags only as part of that creation (ec2:CreateAction), except the two tags handover sets on resources
// that exist: handover:superseded on the group's older volumes (up) and handover:role on the group's
// instances (failover), each allowed for that one key (aws:TagKeys) on resources already tagged for the
// group.

// policyUse is who makes a call: a command, or a command with an option ("up --takeover").
type policyUse string

const (
	useUp            policyUse = "up"
	useUpTakeover    policyUse = "up --takeover"
	useUpDeleteOld   policyUse = "up --delete-superseded"
	useUpKMS         policyUse = "up --kms-key"
	useDown          policyUse = "down"
	useWatch         policyUse = "watch" // it runs down for a termination or a Spot notice
	useWatchReplace  policyUse = "watch --on-rebalance=replace"
	useWatchSnapshot policyUse = "watch --on-rebalance=snapshot" // it runs snapshot's snapshot, no retention
	useWatchEvents   policyUse = "watch --replace-before"        // on unless --replace-before off: scheduled events
	useSnapshot      policyUse = "snapshot"
	useSnapshotKeep  policyUse = "snapshot --keep"
	useDownLock      policyUse = "down --lock-snapshots"
	useWatchLock     policyUse = "watch --lock-snapshots"
	useSnapshotLock  policyUse = "snapshot --lock-snapshots"
	useStatus        policyUse = "status"
	useFailover      policyUse = "failover" // the CLI and the Lambda (both call failover.Run)
)

// defaultPolicyGroup is --group's default: any group (the tag must still be there).
const defaultPolicyGroup = "*"

// policyCommands are the commands --commands takes, in the order the policy lists them.
var policyCommands = []string{"up", "down", "watch", "snapshot", "status", "failover"}

// onInstance are the commands that run on the instance: they read its tags with DescribeTags when
// metadata does not have them.
var onInstance = []policyUse{useUp, useDown, useWatch, useSnapshot, useStatus}

// awsCall is one AWS operation handover makes, the permissions it needs, and who makes it. An operation
// that needs different permissions for different callers has a row for each.
type awsCall struct {
	op    string // the API operation as the SDK and the simulator's call log name it; "" for none of handover's own
	needs []permission
	by    []policyUse
	code  string // which code makes the call
}

// permission is one IAM action on the resources of one statement.
type permission struct {
	action string // "ec2:AttachVolume"
	in     *policyScope
}

// awsCalls is every AWS call the commands make, with the IAM permissions it needs and who makes it. A new
// call gets a row here: the iam-policy test runs every command against the simulator and fails on a call
// that has no row for its command, and on a permission that no run of its command needed.
var awsCalls = []awsCall{
	// Reading.
	{op: "DescribeTags", needs: describe("ec2:DescribeTags"), by: onInstance,
		code: "cloud.InstanceTags: the instance's own tags, when metadata does not have them (agent.instanceTags)"},
	{op: "DescribeAddresses", needs: describe("ec2:DescribeAddresses"), by: uses(useUp, useDown, useWatch, useStatus, useFailover),
		code: "cloud.FindGroupAddress, Lease.Check; down and watch only with --release-eip (ReleaseAddress)"},
	{op: "DescribeInstances", needs: describe("ec2:DescribeInstances"), by: uses(useUp, useStatus, useFailover, useDown, useWatch, useWatchSnapshot, useSnapshot),
		code: "cloud.JudgeHolder, describeHolder (another instance holds the address or a volume); failover.DescribeMember, groupMembers; cloud.CreateSnapshotSet's other data volumes (down, snapshot)"},
	{op: "DescribeInstanceStatus", needs: describe("ec2:DescribeInstanceStatus"), by: uses(useFailover),
		code: "failover.statusChecks"},
	{op: "DescribeVolumes", needs: describe("ec2:DescribeVolumes"), by: uses(useUp, useDown, useWatch, useWatchSnapshot, useSnapshot, useStatus),
		code: "cloud.ListSlotVolumes, describeVolume (waitVolume), FindAttachedSlotVolume"},
	{op: "DescribeSnapshots", needs: describe("ec2:DescribeSnapshots"), by: uses(useUp, useDown, useWatch, useSnapshot, useStatus),
		code: "cloud.ListSlotSnapshots, DescribeSnapshot (WaitSnapshot), FindSnapshotOf (down: the snapshot an earlier run took); snapshot: its retention of older volumes (SlotRun.Retire) and --keep"},
	{op: "DescribeAutoScalingInstances", needs: describe("autoscaling:DescribeAutoScalingInstances"), by: uses(useUp, useDown, useWatch, useStatus, useFailover),
		code: "cloud.MembershipOf, JudgeHolder, describeHolder"},
	{op: "DescribeAutoScalingGroups", needs: describe("autoscaling:DescribeAutoScalingGroups"), by: uses(useUp),
		code: "cloud.CheckReplacementOrder"},
	{op: "DescribeLifecycleHooks", needs: describe("autoscaling:DescribeLifecycleHooks"), by: uses(useUp, useDown, useWatch),
		code: "cloud.TerminationHookTimeout (up sizes --release-timeout), LifecycleAction.checkHook (a hook name that matches no hook)"},

	// The Elastic IP: the lease.
	{op: "AssociateAddress", needs: grant("ec2:AssociateAddress", scopeAddress, scopeInstances, scopeInterfaces), by: uses(useUp, useFailover),
		code: "cloud.addressClaim.swap"},
	{op: "DisassociateAddress", needs: grant("ec2:DisassociateAddress", scopeAddress, scopeInterfaces), by: uses(useUp, useDown, useWatch, useFailover),
		code: "cloud.addressClaim.swap, Lease.Release (up hands back an address it took), ReleaseAddress (down --release-eip)"},
	{op: "StopInstances", needs: grant("ec2:StopInstances", scopeInstances), by: uses(useUpTakeover),
		code: "cloud.addressClaim.stopHolder"},
	{op: "StartInstances", needs: grant("ec2:StartInstances", scopeInstances), by: uses(useFailover),
		code: "failover.ensureRunning"},

	// Volumes.
	{op: "CreateVolume", by: uses(useUp), code: "cloud.SlotRun.create (TagSpecifications: CreateTags at creation)",
		needs: join(grant("ec2:CreateVolume", scopeCreateVolumes, scopeSnapshots), grant("ec2:CreateTags", scopeTagVolumesAtCreation))},
	{op: "AttachVolume", needs: grant("ec2:AttachVolume", scopeVolumes, scopeInstances), by: uses(useUp),
		code: "cloud.attachVolume"},
	{op: "DetachVolume", needs: grant("ec2:DetachVolume", scopeVolumes, scopeInstances), by: uses(useUp, useDown, useWatch),
		code: "cloud.detachFromStopped and SlotRun.forceDetach (up), cloud.DetachVolume (down)"},
	{op: "DeleteVolume", needs: grant("ec2:DeleteVolume", scopeDeleteVolumesMadeNow), by: uses(useUp),
		code: "cloud.SlotRun.discard: a volume this run made under a lease that moved"},
	{op: "DeleteVolume", needs: grant("ec2:DeleteVolume", scopeDeleteSupersededVolumes), by: uses(useUp, useUpDeleteOld, useSnapshot),
		code: "cloud.SlotRun.Retire: retention, on by default (--keep-superseded 1; --delete-superseded is --keep-superseded 0), by up and by the snapshot timer"},
	{op: "CreateTags", needs: grant("ec2:CreateTags", scopeTagSuperseded), by: uses(useUp, useSnapshot),
		code: "cloud.SlotRun.Retire: handover:superseded=true on the older generations"},

	// Initialization of a restored volume (https://docs.aws.amazon.com/ebs/latest/userguide/initalize-volume.html):
	// reads, which support no resource.
	{op: "DescribeVolumeStatus", needs: describe("ec2:DescribeVolumeStatus"), by: uses(useUp, useStatus),
		code: "cloud.DescribeInitialization: up's summary and its full-performance line, status"},
	{op: "DescribeFastSnapshotRestores", needs: describe("ec2:DescribeFastSnapshotRestores"), by: uses(useUp),
		code: "cloud.FastRestoreEnabled: a snapshot with fast snapshot restore in this AZ is restored without a rate"},
	// The format rule's records on a volume handover created blank (agent/filesystem.go): handover:formatting
	// before its own mkfs, handover:handed-out before the volume is first given for use.
	{op: "CreateTags", needs: grant("ec2:CreateTags", scopeTagFormatState), by: uses(useUp),
		code: "agent.fsRequest.mark (cloud.TagVolume): handover:formatting=true, handover:handed-out=true"},

	// Snapshots.
	{op: "CreateSnapshot", by: uses(useUp, useDown, useWatch, useWatchSnapshot, useSnapshot),
		code:  "cloud.CreateSnapshot (TagSpecifications: CreateTags at creation): up's of an orphaned volume, down's, snapshot's",
		needs: join(grant("ec2:CreateSnapshot", scopeCreateSnapshots, scopeVolumes), grant("ec2:CreateTags", scopeTagSnapshotsAtCreation))},
	// CreateSnapshots authorizes against the instance, its volumes and the snapshots it makes
	// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html#amazonec2-CreateSnapshots);
	// the set's TagSpecifications carry handover:group, so the request tag scopes the snapshots as CreateSnapshot's do.
	{op: "CreateSnapshots", by: uses(useDown, useWatch, useWatchSnapshot, useSnapshot),
		code:  "cloud.CreateSnapshotSet (TagSpecifications: CreateTags at creation): a live slot's snapshot set (snapshot --freeze=false, a device not visible, down past its bound)",
		needs: join(grant("ec2:CreateSnapshots", scopeCreateSnapshots, scopeVolumes, scopeInstances), grant("ec2:CreateTags", scopeTagSnapshotsAtCreation))},
	// A set's snapshots get their volume's shape after CreateSnapshots (it has one TagSpecifications for all
	// and copies only the volume's tags): CreateTags on the group's snapshots, the shape keys only.
	{op: "CreateTags", needs: grant("ec2:CreateTags", scopeTagSetShapes), by: uses(useDown, useWatch, useWatchSnapshot, useSnapshot),
		code: "cloud.recordSetShapes: handover:shape-* on each snapshot of a CreateSnapshots set"},
	// EBS snapshot lock (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-snapshot-lock.html): LockSnapshot
	// authorizes against the snapshot; DescribeLockedSnapshots, a read, supports no resource.
	{op: "LockSnapshot", needs: grant("ec2:LockSnapshot", scopeSnapshots), by: uses(useDownLock, useWatchLock, useSnapshotLock),
		code: "agent.lockSnapshots (cloud.LockSnapshot): --lock-snapshots, each consistent snapshot in governance mode"},
	{op: "DescribeLockedSnapshots", needs: describe("ec2:DescribeLockedSnapshots"), by: uses(useSnapshotKeep),
		code: "agent.applyRetention (cloud.LockedSnapshots): retention never tries to delete a locked snapshot"},
	{op: "DeleteSnapshot", needs: grant("ec2:DeleteSnapshot", scopeSnapshots), by: uses(useSnapshotKeep),
		code: "agent.applyRetention (cloud.DeleteSnapshot)"},

	// Lifecycle hooks and replacement.
	{op: "RecordLifecycleActionHeartbeat", needs: grant("autoscaling:RecordLifecycleActionHeartbeat", scopeAutoScalingGroup), by: uses(useUp, useDown, useWatch),
		code: "cloud.LifecycleAction.heartbeat (KeepAlive): up's launch hook, down's termination hook"},
	{op: "CompleteLifecycleAction", needs: grant("autoscaling:CompleteLifecycleAction", scopeAutoScalingGroup), by: uses(useUp, useDown, useWatch),
		code: "cloud.LifecycleAction.Complete"},
	{op: "TerminateInstanceInAutoScalingGroup", needs: grant("autoscaling:TerminateInstanceInAutoScalingGroup", scopeAutoScalingGroup), by: uses(useWatchReplace, useWatchEvents),
		code: "cloud.RequestReplacement: watch --on-rebalance=replace, and a scheduled stop or retirement (--replace-before)"},

	// Standby failover.
	{op: "CreateTags", needs: grant("ec2:CreateTags", scopeTagRoles), by: uses(useFailover),
		code: "failover.swapRoles (--swap-roles; the Lambda's HANDOVER_SWAP_ROLES defaults to true)"},

	// Not a call of handover's: EBS calls KMS for the encrypted volumes up creates (from an encrypted
	// snapshot, or with --encrypted) and attaches, with the caller's permissions.
	{by: uses(useUpKMS), code: "EBS, for CreateVolume and AttachVolume of volumes encrypted with --kms-key",
		needs: join(grant("kms:Decrypt", scopeKMS), grant("kms:DescribeKey", scopeKMS), grant("kms:GenerateDataKeyWithoutPlaintext", scopeKMS),
			grant("kms:ReEncryptFrom", scopeKMS), grant("kms:ReEncryptTo", scopeKMS), grant("kms:CreateGrant", scopeKMSGrant))},
}

func uses(u ...policyUse) []policyUse { return u }

func join(ps ...[]permission) []permission {
	var out []permission
	for _, p := range ps {
		out = append(out, p...)
	}
	return out
}

func describe(action string) []permission { return grant(action, scopeDescribe) }

// grant is action on the resources of each scope: an action that authorizes against several resource
// types (AttachVolume: the volume and the instance) needs a statement for each, whose condition holds for
// that type.
func grant(action string, scopes ...*policyScope) []permission {
	out := make([]permission, len(scopes))
	for i, s := range scopes {
		out[i] = permission{action: action, in: s}
	}
	return out
}

// policyScope is one statement of the policy: which resources, under which condition. The policy lists
// the statements in the order of policyScopes, each with the actions the selected rows put in it.
type policyScope struct {
	sid       string
	resources func(c *iamPolicyConfig) []string
	condition func(c *iamPolicyConfig) policyCondition
}

// policyCondition is a statement's Condition: operator -> key -> value.
type policyCondition map[string]map[string]any

func (pc policyCondition) add(op, key string, v any) policyCondition {
	if pc[op] == nil {
		pc[op] = map[string]any{}
	}
	pc[op][key] = v
	return pc
}

// groupTag requires the handover:group tag (kind "ResourceTag" or "RequestTag") to be the group given, or,
// for any group ("*"), to be present with a value ("?*": at least one character).
func (c *iamPolicyConfig) groupTag(kind string) policyCondition {
	key := "aws:" + kind + "/" + cloud.TagGroup
	if c.Group.v == defaultPolicyGroup {
		return policyCondition{}.add("StringLike", key, "?*")
	}
	return policyCondition{}.add("StringEquals", key, c.Group.v)
}

func (c *iamPolicyConfig) ec2ARN(resource string) string {
	return fmt.Sprintf("arn:%s:ec2:%s:%s:%s", c.Partition, c.Region, c.Account, resource)
}

var (
	scopeDescribe = &policyScope{sid: "DescribeCannotBeScoped",
		resources: func(*iamPolicyConfig) []string { return []string{"*"} }}
	scopeCreateVolumes = &policyScope{sid: "CreateVolumesOnlyTaggedForTheGroup",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("RequestTag") }}
	scopeCreateSnapshots = &policyScope{sid: "CreateSnapshotsOnlyTaggedForTheGroup",
		resources: func(c *iamPolicyConfig) []string { return []string{c.snapshotARN()} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("RequestTag") }}
	scopeTagVolumesAtCreation = &policyScope{sid: "TagVolumesOnlyAtCreation",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("RequestTag").add("StringEquals", "ec2:CreateAction", "CreateVolume")
		}}
	scopeTagSnapshotsAtCreation = &policyScope{sid: "TagSnapshotsOnlyAtCreation",
		resources: func(c *iamPolicyConfig) []string { return []string{c.snapshotARN()} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("RequestTag").add("StringEquals", "ec2:CreateAction", []string{"CreateSnapshot", "CreateSnapshots"})
		}}
	scopeTagSetShapes = &policyScope{sid: "TagTheGroupsSnapshotSetsWithTheirShape",
		resources: func(c *iamPolicyConfig) []string { return []string{c.snapshotARN()} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("ForAllValues:StringEquals", "aws:TagKeys",
				[]string{cloud.TagShapeType, cloud.TagShapeSize, cloud.TagShapeIOPS, cloud.TagShapeThroughput, cloud.TagShapeKMSKey})
		}}
	scopeTagSuperseded = &policyScope{sid: "TagTheGroupsOlderVolumesSuperseded",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("StringEquals", "aws:RequestTag/"+cloud.TagSuperseded, "true").
				add("ForAllValues:StringEquals", "aws:TagKeys", []string{cloud.TagSuperseded})
		}}
	scopeTagFormatState = &policyScope{sid: "TagTheGroupsBlankVolumesFormatState",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("ForAllValues:StringEquals", "aws:TagKeys", []string{cloud.TagFormatting, cloud.TagHandedOut})
		}}
	scopeTagRoles = &policyScope{sid: "TagTheGroupsInstanceRoles",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("instance/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("StringEquals", "aws:RequestTag/"+cloud.TagRole, []string{failover.RolePrimary, failover.RoleStandby}).
				add("ForAllValues:StringEquals", "aws:TagKeys", []string{cloud.TagRole})
		}}
	scopeVolumes = &policyScope{sid: "TheGroupsVolumes",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("ResourceTag") }}
	// A volume up deletes without --delete-superseded is one it made itself (SlotRun.discard): the newest
	// generation, never tagged superseded. The older generations stay safe unless --delete-superseded.
	scopeDeleteVolumesMadeNow = &policyScope{sid: "DeleteTheGroupsVolumesNotSuperseded",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("Null", "aws:ResourceTag/"+cloud.TagSuperseded, "true")
		}}
	scopeDeleteSupersededVolumes = &policyScope{sid: "DeleteTheGroupsSupersededVolumes",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("volume/*")} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return c.groupTag("ResourceTag").add("StringEquals", "aws:ResourceTag/"+cloud.TagSuperseded, "true")
		}}
	scopeSnapshots = &policyScope{sid: "TheGroupsSnapshots",
		resources: func(c *iamPolicyConfig) []string { return []string{c.snapshotARN()} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("ResourceTag") }}
	scopeInstances = &policyScope{sid: "TheGroupsInstances",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("instance/*")} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("ResourceTag") }}
	scopeAddress = &policyScope{sid: "TheGroupsElasticIP",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("elastic-ip/*")} },
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("ResourceTag") }}
	scopeInterfaces = &policyScope{sid: "NetworkInterfaceCannotBeScopedToTheGroup",
		resources: func(c *iamPolicyConfig) []string { return []string{c.ec2ARN("network-interface/*")} }}
	scopeAutoScalingGroup = &policyScope{sid: "TheGroupsAutoScalingGroup",
		resources: func(c *iamPolicyConfig) []string {
			return []string{fmt.Sprintf("arn:%s:autoscaling:%s:%s:autoScalingGroup:*:autoScalingGroupName/*", c.Partition, c.Region, c.Account)}
		},
		condition: func(c *iamPolicyConfig) policyCondition { return c.groupTag("ResourceTag") }}
	// EBS uses the key through EC2 (kms:ViaService) and, for the instance to read the volume, through a
	// grant it creates for itself (kms:GrantIsForAWSResource): the role cannot use the key otherwise.
	scopeKMS = &policyScope{sid: "KMSKeyOnlyThroughEC2",
		resources: func(c *iamPolicyConfig) []string { return []string{c.KMSKey} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return policyCondition{}.add("StringEquals", "kms:ViaService", c.ec2Service())
		}}
	scopeKMSGrant = &policyScope{sid: "KMSGrantsOnlyForEBS",
		resources: func(c *iamPolicyConfig) []string { return []string{c.KMSKey} },
		condition: func(c *iamPolicyConfig) policyCondition {
			return policyCondition{}.add("StringEquals", "kms:ViaService", c.ec2Service()).add("Bool", "kms:GrantIsForAWSResource", "true")
		}}

	// policyScopes is the order of the statements.
	policyScopes = []*policyScope{scopeDescribe,
		scopeCreateVolumes, scopeCreateSnapshots, scopeTagVolumesAtCreation, scopeTagSnapshotsAtCreation,
		scopeTagSuperseded, scopeTagFormatState, scopeTagSetShapes, scopeTagRoles,
		scopeVolumes, scopeDeleteVolumesMadeNow, scopeDeleteSupersededVolumes, scopeSnapshots,
		scopeInstances, scopeAddress, scopeInterfaces, scopeAutoScalingGroup,
		scopeKMS, scopeKMSGrant}
)

// snapshotARN: snapshot ARNs have no account. https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html#amazonec2-resources-for-iam-policies
func (c *iamPolicyConfig) snapshotARN() string {
	return fmt.Sprintf("arn:%s:ec2:%s::snapshot/*", c.Partition, c.Region)
}

// ec2Service is the kms:ViaService value of EC2 in the key's region (a KMS key serves its own region only).
func (c *iamPolicyConfig) ec2Service() string {
	domain := "amazonaws.com"
	if c.Partition == "aws-cn" {
		domain = "amazonaws.com.cn"
	}
	return "ec2." + strings.Split(c.KMSKey, ":")[3] + "." + domain
}

// iamPolicyConfig is `handover iam-policy`'s options.
type iamPolicyConfig struct {
	Commands         commandList
	Group            groupPattern
	KMSKey           string
	DeleteSuperseded bool
	Keep             int
	OnRebalance      rebalanceMode
	ReplaceBefore    leadTime
	LockSnapshots    lockDays
	Takeover         bool
	Partition        string
	Region           string
	Account          string
}

// commandList is --commands: a comma-separated list of commands.
type commandList []string

func (l *commandList) String() string { return strings.Join(*l, ",") }

func (l *commandList) Set(v string) error {
	*l = nil
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c != "" {
			*l = append(*l, c)
		}
	}
	return nil
}

// groupPattern is iam-policy's --group: a group name, or "*" for any group. It replaces the common
// --group's value, which must name one group.
type groupPattern struct{ v string }

func (g *groupPattern) String() string { return g.v }

func (g *groupPattern) Set(v string) error { g.v = v; return nil }

var (
	partitionRE = regexp.MustCompile(`^aws(-[a-z]+)*$`)
	regionRE    = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
	accountRE   = regexp.MustCompile(`^[0-9]{12}$`)
	kmsKeyRE    = regexp.MustCompile(`^arn:(aws(?:-[a-z]+)*):kms:([a-z]{2}(?:-[a-z]+)+-[0-9]+):([0-9]{12}):key/[A-Za-z0-9-]+$`)
)

// register declares iam-policy's flags. --group is the common flag with another value: "*" is allowed.
func (c *iamPolicyConfig) register(f *flags) {
	c.Commands = commandList{"up", "down", "watch", "snapshot", "status"}
	c.Group = groupPattern{defaultPolicyGroup}
	g := f.fs.Lookup("group")
	g.Value, g.DefValue = &c.Group, defaultPolicyGroup
	g.Usage = "the handover:group `NAME` the policy is for (\"*\": any group; the tag must still be present)"
	f.fs.Lookup("imds-timeout").Usage = "not used: iam-policy reads no instance metadata"
	f.fs.Var(&c.Commands, "commands", "comma-separated `LIST` of the commands the policy is for: up, down, watch, snapshot, status, failover (failover alone: the Lambda's or an operator's role)")
	f.fs.StringVar(&c.KMSKey, "kms-key", "", "`ARN` of the customer-managed KMS key of encrypted volumes: adds the grants EBS needs for up")
	f.fs.BoolVar(&c.DeleteSuperseded, "delete-superseded", false, "up --delete-superseded: adds nothing now (up's retention deletes the group's older superseded volumes by default, --keep-superseded)")
	f.fs.IntVar(&c.Keep, "keep", 0, "allow snapshot --keep N to delete the group's snapshots (any N above 0)")
	c.OnRebalance = rebalanceOff
	f.fs.Var(&c.OnRebalance, "on-rebalance", "watch's --on-rebalance: off, snapshot or replace (replace: TerminateInstanceInAutoScalingGroup); give it as --on-rebalance=MODE")
	f.fs.Var(&c.LockSnapshots, "lock-snapshots", "allow down, watch and snapshot --lock-snapshots (the same DURATION, any) to lock the group's snapshots (ec2:LockSnapshot)")
	c.ReplaceBefore = defaultReplaceBefore
	f.fs.Var(&c.ReplaceBefore, "replace-before", "watch's --replace-before: a duration, or off (off: no TerminateInstanceInAutoScalingGroup for scheduled events)")
	f.fs.BoolVar(&c.Takeover, "takeover", false, "allow up --takeover to stop the live holder of the group's Elastic IP")
	f.fs.StringVar(&c.Partition, "partition", "aws", "AWS partition of the ARNs: aws, aws-cn, aws-us-gov")
	f.fs.StringVar(&c.Region, "region", "*", "region of the ARNs (\"*\": any)")
	f.fs.StringVar(&c.Account, "account", "*", "account ID of the ARNs (\"*\": any)")
}

// validate checks iam-policy's options in one place; every error names the flag to fix.
func (c *iamPolicyConfig) validate() error {
	if len(c.Commands) == 0 {
		return badOption("commands", "name at least one of %s", strings.Join(policyCommands, ", "))
	}
	for _, name := range c.Commands {
		if !contains(policyCommands, name) {
			return badOption("commands", "%q is not a command with AWS permissions: want %s", name, strings.Join(policyCommands, ", "))
		}
	}
	if g := c.Group.v; g != defaultPolicyGroup && !cloud.ValidGroupName(g) {
		return badOption("group", `use letters, digits, '-', '_' and '.' only, or "*" for any group`)
	}
	if c.Keep < 0 {
		return badOption("keep", "must be 0 or more")
	}
	switch c.OnRebalance {
	case rebalanceOff, rebalanceSnapshot, rebalanceReplace:
	default:
		return badOption("on-rebalance", "want off, snapshot or replace (given alone: snapshot)")
	}
	if c.ReplaceBefore == leadTimeInvalid {
		return badOption("replace-before", "want a duration such as 1h or 30m, or off")
	}
	if !partitionRE.MatchString(c.Partition) {
		return badOption("partition", "want an AWS partition such as aws, aws-cn or aws-us-gov")
	}
	if c.Region != "*" && !regionRE.MatchString(c.Region) {
		return badOption("region", `want a region such as us-east-1, or "*"`)
	}
	if c.Account != "*" && !accountRE.MatchString(c.Account) {
		return badOption("account", `want a 12-digit account ID, or "*"`)
	}
	if c.KMSKey != "" {
		m := kmsKeyRE.FindStringSubmatch(c.KMSKey)
		switch {
		case m == nil:
			return badOption("kms-key", "want the key's ARN, arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias: IAM matches a key by its key ARN)")
		case m[1] != c.Partition:
			return badOption("kms-key", "the key is in partition %s, not --partition %s", m[1], c.Partition)
		case c.Region != "*" && m[2] != c.Region:
			return badOption("kms-key", "the key is in %s, not --region %s: EBS uses a key of the volume's own region", m[2], c.Region)
		}
	}
	return nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// uses are who the policy is for: each command, and each option of a command that makes calls of its own.
func (c *iamPolicyConfig) uses() map[policyUse]bool {
	u := map[policyUse]bool{}
	for _, name := range c.Commands {
		u[policyUse(name)] = true
	}
	option := func(cmd policyUse, on bool, use policyUse) {
		if on && u[cmd] {
			u[use] = true
		}
	}
	option(useUp, c.Takeover, useUpTakeover)
	option(useUp, c.DeleteSuperseded, useUpDeleteOld)
	option(useUp, c.KMSKey != "", useUpKMS)
	option(useSnapshot, c.Keep > 0, useSnapshotKeep)
	option(useDown, c.LockSnapshots != 0, useDownLock)
	option(useWatch, c.LockSnapshots != 0, useWatchLock)
	option(useSnapshot, c.LockSnapshots != 0, useSnapshotLock)
	option(useWatch, c.OnRebalance == rebalanceReplace, useWatchReplace)
	option(useWatch, c.OnRebalance == rebalanceSnapshot, useWatchSnapshot)
	option(useWatch, c.ReplaceBefore != leadTimeOff, useWatchEvents)
	return u
}

// policyDocument is an IAM policy, as iam-policy prints it.
type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`
}

type policyStatement struct {
	Sid       string          `json:"Sid"`
	Effect    string          `json:"Effect"`
	Action    []string        `json:"Action"`
	Resource  []string        `json:"Resource"`
	Condition policyCondition `json:"Condition,omitempty"`
}

// iamPolicy builds the policy for c: the permissions of every row of awsCalls one of c's uses makes, one
// statement per scope in policyScopes' order, actions sorted.
func iamPolicy(c *iamPolicyConfig) policyDocument {
	active := c.uses()
	actions := map[*policyScope]map[string]bool{}
	for _, call := range awsCalls {
		if !madeBy(call, active) {
			continue
		}
		for _, p := range call.needs {
			if actions[p.in] == nil {
				actions[p.in] = map[string]bool{}
			}
			actions[p.in][p.action] = true
		}
	}
	doc := policyDocument{Version: "2012-10-17", Statement: []policyStatement{}}
	for _, s := range policyScopes {
		if len(actions[s]) == 0 {
			continue
		}
		st := policyStatement{Sid: s.sid, Effect: "Allow", Resource: s.resources(c)}
		for a := range actions[s] {
			st.Action = append(st.Action, a)
		}
		sort.Strings(st.Action)
		if s.condition != nil {
			st.Condition = s.condition(c)
		}
		doc.Statement = append(doc.Statement, st)
	}
	return doc
}

func madeBy(call awsCall, active map[policyUse]bool) bool {
	for _, u := range call.by {
		if active[u] {
			return true
		}
	}
	return false
}

// runIAMPolicy is `handover iam-policy`: it prints the policy on stdout as indented JSON.
func runIAMPolicy(ctx context.Context, e Env, args []string) error {
	var c iamPolicyConfig
	if _, err := start(ctx, e, args, startSpec{name: "iam-policy", imdsTimeout: 5 * time.Second, offline: true,
		declare: c.register, validate: c.validate}); err != nil {
		return err
	}
	out, err := json.MarshalIndent(iamPolicy(&c), "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.Stdout, "%s\n", out)
	return err
}
