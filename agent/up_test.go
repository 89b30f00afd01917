package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/host/hosttest"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// Tests of `handover up` against the simulated region, with the real agent code run in process as each
// instance. Those that mount need root (loop devices, mkfs, mount): they fail under CI=true without it
// and are skipped elsewhere.

const testGroup = "orders"

var groupTags = map[string]string{cloud.TagGroup: testGroup}

// requireRoot fails the test in CI and skips it elsewhere when not run as root.
func requireRoot(t testing.TB) { hosttest.RequireRoot(t) }

// mountPoint is where instance id mounts the default slot in these tests.
func (w *testRegion) mountPoint(id string) string { return filepath.Join(w.dir, "mnt", id, "data") }

// unitDir is where instance id writes its mount units in these tests.
func (w *testRegion) unitDir(id string) string { return filepath.Join(w.dir, "units", id) }

// upArgs is `up` for instance id with a 1 GiB default slot mounted under the test directory.
func (w *testRegion) upArgs(id string, extra ...string) []string {
	args := []string{"up", "--size", "1", "--volume", "data:/dev/sdf:" + w.mountPoint(id), "--unit-dir", w.unitDir(id)}
	return append(args, extra...)
}

// unmountOnCleanup unmounts whatever the test mounted under its directory, before the simulator detaches
// the loop devices.
func (w *testRegion) unmountOnCleanup() {
	w.t.Cleanup(func() {
		mounts, err := host.New("/dev", "/sys").Mounts()
		if err != nil {
			return
		}
		for i := len(mounts) - 1; i >= 0; i-- {
			if strings.HasPrefix(mounts[i].MountPoint, w.dir) {
				_ = unix.Unmount(mounts[i].MountPoint, unix.MNT_DETACH)
			}
		}
	})
}

// unmount unmounts a mount point the way a clean shutdown would.
func (w *testRegion) unmount(dir string) {
	w.t.Helper()
	unix.Sync()
	if err := unix.Unmount(dir, 0); err != nil {
		w.t.Fatalf("unmount %s: %v", dir, err)
	}
}

// writeData writes a random file of n bytes under dir and syncs it to the device.
func (w *testRegion) writeData(dir, name string, n int) []byte {
	w.t.Helper()
	data := make([]byte, n)
	_, _ = rand.Read(data)
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		w.t.Fatalf("write test data: %v", err)
	}
	unix.Sync()
	return data
}

// slotVolumes lists the default slot's volumes (deleted ones excluded), oldest first.
func (w *testRegion) slotVolumes() []ec2types.Volume {
	w.t.Helper()
	out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{Filters: cloud.SlotFilters(testGroup, cloud.DefaultSlot)})
	if err != nil {
		w.t.Fatalf("DescribeVolumes: %v", err)
	}
	return out.Volumes
}

// createSlotVolume makes a volume of the default slot through the API and waits for it to be available.
func (w *testRegion) createSlotVolume(az string, generation int, extraTags map[string]string) string {
	w.t.Helper()
	tags := map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: strconv.Itoa(generation)}
	for k, v := range extraTags {
		tags[k] = v
	}
	out, err := w.ec2.CreateVolume(w.ctx(), &ec2.CreateVolumeInput{
		AvailabilityZone: aws.String(az), Size: aws.Int32(1), VolumeType: ec2types.VolumeTypeGp3,
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeVolume, tags),
	})
	if err != nil {
		w.t.Fatalf("CreateVolume: %v", err)
	}
	id := aws.ToString(out.VolumeId)
	w.waitVolumeState(id, "available")
	return id
}

func (w *testRegion) waitVolumeState(id, want string) ec2types.Volume {
	w.t.Helper()
	var v ec2types.Volume
	simtest.Eventually(w.t, waitBound, "volume "+id+" "+want, func() (bool, string) {
		out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{VolumeIds: []string{id}})
		if err != nil || len(out.Volumes) != 1 {
			return false, fmt.Sprintf("DescribeVolumes: %v", err)
		}
		v = out.Volumes[0]
		return string(v.State) == want, "state " + string(v.State)
	})
	return v
}

// snapshot snapshots a volume of the default slot the way `down` tags it, and waits for it to complete
// when wait is true.
func (w *testRegion) snapshot(volumeID string, generation int, consistent, wait bool) string {
	w.t.Helper()
	tags := map[string]string{cloud.TagGroup: testGroup, cloud.TagSlot: cloud.DefaultSlot, cloud.TagGeneration: strconv.Itoa(generation),
		cloud.TagSourceVolume: volumeID}
	if consistent {
		tags[cloud.TagConsistent] = "true"
	}
	// The tests take a consistent snapshot once nothing writes to the volume any more: it holds every
	// write, as down's final snapshot does (a periodic one, taken while the service runs, is not final:
	// handover snapshot makes those).
	if consistent {
		tags[cloud.TagFinal] = "true"
	}
	out, err := w.ec2.CreateSnapshot(w.ctx(), &ec2.CreateSnapshotInput{
		VolumeId: aws.String(volumeID), TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeSnapshot, tags),
	})
	if err != nil {
		w.t.Fatalf("CreateSnapshot: %v", err)
	}
	id := aws.ToString(out.SnapshotId)
	if wait {
		w.waitSnapshotState(id, "completed")
	}
	return id
}

func (w *testRegion) waitSnapshotState(id, want string) {
	w.t.Helper()
	simtest.Eventually(w.t, waitBound, "snapshot "+id+" "+want, func() (bool, string) {
		out, err := w.ec2.DescribeSnapshots(w.ctx(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil || len(out.Snapshots) != 1 {
			return false, fmt.Sprintf("DescribeSnapshots: %v", err)
		}
		return string(out.Snapshots[0].State) == want, "state " + string(out.Snapshots[0].State)
	})
}

// terminate terminates an instance through the API and waits until it is gone.
func (w *testRegion) terminate(id string) {
	w.t.Helper()
	if _, err := w.ec2.TerminateInstances(w.ctx(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		w.t.Fatalf("TerminateInstances: %v", err)
	}
	w.waitInstanceState(id, "terminated")
}

// calls counts the simulator's successful calls of action since the last ResetCalls.
func (w *testRegion) calls(action string) int {
	n := 0
	for _, c := range w.sim.Calls() {
		if c.Action == action && c.Code == "" {
			n++
		}
	}
	return n
}

func tagOf(tags []ec2types.Tag, key string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == key {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// mustSucceed fails the test unless the run exited 0.
func mustSucceed(t testing.TB, res agentResult) {
	t.Helper()
	if res.code != fail.CodeOK {
		t.Fatalf("up exited %d\nstdout:\n%s\nstderr:\n%s", res.code, res.stdout, res.stderr)
	}
}

// mustExit fails the test unless the run exited with code and said want on its last stderr line.
func mustExit(t testing.TB, res agentResult, code int, want ...string) {
	t.Helper()
	if res.code != code {
		t.Fatalf("up exited %d, want %d\nstdout:\n%s\nstderr:\n%s", res.code, code, res.stdout, res.stderr)
	}
	lines := strings.Split(strings.TrimRight(res.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	for _, s := range want {
		if !strings.Contains(last, s) {
			t.Errorf("error line lacks %q:\n%s", s, last)
		}
	}
}

// blkidType is the filesystem type blkid finds on a device ("" for none).
func blkidType(t *testing.T, dev string) string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", dev).Output()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 2) {
		t.Fatalf("blkid %s: %v", dev, err)
	}
	return strings.TrimSpace(string(out))
}

func TestUpFirstBootMakesBlankVolumeFilesystemAndMount(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)

	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
	mustSucceed(t, res)

	vols := w.slotVolumes()
	if len(vols) != 1 {
		t.Fatalf("%d volumes in the slot, want 1", len(vols))
	}
	v := vols[0]
	if tagOf(v.Tags, cloud.TagCreatedBlank) != "true" || tagOf(v.Tags, cloud.TagGeneration) != "1" || aws.ToString(v.AvailabilityZone) != "us-east-1a" {
		t.Errorf("first volume: tags %v, AZ %s; want created-blank, generation 1, us-east-1a", cloud.TagMap(v.Tags), aws.ToString(v.AvailabilityZone))
	}
	if len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != id || aws.ToString(v.Attachments[0].Device) != "/dev/sdf" {
		t.Errorf("attachments %+v, want %s at /dev/sdf", v.Attachments, id)
	}
	if got := w.addressHolder(alloc); got != id {
		t.Errorf("address holder %q, want %s", got, id)
	}
	m, ok, err := host.New("/dev", "/sys").MountedAt(w.mountPoint(id))
	if err != nil || !ok || m.FSType != "ext4" {
		t.Fatalf("mount at %s: %+v %v %v, want ext4", w.mountPoint(id), m, ok, err)
	}
	unit, err := os.ReadFile(filepath.Join(w.unitDir(id), host.SystemdEscapePath(w.mountPoint(id))+".mount"))
	if err != nil {
		t.Fatalf("mount unit: %v", err)
	}
	for _, want := range []string{"Where=" + w.mountPoint(id), "Type=ext4", "Options=nofail", "What=/dev/disk/by-uuid/"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q:\n%s", want, unit)
		}
	}
	for _, want := range []string{"created blank", "formatted", alloc} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, res.stdout)
		}
	}
}

// TestUpRerunAfterSuccessChangesNothing: a second run finds everything in place and makes no mutating
// API call (the simulator's call log), and leaves the mount unit file untouched.
func TestUpRerunAfterSuccessChangesNothing(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id)...))
	unitPath := filepath.Join(w.unitDir(id), host.SystemdEscapePath(w.mountPoint(id))+".mount")
	before, err := os.Stat(unitPath)
	if err != nil {
		t.Fatal(err)
	}

	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
	mustSucceed(t, res)
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("rerun made mutating calls %v, want none", m)
	}
	if !strings.Contains(res.stdout, "already attached") {
		t.Errorf("summary does not say the volume was already attached:\n%s", res.stdout)
	}
	after, err := os.Stat(unitPath)
	if err != nil || !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("mount unit rewritten on rerun (%v)", err)
	}
}

// TestUpSameAZReattach: the instance dies (after a clean unmount), its replacement in the same AZ starts
// `up` while the old one is still shutting down: up waits for the volume to be released and reattaches
// the same volume, data and all, without creating a new one.
func TestUpSameAZReattach(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(testGroup)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	data := w.writeData(w.mountPoint(old), "orders.db", 1<<20)
	w.unmount(w.mountPoint(old))
	first := w.slotVolumes()[0]

	// The old instance stays shutting-down until up has planned to wait for it.
	release := w.sim.Hold(sim.InstanceTerminate, old)
	defer release()
	if _, err := w.ec2.TerminateInstances(w.ctx(), &ec2.TerminateInstancesInput{InstanceIds: []string{old}}); err != nil {
		t.Fatal(err)
	}
	w.sim.ResetCalls()
	id := w.runInstance("us-east-1a", groupTags, true)
	run := (&downWorld{testRegion: w, group: testGroup}).startAgent(id, w.upArgs(id)...)
	run.waitLog(t, "action=wait-holder")
	release()
	res := run.wait(t)
	mustSucceed(t, res)

	vols := w.slotVolumes()
	if len(vols) != 1 || aws.ToString(vols[0].VolumeId) != aws.ToString(first.VolumeId) {
		t.Fatalf("slot volumes %d (first %s), want the one volume %s reattached", len(vols), aws.ToString(vols[0].VolumeId), aws.ToString(first.VolumeId))
	}
	if n := w.calls("CreateVolume"); n != 0 {
		t.Errorf("%d CreateVolume calls, want 0", n)
	}
	got, err := os.ReadFile(filepath.Join(w.mountPoint(id), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data after reattach: %d bytes, err %v; want the %d bytes written", len(got), err, len(data))
	}
	if h := w.addressHolder(alloc); h != id {
		t.Errorf("address holder %s, want %s", h, id)
	}
}

// TestUpCrossAZRestoreByteForByte: data written in AZ a, snapshotted through the API, comes back byte
// for byte on a new instance in AZ b, in a new volume of the next generation; the old volume is tagged
// superseded.
func TestUpCrossAZRestoreByteForByte(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	alloc := w.allocateAddress(testGroup)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	data := w.writeData(w.mountPoint(old), "orders.db", 3<<20+17)
	w.unmount(w.mountPoint(old))
	first := aws.ToString(w.slotVolumes()[0].VolumeId)
	snap := w.snapshot(first, 1, true, true)
	w.terminate(old)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--size", "2")...)
	mustSucceed(t, res)

	got, err := os.ReadFile(filepath.Join(w.mountPoint(id), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restored data: %d bytes, err %v; want the %d bytes written in us-east-1a", len(got), err, len(data))
	}
	var restored, superseded ec2types.Volume
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) == first {
			superseded = v
		} else {
			restored = v
		}
	}
	if aws.ToString(restored.AvailabilityZone) != "us-east-1b" || aws.ToString(restored.SnapshotId) != snap ||
		tagOf(restored.Tags, cloud.TagGeneration) != "2" || tagOf(restored.Tags, cloud.TagCreatedBlank) != "" || aws.ToInt32(restored.Size) != 2 {
		t.Errorf("restored volume: AZ %s, snapshot %s, size %d, tags %v; want us-east-1b, %s, 2 GiB, generation 2, not created blank",
			aws.ToString(restored.AvailabilityZone), aws.ToString(restored.SnapshotId), aws.ToInt32(restored.Size), cloud.TagMap(restored.Tags), snap)
	}
	if tagOf(superseded.Tags, cloud.TagSuperseded) != "true" {
		t.Errorf("old volume %s not tagged %s=true: %v", first, cloud.TagSuperseded, cloud.TagMap(superseded.Tags))
	}
	if h := w.addressHolder(alloc); h != id {
		t.Errorf("address holder %s, want %s", h, id)
	}
	if !strings.Contains(res.stdout, "restored from "+snap) {
		t.Errorf("summary does not name the snapshot:\n%s", res.stdout)
	}
	// The restore asked for 2 GiB, the snapshot was of 1 GiB: the filesystem grew with the volume, online
	// after the mount, where this machine allows online ext4 resize (TestUpGrowsExt4OnlineAfterMount
	// covers the machines that do not).
	var st unix.Statfs_t
	if err := unix.Statfs(w.mountPoint(id), &st); err != nil {
		t.Fatal(err)
	}
	if size := int64(st.Blocks) * st.Bsize; onlineExt4Resize(t) && size < 3<<29 {
		t.Errorf("filesystem after restore into 2 GiB: %d bytes, want about 2 GiB", size)
	} else if size < 3<<29 && !strings.Contains(res.stdout, "not grown from 1.0 GiB to 2.0 GiB") {
		t.Errorf("filesystem after restore into 2 GiB: %d bytes, and the summary does not say it was not grown:\n%s", size, res.stdout)
	}
}

// TestUpWaitsForPendingSnapshot: a newer snapshot still pending is waited for, not passed over for the
// older completed one.
func TestUpWaitsForPendingSnapshot(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	older := w.snapshot(vol, 1, true, true)
	release := w.sim.Hold(sim.SnapshotComplete, "") // the newer one stays pending until up waits for it
	defer release()
	newer := w.snapshot(vol, 1, true, false)

	id := w.runInstance("us-east-1b", groupTags, true)
	run := (&downWorld{testRegion: w, group: testGroup}).startAgent(id, w.upArgs(id, "--no-mount")...)
	run.waitLog(t, "waiting for it rather than restoring older data")
	release()
	res := run.wait(t)
	mustSucceed(t, res)
	var restored ec2types.Volume
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) != vol {
			restored = v
		}
	}
	if got := aws.ToString(restored.SnapshotId); got != newer {
		t.Errorf("restored from %q, want the pending-then-completed %s (not the older %s)", got, newer, older)
	}
	if !strings.Contains(res.stderr, "waiting for it rather than restoring older data") || !strings.Contains(res.stderr, "progress=") {
		t.Errorf("the log does not show the wait for the pending snapshot with progress:\n%s", res.stderr)
	}
}

// TestUpRefusesToFormatRestoredVolume: a snapshot of a volume without a filesystem restores into a volume
// without one; up refuses with exit 3 and leaves it unformatted.
func TestUpRefusesToFormatRestoredVolume(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil) // made by hand: no filesystem, not created blank by handover
	w.snapshot(vol, 1, true, true)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
	mustExit(t, res, fail.CodePrecondition, "no filesystem", "refusing to format")

	var restored ec2types.Volume
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) != vol {
			restored = v
		}
	}
	dev, _, err := host.New(w.agentEnv(id, nil)("HANDOVER_DEV_DIR"), w.agentEnv(id, nil)("HANDOVER_SYS_DIR")).FindVolumeDevice(aws.ToString(restored.VolumeId))
	if err != nil || dev == "" {
		t.Fatalf("device of the restored volume: %q, %v", dev, err)
	}
	if typ := blkidType(t, dev); typ != "" {
		t.Errorf("the restored volume now holds %q: it was formatted", typ)
	}
	if _, ok, _ := host.New("/dev", "/sys").MountedAt(w.mountPoint(id)); ok {
		t.Errorf("something is mounted at %s", w.mountPoint(id))
	}
}

// TestUpElasticIP: the address is free, held by a stopped instance, held by a live one (refused without
// --takeover, exit 4, before any volume is touched; taken with it), or ambiguous (exit 3).
func TestUpElasticIP(t *testing.T) {
	t.Parallel()
	t.Run("free", func(t *testing.T) {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", groupTags, true)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustSucceed(t, res)
		if h := w.addressHolder(alloc); h != id {
			t.Errorf("holder %s, want %s", h, id)
		}
		if !strings.Contains(res.stdout, alloc+": associated") {
			t.Errorf("summary:\n%s", res.stdout)
		}
	})
	t.Run("held by a stopped instance", func(t *testing.T) {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		old := w.runInstance("us-east-1a", groupTags, true)
		w.associate(alloc, old)
		if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{old}}); err != nil {
			t.Fatal(err)
		}
		w.waitInstanceState(old, "stopped")
		id := w.runInstance("us-east-1b", groupTags, true)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustSucceed(t, res)
		if h := w.addressHolder(alloc); h != id {
			t.Errorf("holder %s, want %s", h, id)
		}
		if !strings.Contains(res.stdout, "taken-over from "+old) {
			t.Errorf("summary:\n%s", res.stdout)
		}
	})
	t.Run("held by a running instance", func(t *testing.T) {
		w := newTestRegion(t)
		alloc := w.allocateAddress(testGroup)
		live := w.runInstance("us-east-1a", groupTags, true)
		w.associate(alloc, live)
		id := w.runInstance("us-east-1b", groupTags, true)
		w.sim.ResetCalls()
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--release-timeout", "1s")...)
		mustExit(t, res, fail.CodeFenced, live, "--takeover")
		if h := w.addressHolder(alloc); h != live {
			t.Errorf("holder %s after a refused claim, want %s", h, live)
		}
		if m := w.mutatingCalls(); len(m) != 0 {
			t.Errorf("a fenced up made mutating calls %v (no volume may be touched before the address is ours)", m)
		}

		// --takeover fences before it writes: the live holder is stopped (with Force) before the address moves.
		w.sim.ResetCalls()
		res = w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--takeover")...)
		mustSucceed(t, res)
		if h := w.addressHolder(alloc); h != id {
			t.Errorf("holder %s after --takeover, want %s", h, id)
		}
		if !w.isStopped(live) {
			t.Errorf("the live holder %s was not stopped by --takeover", live)
		}
		var order []string
		for _, c := range w.sim.Calls() {
			if c.Mutating && c.Code == "" && c.Caller == "AKID"+strings.ReplaceAll(id, "-", "") {
				order = append(order, c.Action)
			}
		}
		if len(order) < 2 || order[0] != "StopInstances" {
			t.Errorf("--takeover's mutating calls %v: want StopInstances first, before the address or a volume is touched", order)
		}
	})
	t.Run("several tagged", func(t *testing.T) {
		w := newTestRegion(t)
		a1, a2 := w.allocateAddress(testGroup), w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", groupTags, true)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustExit(t, res, fail.CodePrecondition, a1, a2, "exactly one")
		if len(w.slotVolumes()) != 0 {
			t.Error("a volume was created although the address was ambiguous")
		}
	})
}

// associate puts an address on an instance through the API.
func (w *testRegion) associate(alloc, instanceID string) {
	w.t.Helper()
	if _, err := w.ec2.AssociateAddress(w.ctx(), &ec2.AssociateAddressInput{AllocationId: aws.String(alloc), InstanceId: aws.String(instanceID)}); err != nil {
		w.t.Fatalf("AssociateAddress: %v", err)
	}
}

// crashAfterCreateVolume is the EC2 API of a run that dies right after CreateVolume returned, before it
// could record or attach the volume.
type crashAfterCreateVolume struct {
	cloud.EC2
	crash context.CancelFunc
}

func (c crashAfterCreateVolume) CreateVolume(ctx context.Context, in *ec2.CreateVolumeInput, opts ...func(*ec2.Options)) (*ec2.CreateVolumeOutput, error) {
	out, err := c.EC2.CreateVolume(ctx, in, opts...)
	c.crash()
	return out, err
}

// TestUpCrashAfterCreateVolumeThenRerun: a run dies right after CreateVolume; the rerun starts before
// DescribeVolumes shows the new volume (EC2's eventual consistency, 1 s here), plans the same generation,
// sends the same ClientToken and gets the same volume back: one volume, not two.
func TestUpCrashAfterCreateVolumeThenRerun(t *testing.T) {
	t.Parallel()
	const lag = time.Second
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	snap := w.snapshot(vol, 1, true, true)
	id := w.runInstance("us-east-1b", groupTags, true)
	time.Sleep(lag) // the world built above must be visible; only what the runs create lags
	w.sim.SetFaults(sim.Faults{ConsistencyDelay: lag})
	w.sim.ResetCalls()

	ctx, crash := context.WithCancel(w.ctx())
	defer crash()
	crashing := func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error) {
		c, err := cloud.NewClients(ctx, getenv, region)
		if err != nil {
			return nil, err
		}
		c.EC2 = crashAfterCreateVolume{EC2: c.EC2, crash: crash}
		return c, nil
	}
	var stderr bytes.Buffer
	err := up(ctx, Env{Getenv: w.agentEnv(id, nil), Stdout: io.Discard, Stderr: &stderr}, w.upArgs(id, "--no-mount")[1:], crashing)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("crashed run returned %v, want context.Canceled\n%s", err, stderr.String())
	}
	if n := w.calls("CreateVolume"); n != 1 {
		t.Fatalf("%d CreateVolume calls before the crash, want 1", n)
	}

	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustSucceed(t, res)
	w.sim.SetFaults(sim.Faults{})
	time.Sleep(lag) // let DescribeVolumes catch up before counting
	var made []string
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.VolumeId) != vol {
			made = append(made, aws.ToString(v.VolumeId))
			if aws.ToString(v.SnapshotId) != snap || len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != id {
				t.Errorf("restored volume %s: snapshot %s, attachments %+v", aws.ToString(v.VolumeId), aws.ToString(v.SnapshotId), v.Attachments)
			}
		}
	}
	if len(made) != 1 {
		t.Fatalf("volumes made by the crashed run and the rerun: %v, want exactly one", made)
	}
	if n := w.calls("CreateVolume"); n != 2 {
		t.Errorf("%d CreateVolume calls, want 2 (the rerun's returned the first run's volume by its token)", n)
	}
}

// TestUpConvergesUnderThrottling: with 30% of every API call failing with RequestLimitExceeded or
// InternalError, a cross-AZ restore still converges, to one volume.
func TestUpConvergesUnderThrottling(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	alloc := w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	w.snapshot(vol, 1, true, true)
	id := w.runInstance("us-east-1b", groupTags, true)
	w.sim.ResetCalls()
	w.sim.SetFaults(sim.Faults{ErrorRate: map[string]float64{"*": 0.3}})

	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	w.sim.SetFaults(sim.Faults{})
	mustSucceed(t, res)
	failed := 0
	for _, c := range w.sim.Calls() {
		if c.Code == "RequestLimitExceeded" || c.Code == "InternalError" {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no call failed: the fault injection did not happen, the test proves nothing")
	}
	if n := len(w.slotVolumes()); n != 2 {
		t.Errorf("%d volumes in the slot, want 2 (the original and one restore)", n)
	}
	if h := w.addressHolder(alloc); h != id {
		t.Errorf("holder %s, want %s", h, id)
	}
	t.Logf("%d of %d calls failed and were retried", failed, len(w.sim.Calls()))
}

// launchGroup creates a launch template and an Auto Scaling group of one in us-east-1a with a launch hook
// named "launch" (heartbeat timeout 7200 s, 72 s at test speed), and returns the instance the group
// launched once it runs.
func (w *testRegion) launchGroup(name string, policy *astypes.InstanceMaintenancePolicy) string {
	w.t.Helper()
	lt, err := w.ec2.CreateLaunchTemplate(w.ctx(), &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String(name),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens: ec2types.LaunchTemplateHttpTokensStateRequired, InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateEnabled,
			},
		},
	})
	if err != nil {
		w.t.Fatalf("CreateLaunchTemplate: %v", err)
	}
	_, err = w.as.CreateAutoScalingGroup(w.ctx(), &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(name),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Version: aws.String("$Latest")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones:         []string{"us-east-1a"},
		InstanceMaintenancePolicy: policy,
		Tags:                      []astypes.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(testGroup), PropagateAtLaunch: aws.Bool(true)}},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{{
			LifecycleHookName: aws.String("launch"), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
			HeartbeatTimeout: aws.Int32(7200), DefaultResult: aws.String("ABANDON"),
		}},
	})
	if err != nil {
		w.t.Fatalf("CreateAutoScalingGroup: %v", err)
	}
	out, err := w.as.DescribeAutoScalingGroups(w.ctx(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil || len(out.AutoScalingGroups) != 1 || len(out.AutoScalingGroups[0].Instances) != 1 {
		w.t.Fatalf("the group launched no instance: %v", err)
	}
	id := aws.ToString(out.AutoScalingGroups[0].Instances[0].InstanceId)
	w.waitInstanceState(id, "running")
	return id
}

// lifecycleState is the instance's Auto Scaling lifecycle state, "" once the group has let it go.
func (w *testRegion) lifecycleState(id string) string {
	w.t.Helper()
	out, err := w.as.DescribeAutoScalingInstances(w.ctx(), &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		w.t.Fatalf("DescribeAutoScalingInstances: %v", err)
	}
	for _, i := range out.AutoScalingInstances {
		return aws.ToString(i.LifecycleState)
	}
	return ""
}

// TestUpLaunchHook: up completes the launch lifecycle action with CONTINUE when it succeeds (the instance
// goes in service) and with ABANDON when it fails (the group terminates it).
func TestUpLaunchHook(t *testing.T) {
	t.Parallel()
	t.Run("CONTINUE on success", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		if s := w.lifecycleState(id); s != "Pending:Wait" {
			t.Fatalf("lifecycle state before up: %s, want Pending:Wait", s)
		}
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch")...)
		mustSucceed(t, res)
		if s := w.lifecycleState(id); s != "InService" && s != "Pending:Proceed" {
			t.Errorf("lifecycle state after up: %s, want Pending:Proceed or InService", s)
		}
		if !strings.Contains(res.stdout, "hook launch completed with CONTINUE") {
			t.Errorf("summary:\n%s", res.stdout)
		}
	})
	t.Run("ABANDON on failure", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch", "--require-data")...)
		mustExit(t, res, fail.CodePrecondition, "--require-data")
		if s := w.lifecycleState(id); s != "" && !strings.HasPrefix(s, "Terminating") {
			t.Errorf("lifecycle state after a failed up: %s, want Terminating (abandoned)", s)
		}
		if !strings.Contains(res.stderr, "result=ABANDON") {
			t.Errorf("the log does not show the ABANDON:\n%s", res.stderr)
		}
	})
	t.Run("a wrong hook name is bad configuration", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "lanch")...)
		mustExit(t, res, fail.CodeUsage, "--launch-hook lanch", "no hook named lanch on group orders-asg", "its hooks: launch (autoscaling:EC2_INSTANCE_LAUNCHING)")
		if s := w.lifecycleState(id); s != "Pending:Wait" {
			t.Errorf("lifecycle state after up with a wrong hook name: %s, want Pending:Wait", s)
		}
	})
	t.Run("the termination hook's name is bad configuration", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		if _, err := w.as.PutLifecycleHook(w.ctx(), &autoscaling.PutLifecycleHookInput{
			AutoScalingGroupName: aws.String("orders-asg"), LifecycleHookName: aws.String("terminate"),
			LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
		}); err != nil {
			t.Fatal(err)
		}
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "terminate")...)
		mustExit(t, res, fail.CodeUsage, "--launch-hook terminate", "is for autoscaling:EC2_INSTANCE_TERMINATING")
	})
	t.Run("--no-complete leaves it pending", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch", "--no-complete")...))
		if s := w.lifecycleState(id); s != "Pending:Wait" {
			t.Errorf("lifecycle state after up --no-complete: %s, want Pending:Wait", s)
		}
	})
}

// TestUpRefusesLaunchBeforeTerminate: a group whose maintenance policy launches before terminating would
// deadlock; up says which setting to change (exit 3) and touches neither the address nor a volume.
func TestUpRefusesLaunchBeforeTerminate(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	alloc := w.allocateAddress(testGroup)
	id := w.launchGroup("orders-asg", &astypes.InstanceMaintenancePolicy{MinHealthyPercentage: aws.Int32(100), MaxHealthyPercentage: aws.Int32(200)})
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch")...)
	mustExit(t, res, fail.CodePrecondition, "MinHealthyPercentage=100", "update-auto-scaling-group", "MinHealthyPercentage=0")
	if h := w.addressHolder(alloc); h != "" {
		t.Errorf("the address went to %s", h)
	}
	if len(w.slotVolumes()) != 0 {
		t.Error("a volume was created")
	}
}

// TestUpRefusesCapacityRebalancing: Capacity Rebalancing launches the replacement of an at-risk instance
// and waits for it before terminating the old one, the same deadlock as launch before terminate
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-capacity-rebalancing.html). up
// names the setting and the command that turns it off (exit 3), touches neither the address nor a volume,
// and abandons its launch hook so that the group does not wait for the hook's timeout.
func TestUpRefusesCapacityRebalancing(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	alloc := w.allocateAddress(testGroup)
	id := w.launchGroup("orders-asg", nil)
	if _, err := w.as.UpdateAutoScalingGroup(w.ctx(), &autoscaling.UpdateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("orders-asg"), CapacityRebalance: aws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--launch-hook", "launch")...)
	mustExit(t, res, fail.CodePrecondition, "Capacity Rebalancing on",
		"aws autoscaling update-auto-scaling-group --auto-scaling-group-name orders-asg --no-capacity-rebalance")
	if h := w.addressHolder(alloc); h != "" {
		t.Errorf("the address went to %s", h)
	}
	if len(w.slotVolumes()) != 0 {
		t.Error("a volume was created")
	}
	if n := w.calls("CompleteLifecycleAction"); n != 1 {
		t.Errorf("%d CompleteLifecycleAction calls, want 1 (ABANDON)", n)
	}
	if s := w.lifecycleState(id); s == "Pending:Wait" || s == "InService" {
		t.Errorf("lifecycle state after the refusal: %s, want the launch abandoned", s)
	}
}

// TestUpBadFlags: each bad value is exit 2 with one line naming the flag, before anything waits on the
// network.
func TestUpBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--fs", "btrfs"}, "--fs"},
		{[]string{"--type", "gp9"}, "--type"},
		{[]string{"--size", "0"}, "--size"},
		{[]string{"--type", "st1", "--size", "10"}, "--size"},
		{[]string{"--iops", "3000", "--type", "gp2"}, "--iops"},
		{[]string{"--type", "io2"}, "--iops"},
		{[]string{"--throughput", "250", "--type", "io1", "--iops", "1000"}, "--throughput"},
		{[]string{"--kms-key-id", "alias/x"}, "--encrypted"},
		{[]string{"--volume", "data:/dev/sda1:/data"}, "device"},
		{[]string{"--volume", "data:/dev/sdf:relative"}, "mount point"},
		{[]string{"--launch-hook", "bad hook"}, "--launch-hook"},
		{[]string{"--network-interface", "eth0"}, "--network-interface"},
		{[]string{"--private-ip", "10.0.0"}, "--private-ip"},
		{[]string{"--timeout", "0s"}, "--timeout"},
		{[]string{"--unit-dir", "etc"}, "--unit-dir"},
		{[]string{"--group", "a b"}, "--group"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		var stdout, stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code := Main(ctx, append([]string{"up"}, tc.args...), Env{Getenv: mapEnv(nil), Stdout: &stdout, Stderr: &stderr})
		cancel()
		msg := strings.TrimRight(stderr.String(), "\n")
		if code != fail.CodeUsage || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.want) {
			t.Errorf("up %v: exit %d, stderr %q; want exit 2 and one line naming %s", tc.args, code, msg, tc.want)
		}
	}
	// From the environment, the error names the variable, not the flag nobody passed.
	var stderr bytes.Buffer
	code := Main(context.Background(), []string{"up"}, Env{Getenv: mapEnv(map[string]string{"HANDOVER_FS": "zfs"}), Stdout: io.Discard, Stderr: &stderr})
	if code != fail.CodeUsage || !strings.Contains(stderr.String(), `environment HANDOVER_FS="zfs"`) {
		t.Errorf("HANDOVER_FS=zfs: exit %d, %q", code, stderr.String())
	}
}

// TestUpDryRunChangesNothing: the dry run prints the plan and makes no mutating call.
func TestUpDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	snap := w.snapshot(vol, 1, true, true)
	id := w.runInstance("us-east-1b", groupTags, true)
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--dry-run")...)
	mustSucceed(t, res)
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("dry run made mutating calls %v", m)
	}
	for _, want := range []string{"associate (free)", "restore consistent snapshot " + snap, "generation 2", "mount at " + w.mountPoint(id)} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, res.stdout)
		}
	}
	if len(w.slotVolumes()) != 1 {
		t.Error("the dry run created a volume")
	}
}

// TestStatusShowsEC2SideAndPlan: after up, status shows who holds the address, the slot's volumes and
// snapshots, and that up has nothing left to do.
func TestStatusShowsEC2SideAndPlan(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	alloc := w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	snap := w.snapshot(vol, 1, true, true)
	id := w.runInstance("us-east-1b", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...))

	res := w.runAgent(w.ctx(), id, nil, "status", "--json", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if res.code != fail.CodeOK {
		t.Fatalf("status exited %d: %s", res.code, res.stderr)
	}
	var st struct {
		Group string `json:"group"`
		EC2   struct {
			Address struct {
				AllocationID string `json:"allocation_id"`
				InstanceID   string `json:"instance_id"`
			} `json:"address"`
			Slots []struct {
				Action    string `json:"action"`
				Volumes   []volumeReport
				Snapshots []snapshotReport
			} `json:"slots"`
		} `json:"ec2"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, res.stdout)
	}
	if st.EC2.Address.AllocationID != alloc || st.EC2.Address.InstanceID != id {
		t.Errorf("address %+v, want %s on %s", st.EC2.Address, alloc, id)
	}
	if len(st.EC2.Slots) != 1 || st.EC2.Slots[0].Action != "done" || len(st.EC2.Slots[0].Volumes) != 2 ||
		len(st.EC2.Slots[0].Snapshots) != 1 || st.EC2.Slots[0].Snapshots[0].ID != snap {
		t.Errorf("slots %+v, want one slot, done, two volumes and snapshot %s", st.EC2.Slots, snap)
	}
	res = w.runAgent(w.ctx(), id, nil, "status", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	for _, want := range []string{"held by " + id + " (this instance)", "us-east-1a vol-", "us-east-1b vol-", "snapshot " + snap, "plan     " + "vol-"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("status text lacks %q:\n%s", want, res.stdout)
		}
	}
}

// TestUpReadsTagsThroughDescribeTagsAndWaitsForTheGroupTag: with instance tags not in metadata, up reads
// them with ec2:DescribeTags, and when the group tag arrives a moment after boot it waits for it.
func TestUpReadsTagsThroughDescribeTagsAndWaitsForTheGroupTag(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", nil, false)
	run := (&downWorld{testRegion: w, group: testGroup}).startAgent(id, w.upArgs(id, "--no-mount")...)
	run.waitLog(t, "no handover:group tag yet") // up has looked once and found none
	if _, err := w.ec2.CreateTags(w.ctx(), &ec2.CreateTagsInput{Resources: []string{id},
		Tags: []ec2types.Tag{{Key: aws.String(cloud.TagGroup), Value: aws.String(testGroup)}}}); err != nil {
		t.Fatal(err)
	}
	res := run.wait(t)
	mustSucceed(t, res)
	if !strings.Contains(res.stderr, "tags_from=ec2:DescribeTags") || !strings.Contains(res.stderr, "no handover:group tag yet") {
		t.Errorf("the log does not show tags read through DescribeTags after a wait for the group tag:\n%s", res.stderr)
	}
}

// TestUpWithoutGroup: no group tag and no --group is exit 3 naming both.
func TestUpWithoutGroup(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	id := w.runInstance("us-east-1a", map[string]string{"Name": "db"}, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustExit(t, res, fail.CodePrecondition, cloud.TagGroup, "--group")
}

// TestUpWaitsForTheInstanceLock: while another up or down holds the lock, up waits; past --timeout it
// gives up naming the lock, having changed nothing.
func TestUpWaitsForTheInstanceLock(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	lockPath := w.agentEnv(id, nil)("HANDOVER_LOCK_FILE")
	held, err := host.New("/dev", "/sys").Lock(context.Background(), lockPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--timeout", "1s")...)
	mustExit(t, res, fail.CodeFailed, lockPath)
	if m := w.mutatingCalls(); len(m) != 0 {
		t.Errorf("up made mutating calls %v without the lock", m)
	}
	held.Unlock()
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...))
}

// TestUpSeveralSlots: two --volume slots come up side by side, each with its own volume and mount; the
// second mount point lies inside the first and is given first, and still ends up mounted on top of it.
func TestUpSeveralSlots(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	data := filepath.Join(w.dir, "mnt", "data")
	logs := filepath.Join(data, "logs")
	res := w.runAgent(w.ctx(), id, nil, "up", "--size", "1", "--unit-dir", w.unitDir(id),
		"--volume", "logs:/dev/sdg:"+logs+":noatime", "--volume", "data:/dev/sdf:"+data)
	mustSucceed(t, res)
	for _, mp := range []string{data, logs} {
		if _, ok, _ := host.New("/dev", "/sys").MountedAt(mp); !ok {
			t.Errorf("nothing mounted at %s", mp)
		}
	}
	out, err := w.ec2.DescribeVolumes(w.ctx(), &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{{Name: aws.String("tag:" + cloud.TagGroup), Values: []string{testGroup}}}})
	if err != nil || len(out.Volumes) != 2 {
		t.Fatalf("%d volumes for the group, want 2 (%v)", len(out.Volumes), err)
	}
	devices := map[string]string{}
	for _, v := range out.Volumes {
		devices[tagOf(v.Tags, cloud.TagSlot)] = aws.ToString(v.Attachments[0].Device)
	}
	if devices["data"] != "/dev/sdf" || devices["logs"] != "/dev/sdg" {
		t.Errorf("slots attached at %v, want data at /dev/sdf and logs at /dev/sdg", devices)
	}
	if !strings.Contains(res.stdout, "data: vol-") || !strings.Contains(res.stdout, "logs: vol-") {
		t.Errorf("summary:\n%s", res.stdout)
	}
	// The logs mount is visible through the data mount: a file written there lands on the logs volume.
	env := w.agentEnv(id, nil)
	for _, v := range out.Volumes {
		dev, _, err := host.New(env("HANDOVER_DEV_DIR"), env("HANDOVER_SYS_DIR")).FindVolumeDevice(aws.ToString(v.VolumeId))
		if err != nil || dev == "" {
			t.Fatalf("device of %s: %q %v", aws.ToString(v.VolumeId), dev, err)
		}
		mounts, err := host.New("/dev", "/sys").MountsOf(dev)
		want := map[string]string{"data": data, "logs": logs}[tagOf(v.Tags, cloud.TagSlot)]
		if err != nil || len(mounts) != 1 || mounts[0].MountPoint != want {
			t.Errorf("slot %s (%s) mounted at %+v (%v), want %s", tagOf(v.Tags, cloud.TagSlot), dev, mounts, err, want)
		}
	}
	var stData, stLogs unix.Stat_t
	if err := unix.Stat(data, &stData); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(logs, &stLogs); err != nil {
		t.Fatal(err)
	}
	if stData.Dev == stLogs.Dev {
		t.Errorf("%s is not a mount of its own on top of %s: the child was mounted before its parent", logs, data)
	}
}

// TestUpRefusesUsedBlankVolumeWithoutFilesystem: a volume handover created blank that holds data but has
// lost its filesystem signature is not formatted (exit 3).
func TestUpRefusesUsedBlankVolumeWithoutFilesystem(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, map[string]string{cloud.TagCreatedBlank: "true"})
	img, err := os.OpenFile(filepath.Join(w.dir, "sim", "volumes", vol+".img"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("the simulator's image of %s: %v", vol, err)
	}
	if _, err := img.WriteAt([]byte("rows of orders, no superblock"), 8192); err != nil {
		t.Fatal(err)
	}
	img.Close()
	id := w.runInstance("us-east-1a", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
	mustExit(t, res, fail.CodePrecondition, vol, "holds data", "refusing to format")
	env := w.agentEnv(id, nil)
	dev, _, err := host.New(env("HANDOVER_DEV_DIR"), env("HANDOVER_SYS_DIR")).FindVolumeDevice(vol)
	if err != nil || dev == "" {
		t.Fatalf("device of %s: %q %v", vol, dev, err)
	}
	if typ := blkidType(t, dev); typ != "" {
		t.Errorf("%s was formatted (%s)", vol, typ)
	}
}

// TestUpDeleteSuperseded: --delete-superseded deletes an older generation that is detached, once a
// snapshot of the restored volume has completed, and never one that is attached (here to a stopped
// instance, which keeps it).
func TestUpDeleteSuperseded(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	detached := w.createSlotVolume("us-east-1a", 1, nil)
	kept := w.createSlotVolume("us-east-1a", 2, nil)
	stopped := w.runInstance("us-east-1a", nil, true)
	if _, err := w.ec2.AttachVolume(w.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(kept), InstanceId: aws.String(stopped), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	w.waitVolumeState(kept, "in-use")
	if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{stopped}}); err != nil {
		t.Fatal(err)
	}
	w.waitInstanceState(stopped, "stopped")
	snap := w.snapshot(kept, 2, true, true)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--delete-superseded")...)
	mustSucceed(t, res)
	if n := len(w.slotVolumes()); n != 3 {
		t.Errorf("just restored: %d volumes, want all 3 (nothing deleted before a snapshot of the new volume completes)", n)
	}
	// The snapshot timer's first snapshot of the restored volume completes; then retention deletes.
	w.snapshot(aws.ToString(w.restoredVolume("us-east-1b").VolumeId), 3, true, true)
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--delete-superseded")...))
	left := map[string]ec2types.Volume{}
	for _, v := range w.slotVolumes() {
		left[aws.ToString(v.VolumeId)] = v
	}
	if _, ok := left[detached]; ok {
		t.Errorf("detached generation 1 %s was not deleted", detached)
	}
	if v, ok := left[kept]; !ok || tagOf(v.Tags, cloud.TagSuperseded) != "true" || len(v.Attachments) != 1 {
		t.Errorf("generation 2 %s, attached to stopped %s: present %v, tags %v; want kept, attached and tagged superseded", kept, stopped, ok, cloud.TagMap(v.Tags))
	}
	// The snapshot of the stopped instance's volume is final (taken with nothing writing): it holds every
	// write, so the restore loses nothing and nothing needs saying about the volume that stays behind.
	if len(left) != 2 || !strings.Contains(res.stdout, "restored from "+snap) {
		t.Errorf("volumes left %d, want the restore and %s\nstdout:\n%s\nstderr:\n%s", len(left), kept, res.stdout, res.stderr)
	}
}

// TestUpNetworkInterface: --network-interface associates the address with that interface.
func TestUpNetworkInterface(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	alloc := w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		t.Fatal(err)
	}
	eni := aws.ToString(out.Reservations[0].Instances[0].NetworkInterfaces[0].NetworkInterfaceId)
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--network-interface", eni)...))
	addrs, err := w.ec2.DescribeAddresses(w.ctx(), &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
	if err != nil || aws.ToString(addrs.Addresses[0].NetworkInterfaceId) != eni || aws.ToString(addrs.Addresses[0].InstanceId) != id {
		t.Errorf("address %+v (%v), want it on %s of %s", addrs.Addresses, err, eni, id)
	}
}

// TestUpDetachesFromStoppedInstance: the slot's volume is attached to a stopped instance in this AZ (its
// OS is not running); up detaches it and attaches it here, the same volume, nothing restored.
func TestUpDetachesFromStoppedInstance(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	vol := w.createSlotVolume("us-east-1a", 1, nil)
	old := w.runInstance("us-east-1a", nil, true)
	if _, err := w.ec2.AttachVolume(w.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(old), Device: aws.String("/dev/sdf")}); err != nil {
		t.Fatal(err)
	}
	w.waitVolumeState(vol, "in-use")
	if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{old}}); err != nil {
		t.Fatal(err)
	}
	w.waitInstanceState(old, "stopped")
	id := w.runInstance("us-east-1a", groupTags, true)
	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
	mustSucceed(t, res)
	if w.calls("DetachVolume") != 1 || w.calls("CreateVolume") != 0 {
		t.Errorf("DetachVolume %d, CreateVolume %d calls; want 1 and 0", w.calls("DetachVolume"), w.calls("CreateVolume"))
	}
	v := w.waitVolumeState(vol, "in-use")
	if len(v.Attachments) != 1 || aws.ToString(v.Attachments[0].InstanceId) != id {
		t.Errorf("%s attached to %+v, want %s", vol, v.Attachments, id)
	}
	if !strings.Contains(res.stdout, vol) || !strings.Contains(res.stdout, "reattached") {
		t.Errorf("summary:\n%s", res.stdout)
	}
}

// staleAddressAfterAssociate is the EC2 API as seen from a region whose DescribeAddresses lags a
// successful AssociateAddress (EC2's eventual consistency): the first reads after it still show the
// address as it was before.
type staleAddressAfterAssociate struct {
	cloud.EC2
	mu     *sync.Mutex
	before *ec2.DescribeAddressesOutput // the last answer before AssociateAddress
	stale  *int                         // reads left that answer before
}

func (c staleAddressAfterAssociate) DescribeAddresses(ctx context.Context, in *ec2.DescribeAddressesInput, opts ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error) {
	c.mu.Lock()
	if *c.stale > 0 && c.before != nil {
		*c.stale--
		out := c.before
		c.mu.Unlock()
		return out, nil
	}
	c.mu.Unlock()
	out, err := c.EC2.DescribeAddresses(ctx, in, opts...)
	if err == nil {
		c.mu.Lock()
		*c.before = *out
		c.mu.Unlock()
	}
	return out, err
}

func (c staleAddressAfterAssociate) AssociateAddress(ctx context.Context, in *ec2.AssociateAddressInput, opts ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error) {
	out, err := c.EC2.AssociateAddress(ctx, in, opts...)
	if err == nil {
		c.mu.Lock()
		*c.stale = 2
		c.mu.Unlock()
	}
	return out, err
}

// TestUpElasticIPVerifyToleratesAStaleDescribe: right after AssociateAddress succeeds, DescribeAddresses
// may still show the address free or on its old holder. That is a stale read, not a lost race: up must
// look again until its own association shows, not exit 4 (and abandon the launch) holding the address.
func TestUpElasticIPVerifyToleratesAStaleDescribe(t *testing.T) {
	t.Parallel()
	for _, held := range []bool{false, true} {
		name := "free"
		if held {
			name = "held by a stopped instance"
		}
		t.Run(name, func(t *testing.T) {
			w := newTestRegion(t)
			alloc := w.allocateAddress(testGroup)
			if held {
				old := w.runInstance("us-east-1a", groupTags, true)
				w.associate(alloc, old)
				if _, err := w.ec2.StopInstances(w.ctx(), &ec2.StopInstancesInput{InstanceIds: []string{old}}); err != nil {
					t.Fatal(err)
				}
				w.waitInstanceState(old, "stopped")
			}
			id := w.runInstance("us-east-1b", groupTags, true)
			lagging := func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error) {
				c, err := cloud.NewClients(ctx, getenv, region)
				if err != nil {
					return nil, err
				}
				c.EC2 = staleAddressAfterAssociate{EC2: c.EC2, mu: &sync.Mutex{}, before: &ec2.DescribeAddressesOutput{}, stale: new(int)}
				return c, nil
			}
			var stdout, stderr bytes.Buffer
			err := up(w.ctx(), Env{Getenv: w.agentEnv(id, nil), Stdout: &stdout, Stderr: &stderr}, w.upArgs(id, "--no-mount")[1:], lagging)
			if err != nil {
				t.Fatalf("up: exit %d: %v\n%s", ExitCode(err), err, stderr.String())
			}
			if h := w.addressHolder(alloc); h != id {
				t.Errorf("holder %s, want %s", h, id)
			}
		})
	}
}

// TestUpSnapshotsTheOrphanInsteadOfRestoringOlderData: the slot's newest volume (generation 2, detached in
// the other AZ, its instance gone without down) was never snapshotted. up does not restore generation 1's
// snapshot and drop generation 2's writes: it snapshots generation 2 where it is (crash-consistent, final),
// restores that, and says so; --delete-superseded may then delete both old volumes, for the restore holds
// all they held.
func TestUpSnapshotsTheOrphanInsteadOfRestoringOlderData(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	old := w.createSlotVolume("us-east-1a", 1, nil)
	periodic := w.snapshot(old, 1, false, true) // a periodic snapshot: not final
	newer := w.createSlotVolume("us-east-1a", 2, nil)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount", "--delete-superseded")...)
	mustSucceed(t, res)
	var restored ec2types.Volume
	for _, v := range w.slotVolumes() {
		if aws.ToString(v.AvailabilityZone) == "us-east-1b" {
			restored = v
		}
	}
	from := aws.ToString(restored.SnapshotId)
	if from == "" || from == periodic {
		t.Fatalf("restored from %q, want a new snapshot of %s (not the older %s)\n%s", from, newer, periodic, res.stdout)
	}
	out, err := w.ec2.DescribeSnapshots(w.ctx(), &ec2.DescribeSnapshotsInput{SnapshotIds: []string{from}})
	if err != nil || len(out.Snapshots) != 1 || aws.ToString(out.Snapshots[0].VolumeId) != newer ||
		tagOf(out.Snapshots[0].Tags, cloud.TagFinal) != "true" || tagOf(out.Snapshots[0].Tags, cloud.TagConsistent) == "true" {
		t.Fatalf("the restored snapshot %s: %+v, %v; want a final, crash-consistent snapshot of %s", from, out, err, newer)
	}
	if !strings.Contains(res.stderr, "snapshotted it where it is") {
		t.Errorf("up does not say it snapshotted the orphan:\n%s", res.stderr)
	}
}

// TestUpTimeoutNamesTheStep: when --timeout runs out, the line names the step each slot was at (the slots
// converge in parallel), here the wait for a device that never appears.
func TestUpTimeoutNamesTheStep(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	empty := t.TempDir() // no disk/by-id here: the device never appears
	res := w.runAgent(w.ctx(), id, map[string]string{"HANDOVER_DEV_DIR": empty}, w.upArgs(id, "--timeout", "5s")...)
	mustExit(t, res, fail.CodeFailed, "did not finish within --timeout 5s", `it was at step "volumes: data at device"`)
}
