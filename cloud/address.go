package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cenkalti/backoff/v4"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Address is the Elastic IP tagged for a group, as last described.
type Address struct {
	AllocationID       string
	PublicIP           string
	AssociationID      string
	InstanceID         string // "" when not associated with an instance
	NetworkInterfaceID string
	PrivateIP          string
}

// FindGroupAddress returns the one Elastic IP tagged handover:group=group. None or several is a
// precondition failure that lists what it found: handover will not guess which address is the service's.
func FindGroupAddress(ctx context.Context, c EC2, group string) (Address, error) {
	out, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag:" + TagGroup), Values: []string{group}}},
	})
	if err != nil {
		return Address{}, fmt.Errorf("describe addresses tagged %s=%s: %w", TagGroup, group, err)
	}
	switch len(out.Addresses) {
	case 0:
		return Address{}, fail.Precondition(fmt.Sprintf(
			"no Elastic IP is tagged %s=%s: allocate one and tag it (aws ec2 create-tags --resources eipalloc-... --tags Key=%s,Value=%s)",
			TagGroup, group, TagGroup, group), nil)
	case 1:
	default:
		ids := make([]string, 0, len(out.Addresses))
		for _, a := range out.Addresses {
			ids = append(ids, aws.ToString(a.AllocationId)+" ("+aws.ToString(a.PublicIp)+")")
		}
		sort.Strings(ids)
		return Address{}, fail.Precondition(fmt.Sprintf(
			"%d Elastic IPs are tagged %s=%s: %s; keep the tag on exactly one", len(ids), TagGroup, group, strings.Join(ids, ", ")), nil)
	}
	a := out.Addresses[0]
	return Address{
		AllocationID:       aws.ToString(a.AllocationId),
		PublicIP:           aws.ToString(a.PublicIp),
		AssociationID:      aws.ToString(a.AssociationId),
		InstanceID:         aws.ToString(a.InstanceId),
		NetworkInterfaceID: aws.ToString(a.NetworkInterfaceId),
		PrivateIP:          aws.ToString(a.PrivateIpAddress),
	}, nil
}

// ClaimSpec says who claims a group's address and how hard.
type ClaimSpec struct {
	Group      string
	InstanceID string // the claimant
	// NetworkInterfaceID and PrivateIP associate to a given interface / address (multi-ENI instances);
	// empty means the instance's primary interface.
	NetworkInterfaceID string
	PrivateIP          string
	// Takeover moves the address even from a running holder that is not being terminated.
	Takeover bool
	// TakeoverFlag names the option that sets Takeover, for messages; default "--takeover".
	TakeoverFlag string
	// Wait bounds how long to wait for a live holder to let go before giving up (exit 4).
	Wait time.Duration
	// StopLiveHolder fences a live holder before a Takeover: it is stopped (StopInstances with Force) and
	// the address taken only once it is stopped, so that it can no longer write (up --takeover).
	StopLiveHolder bool
}

func (s ClaimSpec) takeoverFlag() string {
	if s.TakeoverFlag == "" {
		return "--takeover"
	}
	return s.TakeoverFlag
}

// ClaimResult says what ClaimAddress did.
type ClaimResult struct {
	Address  Address
	Action   string // "already-held", "associated", "taken-over"
	Previous string // the instance that held it before, if any
	Lease    Lease  // the association this instance now holds: the fence (agent/FENCING.md)
}

// HolderVerdict says whether an address may be taken from the instance that holds it.
type HolderVerdict struct {
	MayTake bool
	Why     string
	// Launching: the holder is itself being launched by its group (Pending, Pending:Wait): a claimant that
	// got there first, not an established primary. Waiting for it to let go is pointless: the race is lost.
	Launching bool
}

// JudgeHolder decides whether the address may be taken from holder: yes when the holder is not running
// (stopped, stopping, shutting down, gone), or when its Auto Scaling group is terminating it; otherwise
// it is a live owner and only an explicit takeover moves the address.
func JudgeHolder(ctx context.Context, c *Clients, holder string) (HolderVerdict, error) {
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{holder}})
	if HasCode(err, CodeInstanceNotFound) {
		return HolderVerdict{MayTake: true, Why: "holder " + holder + " no longer exists"}, nil
	}
	if err != nil {
		return HolderVerdict{}, fmt.Errorf("describe holder %s: %w", holder, err)
	}
	state := ""
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			if i.State != nil {
				state = string(i.State.Name)
			}
		}
	}
	if state != string(ec2types.InstanceStateNameRunning) && state != string(ec2types.InstanceStateNamePending) {
		return HolderVerdict{MayTake: true, Why: fmt.Sprintf("holder %s is %s", holder, dashIfEmpty(state))}, nil
	}
	if c.AutoScaling != nil {
		as, err := c.AutoScaling.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{holder}})
		if err != nil {
			return HolderVerdict{}, fmt.Errorf("describe Auto Scaling state of holder %s: %w", holder, err)
		}
		for _, i := range as.AutoScalingInstances {
			ls, g := aws.ToString(i.LifecycleState), aws.ToString(i.AutoScalingGroupName)
			switch {
			case strings.HasPrefix(ls, "Terminating"):
				return HolderVerdict{MayTake: true, Why: fmt.Sprintf("holder %s is %s in group %s", holder, ls, g)}, nil
			case strings.HasPrefix(ls, "Pending"):
				return HolderVerdict{Launching: true, Why: fmt.Sprintf("holder %s is %s in group %s: it is being launched too, and got the address first", holder, ls, g)}, nil
			}
		}
	}
	return HolderVerdict{Why: fmt.Sprintf("holder %s is %s and not being terminated", holder, state)}, nil
}

// AddressAction is what a claim of the group's address needs next.
type AddressAction int

const (
	AddressHeld         AddressAction = iota // on the claimant (and its interface): nothing to do
	AddressAssociate                         // free: associate it
	AddressMoveHere                          // on another interface of the claimant, or on no instance: reassociate
	AddressTakeOver                          // its holder is leaving: take it
	AddressTakeOverLive                      // its holder is live, and the claim says take over anyway
	AddressWait                              // its holder is live: wait for it to let go (then exit 4)
)

// AddressPlan is the next step of a claim and why.
type AddressPlan struct {
	Action    AddressAction
	Why       string // the holder's state, when another instance holds it
	Launching bool   // AddressWait: the holder is a claimant being launched too (HolderVerdict.Launching)
}

// Reassociate reports whether the step moves an address that is associated now (AllowReassociation).
func (p AddressPlan) Reassociate() bool {
	return p.Action == AddressMoveHere || p.Action == AddressTakeOver || p.Action == AddressTakeOverLive
}

// PlanAddress decides the claim's next step from one observation of the address; it asks EC2 and Auto
// Scaling about the holder only when another instance holds it. ClaimAddress and `handover status` share it.
func PlanAddress(ctx context.Context, c *Clients, a Address, spec ClaimSpec) (AddressPlan, error) {
	switch {
	case a.InstanceID == spec.InstanceID && (spec.NetworkInterfaceID == "" || a.NetworkInterfaceID == spec.NetworkInterfaceID):
		return AddressPlan{Action: AddressHeld}, nil
	case a.InstanceID == spec.InstanceID, a.InstanceID == "" && a.AssociationID != "":
		return AddressPlan{Action: AddressMoveHere}, nil
	case a.InstanceID == "":
		return AddressPlan{Action: AddressAssociate}, nil
	}
	v, err := JudgeHolder(ctx, c, a.InstanceID)
	if err != nil {
		return AddressPlan{}, err
	}
	switch {
	case v.MayTake:
		return AddressPlan{Action: AddressTakeOver, Why: v.Why}, nil
	case spec.Takeover:
		return AddressPlan{Action: AddressTakeOverLive, Why: v.Why}, nil
	}
	return AddressPlan{Action: AddressWait, Why: v.Why, Launching: v.Launching}, nil
}

// addressClaim is one run of ClaimAddress: what it has done so far.
type addressClaim struct {
	c       *Clients
	log     *slog.Logger
	spec    ClaimSpec
	res     ClaimResult
	lastWhy string // why the holder may not be taken, while waiting
	// holder0 is the holder the first round saw ("" when free; first: that round has run). Once this
	// claim has acted (acted), the address on any instance other than holder0 is a race lost: exit 4 at
	// once, not a wait for a live holder.
	first, acted bool
	holder0      string
}

// ClaimAddress makes spec.InstanceID the holder of the group's Elastic IP and returns the lease it holds:
// observe, act on the difference, verify. Rerunning is safe: an address already on the claimant is left
// alone with no mutating call.
//
// Taking the address is a compare-and-swap, so that of several claimants exactly one wins (FENCING.md):
// a free address is associated with AllowReassociation=false (a second claimant gets
// Resource.AlreadyAssociated); an address held by a leaving holder is first disassociated by the
// association ID observed (a second claimant's DisassociateAddress of the same ID gets
// InvalidAssociationID.NotFound), then associated with AllowReassociation=false. AllowReassociation=true
// is never used: two claimants would both be told they won.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AssociateAddress.html
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DisassociateAddress.html
func ClaimAddress(ctx context.Context, log *slog.Logger, c *Clients, spec ClaimSpec) (ClaimResult, error) {
	cl := &addressClaim{c: c, log: log.With(logkey.Step, "address", logkey.Instance, spec.InstanceID), spec: spec}
	bound := spec.Wait
	if bound <= 0 {
		bound = time.Minute
	}
	err := Poll(ctx, cl.log, wait.Spec{What: "Elastic IP of group " + spec.Group, Bound: bound}, cl.round)
	res := cl.res
	if errors.Is(err, wait.ErrTimeout) {
		return res, fail.Fenced(fmt.Sprintf("Elastic IP %s (%s) is held by a live instance: %s; stop it, wait for its group to terminate it, or pass %s",
			res.Address.AllocationID, res.Address.PublicIP, cl.lastWhy, spec.takeoverFlag()), nil)
	}
	if err != nil {
		return res, err
	}
	// Verify with a fresh read that this instance holds the association it was given.
	if err := res.Lease.Check(ctx, c.EC2); err != nil {
		return res, err
	}
	return res, nil
}

// round is one observation of the claim: done, or one step acted on.
func (cl *addressClaim) round(ctx context.Context) (bool, string, error) {
	a, err := FindGroupAddress(ctx, cl.c.EC2, cl.spec.Group)
	if err != nil {
		return false, "", backoff.Permanent(err)
	}
	cl.res.Address = a
	if !cl.first {
		cl.first, cl.holder0 = true, a.InstanceID
	}
	if cl.res.Lease.AssociationID != "" {
		return true, "", nil // associated by this claim; ClaimAddress verifies it
	}
	if a.InstanceID == cl.spec.InstanceID && (cl.spec.NetworkInterfaceID == "" || a.NetworkInterfaceID == cl.spec.NetworkInterfaceID) {
		cl.res.Action = "already-held"
		cl.res.Lease = Lease{Group: cl.spec.Group, AllocationID: a.AllocationID, InstanceID: cl.spec.InstanceID, AssociationID: a.AssociationID}
		return true, "", nil
	}
	if cl.acted && a.InstanceID != "" && a.InstanceID != cl.holder0 {
		return false, "", backoff.Permanent(fail.Fenced(fmt.Sprintf(
			"Elastic IP %s (%s) went to %s while this instance claimed it: another instance won the race and keeps it",
			a.AllocationID, a.PublicIP, a.InstanceID), nil))
	}
	p, err := PlanAddress(ctx, cl.c, a, cl.spec)
	if err != nil {
		return false, "", err
	}
	switch p.Action {
	case AddressWait:
		if p.Launching {
			return false, "", backoff.Permanent(fail.Fenced(fmt.Sprintf("Elastic IP %s (%s) is held by another instance of the group: %s; it keeps the address",
				a.AllocationID, a.PublicIP, p.Why), nil))
		}
		cl.lastWhy = p.Why
		return false, p.Why, nil
	case AddressTakeOver:
		cl.log.Info("taking over the address", logkey.Allocation, a.AllocationID, logkey.PublicIP, a.PublicIP, logkey.Reason, p.Why)
	case AddressTakeOverLive:
		if cl.spec.StopLiveHolder {
			return false, "stopping " + a.InstanceID + " before taking the address", cl.stopHolder(ctx, a.InstanceID, p.Why)
		}
		cl.log.Warn("taking over the address from a live holder", logkey.Allocation, a.AllocationID, logkey.PublicIP, a.PublicIP, logkey.Reason, p.Why, "because", cl.spec.takeoverFlag())
	}
	if p.Action == AddressTakeOver || p.Action == AddressTakeOverLive {
		cl.res.Previous = a.InstanceID
	}
	return cl.swap(ctx, a, p)
}

// swap takes the address by compare-and-swap: disassociate the association observed (when there is one),
// then associate without reassociation. Losing either step to another claimant is seen by the next round.
func (cl *addressClaim) swap(ctx context.Context, a Address, p AddressPlan) (bool, string, error) {
	cl.acted = true
	if a.AssociationID != "" {
		_, err := cl.c.EC2.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(a.AssociationID)})
		switch {
		case HasCode(err, CodeAssociationNotFound):
			return false, "the association changed before it could be taken; looking again", nil
		case err != nil:
			return false, "", backoff.Permanent(fmt.Errorf("disassociate %s (%s) from %s: %w", a.AllocationID, a.AssociationID, dashIfEmpty(a.InstanceID), err))
		}
		cl.log.Info("disassociated", logkey.Allocation, a.AllocationID, "association_id", a.AssociationID, logkey.From, dashIfEmpty(a.InstanceID))
	}
	spec := cl.spec
	in := &ec2.AssociateAddressInput{AllocationId: aws.String(a.AllocationID), AllowReassociation: aws.Bool(false)}
	if spec.NetworkInterfaceID != "" {
		in.NetworkInterfaceId = aws.String(spec.NetworkInterfaceID)
	} else {
		in.InstanceId = aws.String(spec.InstanceID)
	}
	if spec.PrivateIP != "" {
		in.PrivateIpAddress = aws.String(spec.PrivateIP)
	}
	out, err := cl.c.EC2.AssociateAddress(ctx, in)
	switch {
	case HasCode(err, codeAlreadyAssociated):
		return false, "someone else associated it first", nil // the next round sees who
	case HasCode(err, CodeInstanceNotFound):
		// A just-launched instance may not be visible to every EC2 call yet (eventual consistency):
		// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
		return false, spec.InstanceID + " is not visible to EC2 yet", nil
	case err != nil:
		return false, "", backoff.Permanent(fmt.Errorf("associate %s with %s: %w", a.AllocationID, spec.InstanceID, err))
	}
	cl.res.Lease = Lease{Group: spec.Group, AllocationID: a.AllocationID, InstanceID: spec.InstanceID,
		AssociationID: aws.ToString(out.AssociationId), replaced: a.AssociationID, at: time.Now(), TookIt: true}
	cl.res.Action = "associated"
	if p.Reassociate() {
		cl.res.Action = "taken-over"
	}
	cl.log.Info("associated", logkey.Allocation, a.AllocationID, logkey.PublicIP, a.PublicIP, "association_id", cl.res.Lease.AssociationID)
	return true, "", nil
}

// stopHolder fences a live holder before a takeover: StopInstances with Force (no clean shutdown: the
// holder is presumed hung, and its writes must stop now), then the next rounds wait for it to be stopped,
// when it is a leaving holder and the address is taken by compare-and-swap.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StopInstances.html
func (cl *addressClaim) stopHolder(ctx context.Context, holder, why string) error {
	cl.log.Warn("stopping the live holder before taking the address over", logkey.Instance, holder, logkey.Reason, why, "because", cl.spec.takeoverFlag())
	_, err := cl.c.EC2.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{holder}, Force: aws.Bool(true)})
	if err != nil && !HasCode(err, CodeIncorrectInstanceSt) {
		return backoff.Permanent(fmt.Errorf("stop %s before taking the address over (%s): %w", holder, cl.spec.takeoverFlag(), err))
	}
	cl.lastWhy = "waiting for " + holder + " to stop"
	return nil
}
