package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Snapshot states, as Snapshot.State holds them.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Snapshot.html
const (
	SnapshotPending   = string(ec2types.SnapshotStatePending)
	SnapshotCompleted = string(ec2types.SnapshotStateCompleted)
	SnapshotError     = string(ec2types.SnapshotStateError)
)

// SnapshotRequest is one CreateSnapshot of a slot's volume.
type SnapshotRequest struct {
	Group       string
	Slot        string
	Volume      Volume
	InstanceID  string
	Consistent  bool
	Final       bool   // the last snapshot of the volume before it changes hands: it holds every write (TagFinal)
	Epoch       string // the lease under which up snapshots an orphan (TagEpoch); "" for down and snapshot
	Description string
	// Set and SetSize make the snapshot one of a set of one moment (TagSet, TagSetSize: snapshotsets.go);
	// "" for none (up's snapshot of an orphan).
	Set     string
	SetSize int
}

// tags are the snapshot's tags, set at creation (DESIGN.md): group, slot, generation, source volume and
// instance, and handover:consistent=true only when the data was still.
func (r SnapshotRequest) tags() map[string]string {
	t := map[string]string{
		TagGroup:          r.Group,
		TagSlot:           r.Slot,
		TagGeneration:     strconv.Itoa(r.Volume.Generation),
		TagSourceVolume:   r.Volume.ID,
		TagSourceInstance: r.InstanceID,
	}
	if r.Consistent {
		t[TagConsistent] = "true"
	}
	if r.Final {
		t[TagFinal] = "true"
	}
	if r.Epoch != "" {
		t[TagEpoch] = r.Epoch
	}
	if r.Set != "" {
		t[TagSet], t[TagSetSize] = r.Set, strconv.Itoa(r.SetSize)
	}
	for k, v := range ShapeTags(r.Volume) { // the volume keeps its shape across a move (shape.go)
		t[k] = v
	}
	return t
}

// CreateSnapshot calls CreateSnapshot with the tags in TagSpecifications, so that a snapshot never exists
// untagged. CreateSnapshot has no idempotency token: the observe step is the caller's, which looks for an
// earlier snapshot by description (FindSnapshotOf) before it asks for a new one, and the answer is the
// verification (a snapshot ID in the pending state; WaitSnapshotCompleted waits for the rest).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateSnapshot.html
//
// For the same reason the SDK does not retry the call here: a call EC2 carried out whose answer was lost
// (a connection reset, a 5xx after the fact) would be made again, and make a second snapshot. After a
// failure the SDK would retry, the snapshot the lost call may have made is looked for first (same volume,
// source instance, description and tags; EC2 may take a moment to list it, during which a new call meets
// the 15 s rate limit below and looks again), and only then is the call made again.
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
//
// EBS refuses a snapshot of a volume less than 15 s after the last one (SnapshotCreationPerVolumeRateExceeded)
// and a second pending snapshot of an st1 or sc1 volume (ConcurrentSnapshotLimitExceeded); the SDK does not
// retry either, and down's final snapshot often follows the periodic one closely, so both are retried (1 s
// doubling to 5 s) until ctx ends. https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
func CreateSnapshot(ctx context.Context, c EC2, r SnapshotRequest) (Snapshot, error) {
	in := &ec2.CreateSnapshotInput{
		VolumeId:          aws.String(r.Volume.ID),
		Description:       aws.String(r.Description),
		TagSpecifications: TagSpec(ec2types.ResourceTypeSnapshot, r.tags()),
	}
	var out *ec2.CreateSnapshotOutput
	var made *Snapshot // found after a lost answer
	maybeMade := false // a call failed in a way that may have been carried out
	err := Poll(ctx, nopLogger, wait.Spec{What: "CreateSnapshot of " + r.Volume.ID, Bound: time.Until(wait.Deadline(ctx)), Initial: time.Second, Max: 5 * time.Second},
		func(ctx context.Context) (bool, string, error) {
			if maybeMade {
				s, err := findRequested(ctx, c, r)
				if err != nil {
					return false, "", backoff.Permanent(err)
				}
				if s != nil {
					made = s
					return true, "", nil
				}
			}
			o, err := c.CreateSnapshot(ctx, in, noSDKRetry)
			switch {
			case err == nil:
				out = o
				return true, "", nil
			case HasCode(err, codeSnapshotRateExceeded, codeConcurrentSnapshots):
				return false, errorCode(err), nil
			case sdkRetryable(err):
				maybeMade = true
				return false, "retrying after " + errorCode(err), nil
			}
			return false, "", backoff.Permanent(err)
		})
	if made != nil {
		return *made, nil
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("create snapshot of %s: %w", r.Volume.ID, err)
	}
	return Snapshot{
		ID:             aws.ToString(out.SnapshotId),
		State:          string(out.State),
		Progress:       aws.ToString(out.Progress),
		Generation:     r.Volume.Generation,
		Consistent:     r.Consistent,
		Final:          r.Final,
		SourceVolume:   r.Volume.ID,
		SourceInstance: r.InstanceID,
		VolumeSizeGiB:  aws.ToInt32(out.VolumeSize),
		StartTime:      aws.ToTime(out.StartTime),
		Tags:           TagMap(out.Tags),
	}, nil
}

// noSDKRetry makes one call without the SDK's retries, for a call that is not idempotent.
func noSDKRetry(o *ec2.Options) { o.RetryMaxAttempts = 1 }

// sdkRetryable says whether the SDK's standard retryer would retry err: throttling, 5xx, a broken
// connection. Such a call may or may not have been carried out.
func sdkRetryable(err error) bool {
	return retry.IsErrorRetryables(retry.DefaultRetryables).IsErrorRetryable(err) == aws.TrueTernary
}

// findRequested looks for the snapshot r asks for, made by a call whose answer was lost: r's volume,
// source instance and description, and r's consistent, final and epoch tags (a rerun of down may ask for a
// consistent snapshot under the description of an earlier one that is not).
func findRequested(ctx context.Context, c EC2, r SnapshotRequest) (*Snapshot, error) {
	s, err := FindSnapshotOf(ctx, c, SnapshotQuery{Group: r.Group, Slot: r.Slot, VolumeID: r.Volume.ID, InstanceID: r.InstanceID, Description: r.Description})
	if err != nil || s == nil {
		return nil, err
	}
	if s.Consistent != r.Consistent || s.Final != r.Final || s.Tags[TagEpoch] != r.Epoch {
		return nil, nil
	}
	return s, nil
}

// SnapshotQuery names the snapshot a run of down took of one volume: by its slot tags, its source tags and
// its description, which scopes it to the run's occasion.
type SnapshotQuery struct {
	Group, Slot string
	VolumeID    string
	InstanceID  string
	Description string
}

// FindSnapshotOf returns the newest snapshot (not in error) matching q, or nil when there is none.
func FindSnapshotOf(ctx context.Context, c EC2, q SnapshotQuery) (*Snapshot, error) {
	filters := append(SlotFilters(q.Group, q.Slot),
		ec2types.Filter{Name: aws.String("tag:" + TagSourceVolume), Values: []string{q.VolumeID}},
		ec2types.Filter{Name: aws.String("tag:" + TagSourceInstance), Values: []string{q.InstanceID}},
		ec2types.Filter{Name: aws.String("description"), Values: []string{q.Description}},
	)
	res, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: filters})
	if err != nil {
		return nil, fmt.Errorf("look for a snapshot of %s taken by an earlier down: %w", q.VolumeID, err)
	}
	var best *Snapshot
	for _, sn := range res.Snapshots {
		s := ToSlotSnapshot(sn)
		if s.State == SnapshotError {
			continue
		}
		if best == nil || s.StartTime.After(best.StartTime) {
			best = &s
		}
	}
	return best, nil
}

// SnapshotEndedError is a snapshot that stopped being pending in a state other than completed.
type SnapshotEndedError struct {
	ID, State string
}

func (e *SnapshotEndedError) Error() string {
	return fmt.Sprintf("snapshot %s ended %s", e.ID, e.State)
}

// WaitSnapshotCompleted waits, at most bound, until a snapshot the caller has just created is no longer
// pending (WaitSnapshot), then describes it again and fails with a *SnapshotEndedError when it ended in
// error. EC2 may not list a snapshot for a while after CreateSnapshot answered ("if you run a command to
// modify or describe the resource that you just created, its ID might not have propagated throughout the
// system", https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html): until it is listed,
// or for at most tokenVisibilityBound, InvalidSnapshot.NotFound means "not yet", not "gone". Taking it for
// gone made up fall back from its snapshot of an orphaned volume to an older one, losing the writes since.
func WaitSnapshotCompleted(ctx context.Context, log *slog.Logger, c EC2, id string, bound time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	log = log.With(logkey.Step, "snapshot")
	if err := waitSnapshotListed(wctx, log, c, id); err != nil {
		return err
	}
	if err := WaitSnapshot(wctx, log, c, id); err != nil {
		return err
	}
	s, err := DescribeSnapshot(ctx, c, id)
	if err != nil {
		return err
	}
	if s.State != SnapshotCompleted {
		return &SnapshotEndedError{ID: id, State: s.State}
	}
	return nil
}

// waitSnapshotListed waits until DescribeSnapshots finds a snapshot just created, at most
// tokenVisibilityBound: past it, the snapshot is gone (deleted, or never made).
func waitSnapshotListed(ctx context.Context, log *slog.Logger, c EC2, id string) error {
	err := Poll(ctx, log, wait.Spec{What: "snapshot " + id + " to be listed", Bound: tokenVisibilityBound, Max: time.Second},
		func(ctx context.Context) (bool, string, error) {
			_, err := DescribeSnapshot(ctx, c, id)
			if HasCode(err, CodeSnapshotNotFound) {
				return false, "not listed yet", nil
			}
			return err == nil, "", err
		})
	if errors.Is(err, wait.ErrTimeout) {
		return fmt.Errorf("snapshot %s is still not listed %s after it was created: %w", id, tokenVisibilityBound, err)
	}
	return err
}

// DeleteSnapshot deletes a snapshot. One already gone counts as deleted (a rerun, or an operator was
// first). Any other failure is returned wrapped, so that the caller classifies it by code: DeleteSnapshot
// refuses a snapshot an AMI uses with InvalidSnapshot.InUse (CodeSnapshotInUse).
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteSnapshot.html
func DeleteSnapshot(ctx context.Context, c EC2, id string) error {
	_, err := c.DeleteSnapshot(ctx, &ec2.DeleteSnapshotInput{SnapshotId: aws.String(id)})
	if err == nil || HasCode(err, CodeSnapshotNotFound) {
		return nil
	}
	return fmt.Errorf("delete snapshot %s: %w", id, err)
}
