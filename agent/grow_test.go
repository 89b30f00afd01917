package agent

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"golang.org/x/sys/unix"
)

// onlineExt4Resize reports whether this machine lets a mounted ext4 grow (resize2fs on the mounted device:
// the kernel's online resize, which a container without CAP_SYS_RESOURCE is refused), tried on a scratch
// loop device.
func onlineExt4Resize(t *testing.T) bool {
	t.Helper()
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "img"), filepath.Join(dir, "mnt")
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Logf("%s %v: %v: %s", name, args, err, out)
		}
		return err
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := run("mkfs.ext4", "-q", "-F", img); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).Output()
	if err != nil {
		t.Fatalf("losetup: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer func() { _ = run("losetup", "-d", loop) }()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(loop, mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount the scratch ext4: %v", err)
	}
	defer func() { _ = unix.Unmount(mnt, 0) }()
	return run("resize2fs", loop) == nil
}

// TestUpGrowsExt4OnlineAfterMount: a restore of an ext4 volume into a larger one is mounted first and
// grown online after (resize2fs on the mounted filesystem), never checked and resized offline before the
// mount. Where the kernel allows online resize the filesystem is the new size; where it does not (a
// container without CAP_SYS_RESOURCE, like this project's sandbox) up still succeeds with the data mounted
// at the old size and says the grow failed: both are asserted, whichever this machine is.
func TestUpGrowsExt4OnlineAfterMount(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	online := onlineExt4Resize(t)
	t.Logf("online ext4 resize on this machine: %v", online)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	old := w.runInstance("us-east-1a", groupTags, true)
	mustSucceed(t, w.runAgent(w.ctx(), old, nil, w.upArgs(old)...))
	data := w.writeData(w.mountPoint(old), "orders.db", 1<<20+3)
	w.unmount(w.mountPoint(old))
	w.snapshot(aws.ToString(w.slotVolumes()[0].VolumeId), 1, true, true)
	w.terminate(old)

	id := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--size", "2")...)
	mustSucceed(t, res)
	got, err := os.ReadFile(filepath.Join(w.mountPoint(id), "orders.db"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("restored data: %d bytes, err %v; want the %d bytes written", len(got), err, len(data))
	}
	mounted, grew := strings.Index(res.stderr, "msg=mounted"), strings.Index(res.stderr, "filesystem grown to the volume")
	if grew < 0 {
		grew = strings.Index(res.stderr, "filesystem not grown")
	}
	if mounted < 0 || grew < 0 || grew < mounted {
		t.Errorf("the log does not show the mount before the grow (mounted at %d, grow at %d):\n%s", mounted, grew, res.stderr)
	}
	if strings.Contains(res.stderr+res.stdout, "e2fsck") {
		t.Errorf("up ran or mentioned e2fsck: the grow is online only\n%s", res.stderr)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(w.mountPoint(id), &st); err != nil {
		t.Fatal(err)
	}
	size := int64(st.Blocks) * st.Bsize
	if online {
		if size < 3<<29 || !strings.Contains(res.stdout, "grown from") {
			t.Errorf("ext4 after the restore into 2 GiB: %d bytes, summary:\n%s\nwant about 2 GiB, grown", size, res.stdout)
		}
		return
	}
	if size > 1<<30 || !strings.Contains(res.stdout, "not grown from 1.0 GiB to 2.0 GiB") {
		t.Errorf("ext4 without online resize: %d bytes, summary:\n%s\nwant the old 1 GiB and the failed grow said", size, res.stdout)
	}
	assertWritable(t, w.mountPoint(id))
}
