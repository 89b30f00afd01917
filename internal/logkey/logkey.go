// Package logkey holds handover's stable log keys. Dashboards, CloudWatch Logs Insights queries and
// alerts are built on them (README.md lists them), so a key never changes meaning; every key logged from
// more than one place is a constant here.
package logkey

const (
	Instance   = "instance_id"   // the instance a line is about (this one, unless a holder or target)
	Volume     = "volume_id"     // an EBS volume
	Snapshot   = "snapshot_id"   // an EBS snapshot
	Allocation = "allocation_id" // the group's Elastic IP
	PublicIP   = "public_ip"     // its address
	AZ         = "az"            // availability zone
	Group      = "group"         // the handover group
	Slot       = "slot"          // the group's volume slot (data, wal, ...)
	Generation = "generation"    // handover:generation of a volume or snapshot
	Step       = "step"          // the step of the command: identity, address, volume, device, mount, release, snapshot, lifecycle, ...
	Elapsed    = "elapsed"       // time since the command (or a wait) started
	Action     = "action"        // what a plan decided
	Why        = "why"           // why it decided so
	Reason     = "reason"        // why an address may be taken, or why nothing was done
	State      = "state"         // a resource's or a monitor's state
	MountPoint = "mount_point"
	Device     = "device" // a block device path
	FS         = "fs"     // filesystem type
	ASG        = "asg"    // the Auto Scaling group
	Hook       = "hook"   // a lifecycle hook
	Result     = "result" // CONTINUE or ABANDON
	Event      = "event"  // the watch event (lifecycle, spot, rebalance) a down runs for
	Source     = "source" // the monitor a watch event came from
	Sources    = "sources"
	Started    = "started"
	From       = "from"
	FromBytes  = "from_bytes"
	ToBytes    = "to_bytes"
	Output     = "output" // the tail of a pre-stop command's output
	Bound      = "bound"
	Timeout    = "timeout"
	Every      = "every"
	ExitCode   = "exit_code"
	Error      = "error"
)
