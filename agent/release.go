package agent

// How down (and snapshot) keep a volume's data still for the instant of CreateSnapshot: stop the service
// with the pre-stop command, flush with sync, then unmount the filesystem or freeze it (FIFREEZE) and thaw
// it (FITHAW) as soon as CreateSnapshot returns.
//
// An EBS snapshot is point-in-time as of the CreateSnapshot call: blocks written after the call returns are
// not in it, even while the snapshot is still pending, so the filesystem needs to be still only for the
// call itself. https://docs.aws.amazon.com/ebs/latest/userguide/ebs-creating-snapshot.html

// Release modes (--release).
const (
	releaseUnmount = "unmount"
	releaseFreeze  = "freeze"
)
