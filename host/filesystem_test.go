package host

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handover/handover/host/hosttest"
	"golang.org/x/sys/unix"
)

func TestSystemdEscapePath(t *testing.T) {
	t.Parallel()
	// Expected values are what `systemd-escape --path` prints.
	for in, want := range map[string]string{
		"/data":         "data",
		"/var/lib/pg":   "var-lib-pg",
		"/srv/my-data":  `srv-my\x2ddata`,
		"/mnt/a b":      `mnt-a\x20b`,
		"/.hidden/x":    `\x2ehidden-x`,
		"/data/":        "data",
		"/srv/db.v2/x_": "srv-db.v2-x_",
	} {
		if got := SystemdEscapePath(in); got != want {
			t.Errorf("SystemdEscapePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteMountUnitIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	u := MountUnit{Group: "orders", Slot: "data", UUID: "0b1c2d3e-1111-2222-3333-444455556666", MountPoint: "/srv/my-data", Type: "xfs", Options: "noatime"}
	path, err := (&Linux{}).WriteMountUnit(dir, u)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != `srv-my\x2ddata.mount` {
		t.Errorf("unit file %s: systemd requires the escaped mount point as the name", path)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{"What=/dev/disk/by-uuid/0b1c2d3e-1111-2222-3333-444455556666", "Where=/srv/my-data", "Type=xfs",
		"Options=nofail,noatime", "WantedBy=local-fs.target"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q:\n%s", want, b)
		}
	}
	link := filepath.Join(dir, "local-fs.target.wants", filepath.Base(path))
	if target, err := os.Readlink(link); err != nil || filepath.Join(filepath.Dir(link), target) != path {
		t.Errorf("enable link %s -> %q (%v), want the unit", link, target, err)
	}
	st1, _ := os.Stat(path)
	if _, err := (&Linux{}).WriteMountUnit(dir, u); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(path)
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("an unchanged unit was rewritten")
	}
	u.Options = ""
	if _, err := (&Linux{}).WriteMountUnit(dir, u); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "Options=nofail\n") {
		t.Errorf("changed options not written:\n%s", b)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestParseFilesystemSizes(t *testing.T) {
	t.Parallel()
	dump := "Filesystem volume name:   <none>\nBlock count:              262144\nReserved block count:     13107\nBlock size:               4096\n"
	if n, err := parseExtSize(dump); err != nil || n != 1<<30 {
		t.Errorf("ext size %d, %v; want 1 GiB", n, err)
	}
	info := `meta-data=/dev/nvme1n1           isize=512    agcount=4, agsize=65536 blks
         =                       sectsz=512   attr=2, projid32bit=1
data     =                       bsize=4096   blocks=524288, imaxpct=25
         =                       sunit=0      swidth=0 blks
naming   =version 2              bsize=4096   ascii-ci=0, ftype=1
`
	if n, err := parseXFSSize(info); err != nil || n != 2<<30 {
		t.Errorf("xfs size %d, %v; want 2 GiB", n, err)
	}
	if _, err := parseExtSize("garbage"); err == nil {
		t.Error("garbage parsed as an ext size")
	}
}

// TestFindVolumeDevice: the by-id link is followed only to a block device whose serial is the volume's; a
// stale link (serial of another volume) is not accepted, a link to a regular file is an error.
func TestFindVolumeDevice(t *testing.T) {
	t.Parallel()
	hosttest.RequireRoot(t)
	dir := t.TempDir()
	devDir, sysDir := filepath.Join(dir, "dev"), filepath.Join(dir, "sys")
	const vol = "vol-0123456789abcdef0"
	node := filepath.Join(dir, "nvme1n1")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(259, 77))); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	if d, seen, err := (&Linux{DevDir: devDir, SysDir: sysDir}).FindVolumeDevice(vol); d != "" || err != nil || !strings.Contains(seen, "no nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0") {
		t.Errorf("no link: %q %q %v", d, seen, err)
	}
	link := DeviceLink(devDir, vol)
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(node, link); err != nil {
		t.Fatal(err)
	}
	serial := filepath.Join(sysDir, "class", "block", "nvme1n1", "device", "serial")
	if err := os.MkdirAll(filepath.Dir(serial), 0o755); err != nil {
		t.Fatal(err)
	}
	if d, seen, err := (&Linux{DevDir: devDir, SysDir: sysDir}).FindVolumeDevice(vol); d != "" || err != nil || !strings.Contains(seen, "no serial") {
		t.Errorf("no serial yet: %q %q %v", d, seen, err)
	}
	if err := os.WriteFile(serial, []byte("vol0fffffffffffffff1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, seen, err := (&Linux{DevDir: devDir, SysDir: sysDir}).FindVolumeDevice(vol); d != "" || err != nil || !strings.Contains(seen, "stale link") {
		t.Errorf("stale link accepted: %q %q %v", d, seen, err)
	}
	if err := os.WriteFile(serial, []byte("vol0123456789abcdef0 \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d, _, err := (&Linux{DevDir: devDir, SysDir: sysDir}).FindVolumeDevice(vol); d != node || err != nil {
		t.Errorf("matching serial: %q %v, want %s", d, err, node)
	}
	// A link to a regular file is never a device, however long one waits.
	file := filepath.Join(dir, "image")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(link)
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	if _, _, err := (&Linux{DevDir: devDir, SysDir: sysDir}).FindVolumeDevice(vol); err == nil {
		t.Error("a link to a regular file was accepted")
	}
}

func TestHoldsData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "disk")
	if err := os.WriteFile(path, make([]byte, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if used, err := (&Linux{}).HoldsData(path); err != nil || used != "" {
		t.Errorf("all zeros: %q %v", used, err)
	}
	for _, off := range []int64{4096, 3<<20 - 10} {
		f, _ := os.OpenFile(path, os.O_WRONLY, 0)
		_, _ = f.WriteAt([]byte{1}, off)
		f.Close()
		if used, err := (&Linux{}).HoldsData(path); err != nil || !strings.Contains(used, "offset") {
			t.Errorf("a byte at %d: %q %v", off, used, err)
		}
		f, _ = os.OpenFile(path, os.O_WRONLY, 0)
		_, _ = f.WriteAt([]byte{0}, off)
		f.Close()
	}
	// In the middle: a device this small is read whole.
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	_, _ = f.WriteAt([]byte{1}, 3<<19)
	f.Close()
	if used, _ := (&Linux{}).HoldsData(path); !strings.Contains(used, "offset") {
		t.Errorf("a byte in the middle of a 3 MiB device was not seen (%q)", used)
	}
}

// TestHoldsDataSamplesTheMiddle: on a large device HoldsData reads both ends and evenly spread stretches
// between them: data written raw in the middle is seen where it touches one, and not between them (the
// tags, not this sample, are what keep a handed-out volume from being formatted).
func TestHoldsDataSamplesTheMiddle(t *testing.T) {
	t.Parallel()
	const size = 1 << 30
	path := filepath.Join(t.TempDir(), "disk")
	if err := os.Truncate(hosttest.MustCreate(t, path), size); err != nil {
		t.Fatal(err)
	}
	offs := sampleOffsets(size)
	if len(offs) != blankSamples+2 || offs[0] != 0 || offs[len(offs)-1] != size-blankProbe {
		t.Fatalf("sampleOffsets(1 GiB) = %d offsets from %d to %d", len(offs), offs[0], offs[len(offs)-1])
	}
	write := func(off int64, b byte) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{b}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	mid := offs[len(offs)/2]
	write(mid+blankProbe/2, 0xab) // inside a sample
	if used, _ := (&Linux{}).HoldsData(path); !strings.Contains(used, "offset") {
		t.Errorf("a block inside the sample at %d was not seen (%q)", mid, used)
	}
	write(mid+blankProbe/2, 0)
	write(mid+blankProbe+(offs[len(offs)/2+1]-mid-blankProbe)/2, 0xab) // between two samples
	if used, _ := (&Linux{}).HoldsData(path); used != "" {
		t.Errorf("a block between two samples was seen (%q): the test's idea of the samples is wrong", used)
	}
}
