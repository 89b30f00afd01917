package agent

import (
	"flag"
	"io"
	"os"
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
	"keep": {value: "3"}, "json": {value: "true"},
	"to": {value: "i-0123456789abcdef0"}, "from": {value: "i-0fedcba9876543210"}, "force": {value: "true"},
	"wait-status-ok": {value: "true"}, "swap-roles": {value: "true"}, "start-timeout": {value: "3m"}, "status-timeout": {value: "4m"},
}

// TestEveryOptionFromEnvironmentOrTagAlone: every option of every command can be set from its HANDOVER_*
// variable alone and from its handover:* instance tag alone, and then holds exactly what the flag would
// (a volume list keeps its mount options), with the source recorded. The table covers the flags as the
// commands declare them, so a new option or command without a case fails here.
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
			}
			if got := settle(t, name, open, func(f *flags) error { f.getenv = mapEnv(env); return f.parse(nil) }, opt, "env "+envName(opt)); got != want {
				t.Errorf("%s %s=%q: --%s is %q, the flag gives %q", name, envName(opt), sample.value, opt, got, want)
			}
			if got := settle(t, name, open, func(f *flags) error {
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

// TestUpMountOptionsFromEnvironmentAndTag: a volume spec with comma-separated mount options given through
// HANDOVER_VOLUME or the handover:volume tag is mounted with those options.
func TestUpMountOptionsFromEnvironmentAndTag(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, from := range []string{"environment", "tag"} {
		t.Run(from, func(t *testing.T) {
			w := newTestRegion(t)
			w.unmountOnCleanup()
			w.allocateAddress(testGroup)
			tags := map[string]string{cloud.TagGroup: testGroup}
			id := w.runInstance("us-east-1a", tags, true)
			spec := "data:/dev/sdf:" + w.mountPoint(id) + ":noatime,nodiratime"
			var env map[string]string
			if from == "tag" {
				w.tagInstance(id, map[string]string{"handover:volume": spec})
			} else {
				env = map[string]string{"HANDOVER_VOLUME": spec}
			}
			mustSucceed(t, w.runAgent(w.ctx(), id, env, "up", "--size", "1", "--unit-dir", w.unitDir(id)))
			opts := mountOptionsAt(t, w.mountPoint(id))
			for _, want := range []string{"noatime", "nodiratime"} {
				if !strings.Contains(","+opts+",", ","+want+",") {
					t.Errorf("mounted with %q, want %s", opts, want)
				}
			}
		})
	}
}
