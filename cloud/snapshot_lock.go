package cloud

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// EBS snapshot lock (https://docs.aws.amazon.com/ebs/latest/userguide/ebs-snapshot-lock.html): "While a
// snapshot is locked, it can't be deleted by any user, regardless of their IAM permissions." handover locks
// its consistent snapshots (--lock-snapshots) in governance mode: locked at once, no cooling-off period,
// and a user with ec2:UnlockSnapshot can still unlock one (compliance mode cannot be undone, which is a
// decision for the account's owner, not for a failover tool;
// https://docs.aws.amazon.com/ebs/latest/userguide/snapshot-lock-concepts.html). A lock of a pending
// snapshot starts counting once the snapshot completes
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockedSnapshotsInfo.html). Locking costs
// nothing beyond the snapshot's storage, which the lock keeps for its duration.

// MaxLockDays is the longest lock EBS takes, in days (LockDuration).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_LockSnapshot.html
const MaxLockDays = 36500

// SnapshotLock is a snapshot's lock.
type SnapshotLock struct {
	SnapshotID string
	State      string    // governance, compliance, compliance-cooloff, expired
	Expires    time.Time // zero while a pending snapshot's lock has not started
}

// lockedStates are the lock states in which a snapshot cannot be deleted.
var lockedStates = []string{string(ec2types.LockStateGovernance), string(ec2types.LockStateCompliance), string(ec2types.LockStateComplianceCooloff)}

// LockSnapshot locks a snapshot in governance mode for days, or changes the lock it has to that.
func LockSnapshot(ctx context.Context, c EC2, id string, days int) (SnapshotLock, error) {
	out, err := c.LockSnapshot(ctx, &ec2.LockSnapshotInput{SnapshotId: aws.String(id), LockMode: ec2types.LockModeGovernance, LockDuration: aws.Int32(int32(days))})
	if err != nil {
		return SnapshotLock{}, fmt.Errorf("lock snapshot %s for %d days: %w", id, days, err)
	}
	return SnapshotLock{SnapshotID: id, State: string(out.LockState), Expires: aws.ToTime(out.LockExpiresOn)}, nil
}

// LockedSnapshots returns the account's snapshots that are locked now (not expired), by ID. It lists them
// by lock state rather than asking after given IDs, so that a snapshot deleted meanwhile is no error.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeLockedSnapshots.html
func LockedSnapshots(ctx context.Context, c EC2) (map[string]SnapshotLock, error) {
	locks := map[string]SnapshotLock{}
	in := &ec2.DescribeLockedSnapshotsInput{
		Filters:    []ec2types.Filter{{Name: aws.String("lock-state"), Values: lockedStates}},
		MaxResults: aws.Int32(1000),
	}
	for {
		out, err := c.DescribeLockedSnapshots(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("describe locked snapshots: %w", err)
		}
		for _, s := range out.Snapshots {
			id := aws.ToString(s.SnapshotId)
			locks[id] = SnapshotLock{SnapshotID: id, State: string(s.LockState), Expires: aws.ToTime(s.LockExpiresOn)}
		}
		if aws.ToString(out.NextToken) == "" {
			return locks, nil
		}
		in.NextToken = out.NextToken
	}
}
