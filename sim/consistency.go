package sim

import "time"

// EC2's eventual consistency, with Faults.ConsistencyDelay on
// (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
// "if you run a command to modify or describe the resource that you just
// created, its ID might not have propagated throughout the system, and you
// will get an error responding that the resource does not exist", and the
// result of a command "might not be immediately visible to all subsequent
// commands". The sim makes that deterministic on the region clock (each
// request's time): for the delay after it was created a resource is not found
// by Describe* nor by the by-ID lookups of mutating calls, and for the delay
// after an AttachVolume/DetachVolume or AssociateAddress/DisassociateAddress
// DescribeVolumes/DescribeAddresses show the attachment or association as it
// was before the call. The change itself is made at once: only reads lag.

func (r *Region) invisible(created time.Time, c *reqCtx) bool {
	return c.cfg.ConsistencyDelay > 0 && c.now.Sub(created) < c.cfg.ConsistencyDelay
}

// lookup is a find function for a mutating call: a resource created less
// than the consistency delay ago is not found yet (the page's example:
// TerminateInstances right after RunInstances may answer
// InvalidInstanceID.NotFound).
func lookup[T any](r *Region, c *reqCtx, id string, find func(string) (T, *apiError), created func(T) time.Time, notFound func(string) *apiError) (T, *apiError) {
	x, aerr := find(id)
	if aerr == nil && r.invisible(created(x), c) {
		var none T
		return none, notFound(id)
	}
	return x, aerr
}

func (r *Region) lookupVolume(c *reqCtx, id string) (*volume, *apiError) {
	return lookup(r, c, id, r.findVolume, func(v *volume) time.Time { return v.Created }, volumeNotFound)
}

func (r *Region) lookupInstance(c *reqCtx, id string) (*instance, *apiError) {
	return lookup(r, c, id, r.findInstance, func(in *instance) time.Time { return in.LaunchTime }, instanceNotFound)
}

func (r *Region) lookupSnapshot(c *reqCtx, id string) (*snapshot, *apiError) {
	return lookup(r, c, id, r.findSnapshot, func(s *snapshot) time.Time { return s.Start }, snapshotNotFound)
}

func (r *Region) lookupAddress(c *reqCtx, id string) (*address, *apiError) {
	return lookup(r, c, id, r.findAddress, func(a *address) time.Time { return a.Created }, allocationNotFound)
}

// volumeLag is what a volume looked like before an AttachVolume or
// DetachVolume at At.
type volumeLag struct {
	At         time.Time
	State      string
	Attachment *attachment
}

// noteVolumeChange remembers v's attachment before a call changes it.
func (r *Region) noteVolumeChange(v *volume, c *reqCtx) {
	if c.cfg.ConsistencyDelay <= 0 {
		return
	}
	l := volumeLag{At: c.now, State: v.State}
	if v.Attachment != nil {
		a := *v.Attachment
		l.Attachment = &a
	}
	v.lag = append(v.lag, l)
}

// volumeView is v as a read at c.now sees it: the attachment before the
// oldest change still inside the consistency delay, else v itself.
func (r *Region) volumeView(v *volume, c *reqCtx) *volume {
	v.lag = dropSettled(v.lag, c, func(l volumeLag) time.Time { return l.At })
	if len(v.lag) == 0 {
		return v
	}
	view := *v
	view.State, view.Attachment = v.lag[0].State, v.lag[0].Attachment
	return &view
}

// addressLag is an address's association before a call changed it at At.
type addressLag struct {
	At                                        time.Time
	AssociationID, InstanceID, ENI, PrivateIP string
}

func (r *Region) noteAddressChange(a *address, c *reqCtx) {
	if c.cfg.ConsistencyDelay <= 0 {
		return
	}
	a.lag = append(a.lag, addressLag{At: c.now, AssociationID: a.AssociationID, InstanceID: a.InstanceID, ENI: a.ENI, PrivateIP: a.PrivateIP})
}

func (r *Region) addressView(a *address, c *reqCtx) *address {
	a.lag = dropSettled(a.lag, c, func(l addressLag) time.Time { return l.At })
	if len(a.lag) == 0 {
		return a
	}
	view := *a
	l := a.lag[0]
	view.AssociationID, view.InstanceID, view.ENI, view.PrivateIP = l.AssociationID, l.InstanceID, l.ENI, l.PrivateIP
	return &view
}

// dropSettled removes the changes older than the consistency delay (all of
// them when it is off).
func dropSettled[T any](lags []T, c *reqCtx, at func(T) time.Time) []T {
	i := 0
	for i < len(lags) && (c.cfg.ConsistencyDelay <= 0 || c.now.Sub(at(lags[i])) >= c.cfg.ConsistencyDelay) {
		i++
	}
	if i == len(lags) {
		return nil
	}
	return lags[i:]
}
