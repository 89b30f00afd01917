package cloudformation

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeSystemctl records its arguments; `cat` knows the units in $UNITS; `start handover-up.service`
// exits $UP_EXIT.
const fakeSystemctl = `#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
case "$1" in
cat) case " $UNITS " in *" $2 "*) exit 0 ;; esac; exit 1 ;;
start) [ "$2" = handover-up.service ] && exit "${UP_EXIT:-0}" ;;
esac
exit 0
`

// TestUserDataScript runs scripts/user-data.sh with a stand-in binary and systemctl (paths moved into a
// temporary directory): it refuses, with one line naming the fix and before starting anything, a missing
// or broken binary, a machine without systemd and missing units; otherwise it enables the three units,
// starts up and waits for it, then starts watch and the timer, also when up failed (and then exits 1).
func TestUserDataScript(t *testing.T) {
	t.Parallel()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is missing: user data runs with it")
	}
	script, err := os.ReadFile("../../scripts/user-data.sh")
	if err != nil {
		t.Fatal(err)
	}
	allUnits := "handover-up.service handover-watch.service handover-snapshot.timer"
	for _, tc := range []struct {
		name       string
		binary     string // the stand-in's script; "" for none
		noSystemd  bool
		units      string
		upExit     string
		wantExit   int
		wantLine   string   // in the last line of stderr
		wantCalls  []string // systemctl's calls, in order, without the cat checks
		wantNoCall bool
	}{
		{name: "binary missing", units: allUnits, wantExit: 1, wantLine: "is missing: install the handover package", wantNoCall: true},
		{name: "binary does not run", binary: "#!/bin/sh\necho 'cannot execute binary file: Exec format error' >&2\nexit 126\n", units: allUnits,
			wantExit: 1, wantLine: "does not run (cannot execute binary file: Exec format error): an arm64 package", wantNoCall: true},
		{name: "no systemd", binary: okBinary, noSystemd: true, units: allUnits, wantExit: 1, wantLine: "systemd is not running", wantNoCall: true},
		{name: "units missing", binary: okBinary, units: "handover-up.service", wantExit: 1,
			wantLine: "the unit handover-watch.service is missing: install the handover package", wantCalls: nil},
		{name: "up succeeds", binary: okBinary, units: allUnits, wantExit: 0, wantLine: "handover up done",
			wantCalls: []string{"enable " + allUnits, "start handover-up.service", "start handover-watch.service handover-snapshot.timer"}},
		{name: "up fails", binary: okBinary, units: allUnits, upExit: "3", wantExit: 1,
			wantLine:  "handover up failed (systemctl start handover-up.service exited 3): journalctl -u handover-up.service",
			wantCalls: []string{"enable " + allUnits, "start handover-up.service", "start handover-watch.service handover-snapshot.timer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			bin, run := filepath.Join(dir, "usr/bin/handover"), filepath.Join(dir, "run/systemd/system")
			s := strings.ReplaceAll(string(script), "/usr/bin/handover", bin)
			s = strings.ReplaceAll(s, "/run/systemd/system", run)
			if s == string(script) {
				t.Fatal("the script names neither /usr/bin/handover nor /run/systemd/system")
			}
			writeExec(t, filepath.Join(dir, "user-data.sh"), s)
			writeExec(t, filepath.Join(dir, "fake/systemctl"), fakeSystemctl)
			if tc.binary != "" {
				writeExec(t, bin, tc.binary)
			}
			if !tc.noSystemd {
				if err := os.MkdirAll(run, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			log := filepath.Join(dir, "systemctl.log")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bash, filepath.Join(dir, "user-data.sh"))
			cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "fake")+":"+os.Getenv("PATH"), "SYSTEMCTL_LOG="+log, "UNITS="+tc.units, "UP_EXIT="+tc.upExit)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if code != tc.wantExit || !strings.Contains(lines[len(lines)-1], tc.wantLine) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and a last line with %q", code, stderr.String(), tc.wantExit, tc.wantLine)
			}
			b, _ := os.ReadFile(log)
			var calls []string
			for _, c := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if c != "" && !strings.HasPrefix(c, "cat ") {
					calls = append(calls, c)
				}
			}
			if tc.wantNoCall && len(b) > 0 {
				t.Errorf("systemctl was called: %s", b)
			}
			if !tc.wantNoCall && strings.Join(calls, "\n") != strings.Join(tc.wantCalls, "\n") {
				t.Errorf("systemctl calls:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(tc.wantCalls, "\n"))
			}
		})
	}
}

const okBinary = "#!/bin/sh\n[ \"$1\" = version ] && echo 'handover 1.2.3 (commit abcdef0, go1.26.0)'\n"

func writeExec(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
		t.Fatal(err)
	}
}
