package cloud

import (
	"context"
	"errors"
	"log/slog"

	"github.com/aws/smithy-go"
	"github.com/handover/handover/internal/wait"
)

// AWS error codes handover reacts to. They are matched by code, never by message text.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
const (
	codeThrottled            = "RequestLimitExceeded"
	codeThrottling           = "Throttling" // Auto Scaling's name for it
	CodeIncorrectState       = "IncorrectState"
	codeVolumeInUse          = "VolumeInUse"
	codeVolumeNotFound       = "InvalidVolume.NotFound"
	codeZoneMismatch         = "InvalidVolume.ZoneMismatch"
	CodeSnapshotNotFound     = "InvalidSnapshot.NotFound"
	CodeSnapshotInUse        = "InvalidSnapshot.InUse" // e.g. by an AMI; DeleteSnapshot refuses it
	CodeInstanceNotFound     = "InvalidInstanceID.NotFound"
	codeAllocationNotFound   = "InvalidAllocationID.NotFound"
	CodeAssociationNotFound  = "InvalidAssociationID.NotFound"
	codeAlreadyAssociated    = "Resource.AlreadyAssociated"
	codeSnapshotRateExceeded = "SnapshotCreationPerVolumeRateExceeded" // 15 s between snapshots of one volume
	codeConcurrentSnapshots  = "ConcurrentSnapshotLimitExceeded"       // one pending snapshot at a time (st1, sc1)
	codeIdempotentMismatch   = "IdempotentParameterMismatch"
	CodeIncorrectInstanceSt  = "IncorrectInstanceState"
	codeValidationError      = "ValidationError" // Auto Scaling, e.g. no active lifecycle action
	CodeUnauthorizedOp       = "UnauthorizedOperation"
	codeInvalidParameterVal  = "InvalidParameterValue"
	CodeAttachmentNotFound   = "InvalidAttachment.NotFound"
	codeDependencyViolation  = "DependencyViolation"
	CodeInsufficientCapacity = "InsufficientInstanceCapacity"
)

// errorCode returns the AWS error code of err, or "" when err is not an AWS API error.
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// HasCode reports whether err is an AWS API error with one of codes.
func HasCode(err error, codes ...string) bool {
	c := errorCode(err)
	if c == "" {
		return false
	}
	for _, want := range codes {
		if c == want {
			return true
		}
	}
	return false
}

// IsThrottled reports whether err is AWS telling us to slow down.
func IsThrottled(err error) bool { return HasCode(err, codeThrottled, codeThrottling) }

// Poll is wait.Poll for waits whose checks call AWS: throttling is waited out, not a failure.
func Poll(ctx context.Context, log *slog.Logger, w wait.Spec, check func(context.Context) (bool, string, error)) error {
	w.Transient = IsThrottled
	return wait.Poll(ctx, log, w, check)
}
