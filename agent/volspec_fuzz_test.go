package agent

import (
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode"

	"github.com/handover/handover/host"
)

// Fuzz targets of the volume spec (--volume SLOT:DEVICE:MOUNTPOINT[:options], agent/volspec.go): the one
// option whose value becomes a path handover mounts on and a line of a systemd unit it writes. Seeds are in
// testdata/fuzz/FuzzVolumeSpec and testdata/fuzz/FuzzVolumeList; run one with
// `go test -run '^$' -fuzz '^FuzzVolumeSpec$' -fuzztime 60s ./agent/`.

// FuzzVolumeSpec: a spec given once (a flag) is either refused, leaving nothing behind, or accepted as a
// spec that is valid in every field, carries no byte that would break the mount unit or the mount table,
// and reads back the same from its rendering, both as a flag (Set) and as the environment variable or tag
// (setList) that `handover status`, the man page and the packaged environment file show it as.
func FuzzVolumeSpec(f *testing.F) {
	for _, s := range []string{
		"data:/dev/sdf:/data", "data:/dev/sdf:/data:noatime,nodiratime", "wal:/dev/xvdg:/var/lib/pg/wal:noatime",
		"a.b-c_d:/dev/sdp6:/srv/x", "data:/dev/sdf:/data/", "data:/dev/sdf:/", "data:/dev/sda:/data", "DATA:/dev/sdf:/data", "data:/dev/sdf", "data:/dev/sdf:/data:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var vs volumeSpecs
		if err := vs.Set(s); err != nil {
			if len(vs) != 0 {
				t.Fatalf("Set(%q) failed (%v) but kept %+v", s, err, vs)
			}
			return
		}
		if len(vs) != 1 {
			t.Fatalf("Set(%q) made %d specs", s, len(vs))
		}
		checkVolumeSpec(t, s, vs[0])
		// A ".." is refused, not resolved: "/data/../etc" from a tag must not mount over /etc.
		if parts := strings.SplitN(s, ":", 4); slices.Contains(strings.Split(parts[2], "/"), "..") {
			t.Fatalf("Set(%q) accepted a mount point with '..' as %q", s, vs[0].MountPoint)
		}
		var again volumeSpecs
		if err := again.Set(vs[0].String()); err != nil || !reflect.DeepEqual(again, vs) {
			t.Fatalf("Set(%q) = %+v; its rendering %q reads back as %+v (%v)", s, vs[0], vs[0].String(), again, err)
		}
		var list volumeSpecs
		if err := list.setList(vs.String()); err != nil || !reflect.DeepEqual(list, vs) {
			t.Fatalf("Set(%q) = %+v; as the environment or a tag, %q reads back as %+v (%v)", s, vs[0], vs.String(), list, err)
		}
	})
}

// FuzzVolumeList: a list of specs (the environment variable or a tag) is refused or read into specs that
// are each valid, are distinct in slot, device and mount point, and read back the same from their
// rendering.
func FuzzVolumeList(f *testing.F) {
	for _, s := range []string{
		"data:/dev/sdf:/data", "data:/dev/sdf:/data:noatime,nodiratime wal:/dev/sdg:/wal",
		"data:/dev/sdf:/data:noatime,nodiratime;wal:/dev/sdg:/wal:noatime", "data:/dev/sdf:/data:noatime,nodiratime,wal:/dev/sdg:/wal",
		"data:/dev/sdf:/data, logs:/dev/sdg:/var/log/app:noatime", "data:/dev/sdf:/data data:/dev/sdg:/other",
		"a:/dev/sdf:/x b:/dev/sdf:/y", "a:/dev/sdf:/x b:/dev/sdg:/x/", " ; , ", "data:/dev/sdf:/data,,x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var vs volumeSpecs
		if err := vs.setList(s); err != nil {
			return
		}
		seen := map[string]bool{}
		for _, v := range vs {
			checkVolumeSpec(t, s, v)
			for _, k := range []string{"slot " + v.Slot, "device " + v.Device, "mount " + v.MountPoint} {
				if seen[k] {
					t.Fatalf("setList(%q) accepted %s twice: %+v", s, k, vs)
				}
				seen[k] = true
			}
		}
		var again volumeSpecs
		if err := again.setList(vs.String()); err != nil || !reflect.DeepEqual(again, vs) {
			if len(vs) == 0 && len(again) == 0 && err == nil {
				return
			}
			t.Fatalf("setList(%q) = %+v; its rendering %q reads back as %+v (%v)", s, vs, vs.String(), again, err)
		}
	})
}

// checkVolumeSpec is what every accepted spec must be.
func checkVolumeSpec(t *testing.T, in string, v volumeSpec) {
	t.Helper()
	if !slotNameRE.MatchString(v.Slot) {
		t.Fatalf("%q: accepted slot %q", in, v.Slot)
	}
	if !deviceNameRE.MatchString(v.Device) {
		t.Fatalf("%q: accepted device %q", in, v.Device)
	}
	mp := v.MountPoint
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" {
		t.Fatalf("%q: accepted mount point %q (not absolute, not clean, or /)", in, mp)
	}
	for _, field := range []struct{ name, s string }{{"mount point", mp}, {"options", v.Options}} {
		for _, r := range field.s {
			// A control character or a space would end the Where=/Options= line of the mount unit early or
			// add a directive to it, and the environment file cannot carry it.
			if unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar {
				t.Fatalf("%q: accepted %s %q with %q", in, field.name, field.s, r)
			}
		}
	}
	// The mount point names the mount unit: the name must be one systemd reads back as the same path.
	if name := host.SystemdEscapePath(mp); strings.ContainsAny(name, "/ \n") || name == "-" {
		t.Fatalf("%q: mount point %q makes unit name %q", in, mp, name)
	}
}
