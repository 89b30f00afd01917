package agent

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
)

// refuseRetire is the EC2 API of a role that may tag volumes only as it creates them and may not delete
// them: CreateTags of handover:superseded and DeleteVolume fail.
type refuseRetire struct{ cloud.EC2 }

func (c refuseRetire) CreateTags(ctx context.Context, in *ec2.CreateTagsInput, opts ...func(*ec2.Options)) (*ec2.CreateTagsOutput, error) {
	for _, t := range in.Tags {
		if aws.ToString(t.Key) == cloud.TagSuperseded {
			return nil, &smithy.GenericAPIError{Code: cloud.CodeUnauthorizedOp, Message: "You are not authorized to perform this operation."}
		}
	}
	return c.EC2.CreateTags(ctx, in, opts...)
}

func (c refuseRetire) DeleteVolume(context.Context, *ec2.DeleteVolumeInput, ...func(*ec2.Options)) (*ec2.DeleteVolumeOutput, error) {
	return nil, &smithy.GenericAPIError{Code: cloud.CodeUnauthorizedOp, Message: "You are not authorized to perform this operation."}
}

// TestUpRetireFailureIsAWarning: the replacement reattaches and mounts its volume, then cannot tag the
// older generation superseded nor delete it (--delete-superseded; the current volume's snapshot has
// completed, so retention does try). That is a warning in the log and the
// summary: up exits 0 and completes the launch hook with CONTINUE rather than ABANDON, which would make
// the group terminate a healthy instance.
func TestUpRetireFailureIsAWarning(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	// In the zone the group launches in: the replacement reattaches the volume, whose snapshot has
	// completed, so retention goes on to the older one (it waits for a snapshot of a restored volume).
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	w.unmount(w.mountPoint(old))
	first := aws.ToString(w.slotVolumes()[0].VolumeId)
	w.snapshot(first, 1, true, true)
	older := w.createSlotVolume("us-east-1c", 0, nil) // a generation before it: a completed snapshot holds its data
	w.terminate(old)
	w.waitVolumeState(first, "available")

	id := w.launchGroup("orders-asg", nil) // us-east-1a, held in Pending:Wait by the hook "launch"
	refusing := func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error) {
		c, err := cloud.NewClients(ctx, getenv, region)
		if err != nil {
			return nil, err
		}
		c.EC2 = refuseRetire{c.EC2}
		return c, nil
	}
	var stdout, stderr bytes.Buffer
	err := up(w.ctx(), Env{Getenv: w.agentEnv(id, nil), Stdout: &stdout, Stderr: &stderr},
		w.upArgs(id, "--launch-hook", "launch", "--delete-superseded")[1:], refusing)
	if err != nil {
		t.Fatalf("up failed over a superseded tag: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if _, mounted, err := host.New("/dev", "/sys").MountedAt(w.mountPoint(id)); err != nil || !mounted {
		t.Errorf("%s not mounted after up (%v)", w.mountPoint(id), err)
	}
	if s := w.lifecycleState(id); s != "InService" && s != "Pending:Proceed" {
		t.Errorf("lifecycle state after up: %s, want Pending:Proceed or InService (CONTINUE)", s)
	}
	for _, want := range []string{
		"warning    data: could not tag " + older + " " + cloud.TagSuperseded + "=true",
		"warning    data: could not delete superseded volume " + older,
		"hook launch completed with CONTINUE",
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}
	if strings.Contains(stdout.String(), "could not delete superseded volume "+first) {
		t.Errorf("retention tried to delete %s, the source of the newest completed snapshot:\n%s", first, stdout.String())
	}
	if strings.Contains(stderr.String(), "result=ABANDON") {
		t.Errorf("the launch was abandoned:\n%s", stderr.String())
	}
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) == older && tagOf(v.Tags, cloud.TagSuperseded) != "" {
			t.Errorf("%s is tagged superseded although every CreateTags of it failed", older)
		}
	}
}
