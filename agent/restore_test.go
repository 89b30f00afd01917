package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
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

func vol(id, az, state string, gen int, att ...volumeAttachment) slotVolume {
	v := slotVolume{ID: id, AZ: az, State: state, Generation: gen, SizeGiB: 8, Attachments: att}
	if len(att) > 0 {
		v.State = "in-use"
	}
	return v
}

func att(instance, state string) volumeAttachment {
	return volumeAttachment{InstanceID: instance, Device: "/dev/sdf", State: state}
}

func snap(id, state string, gen int, consistent bool, minutes int) slotSnapshot {
	return slotSnapshot{ID: id, State: state, Generation: gen, Consistent: consistent, VolumeSizeGiB: 8,
		StartTime: t0.Add(time.Duration(minutes) * time.Minute), Progress: "100%"}
}

func TestPlanSlot(t *testing.T) {
	running := holder{ID: other, State: "running", ASGState: "InService"}
	leavingASG := holder{ID: other, State: "running", ASGState: "Terminating:Wait"}
	shuttingDown := holder{ID: other, State: "shutting-down"}
	stopped := holder{ID: other, State: "stopped"}
	tests := []struct {
		name        string
		vols        []slotVolume
		snaps       []slotSnapshot
		holders     []holder
		takeover    bool
		requireData bool
		minGen      int
		want        planAction
		wantVol     string
		wantSnap    string
		wantGen     int
		wantLive    bool
		wantCode    int    // for refusals
		wantInWhy   string // in Why, Warn or the error
	}{
		{name: "first boot", want: planBlank, wantGen: 1},
		{name: "first boot with --require-data", requireData: true, want: planRefuse, wantCode: fail.CodePrecondition, wantInWhy: "--require-data"},
		{name: "attached here", vols: []slotVolume{vol("vol-1", here, "", 3, att(me, "attached"))}, want: planDone, wantVol: "vol-1"},
		{name: "attaching here", vols: []slotVolume{vol("vol-1", here, "", 3, att(me, "attaching"))}, want: planWaitVolume, wantVol: "vol-1"},
		{name: "available in this AZ", vols: []slotVolume{vol("vol-1", here, "available", 3)}, snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)},
			want: planAttach, wantVol: "vol-1"},
		{name: "creating in this AZ (an earlier run's restore)", vols: []slotVolume{vol("vol-2", here, "creating", 4), vol("vol-1", there, "available", 3)},
			want: planWaitVolume, wantVol: "vol-2"},
		{name: "this AZ, held by an instance shutting down", vols: []slotVolume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []holder{shuttingDown},
			want: planWaitHolder, wantVol: "vol-1", wantInWhy: "on its way out"},
		{name: "this AZ, detaching", vols: []slotVolume{vol("vol-1", here, "", 3, att(other, "detaching"))}, holders: []holder{shuttingDown},
			want: planWaitVolume, wantVol: "vol-1"},
		{name: "this AZ, held by a stopped instance", vols: []slotVolume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []holder{stopped},
			want: planDetachStopped, wantVol: "vol-1"},
		{name: "this AZ, held by a live instance", vols: []slotVolume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []holder{running},
			snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planWaitHolder, wantVol: "vol-1", wantLive: true},
		{name: "this AZ, live holder, --takeover restores instead", vols: []slotVolume{vol("vol-1", here, "", 3, att(other, "attached"))}, holders: []holder{running},
			snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, takeover: true, want: planRestore, wantSnap: "snap-1", wantGen: 4, wantInWhy: "--takeover"},
		{name: "other AZ, available: restore", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planRestore, wantSnap: "snap-1", wantGen: 4},
		{name: "other AZ, no snapshot", vols: []slotVolume{vol("vol-1", there, "available", 1)}, want: planRefuse, wantCode: fail.CodePrecondition, wantInWhy: "no completed snapshot"},
		{name: "other AZ, held by an instance being terminated: its final snapshot may come", vols: []slotVolume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []holder{leavingASG}, snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planWaitHolder, wantVol: "vol-1"},
		{name: "other AZ, held by a stopped instance: restore, say what stays behind", vols: []slotVolume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []holder{stopped}, snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planRestore, wantSnap: "snap-1", wantInWhy: "stopped"},
		{name: "other AZ, held by a live instance", vols: []slotVolume{vol("vol-1", there, "", 3, att(other, "attached"))},
			holders: []holder{running}, snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planWaitHolder, wantLive: true},
		{name: "newest snapshot pending: wait for it", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-new", "pending", 3, true, 10), snap("snap-old", "completed", 3, true, 0)}, want: planWaitSnapshot, wantSnap: "snap-new"},
		{name: "newest snapshot failed: the next one", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-bad", "error", 3, true, 10), snap("snap-old", "completed", 3, true, 0)}, want: planRestore, wantSnap: "snap-old", wantGen: 4,
			wantInWhy: "newer snapshot snap-bad"},
		{name: "a newer crash-consistent snapshot beats an older consistent one: no write is dropped", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-crash", "completed", 3, false, 10), snap("snap-cons", "completed", 3, true, 0)},
			want:  planRestore, wantSnap: "snap-crash", wantInWhy: "crash-consistent"},
		{name: "taken at the same instant: consistent wins", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-crash", "completed", 3, false, 10), snap("snap-cons", "completed", 3, true, 10)},
			want:  planRestore, wantSnap: "snap-cons"},
		{name: "a newer generation beats consistency", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-g3", "completed", 3, false, 10), snap("snap-g2", "completed", 2, true, 20)},
			want:  planRestore, wantSnap: "snap-g3"},
		{name: "a newer pending crash-consistent snapshot is waited for rather than restoring older data", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-crash", "pending", 3, false, 10), snap("snap-cons", "completed", 3, true, 0)},
			want:  planWaitSnapshot, wantSnap: "snap-crash"},
		{name: "snapshot newer than every volume: that volume was deleted", vols: []slotVolume{vol("vol-old", here, "available", 2)},
			snaps: []slotSnapshot{snap("snap-g3", "completed", 3, true, 10)}, want: planRestore, wantSnap: "snap-g3", wantGen: 4},
		{name: "only failed snapshots", snaps: []slotSnapshot{snap("snap-bad", "error", 1, true, 0)}, want: planRefuse, wantCode: fail.CodePrecondition, wantInWhy: "snap-bad"},
		{name: "a volume in error is never live", vols: []slotVolume{vol("vol-bad", here, "error", 4), vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, want: planRestore, wantSnap: "snap-1", wantGen: 5},
		{name: "same generation twice: the one attached here wins", vols: []slotVolume{vol("vol-a", there, "available", 3), vol("vol-b", here, "", 3, att(me, "attached"))},
			want: planDone, wantVol: "vol-b"},
		{name: "the newest volume was never snapshotted: restore the older generation, say what is lost", vols: []slotVolume{vol("vol-2", there, "available", 4)},
			snaps: []slotSnapshot{snap("snap-g3", "completed", 3, true, 0)}, want: planRestore, wantSnap: "snap-g3", wantGen: 5, wantInWhy: "no snapshot of its own"},
		{name: "a spent generation is skipped", vols: []slotVolume{vol("vol-1", there, "available", 3)},
			snaps: []slotSnapshot{snap("snap-1", "completed", 3, true, 0)}, minGen: 5, want: planRestore, wantGen: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			view := slotView{Volumes: tc.vols, Snapshots: tc.snaps, Holders: map[string]holder{}}
			for _, h := range tc.holders {
				view.Holders[h.ID] = h
			}
			p := planSlot(planInput{InstanceID: me, AZ: here, Group: "g", Slot: "data", View: view,
				Takeover: tc.takeover, RequireData: tc.requireData, MinGeneration: tc.minGen})
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
	a := volumeClientToken("orders", "data", 3)
	if len(a) != 64 {
		t.Errorf("token %q is %d characters; EC2 takes at most 64", a, len(a))
	}
	if a != volumeClientToken("orders", "data", 3) {
		t.Error("the token of one generation changes between calls: a rerun would make a second volume")
	}
	for _, b := range []string{volumeClientToken("orders", "data", 4), volumeClientToken("orders", "logs", 3), volumeClientToken("billing", "data", 3)} {
		if a == b {
			t.Errorf("two different (group, slot, generation) share token %s", a)
		}
	}
}

func TestCreateVolumeInput(t *testing.T) {
	shape := volumeShape{SizeGiB: 20, Type: "gp3", IOPS: 6000, Throughput: 250, Encrypted: true, KMSKeyID: "alias/data"}
	big := snap("snap-1", "completed", 3, true, 0)
	big.VolumeSizeGiB = 50
	in := createVolumeInput("orders", "data", here, 4, shape, &big)
	if aws.ToInt32(in.Size) != 50 || aws.ToString(in.SnapshotId) != "snap-1" {
		t.Errorf("restore of a 50 GiB snapshot with --size 20: size %d from %s; want 50 (grow only)", aws.ToInt32(in.Size), aws.ToString(in.SnapshotId))
	}
	small := snap("snap-2", "completed", 3, true, 0)
	in = createVolumeInput("orders", "data", here, 4, shape, &small)
	if aws.ToInt32(in.Size) != 20 {
		t.Errorf("restore of an 8 GiB snapshot with --size 20: size %d, want 20", aws.ToInt32(in.Size))
	}
	if aws.ToInt32(in.Iops) != 6000 || aws.ToInt32(in.Throughput) != 250 || !aws.ToBool(in.Encrypted) || aws.ToString(in.KmsKeyId) != "alias/data" ||
		string(in.VolumeType) != "gp3" || aws.ToString(in.AvailabilityZone) != here || aws.ToString(in.ClientToken) != volumeClientToken("orders", "data", 4) {
		t.Errorf("request %+v does not carry the configured shape, zone and token", in)
	}
	tags := tagMap(in.TagSpecifications[0].Tags)
	if tags[tagGroup] != "orders" || tags[tagSlot] != "data" || tags[tagGeneration] != "4" || tags[tagCreatedBlank] != "" {
		t.Errorf("restored volume tags %v", tags)
	}
	blank := createVolumeInput("orders", "data", here, 1, volumeShape{SizeGiB: 10, Type: "gp2"}, nil)
	tags = tagMap(blank.TagSpecifications[0].Tags)
	if tags[tagCreatedBlank] != "true" || blank.SnapshotId != nil || blank.Iops != nil || blank.Encrypted != nil {
		t.Errorf("blank volume request: tags %v, snapshot %v, iops %v, encrypted %v", tags, blank.SnapshotId, blank.Iops, blank.Encrypted)
	}
}

func TestMaintenancePolicy(t *testing.T) {
	for _, tc := range []struct {
		p            maintenancePolicy
		first, maybe bool
	}{
		{maintenancePolicy{MinHealthy: 100, MaxHealthy: 200, Desired: 1}, true, true},
		{maintenancePolicy{MinHealthy: 0, MaxHealthy: 100, Desired: 1}, false, false},
		{maintenancePolicy{MinHealthy: -1, MaxHealthy: -1, Desired: 1}, false, false},
		{maintenancePolicy{MinHealthy: 50, MaxHealthy: 150, Desired: 1}, false, true},
		{maintenancePolicy{MinHealthy: 50, MaxHealthy: 150, Desired: 4}, false, false},
	} {
		if got := tc.p.launchesFirst(); got != tc.first {
			t.Errorf("%+v launchesFirst = %v, want %v", tc.p, got, tc.first)
		}
		if got := tc.p.mayLaunchFirst(); got != tc.maybe {
			t.Errorf("%+v mayLaunchFirst = %v, want %v", tc.p, got, tc.maybe)
		}
	}
}
