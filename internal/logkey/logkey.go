// Package logkey holds handover's stable log keys. Dashboards, CloudWatch Logs Insights queries and
// alerts are built on them (README.md lists them), so a key never changes meaning; any key logged from
// more than one place is a constant here.
package logkey

const (
	Instance   = "instance_id"
	Volume     = "volume_id"
	Snapshot   = "snapshot_id"
	Allocation = "allocation_id"
	AZ         = "az"
	Step       = "step"
	Elapsed    = "elapsed"
	Group      = "group"
	Slot       = "slot"
	MountPoint = "mount_point"
	Device     = "device"
	FS         = "fs"
	ASG        = "asg"
	Hook       = "hook"
	Generation = "generation"
	Error      = "error"
	PublicIP   = "public_ip"
	Reason     = "reason"
	Why        = "why"   // why a thing was kept, deleted or skipped
	State      = "state" // an AWS resource's state, as AWS names it
	Every      = "every" // the interval of a repeated call
)
