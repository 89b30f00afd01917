package cloud

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

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
	codeValidationError      = "ValidationError"       // Auto Scaling, e.g. no active lifecycle action
	CodeUnauthorizedOp       = "UnauthorizedOperation" // EC2: the caller's IAM policy does not allow the call
	codeAccessDenied         = "AccessDenied"          // Auto Scaling's name for it
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

// throttleToCaller is the call option of a wait's own checks: the SDK still retries what fails for a
// moment (a 500, a connection reset) but hands throttling straight back, so that wait.Poll's pressure
// spaces the wait's calls out. Retried inside the SDK instead, every instance of a mass recovery would
// come back at least every 2 s (the retryer's cap) and the polls of hundreds of waits would keep the
// account's bucket empty for the calls that must go through (the fences, the attaches).
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
func throttleToCaller(o *ec2.Options) {
	if o.Retryer != nil {
		o.Retryer = throttlePassthrough{o.Retryer}
	}
}

type throttlePassthrough struct{ aws.Retryer }

func (r throttlePassthrough) IsErrorRetryable(err error) bool {
	return !IsThrottled(err) && r.Retryer.IsErrorRetryable(err)
}

// IsDenied reports whether err is AWS refusing a call the caller's IAM policy does not allow. It is not
// transient: nothing retries it (the SDK does not retry a 403, Poll stops on it), and a rerun fails the
// same way until the role has the permission.
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
func IsDenied(err error) bool { return HasCode(err, CodeUnauthorizedOp, codeAccessDenied) }

// DeniedError is a call AWS refused for want of an IAM permission (IsDenied), with the IAM actions the
// call needs. They come from the operation the SDK made, never from AWS's message text.
type DeniedError struct {
	Actions []string // "ec2:AttachVolume"; a creation with tags also needs "ec2:CreateTags"
	Err     error    // the SDK's error: AWS's code and message
}

// Error is the one line an operator reads: the action to add, where, and AWS's own words (which name the
// principal, the action and the resource's ARN).
func (e *DeniedError) Error() string {
	var b strings.Builder
	b.WriteString("not authorized to call ")
	b.WriteString(e.Actions[0])
	it := "it"
	if len(e.Actions) > 1 {
		b.WriteString(" (and " + strings.Join(e.Actions[1:], ", ") + " for the tags it sets)")
		it = "them"
	}
	b.WriteString(": add " + it + " to the IAM role handover runs with (handover iam-policy prints the policy)")
	var ae smithy.APIError
	if errors.As(e.Err, &ae) {
		b.WriteString("; AWS said " + ae.ErrorCode() + ": " + ae.ErrorMessage())
	}
	return b.String()
}

func (e *DeniedError) Unwrap() error { return e.Err }

// DeniedIn returns the DeniedError in err's chain, or nil.
func DeniedIn(err error) *DeniedError {
	var d *DeniedError
	if errors.As(err, &d) {
		return d
	}
	return nil
}

// iamPrefixes are the IAM service prefixes of the SDK's service IDs.
var iamPrefixes = map[string]string{ec2.ServiceID: "ec2", autoscaling.ServiceID: "autoscaling"}

// reportDenied is a middleware of every client NewClients makes: it turns a refused call into a
// DeniedError naming its IAM actions. It sits in the Initialize step, outside the retry loop (Finalize),
// so it sees the call's final answer once.
func reportDenied(stack *middleware.Stack) error {
	return stack.Initialize.Add(middleware.InitializeMiddlewareFunc("HandoverReportDenied",
		func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
			out, md, err := next.HandleInitialize(ctx, in)
			if err == nil || !IsDenied(err) {
				return out, md, err
			}
			prefix, ok := iamPrefixes[middleware.GetServiceID(ctx)]
			if !ok {
				return out, md, err
			}
			actions := []string{prefix + ":" + middleware.GetOperationName(ctx)}
			// Tags given at creation are authorized as ec2:CreateTags too:
			// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/supported-iam-actions-tagging.html
			switch p := in.Parameters.(type) {
			case *ec2.CreateVolumeInput:
				if len(p.TagSpecifications) > 0 {
					actions = append(actions, "ec2:CreateTags")
				}
			case *ec2.CreateSnapshotInput:
				if len(p.TagSpecifications) > 0 {
					actions = append(actions, "ec2:CreateTags")
				}
			}
			return out, md, &DeniedError{Actions: actions, Err: err}
		}), middleware.After)
}
