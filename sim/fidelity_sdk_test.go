package sim

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/sim/motoserver"
	"github.com/handover/handover/sim/simtest"
)

// sdkConfig points aws-sdk-go-v2 at endpoint with dummy credentials, no
// proxy and no retries (so every error shows).
func sdkConfig(endpoint string) aws.Config {
	return aws.Config{
		Region:           "us-east-1",
		Credentials:      credentials.NewStaticCredentialsProvider("AKIDFIDELITY", "fidelity-secret", ""),
		BaseEndpoint:     aws.String(endpoint),
		HTTPClient:       &http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 30 * time.Second},
		RetryMaxAttempts: 1,
	}
}

func ec2Tags(kv ...string) []ec2types.Tag {
	var out []ec2types.Tag
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, ec2types.Tag{Key: aws.String(kv[i]), Value: aws.String(kv[i+1])})
	}
	return out
}

func sdkTagMap(tags []ec2types.Tag) map[string]string {
	out := map[string]string{}
	for _, t := range tags {
		out[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return out
}

// sdkScenario is the EC2 and Auto Scaling core of the CLI scenario through
// aws-sdk-go-v2 and its waiters and paginators; imdsFor (nil on targets
// without a per-instance IMDS) gives an instance's IMDS endpoint.
func sdkScenario(t *testing.T, endpoint string, caps capabilities, imdsFor func(id string) string) *outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := sdkConfig(endpoint)
	e := ec2.NewFromConfig(cfg)
	as := autoscaling.NewFromConfig(cfg)
	o := &outcome{}
	const azA, azB = "us-east-1a", "us-east-1b"
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	run := func(az, name string) string {
		out, err := e.RunInstances(ctx, &ec2.RunInstancesInput{
			ImageId: aws.String("ami-12345678"), InstanceType: ec2types.InstanceTypeT3Micro, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			Placement: &ec2types.Placement{AvailabilityZone: aws.String(az)},
			MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired,
				InstanceMetadataTags: ec2types.InstanceMetadataTagsStateEnabled},
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeInstance, Tags: ec2Tags("Name", name, "fidelity", "sdk")}},
		})
		must("RunInstances", err)
		return aws.ToString(out.Instances[0].InstanceId)
	}
	instA, instB := run(azA, "sdk-a"), run(azB, "sdk-b")
	must("InstanceRunningWaiter", ec2.NewInstanceRunningWaiter(e, func(o *ec2.InstanceRunningWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{instA, instB}}, time.Minute))
	di, err := e.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:fidelity"), Values: []string{"sdk"}}}})
	must("DescribeInstances", err)
	var insts []any
	for _, res := range di.Reservations {
		for _, in := range res.Instances {
			insts = append(insts, map[string]any{"id": aws.ToString(in.InstanceId), "state": string(in.State.Name),
				"az": aws.ToString(in.Placement.AvailabilityZone), "tags": sdkTagMap(in.Tags),
				"metadataTags": string(in.MetadataOptions.InstanceMetadataTags)})
		}
	}
	o.rec("instances", insts)
	if len(insts) != 2 {
		t.Errorf("DescribeInstances tag:fidelity=sdk: got %v", insts)
	}

	cv, err := e.CreateVolume(ctx, &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(azA), Size: aws.Int32(2), VolumeType: ec2types.VolumeTypeGp3, Iops: aws.Int32(4000), Throughput: aws.Int32(250),
		Encrypted: aws.Bool(true), TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: ec2Tags("fidelity", "sdk")}},
	})
	must("CreateVolume", err)
	data := aws.ToString(cv.VolumeId)
	volWait := func(id string) {
		t.Helper()
		must("VolumeAvailableWaiter "+id, ec2.NewVolumeAvailableWaiter(e, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
			Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}}, time.Minute))
	}
	// VolumeInUse is satisfied while the attachment is still "attaching"
	// (the volume is in-use from the call on); callers poll the attachment.
	attachedWait := func(id string) {
		t.Helper()
		simtest.Eventually(t, fidelityBound, "volume "+id+" attached", func() (bool, string) {
			out, err := e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
			must("DescribeVolumes "+id, err)
			a := out.Volumes[0].Attachments
			return len(a) == 1 && a[0].State == ec2types.VolumeAttachmentStateAttached, fmt.Sprintf("attachments %+v", a)
		})
	}
	volWait(data)
	_, err = e.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(data), InstanceId: aws.String(instA), Device: aws.String("/dev/sdf")})
	must("AttachVolume", err)
	must("VolumeInUseWaiter", ec2.NewVolumeInUseWaiter(e, func(o *ec2.VolumeInUseWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{data}}, time.Minute))
	attachedWait(data)
	_, err = e.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{missingVolume}})
	wantCode(t, err, "InvalidVolume.NotFound")
	if caps.azRules {
		_, err = e.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(data), InstanceId: aws.String(instB), Device: aws.String("/dev/sdg")})
		wantCode(t, err, "InvalidVolume.ZoneMismatch")
	}

	cs, err := e.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: aws.String(data),
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeSnapshot, Tags: ec2Tags("fidelity", "sdk")}}})
	must("CreateSnapshot", err)
	snap := aws.ToString(cs.SnapshotId)
	must("SnapshotCompletedWaiter", ec2.NewSnapshotCompletedWaiter(e, func(o *ec2.SnapshotCompletedWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}}, time.Minute))
	rv, err := e.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(azB), SnapshotId: aws.String(snap), VolumeType: ec2types.VolumeTypeGp3,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: ec2Tags("fidelity", "sdk")}}})
	must("CreateVolume from snapshot", err)
	restored := aws.ToString(rv.VolumeId)
	volWait(restored)
	_, err = e.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(restored), InstanceId: aws.String(instB), Device: aws.String("/dev/sdf")})
	must("AttachVolume restored", err)
	must("VolumeInUseWaiter restored", ec2.NewVolumeInUseWaiter(e, func(o *ec2.VolumeInUseWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{restored}}, time.Minute))
	attachedWait(restored)

	// Six more volumes, read back through the paginator in pages of 5.
	var batch []string
	for i := range 6 {
		out, err := e.CreateVolume(ctx, &ec2.CreateVolumeInput{AvailabilityZone: aws.String(azA), Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeGp3,
			TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeVolume, Tags: ec2Tags("fidelity", "sdk", "n", fmt.Sprint(i))}}})
		must("CreateVolume batch", err)
		batch = append(batch, aws.ToString(out.VolumeId))
	}
	must("VolumeAvailableWaiter batch", ec2.NewVolumeAvailableWaiter(e, func(o *ec2.VolumeAvailableWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &ec2.DescribeVolumesInput{VolumeIds: batch}, time.Minute))
	var vols []any
	pages := 0
	pg := ec2.NewDescribeVolumesPaginator(e, &ec2.DescribeVolumesInput{MaxResults: aws.Int32(5),
		Filters: []ec2types.Filter{{Name: aws.String("tag:fidelity"), Values: []string{"sdk"}}}})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		must("DescribeVolumes page", err)
		pages++
		for _, v := range out.Volumes {
			var att []any
			for _, a := range v.Attachments {
				att = append(att, map[string]any{"instance": aws.ToString(a.InstanceId), "device": aws.ToString(a.Device), "state": string(a.State)})
			}
			vols = append(vols, map[string]any{"id": aws.ToString(v.VolumeId), "az": aws.ToString(v.AvailabilityZone), "size": aws.ToInt32(v.Size),
				"state": string(v.State), "snapshot": aws.ToString(v.SnapshotId), "encrypted": aws.ToBool(v.Encrypted), "attachments": att})
		}
	}
	o.rec("describe-volumes paginated", vols)
	if len(vols) != 8 {
		t.Errorf("DescribeVolumes paginator: %d volumes, want 8", len(vols))
	}
	if caps.name == simCaps.name && pages < 2 {
		t.Errorf("DescribeVolumes paginator over 8 volumes with MaxResults 5: %d pages, want at least 2", pages)
	}

	// Auto Scaling: a group over both zones, waited for with the SDK waiter.
	_, err = e.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("sdk-lt"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-12345678"), InstanceType: ec2types.InstanceTypeT3Micro}})
	must("CreateLaunchTemplate", err)
	_, err = as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("sdk-asg"),
		LaunchTemplate: &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("sdk-lt"), Version: aws.String("$Latest")},
		MinSize:        aws.Int32(1), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(2), AvailabilityZones: []string{azA, azB},
		Tags: []asgtypes.Tag{{Key: aws.String("role"), Value: aws.String("sdk"), PropagateAtLaunch: aws.Bool(true)}}})
	must("CreateAutoScalingGroup", err)
	must("GroupInServiceWaiter", autoscaling.NewGroupInServiceWaiter(as, func(o *autoscaling.GroupInServiceWaiterOptions) { o.MinDelay = 100 * time.Millisecond }).
		Wait(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"sdk-asg"}}, time.Minute))
	dg, err := as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"sdk-asg"}})
	must("DescribeAutoScalingGroups", err)
	g := dg.AutoScalingGroups[0]
	var states []string
	for _, in := range g.Instances {
		states = append(states, string(in.LifecycleState))
	}
	o.rec("group", map[string]any{"desired": aws.ToInt32(g.DesiredCapacity), "zones": g.AvailabilityZones, "states": states})
	if len(g.Instances) != 2 {
		t.Errorf("DescribeAutoScalingGroups sdk-asg: %d instances, want 2", len(g.Instances))
	}

	// IMDS of the first instance, where the target has one.
	if imdsFor != nil {
		c := imds.New(imds.Options{Endpoint: imdsFor(instA), ClientEnableState: imds.ClientEnabled})
		doc, err := c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{})
		must("IMDS identity document", err)
		if doc.InstanceID != instA || doc.AvailabilityZone != azA || doc.Region != "us-east-1" {
			t.Errorf("IMDS identity document of %s: got %+v", instA, doc.InstanceIdentityDocument)
		}
		for path, want := range map[string]string{"tags/instance/Name": "sdk-a", "placement/availability-zone": azA, "instance-id": instA} {
			out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
			must("IMDS "+path, err)
			b := make([]byte, 256)
			n, _ := out.Content.Read(b)
			_ = out.Content.Close()
			if got := string(b[:n]); got != want {
				t.Errorf("IMDS %s of %s: got %q, want %q", path, instA, got, want)
			}
		}
	}
	return o
}

// TestFidelitySDK runs the SDK scenario against the sim and moto_server and
// compares what both model.
func TestFidelitySDK(t *testing.T) {
	t.Parallel()
	var simOut, motoOut *outcome
	t.Run("targets", func(t *testing.T) {
		t.Run("sim", func(t *testing.T) {
			t.Parallel()
			r := startFidelitySim(t)
			simOut = sdkScenario(t, r.Endpoint(), simCaps, func(id string) string {
				env, err := r.InstanceEnv(id)
				if err != nil {
					t.Fatal(err)
				}
				return env["AWS_EC2_METADATA_SERVICE_ENDPOINT"]
			})
			if !slices.ContainsFunc(r.Calls(), func(c Call) bool { return c.Action == "CreateAutoScalingGroup" && c.Code == "" }) {
				t.Error("call log: no successful CreateAutoScalingGroup")
			}
		})
		t.Run("moto", func(t *testing.T) {
			t.Parallel()
			motoOut = sdkScenario(t, motoserver.Start(t), motoCaps, nil)
		})
	})
	if simOut == nil || motoOut == nil {
		t.Skip("a target did not finish the scenario: nothing to compare")
	}
	compareOutcomes(t, simOut, motoOut, "sim", "moto")
}
