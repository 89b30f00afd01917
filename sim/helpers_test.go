package sim

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// startRegion starts a fast region on a loopback port and stops it when the
// test ends.
func startRegion(t testing.TB, o Options) *Region {
	t.Helper()
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	if o.Speed == 0 {
		o.Speed = 1000
	}
	r, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func awsConfig(r *Region, accessKey string) aws.Config {
	return aws.Config{
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider(accessKey, "secret", ""),
		BaseEndpoint: aws.String(r.Endpoint()),
	}
}

// ec2Client is the real SDK client pointed at the simulator, with retries
// off so tests see every error.
func ec2Client(r *Region) *ec2.Client {
	return ec2.NewFromConfig(awsConfig(r, "AKIDTEST"), func(o *ec2.Options) { o.RetryMaxAttempts = 1 })
}

func asgClient(r *Region) *autoscaling.Client {
	return autoscaling.NewFromConfig(awsConfig(r, "AKIDTEST"), func(o *autoscaling.Options) { o.RetryMaxAttempts = 1 })
}

func imdsClient(t testing.TB, r *Region, id string) *imds.Client {
	t.Helper()
	env, err := r.InstanceEnv(id)
	if err != nil {
		t.Fatal(err)
	}
	return imds.New(imds.Options{Endpoint: env["AWS_EC2_METADATA_SERVICE_ENDPOINT"], ClientEnableState: imds.ClientEnabled})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantCode fails unless err is an AWS API error with code.
func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("want API error %s, got %v", code, err)
	}
	if ae.ErrorCode() != code {
		t.Fatalf("want error code %s, got %s (%s)", code, ae.ErrorCode(), ae.ErrorMessage())
	}
}

func idle(t testing.TB, r *Region) {
	t.Helper()
	if err := r.WaitIdle(ctxT(t)); err != nil {
		t.Fatal(err)
	}
}

// waitBound limits simtest.Eventually in these tests: a wedged test fails, a slow machine does not.
const waitBound = 30 * time.Second

func runInstance(t testing.TB, r *Region, az string, tags map[string]string) string {
	t.Helper()
	in := &ec2.RunInstancesInput{
		ImageId: aws.String("ami-12345678"), InstanceType: ec2types.InstanceTypeT3Micro,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement:       &ec2types.Placement{AvailabilityZone: aws.String(az)},
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired, InstanceMetadataTags: ec2types.InstanceMetadataTagsStateEnabled},
	}
	if len(tags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: toTags(tags)}}
	}
	out, err := ec2Client(r).RunInstances(ctxT(t), in)
	if err != nil {
		t.Fatal(err)
	}
	return *out.Instances[0].InstanceId
}

func toTags(m map[string]string) []ec2types.Tag {
	var out []ec2types.Tag
	for k, v := range m {
		out = append(out, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	return out
}

func createVolume(t testing.TB, r *Region, az string, size int32, tags map[string]string) string {
	t.Helper()
	in := &ec2.CreateVolumeInput{AvailabilityZone: aws.String(az), Size: aws.Int32(size), VolumeType: ec2types.VolumeTypeGp3}
	if len(tags) > 0 {
		in.TagSpecifications = []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: toTags(tags)}}
	}
	out, err := ec2Client(r).CreateVolume(ctxT(t), in)
	if err != nil {
		t.Fatal(err)
	}
	return *out.VolumeId
}

func describeVolume(t testing.TB, r *Region, id string) ec2types.Volume {
	t.Helper()
	out, err := ec2Client(r).DescribeVolumes(ctxT(t), &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Volumes[0]
}
