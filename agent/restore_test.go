package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
)

// Unit tests of the slot planner: one observation in, one decision out.

const (
	me    = "i-0aaaaaaaaaaaaaaa1"
	other = "i-0bbbbbbbbbbbbbbb2"
	here  = "us-east-1b"
	there = "us-east-1a"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func vol(id, az, state string, gen int, att ...cloud.Attachment) cloud.Volume {
	v := cloud.Volume{ID: id, AZ: az, State: state, Generation: gen, SizeGiB: 8, Attachments: att}
	if len(att) > 0 {
		v.State = "in-use"
	}
	return v
}

func att(instance, state string) cloud.Attachment {
	return cloud.Attachment{InstanceID: instance, Device: "/dev/sdf", State: state}
}

func snap(id, state string, gen int, consistent bool, minutes int) cloud.Snapshot {
	return cloud.Snapshot{ID: id, State: state, Generation: gen, Consistent: consistent, VolumeSizeGiB: 8,
		StartTime: t0.Add(time.Duration(minutes) * time.Minute), Progress: "100%"}
}

// final marks a snapshot as the final one of volume: it holds every write the volume got.
func final(s cloud.Snapshot, volume string) cloud.Snapshot {
	s.Final, s.SourceVolume = true, volume
	return s
}

func TestPlanSlot(t *testing.T) {
	t.Parallel()
	running := cloud.Holder{ID: other, State: "running", ASGState: "InService"}
	leavingASG := cloud.Holder{ID: other, State: "running", ASGState: "Terminating:Wait"}
	shuttingDown := cloud.Holder{ID: other, State: "shutting-down"}
	stopped := cloud.Holder{ID: other, State: "stopped"}
	tests := []struct {
		name        string
		vols        []cloud.Volume
		snaps       []cloud.Snapshot
		holders     []cloud.Holder
		takeover    bool
		requireData bool
		minGen      int
		stuck       bool // the leaving holder did not let go within --release-timeout
		orphanFail  bool // snapshotting the orphaned newest volume failed: the ranking of older snapshots decides
		want        cloud.PlanAction
		wantVol     string
		wantSnap    string
		wantGen     int
		wantLive    bool
		wantCode    int    // for refusals
		wantInWhy   string // in Why, Warn or the error
	}{
		{name: "first boot", want: cloud.PlanBlank, wantGen: 1},
		{name: "first boot with --require-data", requireData: true, want: cloud.PlanRefuse, wantCode: fail.CodePrecondition, wantInWhy: "--require-data"},
		{name: "attached here", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(me, "attached"))}, want: cloud.PlanDone, wantVol: "vol-1"},
		{name: "attaching here", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(me, "attaching"))}, want: cloud.PlanWaitVolume, wantVol: "vol-1"},
		{name: "available in this AZ", vols: []cloud.Volume{vol("vol-1", here, "available", 3)}, snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)},
			want: cloud.PlanAttach, wantVol: "vol-1"},
		{name: "creating in this AZ (an earlier run's restore)", vols: []cloud.Volume{vol("vol-2", here, "creating", 4), vol("vol-1", there, "available", 3)},
			want: cloud.PlanWaitVolume, wantVol: "vol-2"},
		{name: "this AZ, held by an instance shutting down", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []cloud.Holder{shuttingDown},
			want: cloud.PlanWaitHolder, wantVol: "vol-1", wantInWhy: "on its way out"},
		{name: "this AZ, detaching", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "detaching"))}, holders: []cloud.Holder{shuttingDown},
			want: cloud.PlanWaitVolume, wantVol: "vol-1"},
		{name: "this AZ, held by a stopped instance", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []cloud.Holder{stopped},
			want: cloud.PlanDetachStopped, wantVol: "vol-1"},
		{name: "this AZ, held by a live instance", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []cloud.Holder{running},
			snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanWaitHolder, wantVol: "vol-1", wantLive: true},
		{name: "this AZ, live holder, --takeover restores instead", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []cloud.Holder{running},
			snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, takeover: true, want: cloud.PlanRestore, wantSnap: "snap-1", wantGen: 4, wantInWhy: "--takeover"},
		{name: "other AZ, available, with its final snapshot: restore it", vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{final(snap("snap-1", "completed", 3, true, 0), "vol-1")}, want: cloud.PlanRestore, wantSnap: "snap-1", wantGen: 4, wantInWhy: "holds every write"},
		{name: "other AZ, available, its final snapshot pending: wait for it", vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{final(snap("snap-2", "pending", 3, true, 10), "vol-1"), snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanWaitSnapshot, wantSnap: "snap-2"},
		{name: "other AZ, available, no snapshot of its last writes: snapshot the orphan, never restore older data", vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanSnapshotOrphan, wantVol: "vol-1"},
		{name: "other AZ, no snapshot: snapshot the orphan", vols: []cloud.Volume{vol("vol-1", there, "available", 1)}, want: cloud.PlanSnapshotOrphan, wantVol: "vol-1"},
		{name: "other AZ, no snapshot, snapshotting it failed", vols: []cloud.Volume{vol("vol-1", there, "available", 1)}, orphanFail: true,
			want: cloud.PlanRefuse, wantCode: fail.CodePrecondition, wantInWhy: "no completed snapshot"},
		{name: "other AZ, its holder stuck on its way out: snapshot it where it is", vols: []cloud.Volume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []cloud.Holder{shuttingDown}, stuck: true, snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanSnapshotOrphan, wantVol: "vol-1"},
		{name: "this AZ, its holder stuck on its way out: force the detach", vols: []cloud.Volume{vol("vol-1", here, "", 3, att(other, "attached"))},
			holders: []cloud.Holder{shuttingDown}, stuck: true, want: cloud.PlanForceDetach, wantVol: "vol-1"},
		{name: "other AZ, held by an instance being terminated: its final snapshot may come", vols: []cloud.Volume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []cloud.Holder{leavingASG}, snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanWaitHolder, wantVol: "vol-1"},
		{name: "other AZ, held by a stopped instance: snapshot it where it is", vols: []cloud.Volume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []cloud.Holder{stopped}, snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanSnapshotOrphan, wantVol: "vol-1"},
		{name: "other AZ, held by a live instance", vols: []cloud.Volume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []cloud.Holder{running}, snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanWaitHolder, wantLive: true},
		{name: "newest snapshot pending: wait for it", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-new", "pending", 3, true, 10), snap("snap-old", "completed", 3, true, 0)}, want: cloud.PlanWaitSnapshot, wantSnap: "snap-new"},
		{name: "newest snapshot failed: the next one", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-bad", "error", 3, true, 10), snap("snap-old", "completed", 3, true, 0)}, want: cloud.PlanRestore, wantSnap: "snap-old", wantGen: 4,
			wantInWhy: "newer snapshot snap-bad"},
		{name: "a newer crash-consistent snapshot beats an older consistent one: no write is dropped", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-crash", "completed", 3, false, 10), snap("snap-cons", "completed", 3, true, 0)},
			want:  cloud.PlanRestore, wantSnap: "snap-crash", wantInWhy: "crash-consistent"},
		{name: "taken at the same instant: consistent wins", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-crash", "completed", 3, false, 10), snap("snap-cons", "completed", 3, true, 10)},
			want:  cloud.PlanRestore, wantSnap: "snap-cons"},
		{name: "a newer generation beats consistency", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-g3", "completed", 3, false, 10), snap("snap-g2", "completed", 2, true, 20)},
			want:  cloud.PlanRestore, wantSnap: "snap-g3"},
		{name: "a newer pending crash-consistent snapshot is waited for rather than restoring older data", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-crash", "pending", 3, false, 10), snap("snap-cons", "completed", 3, true, 0)},
			want:  cloud.PlanWaitSnapshot, wantSnap: "snap-crash"},
		{name: "snapshot newer than every volume: that volume was deleted", vols: []cloud.Volume{vol("vol-old", here, "available", 2)},
			snaps: []cloud.Snapshot{snap("snap-g3", "completed", 3, true, 10)}, want: cloud.PlanRestore, wantSnap: "snap-g3", wantGen: 4},
		{name: "only failed snapshots", snaps: []cloud.Snapshot{snap("snap-bad", "error", 1, true, 0)}, want: cloud.PlanRefuse, wantCode: fail.CodePrecondition, wantInWhy: "snap-bad"},
		{name: "a volume in error is never live", orphanFail: true, vols: []cloud.Volume{vol("vol-bad", here, "error", 4), vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, want: cloud.PlanRestore, wantSnap: "snap-1", wantGen: 5},
		{name: "same generation twice: the one attached here wins", vols: []cloud.Volume{vol("vol-a", there, "available", 3), vol("vol-b", here, "", 3, att(me, "attached"))},
			want: cloud.PlanDone, wantVol: "vol-b"},
		{name: "the newest volume could not be snapshotted: restore the older generation, say loudly what is lost", vols: []cloud.Volume{vol("vol-2", there, "available", 4)},
			snaps: []cloud.Snapshot{snap("snap-g3", "completed", 3, true, 0)}, orphanFail: true, want: cloud.PlanRestore, wantSnap: "snap-g3", wantGen: 5, wantInWhy: "DATA LOSS"},
		{name: "a spent generation is skipped", orphanFail: true, vols: []cloud.Volume{vol("vol-1", there, "available", 3)},
			snaps: []cloud.Snapshot{snap("snap-1", "completed", 3, true, 0)}, minGen: 5, want: cloud.PlanRestore, wantGen: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			view := cloud.SlotView{Volumes: tc.vols, Snapshots: tc.snaps, Holders: map[string]cloud.Holder{}}
			for _, h := range tc.holders {
				view.Holders[h.ID] = h
			}
			p := cloud.PlanSlot(cloud.PlanInput{InstanceID: me, AZ: here, Group: "g", Slot: "data", View: view,
				Takeover: tc.takeover, RequireData: tc.requireData, MinGeneration: tc.minGen, HolderStuck: tc.stuck, OrphanFailed: tc.orphanFail})
			if p.Action != tc.want {
				t.Fatalf("action %s, want %s (why: %s; err: %v)", p.Action, tc.want, p.Why, p.Err)
			}
			if tc.wantVol != "" && p.Volume.ID != tc.wantVol {
				t.Errorf("volume %s, want %s", p.Volume.ID, tc.wantVol)
			}
			if tc.wantSnap != "" && p.Snapshot.ID != tc.wantSnap {
				t.Errorf("snapshot %s, want %s", p.Snapshot.ID, tc.wantSnap)
			}
			if tc.wantGen != 0 && p.Generation != tc.wantGen {
				t.Errorf("generation %d, want %d", p.Generation, tc.wantGen)
			}
			if p.Live != tc.wantLive {
				t.Errorf("live holder %v, want %v", p.Live, tc.wantLive)
			}
			if tc.wantCode != 0 && ExitCode(p.Err) != tc.wantCode {
				t.Errorf("refusal exit code %d, want %d (%v)", ExitCode(p.Err), tc.wantCode, p.Err)
			}
			text := p.Why + " " + p.Warn
			if p.Err != nil {
				text += " " + p.Err.Error()
			}
			if !strings.Contains(text, tc.wantInWhy) {
				t.Errorf("%q lacks %q", text, tc.wantInWhy)
			}
		})
	}
}

func TestVolumeClientToken(t *testing.T) {
	t.Parallel()
	a := cloud.VolumeClientToken("orders", "data", 3, "eipassoc-1")
	if len(a) != 64 {
		t.Errorf("token %q is %d characters; EC2 takes at most 64", a, len(a))
	}
	if a != cloud.VolumeClientToken("orders", "data", 3, "eipassoc-1") {
		t.Error("the token of one generation changes between calls: a rerun would make a second volume")
	}
	for _, b := range []string{cloud.VolumeClientToken("orders", "data", 4, "eipassoc-1"), cloud.VolumeClientToken("orders", "logs", 3, "eipassoc-1"), cloud.VolumeClientToken("billing", "data", 3, "eipassoc-1")} {
		if a == b {
			t.Errorf("two different (group, slot, generation) share token %s", a)
		}
	}
}

func TestCreateVolumeInput(t *testing.T) {
	t.Parallel()
	shape := cloud.VolumeShape{SizeGiB: 20, Type: "gp3", IOPS: 6000, Throughput: 250, Encrypted: true, KMSKeyID: "alias/data"}
	big := snap("snap-1", "completed", 3, true, 0)
	big.VolumeSizeGiB = 50
	in := cloud.CreateVolumeInput("orders", "data", here, 4, "eipassoc-1", shape, &big)
	if aws.ToInt32(in.Size) != 50 || aws.ToString(in.SnapshotId) != "snap-1" {
		t.Errorf("restore of a 50 GiB snapshot with --size 20: size %d from %s; want 50 (grow only)", aws.ToInt32(in.Size), aws.ToString(in.SnapshotId))
	}
	small := snap("snap-2", "completed", 3, true, 0)
	in = cloud.CreateVolumeInput("orders", "data", here, 4, "eipassoc-1", shape, &small)
	if aws.ToInt32(in.Size) != 20 {
		t.Errorf("restore of an 8 GiB snapshot with --size 20: size %d, want 20", aws.ToInt32(in.Size))
	}
	if aws.ToInt32(in.Iops) != 6000 || aws.ToInt32(in.Throughput) != 250 || !aws.ToBool(in.Encrypted) || aws.ToString(in.KmsKeyId) != "alias/data" ||
		string(in.VolumeType) != "gp3" || aws.ToString(in.AvailabilityZone) != here || aws.ToString(in.ClientToken) != cloud.VolumeClientToken("orders", "data", 4, "eipassoc-1") {
		t.Errorf("request %+v does not carry the configured shape, zone and token", in)
	}
	tags := cloud.TagMap(in.TagSpecifications[0].Tags)
	if tags[cloud.TagGroup] != "orders" || tags[cloud.TagSlot] != "data" || tags[cloud.TagGeneration] != "4" || tags[cloud.TagCreatedBlank] != "" {
		t.Errorf("restored volume tags %v", tags)
	}
	blank := cloud.CreateVolumeInput("orders", "data", here, 1, "eipassoc-1", cloud.VolumeShape{SizeGiB: 10, Type: "gp2"}, nil)
	tags = cloud.TagMap(blank.TagSpecifications[0].Tags)
	if tags[cloud.TagCreatedBlank] != "true" || blank.SnapshotId != nil || blank.Iops != nil || blank.Encrypted != nil {
		t.Errorf("blank volume request: tags %v, snapshot %v, iops %v, encrypted %v", tags, blank.SnapshotId, blank.Iops, blank.Encrypted)
	}
}

func TestMaintenancePolicy(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		p            cloud.MaintenancePolicy
		first, maybe bool
	}{
		{cloud.MaintenancePolicy{MinHealthy: 100, MaxHealthy: 200, Desired: 1}, true, true},
		{cloud.MaintenancePolicy{MinHealthy: 0, MaxHealthy: 100, Desired: 1}, false, false},
		{cloud.MaintenancePolicy{MinHealthy: -1, MaxHealthy: -1, Desired: 1}, false, false},
		{cloud.MaintenancePolicy{MinHealthy: 50, MaxHealthy: 150, Desired: 1}, false, true},
		{cloud.MaintenancePolicy{MinHealthy: 50, MaxHealthy: 150, Desired: 4}, false, false},
	} {
		if got := tc.p.LaunchesFirst(); got != tc.first {
			t.Errorf("%+v launchesFirst = %v, want %v", tc.p, got, tc.first)
		}
		if got := tc.p.MayLaunchFirst(); got != tc.maybe {
			t.Errorf("%+v mayLaunchFirst = %v, want %v", tc.p, got, tc.maybe)
		}
	}
}
