package cloud

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go/middleware"
)

// EC2 is the part of the EC2 API handover calls, with the SDK's signatures; *ec2.Client satisfies it.
// Keeping it to exactly the methods used documents the IAM permissions and lets tests substitute one.
type EC2 interface {
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeInstanceStatus(context.Context, *ec2.DescribeInstanceStatusInput, ...func(*ec2.Options)) (*ec2.DescribeInstanceStatusOutput, error)
	StartInstances(context.Context, *ec2.StartInstancesInput, ...func(*ec2.Options)) (*ec2.StartInstancesOutput, error)
	StopInstances(context.Context, *ec2.StopInstancesInput, ...func(*ec2.Options)) (*ec2.StopInstancesOutput, error)
	DescribeTags(context.Context, *ec2.DescribeTagsInput, ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error)
	CreateTags(context.Context, *ec2.CreateTagsInput, ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error)
	DeleteTags(context.Context, *ec2.DeleteTagsInput, ...func(*ec2.Options)) (*ec2.DeleteTagsOutput, error)

	DescribeAddresses(context.Context, *ec2.DescribeAddressesInput, ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error)
	AssociateAddress(context.Context, *ec2.AssociateAddressInput, ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error)
	DisassociateAddress(context.Context, *ec2.DisassociateAddressInput, ...func(*ec2.Options)) (*ec2.DisassociateAddressOutput, error)

	DescribeVolumes(context.Context, *ec2.DescribeVolumesInput, ...func(*ec2.Options)) (*ec2.DescribeVolumesOutput, error)
	CreateVolume(context.Context, *ec2.CreateVolumeInput, ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error)
	AttachVolume(context.Context, *ec2.AttachVolumeInput, ...func(*ec2.Options)) (*ec2.AttachVolumeOutput, error)
	DetachVolume(context.Context, *ec2.DetachVolumeInput, ...func(*ec2.Options)) (*ec2.DetachVolumeOutput, error)
	DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error)
	// A restored volume's initialization (initialization.go): status and handover up.
	DescribeVolumeStatus(context.Context, *ec2.DescribeVolumeStatusInput, ...func(*ec2.Options)) (*ec2.DescribeVolumeStatusOutput, error)
	DescribeFastSnapshotRestores(context.Context, *ec2.DescribeFastSnapshotRestoresInput, ...func(*ec2.Options)) (*ec2.DescribeFastSnapshotRestoresOutput, error)

	DescribeSnapshots(context.Context, *ec2.DescribeSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeSnapshotsOutput, error)
	CreateSnapshot(context.Context, *ec2.CreateSnapshotInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotOutput, error)
	CreateSnapshots(context.Context, *ec2.CreateSnapshotsInput, ...func(*ec2.Options)) (*ec2.CreateSnapshotsOutput, error)
	DeleteSnapshot(context.Context, *ec2.DeleteSnapshotInput, ...func(*ec2.Options)) (*ec2.DeleteSnapshotOutput, error)
	// EBS snapshot lock (snapshot_lock.go): --lock-snapshots, and retention, which leaves locked ones alone.
	LockSnapshot(context.Context, *ec2.LockSnapshotInput, ...func(*ec2.Options)) (*ec2.LockSnapshotOutput, error)
	DescribeLockedSnapshots(context.Context, *ec2.DescribeLockedSnapshotsInput, ...func(*ec2.Options)) (*ec2.DescribeLockedSnapshotsOutput, error)
}

// AutoScaling is the part of the Auto Scaling API handover calls; *autoscaling.Client satisfies it.
type AutoScaling interface {
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	DescribeAutoScalingInstances(context.Context, *autoscaling.DescribeAutoScalingInstancesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
	CompleteLifecycleAction(context.Context, *autoscaling.CompleteLifecycleActionInput, ...func(*autoscaling.Options)) (*autoscaling.CompleteLifecycleActionOutput, error)
	RecordLifecycleActionHeartbeat(context.Context, *autoscaling.RecordLifecycleActionHeartbeatInput, ...func(*autoscaling.Options)) (*autoscaling.RecordLifecycleActionHeartbeatOutput, error)
	DescribeLifecycleHooks(context.Context, *autoscaling.DescribeLifecycleHooksInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeLifecycleHooksOutput, error)
	// Only `watch --on-rebalance=replace` calls it (RequestReplacement).
	TerminateInstanceInAutoScalingGroup(context.Context, *autoscaling.TerminateInstanceInAutoScalingGroupInput, ...func(*autoscaling.Options)) (*autoscaling.TerminateInstanceInAutoScalingGroupOutput, error)
}

var (
	_ EC2         = (*ec2.Client)(nil)
	_ AutoScaling = (*autoscaling.Client)(nil)
)

// Clients are the AWS API clients a command uses.
type Clients struct {
	EC2         EC2
	AutoScaling AutoScaling
	Region      string // the region the SDK settled on ("" when none was configured anywhere)
}

// NewClients builds SDK clients for region from the SDK's standard chain (instance role, environment,
// shared config). Endpoint and credential variables are read through getenv, not the process environment,
// so that tests and the simulator can run several instances' agents in one process.
//
// Retries: throttling (RequestLimitExceeded) during a mass recovery is expected and heals with time, so the
// SDK retries it with capped exponential backoff (max 2 s between attempts) until the command's context
// deadline, instead of the SDK's default of three attempts guarded by a client-side retry quota.
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
func NewClients(ctx context.Context, getenv func(string) string, region string) (*Clients, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 1000 // bounded by the context deadline, not by a count
				o.MaxBackoff = 2 * time.Second
				o.RateLimiter = ratelimit.None
			})
		}),
		config.WithAPIOptions([]func(*middleware.Stack) error{reportDenied}), // a refused call names its IAM action
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	if id, secret := getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"); id != "" && secret != "" {
		opts = append(opts, config.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(id, secret, getenv("AWS_SESSION_TOKEN"))))
	} else {
		// The instance role's credentials come from IMDS too: with IMDSv2 only, as everything else handover
		// reads there. The SDK's default client falls back to tokenless IMDSv1 when the token request is
		// refused, and says so on the process's stderr.
		opts = append(opts, config.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) {
			o.Client = imds.New(imds.Options{Endpoint: getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT"), EnableFallback: aws.FalseTernary})
		}))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	ec2Endpoint := FirstNonEmpty(getenv("AWS_ENDPOINT_URL_EC2"), getenv("AWS_ENDPOINT_URL"))
	asEndpoint := FirstNonEmpty(getenv("AWS_ENDPOINT_URL_AUTO_SCALING"), getenv("AWS_ENDPOINT_URL"))
	return &Clients{
		Region: cfg.Region,
		EC2: ec2.NewFromConfig(cfg, func(o *ec2.Options) {
			if ec2Endpoint != "" {
				o.BaseEndpoint = aws.String(ec2Endpoint)
			}
		}),
		AutoScaling: autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) {
			if asEndpoint != "" {
				o.BaseEndpoint = aws.String(asEndpoint)
			}
		}),
	}, nil
}

func FirstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
