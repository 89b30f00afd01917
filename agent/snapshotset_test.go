package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim/simtest"
)

// twoSlotArgs is a command's --volume flags for instance id's two slots, data and wal, mounted under the
// test directory.
func (w *testRegion) twoSlotArgs(id string) []string {
	return []string{"--volume", "data:/dev/sdf:" + w.slotMount(id, "data"), "--volume", "wal:/dev/sdg:" + w.slotMount(id, "wal")}
}

func (w *testRegion) slotMount(id, slot string) string { return filepath.Join(w.dir, "mnt", id, slot) }

// killBefore is an EC2 endpoint in front of the simulator that lets calls through until one for which
// at(form) holds, which it never forwards: it cancels the agent's context instead (the process killed
// before that call reached AWS) and answers nothing.
func (w *testRegion) killBefore(at func(url.Values) bool, kill context.CancelFunc) string {
	w.t.Helper()
	target, err := url.Parse(w.sim.Endpoint())
	if err != nil {
		w.t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		_ = req.Body.Close()
		form, _ := url.ParseQuery(string(body))
		if at(form) {
			kill()
			<-req.Context().Done()
			return
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		req.ContentLength = int64(len(body))
		proxy.ServeHTTP(rw, req)
	}))
	w.t.Cleanup(srv.Close)
	return srv.URL
}

// denyAction is an EC2 endpoint in front of the simulator that answers every call of action with
// UnauthorizedOperation (403), as EC2 does for a role without the permission, and lets the rest through.
func (w *testRegion) denyAction(action string) string {
	w.t.Helper()
	target, err := url.Parse(w.sim.Endpoint())
	if err != nil {
		w.t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if form, _ := url.ParseQuery(string(body)); form.Get("Action") == action {
			rw.Header().Set("Content-Type", "text/xml")
			rw.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(rw, `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this operation.</Message></Error></Errors><RequestID>req-1</RequestID></Response>`)
			return
		}
		req.Body = io.NopCloser(strings.NewReader(string(body)))
		req.ContentLength = int64(len(body))
		proxy.ServeHTTP(rw, req)
	}))
	w.t.Cleanup(srv.Close)
	return srv.URL
}

// TestLiveSnapshotWithoutCreateSnapshotsPermission: a role that may not call ec2:CreateSnapshots still gets
// its live snapshot of two slots, one CreateSnapshot per volume, each a set of its own (they are not one
// moment, so never a complete set of the group), with a warning naming the permission.
func TestLiveSnapshotWithoutCreateSnapshotsPermission(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w, a := twoSlotInstance(t)
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), a, map[string]string{"AWS_ENDPOINT_URL_EC2": w.denyAction("CreateSnapshots")},
		append([]string{"snapshot", "--freeze=false"}, w.twoSlotArgs(a)...)...)
	if res.code != 0 {
		t.Fatalf("snapshot --freeze=false without CreateSnapshots: exit %d: %s", res.code, res.stderr)
	}
	if n := w.calls("CreateSnapshot"); n != 2 {
		t.Errorf("%d CreateSnapshot calls, want 2 (one per volume)", n)
	}
	if !strings.Contains(res.stderr, "ec2:CreateSnapshots") {
		t.Errorf("no warning naming the permission:\n%s", res.stderr)
	}
	sets := map[string]bool{}
	for _, slot := range []string{"data", "wal"} {
		snaps := w.slotSnapshotsOf(slot)
		if len(snaps) != 1 || tagOf(snaps[0].Tags, cloud.TagSetSize) != "1" || tagOf(snaps[0].Tags, cloud.TagConsistent) == "true" {
			t.Fatalf("slot %s: %d snapshots, tags %v; want one, a set of one, not consistent", slot, len(snaps), snaps)
		}
		sets[tagOf(snaps[0].Tags, cloud.TagSet)] = true
	}
	if len(sets) != 2 {
		t.Errorf("the two snapshots share a set: %v", sets)
	}
}

// twoSlotInstance is a region with an instance whose up made and mounted the two slots data and wal.
func twoSlotInstance(t *testing.T) (*testRegion, string) {
	t.Helper()
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	a := w.runInstance("us-east-1a", groupTags, true)
	if res := w.runAgent(w.ctx(), a, nil, append([]string{"up", "--size", "1", "--unit-dir", w.unitDir(a)}, w.twoSlotArgs(a)...)...); res.code != 0 {
		t.Fatalf("up: exit %d: %s", res.code, res.stderr)
	}
	return w, a
}

// slotSnapshotsOf lists the test group's snapshots of slot.
func (w *testRegion) slotSnapshotsOf(slot string) []ec2types.Snapshot {
	w.t.Helper()
	out, err := w.ec2.DescribeSnapshots(w.ctx(), &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: cloud.SlotFilters(testGroup, slot)})
	if err != nil {
		w.t.Fatal(err)
	}
	return out.Snapshots
}

// TestTwoSlotRestoreNeverMixesSets plays a two-slot group (data and WAL) through a periodic snapshot that
// is killed between its two CreateSnapshot calls (the frozen path, one call per volume): data then has a
// newer snapshot than wal. The replacement in the other zone, with the old volumes lost, restores the
// older complete set for both slots and says so: both hold the file written before it, neither the one
// written after. A live snapshot (--freeze=false) of the two slots is one CreateSnapshots call, one set.
func TestTwoSlotRestoreNeverMixesSets(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	a := w.runInstance("us-east-1a", groupTags, true)
	up := append([]string{"up", "--size", "1", "--unit-dir", w.unitDir(a)}, w.twoSlotArgs(a)...)
	if res := w.runAgent(w.ctx(), a, nil, up...); res.code != 0 {
		t.Fatalf("up on %s: exit %d: %s", a, res.code, res.stderr)
	}
	for _, slot := range []string{"data", "wal"} {
		w.writeData(w.slotMount(a, slot), "one", 4096)
	}
	snapshot := append([]string{"snapshot"}, w.twoSlotArgs(a)...)
	if res := w.runAgent(w.ctx(), a, nil, snapshot...); res.code != 0 {
		t.Fatalf("snapshot: exit %d: %s", res.code, res.stderr)
	}
	first := map[string]ec2types.Snapshot{}
	for _, slot := range []string{"data", "wal"} {
		snaps := w.slotSnapshotsOf(slot)
		if len(snaps) != 1 {
			t.Fatalf("slot %s: %d snapshots after the first snapshot run, want 1", slot, len(snaps))
		}
		first[slot] = snaps[0]
	}
	set := tagOf(first["data"].Tags, cloud.TagSet)
	if set == "" || tagOf(first["wal"].Tags, cloud.TagSet) != set || tagOf(first["data"].Tags, cloud.TagSetSize) != "2" || tagOf(first["data"].Tags, cloud.TagConsistent) != "true" {
		t.Fatalf("the first run's snapshots are not one consistent set of 2: data %v, wal %v", first["data"].Tags, first["wal"].Tags)
	}
	if n := w.calls("CreateSnapshots"); n != 0 {
		t.Errorf("the frozen path made %d CreateSnapshots calls, want 0 (one CreateSnapshot per volume, all frozen)", n)
	}

	// A live snapshot of the two slots: one CreateSnapshots, one set of two, not tagged consistent.
	w.sim.ResetCalls()
	if res := w.runAgent(w.ctx(), a, nil, append(snapshot, "--freeze=false")...); res.code != 0 {
		t.Fatalf("snapshot --freeze=false: exit %d: %s", res.code, res.stderr)
	}
	if n, m := w.calls("CreateSnapshots"), w.calls("CreateSnapshot"); n != 1 || m != 0 {
		t.Errorf("snapshot --freeze=false of two slots: %d CreateSnapshots and %d CreateSnapshot calls, want 1 and 0", n, m)
	}
	live := map[string]string{}
	for _, slot := range []string{"data", "wal"} {
		s := w.slotSnapshotsOf(slot)
		for _, sn := range s {
			if tagOf(sn.Tags, cloud.TagSet) != set {
				live[slot] = tagOf(sn.Tags, cloud.TagSet)
				if tagOf(sn.Tags, cloud.TagConsistent) == "true" || tagOf(sn.Tags, cloud.TagSetSize) != "2" || tagOf(sn.Tags, cloud.TagGeneration) == "" {
					t.Errorf("live snapshot of %s: tags %v, want a set of 2, its generation copied, not consistent", slot, sn.Tags)
				}
			}
		}
	}
	if live["data"] == "" || live["data"] != live["wal"] {
		t.Fatalf("the live snapshots are not one set: %v", live)
	}
	// The live set is newer than the first; delete it, so that the first is the newest complete set again.
	for _, slot := range []string{"data", "wal"} {
		for _, sn := range w.slotSnapshotsOf(slot) {
			if tagOf(sn.Tags, cloud.TagSet) == live[slot] {
				if _, err := w.ec2.DeleteSnapshot(w.ctx(), &ec2.DeleteSnapshotInput{SnapshotId: sn.SnapshotId}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// Writes after the first set, then a snapshot run killed after data's CreateSnapshot, before wal's.
	for _, slot := range []string{"data", "wal"} {
		w.writeData(w.slotMount(a, slot), "two", 4096)
	}
	kctx, kill := context.WithCancel(w.ctx())
	defer kill()
	walVolume := aws.ToString(first["wal"].VolumeId)
	endpoint := w.killBefore(func(f url.Values) bool { return f.Get("Action") == "CreateSnapshot" && f.Get("VolumeId") == walVolume }, kill)
	killed := w.runAgent(kctx, a, map[string]string{"AWS_ENDPOINT_URL_EC2": endpoint}, snapshot...)
	if killed.code == 0 {
		t.Fatalf("the killed snapshot run exited 0")
	}
	if d, wl := len(w.slotSnapshotsOf("data")), len(w.slotSnapshotsOf("wal")); d != 2 || wl != 1 {
		t.Fatalf("after the killed run: data has %d snapshots, wal %d; want 2 and 1", d, wl)
	}

	// The old instance goes, and its volumes with it (its zone is lost).
	for _, slot := range []string{"data", "wal"} {
		w.unmount(w.slotMount(a, slot))
	}
	w.terminate(a)
	for _, slot := range []string{"data", "wal"} {
		out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{Filters: cloud.SlotFilters(testGroup, slot)})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range out.Volumes {
			w.waitVolumeState(aws.ToString(v.VolumeId), "available")
			if _, err := w.ec2.DeleteVolume(w.ctx(), &ec2.DeleteVolumeInput{VolumeId: v.VolumeId}); err != nil {
				t.Fatal(err)
			}
		}
	}

	b := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), b, nil, append([]string{"up", "--size", "1", "--unit-dir", w.unitDir(b)}, w.twoSlotArgs(b)...)...)
	if res.code != 0 {
		t.Fatalf("up on the replacement: exit %d: %s", res.code, res.stderr)
	}
	if !strings.Contains(res.stdout, "older complete snapshot set "+set) || strings.Count(res.stdout, "(snapshot set "+set+")") != 2 {
		t.Errorf("up's summary does not say both slots came from the older complete set %s:\n%s", set, res.stdout)
	}
	for _, slot := range []string{"data", "wal"} {
		mp := w.slotMount(b, slot)
		if _, err := os.Stat(filepath.Join(mp, "one")); err != nil {
			t.Errorf("slot %s: the file written before the set is missing: %v", slot, err)
		}
		if _, err := os.Stat(filepath.Join(mp, "two")); err == nil {
			t.Errorf("slot %s holds the file written after the set: the slots are not of one moment", slot)
		}
		vols, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{Filters: append(cloud.SlotFilters(testGroup, slot),
			ec2types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{b}})})
		if err != nil || len(vols.Volumes) != 1 {
			t.Fatalf("slot %s on %s: %v %v", slot, b, vols, err)
		}
		if got := aws.ToString(vols.Volumes[0].SnapshotId); got != aws.ToString(first[slot].SnapshotId) {
			t.Errorf("slot %s restored from %s, want %s (its member of set %s)", slot, got, aws.ToString(first[slot].SnapshotId), set)
		}
	}
}

// TestTwoSlotUpRefusesWithoutACompleteSet: the only set of a two-slot group is incomplete (its run stopped
// after data's snapshot) and no volume is left: up exits 3 at once with one line that says so, before it
// takes the address or makes anything.
func TestTwoSlotUpRefusesWithoutACompleteSet(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	tags := map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: "data", cloud.TagGeneration: "1"}
	out, err := w.ec2.CreateVolume(w.ctx(), &ec2.CreateVolumeInput{AvailabilityZone: aws.String("us-east-1a"), Size: aws.Int32(1),
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, tags)})
	if err != nil {
		t.Fatal(err)
	}
	vol := aws.ToString(out.VolumeId)
	w.waitVolumeState(vol, "available")
	for k, v := range map[string]string{cloud.TagSet: "set-partial", cloud.TagSetSize: "2", cloud.TagConsistent: "true", cloud.TagSourceVolume: vol} {
		tags[k] = v
	}
	snap, err := w.ec2.CreateSnapshot(w.ctx(), &ec2.CreateSnapshotInput{VolumeId: out.VolumeId, TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeSnapshot, tags)})
	if err != nil {
		t.Fatal(err)
	}
	w.waitSnapshotState(aws.ToString(snap.SnapshotId), "completed")
	if _, err := w.ec2.DeleteVolume(w.ctx(), &ec2.DeleteVolumeInput{VolumeId: out.VolumeId}); err != nil {
		t.Fatal(err)
	}

	b := w.runInstance("us-east-1b", groupTags, true)
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), b, nil, append([]string{"up", "--size", "1", "--unit-dir", w.unitDir(b)}, w.twoSlotArgs(b)...)...)
	if res.code != fail.CodePrecondition {
		t.Fatalf("up without a complete set: exit %d, want %d: %s", res.code, fail.CodePrecondition, res.stderr)
	}
	line := strings.TrimSpace(res.stderr[strings.LastIndex(strings.TrimSpace(res.stderr), "\n")+1:])
	if !strings.Contains(line, "no complete snapshot set") || !strings.Contains(line, "set-partial") || !strings.Contains(line, "1 of 2 slots") {
		t.Errorf("the failure line does not say why: %q", line)
	}
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("up made mutating calls before refusing: %v", m)
	}
	// status, read-only, says what up would do: the same refusal.
	st := w.runAgent(w.ctx(), b, nil, append([]string{"status"}, w.twoSlotArgs(b)...)...)
	if !strings.Contains(st.stdout, "no complete snapshot set of slots") {
		t.Errorf("status does not show up's refusal:\n%s\n%s", st.stdout, st.stderr)
	}
}

// TestRetakePartialSet: a rerun of down that finds an earlier snapshot for one of two slots but not the
// other takes both again (a new set of one moment); with one slot, or when every slot has its earlier
// snapshot, nothing changes.
func TestRetakePartialSet(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	slot := func(name string, reused bool) *slotRelease {
		s := &slotRelease{Spec: volumeSpec{Slot: name}, Volume: cloud.Volume{ID: "vol-" + name}}
		if reused {
			s.Snapshot, s.Reused, s.Consistent = cloud.Snapshot{ID: "snap-" + name}, true, true
		}
		return s
	}
	data, wal := slot("data", true), slot("wal", false)
	work := retakePartialSet(log, []*slotRelease{data, wal}, []*slotRelease{wal})
	if len(work) != 2 || data.Reused || data.Snapshot.ID != "" {
		t.Errorf("partial rerun: work %d slots, data reused %v (%s); want both taken again", len(work), data.Reused, data.Snapshot.ID)
	}
	data, wal = slot("data", true), slot("wal", true)
	if work := retakePartialSet(log, []*slotRelease{data, wal}, nil); len(work) != 0 || !data.Reused {
		t.Errorf("every slot reused: work %d, want none taken again", len(work))
	}
	lone := slot("data", false)
	if work := retakePartialSet(log, []*slotRelease{lone}, []*slotRelease{lone}); len(work) != 1 {
		t.Errorf("one slot: work %d, want 1", len(work))
	}
}

// TestLiveSnapshotSetRecordsEachVolumesShape: a live snapshot of two slots is one CreateSnapshots, which
// cannot set per-snapshot tags; each snapshot still records its own volume's shape (data raised with
// ModifyVolume to 6000 IOPS, wal at gp3's defaults), so a restore keeps it once the volume is gone.
func TestLiveSnapshotSetRecordsEachVolumesShape(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	w, a := twoSlotInstance(t)
	vols, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{Filters: cloud.SlotFilters(testGroup, "data")})
	if err != nil || len(vols.Volumes) != 1 {
		t.Fatalf("data's volumes: %v", err)
	}
	data := aws.ToString(vols.Volumes[0].VolumeId)
	if _, err := w.ec2.ModifyVolume(w.ctx(), &ec2.ModifyVolumeInput{VolumeId: aws.String(data), Iops: aws.Int32(6000)}); err != nil {
		t.Fatal(err)
	}
	simtest.Eventually(t, waitBound, "data's modification completed", func() (bool, string) {
		out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{VolumeIds: []string{data}})
		if err != nil || len(out.Volumes) != 1 {
			return false, fmt.Sprint(err)
		}
		return aws.ToInt32(out.Volumes[0].Iops) == 6000, fmt.Sprint(aws.ToInt32(out.Volumes[0].Iops), " IOPS")
	})
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), a, nil, append([]string{"snapshot", "--freeze=false"}, w.twoSlotArgs(a)...)...)
	if res.code != 0 {
		t.Fatalf("snapshot --freeze=false: exit %d: %s", res.code, res.stderr)
	}
	if n := w.calls("CreateSnapshots"); n != 1 {
		t.Fatalf("%d CreateSnapshots calls, want 1 (the live set)", n)
	}
	for slot, iops := range map[string]string{"data": "6000", "wal": "3000"} {
		snaps := w.slotSnapshotsOf(slot)
		if len(snaps) != 1 {
			t.Fatalf("slot %s: %d snapshots, want 1", slot, len(snaps))
		}
		tags := snaps[0].Tags
		if tagOf(tags, cloud.TagShapeIOPS) != iops || tagOf(tags, cloud.TagShapeType) != "gp3" || tagOf(tags, cloud.TagShapeSize) != "1" {
			t.Errorf("slot %s: snapshot tags %v, want shape gp3 1 GiB %s IOPS recorded", slot, tags, iops)
		}
	}
}
