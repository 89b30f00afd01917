package sim

// ec2Actions are the EC2 actions the simulator implements; any other action
// answers InvalidAction (400).
var ec2Actions = map[string]actionFunc{
	"RunInstances":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.runInstances(c) },
	"DescribeInstances":         func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeInstances(c) },
	"StartInstances":            func(r *Region, c *reqCtx) ([]node, *apiError) { return r.startInstances(c) },
	"StopInstances":             func(r *Region, c *reqCtx) ([]node, *apiError) { return r.stopInstances(c) },
	"TerminateInstances":        func(r *Region, c *reqCtx) ([]node, *apiError) { return r.terminateInstances(c) },
	"DescribeInstanceStatus":    func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeInstanceStatus(c) },
	"DescribeAvailabilityZones": func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeAvailabilityZones(c) },
	"CreateTags":                func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createTags(c) },
	"DeleteTags":                func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteTags(c) },
	"DescribeTags":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeTags(c) },
	"AllocateAddress":           func(r *Region, c *reqCtx) ([]node, *apiError) { return r.allocateAddress(c) },
	"ReleaseAddress":            func(r *Region, c *reqCtx) ([]node, *apiError) { return r.releaseAddress(c) },
	"DescribeAddresses":         func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeAddresses(c) },
	"AssociateAddress":          func(r *Region, c *reqCtx) ([]node, *apiError) { return r.associateAddress(c) },
	"DisassociateAddress":       func(r *Region, c *reqCtx) ([]node, *apiError) { return r.disassociateAddress(c) },
	"CreateVolume":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createVolume(c) },
	"DescribeVolumes":           func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeVolumes(c) },
	"AttachVolume":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.attachVolume(c) },
	"DetachVolume":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.detachVolume(c) },
	"DeleteVolume":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteVolume(c) },
	"ModifyVolume":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.modifyVolume(c) },
	"DescribeVolumesModifications": func(r *Region, c *reqCtx) ([]node, *apiError) {
		return r.describeVolumesModifications(c)
	},
	"DescribeVolumeStatus": func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeVolumeStatus(c) },
	"EnableFastSnapshotRestores": func(r *Region, c *reqCtx) ([]node, *apiError) {
		return r.changeFastRestores(c, true)
	},
	"DisableFastSnapshotRestores": func(r *Region, c *reqCtx) ([]node, *apiError) {
		return r.changeFastRestores(c, false)
	},
	"DescribeFastSnapshotRestores": func(r *Region, c *reqCtx) ([]node, *apiError) {
		return r.describeFastSnapshotRestores(c)
	},
	"LockSnapshot":            func(r *Region, c *reqCtx) ([]node, *apiError) { return r.lockSnapshot(c) },
	"UnlockSnapshot":          func(r *Region, c *reqCtx) ([]node, *apiError) { return r.unlockSnapshot(c) },
	"DescribeLockedSnapshots": func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeLockedSnapshots(c) },
	"CreateSnapshot":          func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createSnapshot(c) },
	"CreateSnapshots":         func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createSnapshots(c) },
	"DescribeSnapshots":       func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeSnapshots(c) },
	"DeleteSnapshot":          func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteSnapshot(c) },
	"CreateLaunchTemplate":    func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createLaunchTemplate(c) },
	"DescribeLaunchTemplates": func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeLaunchTemplates(c) },
	"DeleteLaunchTemplate":    func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteLaunchTemplate(c) },
}

// asgActions are the Auto Scaling actions the simulator implements.
var asgActions = map[string]actionFunc{
	"CreateAutoScalingGroup":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.createAutoScalingGroup(c) },
	"DescribeAutoScalingGroups":           func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeAutoScalingGroups(c) },
	"DescribeAutoScalingInstances":        func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeAutoScalingInstances(c) },
	"UpdateAutoScalingGroup":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.updateAutoScalingGroup(c) },
	"SetDesiredCapacity":                  func(r *Region, c *reqCtx) ([]node, *apiError) { return r.setDesiredCapacity(c) },
	"DeleteAutoScalingGroup":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteAutoScalingGroup(c) },
	"PutLifecycleHook":                    func(r *Region, c *reqCtx) ([]node, *apiError) { return r.putLifecycleHook(c) },
	"DeleteLifecycleHook":                 func(r *Region, c *reqCtx) ([]node, *apiError) { return r.deleteLifecycleHook(c) },
	"DescribeLifecycleHooks":              func(r *Region, c *reqCtx) ([]node, *apiError) { return r.describeLifecycleHooks(c) },
	"CompleteLifecycleAction":             func(r *Region, c *reqCtx) ([]node, *apiError) { return r.completeLifecycleAction(c) },
	"RecordLifecycleActionHeartbeat":      func(r *Region, c *reqCtx) ([]node, *apiError) { return r.recordLifecycleActionHeartbeat(c) },
	"SetInstanceHealth":                   func(r *Region, c *reqCtx) ([]node, *apiError) { return r.setInstanceHealth(c) },
	"TerminateInstanceInAutoScalingGroup": func(r *Region, c *reqCtx) ([]node, *apiError) { return r.terminateInstanceInAutoScalingGroup(c) },
}
