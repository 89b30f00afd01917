// Package scripts tests the packages' maintainer scripts (nfpm.yaml runs them as the deb's postinst,
// prerm and postrm and the rpm's %post, %preun and %postun).
package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/handover/handover/host/hosttest"
)

const units = "handover-up.service handover-watch.service handover-snapshot.timer"

// TestMaintainerScripts runs each script with each argument dpkg and rpm give it, in a mount namespace
// whose /run is a fresh tmpfs (with /run/systemd/system: systemd running, sd_booted(3); without: a chroot
// or a container) and with a systemctl that records its arguments. Install and upgrade enable the units and
// start nothing; an upgrade disables nothing; a removal disables them and stops only the snapshot timer,
// never up or watch (the data's service Requires= up; stopping watch would cancel a hand-over); without
// systemd nothing is called. The scripts call nothing but systemctl: no mount, umount or rm.
func TestMaintainerScripts(t *testing.T) {
	hosttest.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare (util-linux) is missing")
	}
	bin := t.TempDir()
	fake := "#!/bin/sh\necho \"systemctl $*\" >>\"$CALLS\"\n"
	if err := os.WriteFile(filepath.Join(bin, "systemctl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"mount", "umount", "rm", "mkfs", "wipefs", "dd"} {
		if err := os.WriteFile(filepath.Join(bin, tool), []byte("#!/bin/sh\necho \""+tool+" $*\" >>\"$CALLS\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	enable := []string{"systemctl daemon-reload", "systemctl enable " + units}
	removal := []string{"systemctl disable " + units, "systemctl stop handover-snapshot.timer"}
	for _, tc := range []struct {
		script string
		args   []string // each gets the same calls
		want   []string // with systemd running
	}{
		{"postinstall.sh", []string{"configure", "1", "2"}, enable}, // deb install and upgrade; rpm install, upgrade
		{"postinstall.sh", []string{"abort-upgrade", "abort-remove"}, nil},
		{"preremove.sh", []string{"remove", "0"}, removal},
		{"preremove.sh", []string{"upgrade", "1", "failed-upgrade"}, nil},
		{"postremove.sh", []string{"remove", "purge", "0"}, []string{"systemctl daemon-reload"}},
		{"postremove.sh", []string{"upgrade", "1", "abort-install"}, nil},
	} {
		for _, arg := range tc.args {
			for _, booted := range []bool{true, false} {
				name := tc.script + " " + arg
				want := tc.want
				if !booted {
					name += " without systemd"
					want = nil
				}
				t.Run(name, func(t *testing.T) {
					calls := filepath.Join(t.TempDir(), "calls")
					setup := "mount -t tmpfs tmpfs /run"
					if booted {
						setup += " && mkdir -p /run/systemd/system"
					}
					script, err := filepath.Abs(tc.script)
					if err != nil {
						t.Fatal(err)
					}
					// The real mount makes the namespace's /run; the script then runs with the stand-ins first.
					cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c",
						setup+` && PATH="$BIN:$PATH" exec sh "$SCRIPT" "$ARG"`)
					cmd.Env = append(os.Environ(), "CALLS="+calls, "BIN="+bin, "SCRIPT="+script, "ARG="+arg)
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("%s %s: %v\n%s", tc.script, arg, err, out)
					}
					got, err := os.ReadFile(calls)
					if err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
					if g, w := strings.TrimSpace(string(got)), strings.Join(want, "\n"); g != w {
						t.Errorf("%s %s called:\n%s\nwant:\n%s", tc.script, arg, orNothing(g), orNothing(w))
					}
				})
			}
		}
	}
}

func orNothing(s string) string {
	if s == "" {
		return "(nothing)"
	}
	return s
}
