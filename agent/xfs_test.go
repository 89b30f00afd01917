package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/handover/handover/host"
	"golang.org/x/sys/unix"
)

// requireXFS skips (fails in CI, where scripts/tools.sh installs xfsprogs) when the xfs tools are missing.
func requireXFS(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.xfs", "xfs_growfs", "xfs_info"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is missing: scripts/tools.sh installs xfsprogs in CI", tool)
			}
			t.Skipf("%s is missing (apt-get install xfsprogs)", tool)
		}
	}
}

// TestUpXFSFirstBootThenCrossAZRestoreAndGrow: with --fs xfs the first boot makes an xfs filesystem on the
// blank volume; the replacement in the other AZ restores it into a larger volume, and xfs (which grows only
// online) is grown after the mount; the data is back byte for byte.
func TestUpXFSFirstBootThenCrossAZRestoreAndGrow(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	requireXFS(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old, "--fs", "xfs")...))

	dev, err := filepath.EvalSymlinks(host.DeviceLink(w.agentEnv(old, nil)("HANDOVER_DEV_DIR"), aws.ToString(w.slotVolumes()[0].VolumeId)))
	if err != nil {
		t.Fatalf("device of the first volume: %v", err)
	}
	if got := blkidType(t, dev); got != "xfs" {
		t.Fatalf("first boot made %q, want xfs", got)
	}
	data := w.writeData(w.mountPoint(old), "orders.db", 2<<20+5)
	w.unmount(w.mountPoint(old))
	first := aws.ToString(w.slotVolumes()[0].VolumeId)
	w.snapshot(first, 1, true, true)
	w.terminate(old)

	id := w.runInstance("us-east-1b", groupTags, true)
	// --fs xfs again: it must not matter for a restored volume, which is never formatted.
	mustSucceed(t, w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--fs", "xfs", "--size", "2")...))
	got, err := os.ReadFile(filepath.Join(w.mountPoint(id), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restored data: %d bytes, err %v; want the %d bytes written in us-east-1a", len(got), err, len(data))
	}
	var st unix.Statfs_t
	if err := unix.Statfs(w.mountPoint(id), &st); err != nil || int64(st.Blocks)*st.Bsize < 3<<29 {
		t.Errorf("xfs after restore into 2 GiB: %d bytes (%v), want about 2 GiB", int64(st.Blocks)*st.Bsize, err)
	}
	if st.Type != unix.XFS_SUPER_MAGIC {
		t.Errorf("mounted filesystem type %#x, want xfs", st.Type)
	}
}
