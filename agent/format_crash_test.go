package agent

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
)

// When handover formats (agent/filesystem.go, FENCING.md): a crash during its own mkfs no longer strands
// the volume, and a volume it handed out raw is never formatted.

// mkfsWrappers are mkfs.ext4 stand-ins, put first on the PATH of a handover process: each runs (or
// imitates) the real mkfs and then dies the way a crash would. REAL is the real mkfs.ext4.
var mkfsWrappers = map[string]string{
	// The real mkfs, killed with SIGKILL together with handover as soon as it has written to the device
	// (if it finishes first, handover is killed right after it).
	"killed during mkfs": `#!/bin/sh
for a; do dev=$a; done
size=$(blockdev --getsize64 "$dev")
"$REAL" "$@" &
pid=$!
while kill -0 $pid 2>/dev/null && cmp -s -n "$size" /dev/zero "$dev"; do :; done
kill -9 $pid 2>/dev/null
kill -9 $PPID
`,
	// Some of what a mkfs writes (blocks at the start, the middle and the end, no complete filesystem),
	// then killed: handover sees its mkfs die and fails.
	"mkfs writes some blocks and is killed": `#!/bin/sh
for a; do dev=$a; done
blocks=$(( $(blockdev --getsize64 "$dev") / 4096 ))
for at in 0 $((blocks / 2)) $((blocks - 1)); do
	head -c 4096 /dev/urandom | dd of="$dev" bs=4096 seek=$at count=1 conv=notrunc,fsync 2>/dev/null
done
kill -9 $$
`,
	// The real mkfs completes, and handover is killed before it records the hand-out and mounts.
	"killed after mkfs before the mount": `#!/bin/sh
"$REAL" "$@" || exit $?
kill -9 $PPID
`,
}

// TestUpConvergesAfterACrashDuringItsOwnMkfs: up is killed part way through the mkfs of the blank volume
// it created (in a process of its own, its mkfs.ext4 a wrapper of the real one). The volume is left
// tagged handover:formatting and not handed out, with some of mkfs's bytes on it. The rerun makes the
// filesystem again and mounts it, with exactly one volume for the slot. Before, the rerun found a volume
// created blank with non-zero bytes and refused it for ever (exit 3): the group looped on ABANDON.
func TestUpConvergesAfterACrashDuringItsOwnMkfs(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	real, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Fatal(err)
	}
	for name, script := range mkfsWrappers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			w := newTestRegion(t)
			w.unmountOnCleanup()
			w.allocateAddress(testGroup)
			id := w.runInstance("us-east-1a", groupTags, true)
			bin := filepath.Join(w.dir, "crashing-bin")
			if err := os.MkdirAll(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(bin, "mkfs.ext4"), []byte(strings.ReplaceAll(script, `"$REAL"`, `"`+real+`"`)), 0o755); err != nil {
				t.Fatal(err)
			}

			p := w.startAgentProcess(id, map[string]string{"PATH": bin + ":" + os.Getenv("PATH")}, w.upArgs(id)...)
			<-p.done
			if p.err == nil {
				t.Fatalf("up with a crashing mkfs succeeded\nstderr:\n%s", p.stderr.String())
			}
			vols := w.slotVolumes()
			if len(vols) != 1 {
				t.Fatalf("%d volumes after the crash, want the one made", len(vols))
			}
			vol := aws.ToString(vols[0].VolumeId)
			if tagOf(vols[0].Tags, cloud.TagFormatting) != "true" || tagOf(vols[0].Tags, cloud.TagHandedOut) != "" {
				t.Errorf("after the crash %s is tagged %v; want %s=true and not handed out", vol, cloud.TagMap(vols[0].Tags), cloud.TagFormatting)
			}
			dev := w.deviceOf(id, vol)
			t.Logf("after the crash %s holds %q", dev, blkidType(t, dev))
			if used, _ := host.New("/dev", "/sys").HoldsData(dev); used == "" && name != "killed during mkfs" {
				t.Errorf("the crashed mkfs left no bytes the byte check sees: the test proves less than it says")
			}

			res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
			mustSucceed(t, res)
			if !strings.Contains(res.stdout, "formatted (created blank)") {
				t.Errorf("the rerun did not make the filesystem:\n%s", res.stdout)
			}
			if typ := blkidType(t, dev); typ != "ext4" {
				t.Errorf("%s holds %q after the rerun, want ext4", dev, typ)
			}
			w.writeData(w.mountPoint(id), "after-the-crash", 4096)
			vols = w.slotVolumes()
			if len(vols) != 1 || aws.ToString(vols[0].VolumeId) != vol {
				t.Errorf("volumes of the slot after the rerun: %d, want exactly %s", len(vols), vol)
			}
			if tagOf(vols[0].Tags, cloud.TagHandedOut) != "true" {
				t.Errorf("%s mounted but not tagged %s", vol, cloud.TagHandedOut)
			}
			// And a rerun after success changes nothing.
			w.sim.ResetCalls()
			mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id)...))
			if calls := w.mutatingCalls(); len(calls) != 0 {
				t.Errorf("a rerun after success made mutating calls: %v", calls)
			}
		})
	}
}

// TestUpNeverFormatsAVolumeHandedOutRaw: a volume up created blank and handed out raw (--no-mount), to
// which the user then wrote without a filesystem (data in the middle of the device, both ends zeros,
// between the byte check's samples), is refused by a later up that mounts: exit 3, one line, the data
// intact and no filesystem made. Before, both ends read as zeros, so up formatted it.
func TestUpNeverFormatsAVolumeHandedOutRaw(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...))
	vols := w.slotVolumes()
	if len(vols) != 1 {
		t.Fatalf("after up --no-mount: %d volumes, want one", len(vols))
	}
	if tagOf(vols[0].Tags, cloud.TagHandedOut) != "true" || tagOf(vols[0].Tags, cloud.TagFormatting) != "" {
		t.Errorf("after up --no-mount: tags %v; want handed out, no mkfs started", cloud.TagMap(vols[0].Tags))
	}
	vol := aws.ToString(vols[0].VolumeId)
	dev := w.deviceOf(id, vol)

	// The user's raw writes: 1 MiB in the middle of the device.
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	size := int64(aws.ToInt32(vols[0].Size)) << 30
	at := size / 2
	writeDevice(t, dev, at, data)
	if used, err := host.New("/dev", "/sys").HoldsData(dev); err != nil || used != "" {
		t.Fatalf("the byte check sees the data (%q, %v): the test must show the tag, not the sample, protects it", used, err)
	}

	w.sim.ResetCalls()
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id)...)
	mustExit(t, res, fail.CodePrecondition, vol, cloud.TagHandedOut, "refusing to format")
	if n := strings.Count(res.stderr, "handover up:"); n != 1 {
		t.Errorf("%d error lines, want one", n)
	}
	if typ := blkidType(t, dev); typ != "" {
		t.Errorf("%s was formatted (%s)", vol, typ)
	}
	if got := readDevice(t, dev, at, len(data)); !bytes.Equal(got, data) {
		t.Error("the data written to the raw device changed")
	}
	for _, c := range w.sim.Calls() {
		if c.Action == "CreateTags" {
			t.Errorf("up tagged something while refusing: %+v", c)
		}
	}
}

// deviceOf is the block device of volume vol attached to instance id.
func (w *testRegion) deviceOf(id, vol string) string {
	w.t.Helper()
	env := w.agentEnv(id, nil)
	dev, seen, err := host.New(env("HANDOVER_DEV_DIR"), env("HANDOVER_SYS_DIR")).FindVolumeDevice(vol)
	if err != nil || dev == "" {
		w.t.Fatalf("device of %s: %q %v (%s)", vol, dev, err, seen)
	}
	return dev
}

func writeDevice(t *testing.T, dev string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func readDevice(t *testing.T, dev string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
