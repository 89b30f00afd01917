package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// restoredVolume is the slot's volume in az (the one up restored there).
func (w *testRegion) restoredVolume(az string) ec2types.Volume {
	w.t.Helper()
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.AvailabilityZone) == az {
			return v
		}
	}
	w.t.Fatalf("no volume of the slot in %s", az)
	return ec2types.Volume{}
}

// TestUpRestoreWithInitializationRate: --initialization-rate goes into the CreateVolume of a restore (the
// volume carries it) and the summary says so; the same option on a first boot makes a blank volume
// without it (CreateVolume refuses a rate for a blank volume: the simulator is as strict).
func TestUpRestoreWithInitializationRate(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)

	first := w.runInstance("us-east-1a", groupTags, true)
	res := w.runAgent(w.ctx(), first, nil, w.upArgs(first, "--no-mount", "--initialization-rate", "300")...)
	mustSucceed(t, res)
	blank := w.restoredVolume("us-east-1a")
	if blank.VolumeInitializationRate != nil || tagOf(blank.Tags, cloud.TagCreatedBlank) != "true" {
		t.Errorf("first boot: rate %v, tags %v; want a blank volume without a rate", blank.VolumeInitializationRate, cloud.TagMap(blank.Tags))
	}
	if strings.Contains(res.stdout, "init ") {
		t.Errorf("a blank volume's summary talks of initialization:\n%s", res.stdout)
	}
	snap := w.snapshot(aws.ToString(blank.VolumeId), 1, true, true)
	w.terminate(first)

	id := w.runInstance("us-east-1b", groupTags, true)
	res = w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--initialization-rate", "300")...)
	mustSucceed(t, res)
	v := w.restoredVolume("us-east-1b")
	if aws.ToString(v.SnapshotId) != snap || aws.ToInt32(v.VolumeInitializationRate) != 300 || aws.ToBool(v.FastRestored) {
		t.Errorf("restored volume: snapshot %s, rate %d, fast restored %v; want %s at 300 MiB/s", aws.ToString(v.SnapshotId),
			aws.ToInt32(v.VolumeInitializationRate), aws.ToBool(v.FastRestored), snap)
	}
	if !strings.Contains(res.stdout, "init       data: provisioned rate 300 MiB/s") {
		t.Errorf("summary lacks the rate:\n%s", res.stdout)
	}
}

// TestUpFastSnapshotRestoreUsedAsIs: a snapshot enabled for fast snapshot restore in this AZ is restored
// without the configured rate (a rate would replace fast snapshot restore), fully initialized at creation,
// and the summary says so.
func TestUpFastSnapshotRestoreUsedAsIs(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	snap := w.snapshot(vol, 1, true, true)
	if _, err := w.ec2.EnableFastSnapshotRestores(w.ctx(), &ec2.EnableFastSnapshotRestoresInput{
		AvailabilityZones: []string{"us-east-1b"}, SourceSnapshotIds: []string{snap}}); err != nil {
		t.Fatal(err)
	}
	simtest.Eventually(t, waitBound, "fast snapshot restore enabled in us-east-1b", func() (bool, string) {
		ok, err := cloud.FastRestoreEnabled(w.ctx(), w.ec2, snap, "us-east-1b")
		return ok, fmt.Sprintf("enabled %v, %v", ok, err)
	})
	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--initialization-rate", "200")...)
	mustSucceed(t, res)
	v := w.restoredVolume("us-east-1b")
	if !aws.ToBool(v.FastRestored) || v.VolumeInitializationRate != nil {
		t.Errorf("restored volume: fast restored %v, rate %v; want fast restored and no rate", aws.ToBool(v.FastRestored), v.VolumeInitializationRate)
	}
	for _, want := range []string{"snapshot " + snap + " is enabled for fast snapshot restore in us-east-1b: fully initialized at creation", "initialized (default)"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, res.stdout)
		}
	}
}

// statusInit is the initialization `status --json` reports for the slot's volume in az.
func statusInit(t *testing.T, w *testRegion, id, az string) *cloud.Initialization {
	t.Helper()
	res := w.runAgent(w.ctx(), id, nil, "status", "--json", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if res.code != fail.CodeOK {
		t.Fatalf("status exited %d: %s", res.code, res.stderr)
	}
	var st statusReport
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil || st.EC2 == nil || len(st.EC2.Slots) != 1 {
		t.Fatalf("status --json: %v\n%s", err, res.stdout)
	}
	for _, v := range st.EC2.Slots[0].Volumes {
		if v.AZ == az {
			return v.Initialization
		}
	}
	t.Fatalf("status shows no volume in %s:\n%s", az, res.stdout)
	return nil
}

// TestInitializationProgressUntilFull: while the restored volume loads its blocks, up's summary says how
// far it is and that up does not wait, and `status` (text and --json) shows the progress and the time
// left, rising until 100%; once there, status shows it initialized. Meanwhile the volume is attached and
// up is done.
func TestInitializationProgressUntilFull(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	w.snapshot(vol, 1, true, true)

	release := w.sim.Hold(sim.VolumeInitialize, "")
	defer release()
	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--initialization-rate", "100")...)
	mustSucceed(t, res)
	if !strings.Contains(res.stdout, "init       data: provisioned rate 100 MiB/s; initializing ") || !strings.Contains(res.stdout, "up does not wait") {
		t.Errorf("summary of a restore still initializing:\n%s", res.stdout)
	}
	if strings.Contains(res.stderr, "fully initialized") {
		t.Errorf("up logged full performance of a volume still initializing:\n%s", res.stderr)
	}

	in := statusInit(t, w, id, "us-east-1b")
	if in == nil || in.Type != "provisioned-rate" || in.Progress >= 100 || in.SecondsLeft < 1 {
		t.Fatalf("status while initializing: %+v; want provisioned-rate below 100%% with time left", in)
	}
	text := w.runAgent(w.ctx(), id, nil, "status", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if !strings.Contains(text.stdout, "initializing ") || !strings.Contains(text.stdout, "left, 100 MiB/s") {
		t.Errorf("status text while initializing:\n%s", text.stdout)
	}
	seen := []int{in.Progress}
	release()
	simtest.Eventually(t, waitBound, "status shows 100%", func() (bool, string) {
		in := statusInit(t, w, id, "us-east-1b")
		if in == nil {
			t.Fatal("status lost the initialization")
		}
		seen = append(seen, in.Progress)
		return in.Done() && in.SecondsLeft == 0, fmt.Sprintf("%+v", *in)
	})
	for i := 1; i < len(seen); i++ {
		if seen[i] < seen[i-1] {
			t.Errorf("progress went back: %v", seen)
		}
	}
	text = w.runAgent(w.ctx(), id, nil, "status", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if !strings.Contains(text.stdout, "initialized (provisioned-rate)") {
		t.Errorf("status text once initialized:\n%s", text.stdout)
	}
	if st := statusInit(t, w, id, "us-east-1a"); st != nil {
		t.Errorf("the blank volume in us-east-1a shows an initialization: %+v", st)
	}
}

// TestUpLogsFullPerformance: a restore that reaches full performance while up still runs gets one log
// line saying so, and the summary shows it initialized. (The region loads blocks so fast that the
// volume is initialized the moment it is available, before up has even attached it.)
func TestUpLogsFullPerformance(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t, func(o *sim.Options) { o.InitializationRate = 1 << 40 })
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	w.snapshot(vol, 1, true, true)
	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustSucceed(t, res)
	if n := strings.Count(res.stderr, "volume fully initialized: full performance"); n != 1 {
		t.Errorf("%d full-performance lines, want 1:\n%s", n, res.stderr)
	}
	if !strings.Contains(res.stdout, "init       data: EBS's default rate (--initialization-rate not given); initialized (default)") {
		t.Errorf("summary:\n%s", res.stdout)
	}
}

// TestUpRestoreKeepsTheVolumeShape: a volume raised with ModifyVolume to 6000 IOPS and 500 MiB/s is
// snapshotted by handover (which records the shape on the snapshot) and comes back with them in the
// other AZ, though the configuration says nothing of IOPS or throughput; the summary says where they
// came from.
func TestUpRestoreKeepsTheVolumeShape(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old, "--no-mount")...))
	first := w.restoredVolume("us-east-1a")
	if aws.ToInt32(first.Iops) != 3000 || aws.ToInt32(first.Throughput) != 125 {
		t.Fatalf("first volume %d IOPS %d MiB/s, want gp3's 3000 and 125", aws.ToInt32(first.Iops), aws.ToInt32(first.Throughput))
	}
	volID := aws.ToString(first.VolumeId)
	if _, err := w.ec2.ModifyVolume(w.ctx(), &ec2.ModifyVolumeInput{VolumeId: aws.String(volID), Iops: aws.Int32(6000), Throughput: aws.Int32(500)}); err != nil {
		t.Fatal(err)
	}
	simtest.Eventually(t, waitBound, "modification completed", func() (bool, string) {
		out, err := w.ec2.DescribeVolumesModifications(w.ctx(), &ec2.DescribeVolumesModificationsInput{VolumeIds: []string{volID}})
		if err != nil || len(out.VolumesModifications) != 1 {
			return false, fmt.Sprintf("%v", err)
		}
		return out.VolumesModifications[0].ModificationState == ec2types.VolumeModificationStateCompleted, string(out.VolumesModifications[0].ModificationState)
	})
	snapRes := w.runAgent(w.ctx(), old, nil, "snapshot", "--volume", "data:/dev/sdf:"+w.mountPoint(old))
	if snapRes.code != fail.CodeOK {
		t.Fatalf("snapshot exited %d: %s", snapRes.code, snapRes.stderr)
	}
	snaps, err := cloud.ListSlotSnapshots(w.ctx(), w.ec2, testGroup, cloud.DefaultSlot)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots %+v, %v", snaps, err)
	}
	if got := snaps[0].Shape; got.IOPS != 6000 || got.Throughput != 500 || got.Type != "gp3" || got.SizeGiB != 1 {
		t.Fatalf("recorded shape %+v (tags %v), want gp3 1 GiB 6000 IOPS 500 MiB/s", got, snaps[0].Tags)
	}
	w.waitSnapshotState(snaps[0].ID, "completed")
	w.terminate(old)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustSucceed(t, res)
	v := w.restoredVolume("us-east-1b")
	if aws.ToInt32(v.Iops) != 6000 || aws.ToInt32(v.Throughput) != 500 || v.VolumeType != ec2types.VolumeTypeGp3 {
		t.Errorf("restored in us-east-1b: %s %d IOPS %d MiB/s, want gp3 6000 and 500", v.VolumeType, aws.ToInt32(v.Iops), aws.ToInt32(v.Throughput))
	}
	// The periodic snapshot is not final (the volume stayed attached and in use), so up snapshots the
	// orphaned volume where it is and restores that: handover's own snapshot, with the shape recorded too.
	for _, want := range []string{"shape      data: 6000 IOPS, recorded on snap-", "shape      data: 500 MiB/s, recorded on snap-"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, res.stdout)
		}
	}
}
