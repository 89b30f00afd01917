package sim

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// The region records each transition it carried out with the delay it drew (jitter included) and when it
// began and ended, so a benchmark can compute the least time for the very run it measured.
func TestTransitionsRecordWhatRan(t *testing.T) {
	const speed = 1000
	r := startRegion(t, Options{Speed: speed, Jitter: 0.3, Seed: 7})
	c := ec2Client(r)
	inst := runInstance(t, r, "us-east-1a", nil)
	idle(t, r)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	if _, err := c.AttachVolume(ctxT(t), &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)

	byKind := map[Transition]TransitionRecord{}
	for _, rec := range r.Transitions() {
		byKind[rec.Kind] = rec
	}
	for kind, want := range map[Transition]struct {
		id   string
		base time.Duration
	}{
		InstanceStart: {inst, DefaultDelays.InstanceStart},
		VolumeCreate:  {vol, DefaultDelays.CreateVolume},
		VolumeAttach:  {vol, DefaultDelays.Attach},
	} {
		rec, ok := byKind[kind]
		if !ok {
			t.Fatalf("no %s recorded; got %+v", kind, r.Transitions())
		}
		if rec.ID != want.id {
			t.Errorf("%s recorded for %s, want %s", kind, rec.ID, want.id)
		}
		nominal := want.base / speed
		if rec.Delay < nominal*7/10 || rec.Delay > nominal*13/10 {
			t.Errorf("%s drew %s, outside %s +-30%%", kind, rec.Delay, nominal)
		}
		if rec.Took() < rec.Delay {
			t.Errorf("%s took %s, less than its delay %s", kind, rec.Took(), rec.Delay)
		}
	}
	if byKind[VolumeCreate].Delay == DefaultDelays.CreateVolume/speed && byKind[VolumeAttach].Delay == DefaultDelays.Attach/speed {
		t.Error("jitter 0.3 drew the nominal delays exactly: the records do not carry the drawn delay")
	}

	r.ResetTransitions()
	if got := r.Transitions(); len(got) != 0 {
		t.Fatalf("after ResetTransitions: %+v", got)
	}
}

// A held transition ends at its release; a transition cancelled before it took effect is not recorded.
func TestTransitionsHeldAndCancelled(t *testing.T) {
	r := startRegion(t, Options{Speed: 1000})
	c := ec2Client(r)
	release := r.Hold(VolumeCreate, "")
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	if _, err := r.WaitHeld(ctxT(t), VolumeCreate, vol); err != nil {
		t.Fatal(err)
	}
	if got := r.Transitions(); len(got) != 0 {
		t.Fatalf("a held transition is recorded before its release: %+v", got)
	}
	released := time.Now()
	release()
	recs := r.Transitions()
	if len(recs) != 1 || recs[0].ID != vol {
		t.Fatalf("want one record for %s, got %+v", vol, recs)
	}
	if recs[0].End.Before(released) {
		t.Errorf("held create ended at %s, before its release at %s", recs[0].End, released)
	}

	snap, err := c.CreateSnapshot(ctxT(t), &ec2.CreateSnapshotInput{VolumeId: aws.String(vol)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteSnapshot(ctxT(t), &ec2.DeleteSnapshotInput{SnapshotId: snap.SnapshotId}); err != nil {
		t.Fatal(err)
	}
	idle(t, r)
	for _, rec := range r.Transitions() {
		if rec.Kind == SnapshotComplete {
			t.Errorf("a snapshot deleted while pending is recorded: %+v", rec)
		}
	}
}
