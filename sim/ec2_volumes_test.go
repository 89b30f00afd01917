package sim

import (
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestVolumeLifecycle(t *testing.T) {
	r := startRegion(t, Options{Speed: 100})
	c := ec2Client(r)
	ctx := ctxT(t)
	id := createVolume(t, r, "us-east-1a", 1, map[string]string{"handover:group": "web"})
	v := describeVolume(t, r, id)
	if v.State != ec2types.VolumeStateCreating || *v.Size != 1 || *v.AvailabilityZone != "us-east-1a" || *v.Iops != 3000 || *v.Throughput != 125 {
		t.Fatalf("new volume: %+v", v)
	}
	if len(v.Tags) != 1 || *v.Tags[0].Key != "handover:group" {
		t.Fatalf("tags: %+v", v.Tags)
	}
	idle(t, r)
	if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("want available, got %s", v.State)
	}
	iid := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	att, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(iid), Device: aws.String("/dev/sdf")})
	if err != nil {
		t.Fatal(err)
	}
	if att.State != ec2types.VolumeAttachmentStateAttaching {
		t.Fatalf("attach state %s", att.State)
	}
	v = describeVolume(t, r, id)
	if v.State != ec2types.VolumeStateInUse || v.Attachments[0].State != ec2types.VolumeAttachmentStateAttaching {
		t.Fatalf("attaching: %+v", v)
	}
	idle(t, r)
	v = describeVolume(t, r, id)
	if v.Attachments[0].State != ec2types.VolumeAttachmentStateAttached || *v.Attachments[0].InstanceId != iid || *v.Attachments[0].Device != "/dev/sdf" {
		t.Fatalf("attached: %+v", v.Attachments)
	}
	_, err = c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)})
	wantCode(t, err, "VolumeInUse")
	det, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(id), InstanceId: aws.String(iid)})
	if err != nil {
		t.Fatal(err)
	}
	if det.State != ec2types.VolumeAttachmentStateDetaching {
		t.Fatalf("detach state %s", det.State)
	}
	idle(t, r)
	if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateAvailable || len(v.Attachments) != 0 {
		t.Fatalf("detached: %+v", v)
	}
	if _, err := c.DeleteVolume(ctx, &ec2.DeleteVolumeInput{VolumeId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
	wantCode(t, err, "InvalidVolume.NotFound")
}
