package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
)

// runInstanceOfType launches a running instance of the given type in az, tagged for the test group.
func (w *testRegion) runInstanceOfType(az string, typ ec2types.InstanceType) string {
	w.t.Helper()
	out, err := w.ec2.RunInstances(w.ctx(), &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: typ, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement: &ec2types.Placement{AvailabilityZone: aws.String(az)},
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{HttpTokens: ec2types.HttpTokensStateRequired,
			InstanceMetadataTags: ec2types.InstanceMetadataTagsStateEnabled},
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeInstance, groupTags),
	})
	if err != nil {
		w.t.Fatalf("RunInstances: %v", err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	w.waitInstanceState(id, "running")
	return id
}

// TestUpRefusesXenInstanceAtOnce: on a Xen instance (t2.micro: no NVMe EBS controller in its sysfs, the
// hypervisor Xen) up exits 3 within a second with one line that says why and what to do, having made no
// mutating API call (no address taken, no volume made or attached); with --no-mount, which needs no
// device, it is not refused.
func TestUpRefusesXenInstanceAtOnce(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	xen := w.runInstanceOfType("us-east-1a", ec2types.InstanceTypeT2Micro)
	w.sim.ResetCalls()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	res := w.runAgent(ctx, xen, nil, w.upArgs(xen)...)
	if res.code != fail.CodePrecondition {
		t.Fatalf("up on a Xen instance: exit %d, want %d\n%s", res.code, fail.CodePrecondition, res.stderr)
	}
	if ctx.Err() != nil {
		t.Fatalf("up took a second or more to refuse")
	}
	lines := strings.Split(strings.TrimSpace(res.stderr), "\n")
	last := lines[len(lines)-1]
	for _, want := range []string{"no NVMe EBS controller", "Nitro", xen} {
		if !strings.Contains(last, want) {
			t.Errorf("the failure line does not say %q: %q", want, last)
		}
	}
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("up made mutating calls before refusing: %v", m)
	}
	if res := w.runAgent(w.ctx(), xen, nil, w.upArgs(xen, "--no-mount")...); res.code != fail.CodeOK {
		t.Errorf("up --no-mount on a Xen instance: exit %d, want 0 (it needs no device)\n%s", res.code, res.stderr)
	}
}
