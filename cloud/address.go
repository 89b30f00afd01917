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

// groupAddress is the Elastic IP tagged for a group, as last described.
type Address struct {
	AllocationID       string
	PublicIP           string
	AssociationID      string
	InstanceID         string // "" when not associated with an instance
	NetworkInterfaceID string
	PrivateIP          string
}

// findGroupAddress returns the one Elastic IP tagged handover:group=group. None or several is a
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

// claimSpec says who claims a group's address and how hard.
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
	Wait   time.Duration
	DryRun bool
}

func (s ClaimSpec) takeoverFlag() string {
	if s.TakeoverFlag == "" {
		return "--takeover"
	}
	return s.TakeoverFlag
}

// claimResult says what claimAddress did.
type ClaimResult struct {
	Address  Address
	Action   string // "already-held", "associated", "taken-over", "would-associate", "would-take-over"
	Previous string // the instance that held it before, if any
}

// holderVerdict says whether an address may be taken from the instance that holds it.
type holderVerdict struct {
	MayTake bool
	Why     string
}

// judgeHolder decides whether the address may be taken from holder: yes when the holder is not running
// (stopped, stopping, shutting down, gone), or when its Auto Scaling group is terminating it; otherwise
// it is a live owner and only an explicit takeover moves the address.
func JudgeHolder(ctx context.Context, c *Clients, holder string) (holderVerdict, error) {
	out, err := c.EC2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{holder}})
	if HasCode(err, CodeInstanceNotFound) {
		return holderVerdict{true, "holder " + holder + " no longer exists"}, nil
	}
	if err != nil {
		return holderVerdict{}, fmt.Errorf("describe holder %s: %w", holder, err)
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
		return holderVerdict{true, fmt.Sprintf("holder %s is %s", holder, dashIfEmpty(state))}, nil
	}
	if c.AutoScaling != nil {
		as, err := c.AutoScaling.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{holder}})
		if err != nil {
			return holderVerdict{}, fmt.Errorf("describe Auto Scaling state of holder %s: %w", holder, err)
		}
		for _, i := range as.AutoScalingInstances {
			if ls := aws.ToString(i.LifecycleState); strings.HasPrefix(ls, "Terminating") {
				return holderVerdict{true, fmt.Sprintf("holder %s is %s in group %s", holder, ls, aws.ToString(i.AutoScalingGroupName))}, nil
			}
		}
	}
	return holderVerdict{false, fmt.Sprintf("holder %s is %s and not being terminated", holder, state)}, nil
}

// claimAddress makes spec.InstanceID the holder of the group's Elastic IP: observe, act on the difference,
// verify. Rerunning is safe: an address already on the claimant is left alone with no mutating call.
//
// Two claimants can both be told AssociateAddress succeeded when they race with AllowReassociation, so a
// free address is associated without it (the loser gets Resource.AlreadyAssociated and re-evaluates), and
// every association is verified with a fresh Describe. Losing is exit 4.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_AssociateAddress.html
func ClaimAddress(ctx context.Context, log *slog.Logger, c *Clients, spec ClaimSpec) (ClaimResult, error) {
	log = log.With(logkey.Step, "address", logkey.Instance, spec.InstanceID)
	var res ClaimResult
	var lastWhy string
	// What the address was associated with when we associated it (AssociationId, "" when free), and when:
	// DescribeAddresses is eventually consistent, so for a while after our AssociateAddress it may still
	// show that old association. Only a different association proves that another claimant won.
	// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
	var beforeAssoc string
	var associatedAt time.Time
	check := func(ctx context.Context) (bool, string, error) {
		a, err := FindGroupAddress(ctx, c.EC2, spec.Group)
		if err != nil {
			return false, "", backoff.Permanent(err)
		}
		res.Address = a
		log := log.With(logkey.Allocation, a.AllocationID)
		if a.InstanceID == spec.InstanceID && (spec.NetworkInterfaceID == "" || a.NetworkInterfaceID == spec.NetworkInterfaceID) {
			if res.Action == "" {
				res.Action = "already-held"
			}
			return true, "", nil
		}
		if res.Action == "associated" || res.Action == "taken-over" {
			if a.AssociationID == beforeAssoc && time.Since(associatedAt) < tokenVisibilityBound {
				// The association we replaced (or none): a stale read, not a race lost. Look again.
				return false, "verifying: the association is not visible yet", nil
			}
			// We associated it and a fresh Describe shows another association: another claimant won.
			return false, "", backoff.Permanent(fail.Fenced(fmt.Sprintf(
				"associated %s (%s) but %s holds it now: another instance won the race; it keeps the address",
				a.AllocationID, a.PublicIP, dashIfEmpty(a.InstanceID)), nil))
		}
		reassociate := false
		if a.InstanceID != "" && a.InstanceID != spec.InstanceID {
			v, err := JudgeHolder(ctx, c, a.InstanceID)
			if err != nil {
				return false, "", err
			}
			switch {
			case v.MayTake:
				log.Info("taking over the address", "public_ip", a.PublicIP, "reason", v.Why)
			case spec.Takeover:
				log.Warn("taking over the address from a live holder", "public_ip", a.PublicIP, "reason", v.Why, "because", spec.takeoverFlag())
			default:
				lastWhy = v.Why
				return false, v.Why, nil
			}
			reassociate = true
			res.Previous = a.InstanceID
		} else if a.AssociationID != "" {
			// Associated with this instance on another interface, or with an interface not on an instance.
			reassociate = true
		}
		if spec.DryRun {
			res.Action = "would-associate"
			if reassociate {
				res.Action = "would-take-over"
			}
			return true, "", nil
		}
		in := &ec2.AssociateAddressInput{AllocationId: aws.String(a.AllocationID), AllowReassociation: aws.Bool(reassociate)}
		if spec.NetworkInterfaceID != "" {
			in.NetworkInterfaceId = aws.String(spec.NetworkInterfaceID)
		} else {
			in.InstanceId = aws.String(spec.InstanceID)
		}
		if spec.PrivateIP != "" {
			in.PrivateIpAddress = aws.String(spec.PrivateIP)
		}
		if _, err := c.EC2.AssociateAddress(ctx, in); err != nil {
			if HasCode(err, codeAlreadyAssociated) {
				return false, "someone else associated it first", nil // re-evaluate the new holder
			}
			return false, "", backoff.Permanent(fmt.Errorf("associate %s with %s: %w", a.AllocationID, spec.InstanceID, err))
		}
		beforeAssoc, associatedAt = a.AssociationID, time.Now()
		res.Action = "associated"
		if reassociate {
			res.Action = "taken-over"
		}
		log.Info("associated", "public_ip", a.PublicIP)
		return false, "verifying", nil // the next round verifies with a fresh Describe
	}
	bound := spec.Wait
	if bound <= 0 {
		bound = time.Minute
	}
	err := Poll(ctx, log, wait.Spec{What: "Elastic IP of group " + spec.Group, Bound: bound}, check)
	if errors.Is(err, wait.ErrTimeout) && (res.Action == "associated" || res.Action == "taken-over") {
		return res, &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("associated %s (%s) but DescribeAddresses did not show it on %s within %s; rerun to check",
			res.Address.AllocationID, res.Address.PublicIP, spec.InstanceID, bound), Err: err}
	}
	if errors.Is(err, wait.ErrTimeout) {
		return res, fail.Fenced(fmt.Sprintf("Elastic IP %s (%s) is held by a live instance: %s; stop it, wait for its group to terminate it, or pass %s",
			res.Address.AllocationID, res.Address.PublicIP, lastWhy, spec.takeoverFlag()), nil)
	}
	return res, err
}
