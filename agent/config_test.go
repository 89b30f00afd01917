package agent

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/internal/fail"
)

// TestConfigPrecedence checks flag > HANDOVER_* environment > instance tag > default for every layer
// combination.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		tags       map[string]string
		wantGroup  string
		wantSource string
	}{
		{"default", nil, nil, nil, "", ""},
		{"tag only", nil, nil, map[string]string{"handover:group": "from-tag"}, "from-tag", "tag handover:group"},
		{"env beats tag", nil, map[string]string{"HANDOVER_GROUP": "from-env"}, map[string]string{"handover:group": "from-tag"}, "from-env", "env HANDOVER_GROUP"},
		{"flag beats env and tag", []string{"--group", "from-flag"}, map[string]string{"HANDOVER_GROUP": "from-env"}, map[string]string{"handover:group": "from-tag"}, "from-flag", "flag"},
		{"flag beats tag", []string{"--group=from-flag"}, nil, map[string]string{"handover:group": "from-tag"}, "from-flag", "flag"},
		{"empty env is unset", nil, map[string]string{"HANDOVER_GROUP": ""}, map[string]string{"handover:group": "from-tag"}, "from-tag", "tag handover:group"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags("test", mapEnv(tc.env), io.Discard, time.Minute)
			if err := f.parse(tc.args); err != nil {
				t.Fatalf("parse: %v", err)
			}
			if err := f.applyTags(tc.tags); err != nil {
				t.Fatalf("applyTags: %v", err)
			}
			if f.Common.Group != tc.wantGroup {
				t.Errorf("group = %q, want %q", f.Common.Group, tc.wantGroup)
			}
			if got := f.source["group"]; got != tc.wantSource {
				t.Errorf("source = %q, want %q", got, tc.wantSource)
			}
		})
	}
}

func TestConfigDurationAndRepeatedFromEnv(t *testing.T) {
	t.Parallel()
	f := newFlags("test", mapEnv(map[string]string{
		"HANDOVER_IMDS_TIMEOUT": "7s",
		"HANDOVER_VOLUME":       "data:/dev/sdf:/data, logs:/dev/sdg:/var/log/app:noatime",
	}), io.Discard, time.Minute)
	var vols volumeSpecs
	f.fs.Var(&vols, "volume", "")
	if err := f.parse(nil); err != nil {
		t.Fatalf("parse: %v", err)
	}
	if f.Common.IMDSTimeout != 7*time.Second {
		t.Errorf("imds-timeout = %s, want 7s", f.Common.IMDSTimeout)
	}
	if len(vols) != 2 || vols[1].Slot != "logs" || vols[1].Options != "noatime" || vols[1].MountPoint != "/var/log/app" {
		t.Errorf("volumes = %+v", vols)
	}
}

func TestConfigErrorsNameTheSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		tags    map[string]string
		wantMsg string
	}{
		{"bad flag", []string{"--nope"}, nil, nil, "flag provided but not defined: -nope (see --help)"},
		{"bad env", nil, map[string]string{"HANDOVER_IMDS_TIMEOUT": "soon"}, nil, `environment HANDOVER_IMDS_TIMEOUT="soon"`},
		{"bad tag", nil, nil, map[string]string{"handover:imds-timeout": "soon"}, `instance tag handover:imds-timeout="soon"`},
		{"positional", []string{"extra"}, nil, nil, `unexpected argument "extra"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFlags("test", mapEnv(tc.env), io.Discard, time.Minute)
			err := f.parse(tc.args)
			if err == nil {
				err = f.applyTags(tc.tags)
			}
			if err == nil {
				t.Fatal("no error")
			}
			if ExitCode(err) != fail.CodeUsage {
				t.Errorf("exit code %d, want %d", ExitCode(err), fail.CodeUsage)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tc.wantMsg)
			}
		})
	}
}

func TestValidateCommon(t *testing.T) {
	t.Parallel()
	ok := common{LogFormat: "text", LogLevel: "info", IMDSTimeout: time.Second}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	bad := map[string]common{
		"--log-format":   {LogFormat: "xml", LogLevel: "info", IMDSTimeout: time.Second},
		"--log-level":    {LogFormat: "json", LogLevel: "loud", IMDSTimeout: time.Second},
		"--imds-timeout": {LogFormat: "json", LogLevel: "info"},
		"--group":        {LogFormat: "json", LogLevel: "info", IMDSTimeout: time.Second, Group: "has space"},
	}
	for flagName, c := range bad {
		err := c.validate()
		if err == nil || ExitCode(err) != fail.CodeUsage || !strings.Contains(err.Error(), flagName) {
			t.Errorf("%s: got %v, want a usage error naming the flag", flagName, err)
		}
	}
}

func TestVolumeSpecParsing(t *testing.T) {
	t.Parallel()
	var vs volumeSpecs
	if err := vs.Set("data:/dev/sdf:/data"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"data:/dev/sdg:/other", "x:/dev/sdf:/x", "y:/dev/sdh:/data", "z:/dev/sda:/z", "w:/dev/sdh:relative", "short", "UP:/dev/sdh:/up", "r:/dev/sdh:/"} {
		if err := vs.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	if len(vs) != 1 {
		t.Errorf("rejected specs were kept: %+v", vs)
	}
	if got := (volumeSpecs{}).orDefault(); len(got) != 1 || got[0] != defaultVolumeSpec {
		t.Errorf("orDefault = %+v", got)
	}
}

func TestExitCodeMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want int
	}{
		{nil, fail.CodeOK},
		{errors.New("boom"), fail.CodeFailed},
		{fail.Usage("bad"), fail.CodeUsage},
		{fail.Precondition("no tag", nil), fail.CodePrecondition},
		{fail.Fenced("lost", nil), fail.CodeFenced},
		{wrapf(fail.Precondition("deep", nil)), fail.CodePrecondition},
		{wrapf(fail.Fenced("deep", errors.New("x"))), fail.CodeFenced},
	}
	for _, tc := range tests {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func wrapf(err error) error { return &wrapped{err} }

type wrapped struct{ err error }

func (w *wrapped) Error() string { return "outer: " + w.err.Error() }
func (w *wrapped) Unwrap() error { return w.err }

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}
