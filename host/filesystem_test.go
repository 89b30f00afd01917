package host

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// fakeSystemd is a running systemd that loads units from every directory and counts its reloads.
type fakeSystemd struct {
	booted    bool
	reloads   int
	err       error
	deadlines []time.Duration // how long each reload was given
}

func (f *fakeSystemd) systemd() Systemd {
	return Systemd{
		Booted: func() bool { return f.booted },
		Reload: func(ctx context.Context) error {
			f.reloads++
			if d, ok := ctx.Deadline(); ok {
				f.deadlines = append(f.deadlines, time.Until(d))
			}
			return f.err
		},
		Loads: func(string) bool { return true },
	}
}

func TestWriteMountUnitIsIdempotent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sd := &fakeSystemd{booted: true}
	l := &Linux{Systemd: sd.systemd()}
	ctx, log := context.Background(), hosttest.Logger(t)
	u := MountUnit{Group: "orders", Slot: "data", UUID: "0b1c2d3e-1111-2222-3333-444455556666", MountPoint: "/srv/my-data", Type: "xfs", Options: "noatime"}
	path, err := l.WriteMountUnit(ctx, log, dir, u)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != `srv-my\x2ddata.mount` {
		t.Errorf("unit file %s: systemd requires the escaped mount point as the name", path)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{"What=/dev/disk/by-uuid/0b1c2d3e-1111-2222-3333-444455556666", "Where=/srv/my-data", "Type=xfs",
		"Options=nofail,noatime\n", "WantedBy=local-fs.target"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("unit lacks %q:\n%s", want, b)
		}
	}
	link := filepath.Join(dir, "local-fs.target.wants", filepath.Base(path))
	if target, err := os.Readlink(link); err != nil || filepath.Join(filepath.Dir(link), target) != path {
		t.Errorf("enable link %s -> %q (%v), want the unit", link, target, err)
	}
	if sd.reloads != 1 {
		t.Errorf("a new unit on a running systemd: %d daemon-reloads, want 1", sd.reloads)
	}
	st1, _ := os.Stat(path)
	if _, err := l.WriteMountUnit(ctx, log, dir, u); err != nil {
		t.Fatal(err)
	}
	st2, _ := os.Stat(path)
	if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("an unchanged unit was rewritten")
	}
	if sd.reloads != 1 {
		t.Errorf("an unchanged unit: %d daemon-reloads in all, want still 1", sd.reloads)
	}
	u.Options = ""
	if _, err := l.WriteMountUnit(ctx, log, dir, u); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !strings.Contains(string(b), "Options=nofail\n") {
		t.Errorf("changed options not written:\n%s", b)
	}
	if sd.reloads != 2 {
		t.Errorf("a changed unit: %d daemon-reloads in all, want 2", sd.reloads)
	}
	for _, d := range sd.deadlines {
		if d <= 0 || d > daemonReloadBound {
			t.Errorf("daemon-reload given %s, want a bound of at most %s", d, daemonReloadBound)
		}
	}
	if len(sd.deadlines) != sd.reloads {
		t.Errorf("%d of %d daemon-reloads had no bound", sd.reloads-len(sd.deadlines), sd.reloads)
	}
	filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), ".") && p != dir {
			t.Errorf("temporary file %s left behind", p)
		}
		return nil
	})
}

// TestMountUnitCarriesADeviceTimeout: the boot's wait for the device is bounded the way systemd's own
// generators bound it for x-systemd.device-timeout= (which a unit's Options= ignores): a drop-in of the
// device unit with JobRunningTimeoutSec=. A new filesystem in the slot moves the drop-in to its device.
func TestMountUnitCarriesADeviceTimeout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sd := &fakeSystemd{booted: true}
	l := &Linux{Systemd: sd.systemd()}
	ctx, log := context.Background(), hosttest.Logger(t)
	u := MountUnit{Group: "orders", Slot: "data", UUID: "0b1c2d3e-1111-2222-3333-444455556666", MountPoint: "/data", Type: "ext4"}
	path, err := l.WriteMountUnit(ctx, log, dir, u)
	if err != nil {
		t.Fatal(err)
	}
	// The name systemd gives the device unit of What= (systemd-escape --path --suffix=device).
	oldDropIn := filepath.Join(dir, `dev-disk-by\x2duuid-0b1c2d3e\x2d1111\x2d2222\x2d3333\x2d444455556666.device.d`, "50-handover-device-timeout.conf")
	b, err := os.ReadFile(oldDropIn)
	if err != nil {
		t.Fatalf("no device timeout drop-in: %v", err)
	}
	if !strings.Contains(string(b), "[Unit]\nJobRunningTimeoutSec=90s\n") {
		t.Errorf("drop-in does not set the default device timeout:\n%s", b)
	}
	if unit, _ := os.ReadFile(path); strings.Contains(string(unit), "Options=nofail,x-systemd") {
		t.Errorf("x-systemd.* options are ignored in a unit file:\n%s", unit)
	}
	systemdAnalyzeVerify(t, dir, path)

	u.UUID, u.DeviceTimeout = "9f8e7d6c-aaaa-bbbb-cccc-ddddeeeeffff", 2*time.Minute
	if _, err := l.WriteMountUnit(ctx, log, dir, u); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(oldDropIn)); !os.IsNotExist(err) {
		t.Errorf("the old device's drop-in directory is still there (%v): it bounds a device the unit no longer names", err)
	}
	b, err = os.ReadFile(filepath.Join(dir, u.DeviceDropIn()))
	if err != nil || !strings.Contains(string(b), "JobRunningTimeoutSec=120s\n") {
		t.Errorf("new device's drop-in (%v):\n%s", err, b)
	}
	if sd.reloads != 2 {
		t.Errorf("%d daemon-reloads, want 2 (new unit, new device)", sd.reloads)
	}
}

// systemdAnalyzeVerify checks the written unit with systemd's own parser: no complaint about the unit or
// its device's drop-in, and the drop-in is read for the unit's device (a key systemd does not know, added
// to it, is reported).
func systemdAnalyzeVerify(t *testing.T, dir, unit string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("systemd-analyze is missing: CI checks the units with it (apt-get install systemd)")
		}
		t.Log("systemd-analyze is missing: the unit is not checked with systemd's parser")
		return
	}
	verify := func() string {
		cmd := exec.Command("systemd-analyze", "verify", "--man=no", unit)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":", "SYSTEMD_LOG_COLOR=0")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := verify(); strings.Contains(out, dir) {
		t.Errorf("systemd-analyze verify complains about what handover wrote:\n%s", out)
	}
	dropIn := filepath.Join(dir, MountUnit{UUID: unitWhat(readFile(t, unit))[len("/dev/disk/by-uuid/"):]}.DeviceDropIn())
	orig := readFile(t, dropIn)
	if err := os.WriteFile(dropIn, []byte(orig+"HandoverNoSuchKey=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.WriteFile(dropIn, []byte(orig), 0o644)
	if out := verify(); !strings.Contains(out, "HandoverNoSuchKey") {
		t.Errorf("systemd-analyze verify did not read the device drop-in %s for %s:\n%s", dropIn, unit, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMountUnitReloadOnlyWhereItMatters: no daemon-reload without a running systemd or for a directory
// it does not load units from (each logged), and a failed reload is a warning, not a failed up.
func TestMountUnitReloadOnlyWhereItMatters(t *testing.T) {
	t.Parallel()
	u := MountUnit{Group: "orders", Slot: "data", UUID: "0b1c2d3e-1111-2222-3333-444455556666", MountPoint: "/data", Type: "ext4"}
	for _, tc := range []struct {
		name        string
		booted      bool
		loads       bool
		err         error
		wantReloads int
		wantLog     string
	}{
		{"systemd not running", false, true, nil, 0, "systemd is not running"},
		{"not a unit directory", true, false, nil, 0, "outside systemd's unit directories"},
		{"reload fails", true, true, errors.New("Failed to reload daemon: Access denied"), 1, "daemon-reload failed"},
		{"reloaded", true, true, nil, 1, "systemd reloaded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sd := &fakeSystemd{booted: tc.booted, err: tc.err}
			s := sd.systemd()
			s.Loads = func(string) bool { return tc.loads }
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))
			if _, err := (&Linux{Systemd: s}).WriteMountUnit(context.Background(), log, t.TempDir(), u); err != nil {
				t.Fatalf("WriteMountUnit: %v (a reload is never a reason to fail)", err)
			}
			if sd.reloads != tc.wantReloads || !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("%d daemon-reloads, log:\n%s\nwant %d and %q", sd.reloads, logs.String(), tc.wantReloads, tc.wantLog)
			}
		})
	}
	if !RealSystemd().Loads("/etc/systemd/system/") || RealSystemd().Loads("/tmp/units") {
		t.Error("the real systemd loads units from /etc/systemd/system and not from /tmp/units")
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
