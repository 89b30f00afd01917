package sim

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r, err := New(Options{StateDir: dir, Speed: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	vol := createVolume(t, r, "us-east-1a", 1, map[string]string{"k": "v"})
	inst := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	if _, err := ec2Client(r).AttachVolume(ctxT(t), &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	writeAt(t, r.volumeImage(vol), 0, []byte("kept"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := startRegion(t, Options{StateDir: dir})
	v := describeVolume(t, r2, vol)
	if v.State != ec2types.VolumeStateInUse || *v.Attachments[0].InstanceId != inst || v.Attachments[0].State != ec2types.VolumeAttachmentStateAttached || *v.Tags[0].Value != "v" {
		t.Fatalf("volume after restart: %+v", v)
	}
	if s := instanceState(t, r2, inst).State.Name; s != ec2types.InstanceStateNameRunning {
		t.Fatalf("instance after restart: %s", s)
	}
	if got, err := metadata(t, imdsClient(t, r2, inst), "instance-id"); err != nil || got != inst {
		t.Fatalf("imds after restart: %q %v", got, err)
	}
	if got := readAt(t, r2.volumeImage(vol), 0, 4); string(got) != "kept" {
		t.Fatalf("image after restart: %q", got)
	}
}

// TestCloseIsTheLastWrite: once Close returns, nothing writes into the state directory, not even a
// change through the in-process admin calls, so a caller may remove it (t.TempDir's cleanup does).
func TestCloseIsTheLastWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := startRegion(t, Options{StateDir: dir})
	id := runInstance(t, r, "us-east-1a", nil)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.KillInstance(id); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil || !bytes.Equal(before, after) {
		t.Fatalf("state.json changed after Close (err %v)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "state.json.tmp")); !os.IsNotExist(err) {
		t.Fatalf("a state save started after Close: %v", err)
	}
}
