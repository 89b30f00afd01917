package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/cenkalti/backoff/v4"

	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/wait"
)

// Lease is the association of the group's Elastic IP with this instance: the fence that lets one instance
// at a time act on the group's data (agent/FENCING.md). AssociationID is the epoch: it changes every time
// the address changes hands, and handover tags what it creates with it (TagEpoch).
type Lease struct {
	Group         string
	AllocationID  string
	InstanceID    string
	AssociationID string
	// TookIt: this run associated the address (rather than finding it here). A run that ends without the
	// data hands back an address it took (Release), so that address and data are never on two instances.
	TookIt bool

	replaced string    // the association this run's swap replaced ("" when the address was free)
	at       time.Time // when this run associated it; zero when it was here already
}

// addressVisibilityBound is how long DescribeAddresses may go on showing the association a swap replaced
// (or none) after AssociateAddress: reads are eventually consistent.
// https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
const addressVisibilityBound = 30 * time.Second

// Check reads the address afresh and fails with exit 4 unless this instance still holds the lease.
// Within addressVisibilityBound of its own AssociateAddress, a read that still shows the association it
// replaced (or none) is a stale read, not a lost lease, and is read again; any other association means
// another instance holds the address now. Every irreversible step re-checks the lease first.
func (l Lease) Check(ctx context.Context, c EC2) error {
	if l.AssociationID == "" {
		return fmt.Errorf("no lease on the Elastic IP of group %s", l.Group)
	}
	var seen string
	// Bounded by the command's deadline, not by addressVisibilityBound: a check whose reads are throttled
	// for longer (hundreds of groups recovering at once) has not seen the lease lost, it has not seen the
	// address at all. The stale-read window is counted from the association itself (l.at) below.
	err := Poll(ctx, nopLogger, wait.Spec{What: "the Elastic IP lease to be visible", Bound: time.Until(wait.Deadline(ctx)), Initial: 100 * time.Millisecond, Max: time.Second},
		func(ctx context.Context) (bool, string, error) {
			out, err := c.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{l.AllocationID}}, throttleToCaller)
			if err != nil {
				if IsThrottled(err) {
					return false, "", err // Poll waits it out, slower and slower
				}
				return false, "", backoff.Permanent(fmt.Errorf("describe Elastic IP %s: %w", l.AllocationID, err))
			}
			assoc, holder := "", ""
			for _, a := range out.Addresses {
				assoc, holder = aws.ToString(a.AssociationId), aws.ToString(a.InstanceId)
			}
			if assoc == l.AssociationID && holder == l.InstanceID {
				return true, "", nil
			}
			seen = dashIfEmpty(holder) + " (" + dashIfEmpty(assoc) + ")"
			stale := !l.at.IsZero() && time.Since(l.at) < addressVisibilityBound && (assoc == l.replaced || assoc == "")
			if !stale {
				return false, "", backoff.Permanent(l.lost(seen))
			}
			return false, "not visible yet", nil
		})
	if errors.Is(err, wait.ErrTimeout) && seen != "" {
		return l.lost(seen) // still the old association at the deadline: not a stale read any more
	}
	if errors.Is(err, wait.ErrTimeout) {
		return fmt.Errorf("could not read the Elastic IP %s of group %s to check the lease before the deadline: %w", l.AllocationID, l.Group, err)
	}
	return err
}

// nopLogger: a lease check is quiet; its failure is the one line that matters.
var nopLogger = slog.New(slog.DiscardHandler)

func (l Lease) lost(seen string) error {
	return fail.Fenced(fmt.Sprintf("the Elastic IP %s of group %s is no longer this instance's (association %s): it is on %s; another instance holds the lease, so this one stops here",
		l.AllocationID, l.Group, l.AssociationID, seen), nil)
}

// Release hands the address back: DisassociateAddress of this lease's own association, so that it can never
// remove another instance's. An association already gone counts as released.
func (l Lease) Release(ctx context.Context, c EC2) error {
	_, err := c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(l.AssociationID)})
	if err != nil && !HasCode(err, CodeAssociationNotFound) {
		return fmt.Errorf("hand back Elastic IP %s (%s): %w", l.AllocationID, l.AssociationID, err)
	}
	return nil
}
