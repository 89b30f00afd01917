package agent

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/imds/imdsmock"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim/motoserver"
)

// Wire compatibility with a third-party emulator: `handover up` against moto_server (EC2 and Auto
// Scaling) and AWS's amazon-ec2-metadata-mock, for the Elastic IP claim and a cross-AZ restore. moto
// makes every transition instant and has no lifecycle actions, hence --no-mount and --no-complete.

func TestUpAgainstMoto(t *testing.T) {
	t.Parallel()
	endpoint := motoserver.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := ec2.NewFromConfig(aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDMOTO", "moto", "")},
		func(o *ec2.Options) { o.BaseEndpoint = aws.String(endpoint) })

	// The world: generation 1 of the slot in us-east-1a with a completed snapshot, the group's address,
	// and a new instance in us-east-1b.
	v, err := admin.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeGp3,
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: "1"})})
	if err != nil {
		t.Fatalf("CreateVolume: %v", err)
	}
	old := aws.ToString(v.VolumeId)
	s, err := admin.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: v.VolumeId,
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeSnapshot, map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: "1", cloud.TagConsistent: "true", cloud.TagFinal: "true", cloud.TagSourceVolume: aws.ToString(v.VolumeId)})})
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	snapID := aws.ToString(s.SnapshotId)
	a, err := admin.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc})
	if err != nil {
		t.Fatalf("AllocateAddress: %v", err)
	}
	if _, err := admin.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{aws.ToString(a.AllocationId)},
		Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(testGroup)}}}); err != nil {
		t.Fatalf("tag the address: %v", err)
	}
	images, err := admin.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(images.Images) == 0 {
		t.Fatalf("moto has no image to launch: %v", err)
	}
	ri, err := admin.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: images.Images[0].ImageId, InstanceType: ec2types.InstanceTypeM6iLarge,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), Placement: &ec2types.Placement{AvailabilityZone: aws.String("us-east-1b")}})
	if err != nil {
		t.Fatalf("RunInstances: %v", err)
	}
	id := aws.ToString(ri.Instances[0].InstanceId)

	md := imdsmock.Start(t, imdsmock.Config{InstanceID: id, Region: "us-east-1", AvailabilityZone: "us-east-1b", InstanceType: "m6i.large",
		Tags: map[string]string{cloud.TagGroup: testGroup}})
	dir := t.TempDir()
	env := mapEnv(map[string]string{
		"AWS_ENDPOINT_URL_EC2": endpoint, "AWS_ENDPOINT_URL_AUTO_SCALING": endpoint, "AWS_REGION": "us-east-1",
		"AWS_ACCESS_KEY_ID": "AKIDMOTO", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_EC2_METADATA_SERVICE_ENDPOINT": md,
		"HANDOVER_LOCK_FILE": filepath.Join(dir, "handover.lock"),
	})
	var stdout, stderr bytes.Buffer
	code := Main(ctx, []string{"up", "--no-mount", "--no-complete", "--size", "1", "--unit-dir", "none"}, Env{Getenv: env, Stdout: &stdout, Stderr: &stderr})
	if code != fail.CodeOK {
		t.Fatalf("up against moto exited %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}

	addrs, err := admin.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{aws.ToString(a.AllocationId)}})
	if err != nil || len(addrs.Addresses) != 1 || aws.ToString(addrs.Addresses[0].InstanceId) != id {
		t.Errorf("address after up: %+v, %v; want it on %s", addrs, err, id)
	}
	vols, err := admin.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: cloud.SlotFilters(testGroup, cloud.DefaultSlot)})
	if err != nil {
		t.Fatal(err)
	}
	var restored int
	for _, v := range vols.Volumes {
		switch aws.ToString(v.VolumeId) {
		case old:
			if tagOf(v.Tags, cloud.TagSuperseded) != "true" {
				t.Errorf("old volume %s not tagged superseded: %v", old, cloud.TagMap(v.Tags))
			}
		default:
			restored++
			if aws.ToString(v.AvailabilityZone) != "us-east-1b" || aws.ToString(v.SnapshotId) != snapID || tagOf(v.Tags, cloud.TagGeneration) != "2" ||
				len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != id || aws.ToString(v.Attachments[0].Device) != "/dev/sdf" {
				t.Errorf("restored volume %s: AZ %s, snapshot %s, tags %v, attachments %+v", aws.ToString(v.VolumeId), aws.ToString(v.AvailabilityZone),
					aws.ToString(v.SnapshotId), cloud.TagMap(v.Tags), v.Attachments)
			}
		}
	}
	if restored != 1 {
		t.Errorf("%d restored volumes, want 1", restored)
	}

	// A rerun converges on what is there.
	stdout.Reset()
	stderr.Reset()
	if code := Main(ctx, []string{"up", "--no-mount", "--no-complete", "--size", "1", "--unit-dir", "none"}, Env{Getenv: env, Stdout: &stdout, Stderr: &stderr}); code != fail.CodeOK ||
		!strings.Contains(stdout.String(), "already attached") {
		t.Errorf("rerun against moto: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
}
