package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/internal/fail"
)

// The bad-input table: every row is one thing an operator, a launch template or a tag can get wrong, the
// exit code handover must end with, the one line it must print, and what it must leave as it was. The same
// table is RELIABILITY.md's "Bad input" section: TestBadInput fails when the two differ, and
// `go test ./agent/ -run TestBadInput -update` rewrites the section from the table.
//
// A row runs the real command in process against its own simulated region, as an instance of group
// "orders" in us-east-1a whose Elastic IP is free, unless the row's world says otherwise. `up` is given
// --size 1, one slot mounted under the test's directory and a unit directory of its own, the other host
// commands the same --volume, unless the row sets the option itself (by flag, variable or tag). {dir} in an
// argument, a variable or a tag is the test's directory. To add a row, add one entry to badInputs.

// badInput is one row of the table.
type badInput struct {
	what  string            // what is wrong, in the table's words
	setup string            // the world beyond the default, in words ("" for the default)
	world func(b *badRun)   // builds it, before the instance is launched; nil for the default
	args  []string          // the command and its arguments
	env   map[string]string // HANDOVER_* (or SDK) variables
	tags  map[string]string // instance tags beside handover:group
	// noGroup launches the instance without the group tag; noIMDSTags without tags in metadata.
	noGroup, noIMDSTags bool
	deny                []string // EC2 actions the instance role may not call (up only)
	code                int
	line                string // a regexp the one error line must match, after "handover COMMAND: "
	kept                keep   // what the run must leave as it was; zero: keepAll
	root                bool   // mounts or loop devices: needs root
}

// keep is what a row must leave as it was, in the table's words, and the check.
type keep struct {
	say   string
	check func(t *testing.T, b *badRun, before worldState)
	// allow is a regexp of the warnings that say what the run undid (a row that changed nothing logs none).
	allow string
}

// keepAll: no mutating call succeeded, the region's volumes, snapshots, addresses and instances are as
// they were, and no file under the test's directory (mount points, unit directory) changed.
var keepAll = keep{say: "everything",
	check: func(t *testing.T, b *badRun, before worldState) {
		t.Helper()
		if m := b.mutatingCalls(); len(m) != 0 {
			t.Errorf("mutating calls succeeded: %v", m)
		}
		after := b.state()
		if after.cloud != before.cloud {
			t.Errorf("the region changed:\nbefore:\n%s\nafter:\n%s", before.cloud, after.cloud)
		}
		if after.files != before.files {
			t.Errorf("local files changed:\nbefore:\n%s\nafter:\n%s", before.files, after.files)
		}
	}}

// keepAddressAndData: the run made its changes before it could know (the volume is attached), but hands
// the address back and formats nothing: the address is free again and the volume's device reads as before.
func keepAddressAndData(say string) keep {
	return keep{say: say, allow: `msg="handed back the Elastic IP: this run ends without the data"`, check: func(t *testing.T, b *badRun, before worldState) {
		t.Helper()
		if holder := b.addressHolder(b.alloc); holder != "" {
			t.Errorf("the Elastic IP is still on %s: it must be handed back when up ends without the data", holder)
		}
		for _, c := range b.sim.Calls() {
			if c.Code == "" && (c.Action == "DeleteVolume" || c.Action == "DeleteSnapshot") {
				t.Errorf("%s succeeded", c.Action)
			}
		}
		if after := b.state(); after.files != before.files && b.filesCheck {
			t.Errorf("local files changed:\nbefore:\n%s\nafter:\n%s", before.files, after.files)
		}
	}}
}

// badRun is one row's world.
type badRun struct {
	*testRegion
	t          *testing.T
	id, alloc  string
	vol        string // a volume the world made, when it made one
	filesCheck bool   // compare local files too (rows that do not mount)
	imds       string // a metadata endpoint the world started in place of the instance's ({imds})
}

// worldState is what a row must not change, as text (equal or not, and readable when not).
type worldState struct{ cloud, files string }

func (b *badRun) state() worldState {
	b.t.Helper()
	ctx := b.ctx()
	if err := b.sim.WaitIdle(ctx); err != nil {
		b.t.Fatal(err)
	}
	var lines []string
	tags := func(ts []ec2types.Tag) string {
		var kv []string
		for _, t := range ts {
			kv = append(kv, aws.ToString(t.Key)+"="+aws.ToString(t.Value))
		}
		sort.Strings(kv)
		return strings.Join(kv, ",")
	}
	vols, err := b.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, v := range vols.Volumes {
		att := ""
		for _, a := range v.Attachments {
			att += aws.ToString(a.InstanceId) + "/" + string(a.State)
		}
		lines = append(lines, fmt.Sprintf("volume %s %s %s %d att=%s tags=%s", aws.ToString(v.VolumeId), v.State,
			aws.ToString(v.AvailabilityZone), aws.ToInt32(v.Size), att, tags(v.Tags)))
	}
	snaps, err := b.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, s := range snaps.Snapshots {
		lines = append(lines, fmt.Sprintf("snapshot %s %s of %s tags=%s", aws.ToString(s.SnapshotId), s.State, aws.ToString(s.VolumeId), tags(s.Tags)))
	}
	addrs, err := b.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, a := range addrs.Addresses {
		lines = append(lines, fmt.Sprintf("address %s on %q tags=%s", aws.ToString(a.AllocationId), aws.ToString(a.InstanceId), tags(a.Tags)))
	}
	insts, err := b.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, r := range insts.Reservations {
		for _, in := range r.Instances {
			lines = append(lines, fmt.Sprintf("instance %s %s tags=%s", aws.ToString(in.InstanceId), in.State.Name, tags(in.Tags)))
		}
	}
	sort.Strings(lines)
	var files []string
	_ = filepath.WalkDir(b.dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(b.dir, p)
		if err != nil || rel == "sim" || rel == "locks" {
			if d != nil && d.IsDir() && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		info, ierr := d.Info()
		if ierr != nil {
			return nil
		}
		files = append(files, fmt.Sprintf("%s %s %d", rel, info.Mode(), info.Size()))
		return nil
	})
	return worldState{cloud: strings.Join(lines, "\n"), files: strings.Join(files, "\n")}
}

// pwned is the file a row's $(touch ...) would make if any value reached a shell.
const pwned = "{dir}/pwned"

func badInputs() []badInput {
	const (
		usage = fail.CodeUsage
		pre   = fail.CodePrecondition
	)
	tag := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	env := tag
	return []badInput{
		// Options: each with a bad value from a flag, from the environment and from a tag.
		{what: "size not a number (flag)", args: []string{"up", "--size", "ten"}, code: usage, line: `invalid value "ten" for flag -size: want a decimal integer`},
		{what: "size not a number (environment)", args: []string{"up"}, env: env("HANDOVER_SIZE", "ten"), code: usage, line: `environment HANDOVER_SIZE="ten": want a decimal integer \(fix the variable`},
		{what: "size not a number (tag)", args: []string{"up"}, tags: tag("handover:size", "ten"), code: usage, line: `instance tag handover:size="ten": want a decimal integer \(fix the tag or pass --size\)`},
		{what: "size in hexadecimal (environment)", args: []string{"up"}, env: env("HANDOVER_SIZE", "0x10"), code: usage, line: `HANDOVER_SIZE="0x10": want a decimal integer`},
		{what: "size zero", args: []string{"up", "--size", "0"}, code: usage, line: `--size "0": a gp3 volume takes 1 to 65536 GiB`},
		{what: "volume type unknown (flag)", args: []string{"up", "--type", "gp9"}, code: usage, line: `--type "gp9": want gp3, gp2, io1, io2, st1, sc1 or standard`},
		{what: "volume type unknown (environment)", args: []string{"up"}, env: env("HANDOVER_TYPE", "ssd"), code: usage, line: `environment HANDOVER_TYPE="ssd": want gp3`},
		{what: "volume type unknown (tag)", args: []string{"up"}, tags: tag("handover:type", "ssd"), code: usage, line: `instance tag handover:type="ssd": want gp3.*pass --type`},
		{what: "st1 below its minimum size", args: []string{"up", "--type", "st1", "--size", "10"}, code: usage, line: `--size "10": a st1 volume takes 125 to 65536 GiB`},
		{what: "IOPS negative", args: []string{"up", "--iops", "-5"}, code: usage, line: `--iops "-5": must be positive`},
		{what: "IOPS on a gp2 volume", args: []string{"up", "--type", "gp2", "--iops", "3000"}, code: usage, line: `--iops "3000": gp2 volumes have no provisioned IOPS`},
		{what: "gp3 IOPS below its minimum", args: []string{"up", "--iops", "100"}, code: usage, line: `--iops "100": a gp3 volume takes at least 3000 IOPS`},
		{what: "gp3 throughput below its minimum (environment)", args: []string{"up"}, env: env("HANDOVER_THROUGHPUT", "100"), code: usage,
			line: `environment HANDOVER_THROUGHPUT="100": a gp3 volume takes at least 125 MiB/s`},
		{what: "io2 without IOPS", args: []string{"up", "--type", "io2", "--size", "10"}, code: usage, line: `--type "io2": needs --iops`},
		{what: "throughput on a gp2 volume (tag)", args: []string{"up", "--type", "gp2"}, tags: tag("handover:throughput", "250"), code: usage, line: `instance tag handover:throughput="250": only gp3 volumes take it`},
		{what: "KMS key without encryption", args: []string{"up", "--kms-key-id", "alias/db"}, code: usage, line: `--kms-key-id "alias/db": needs --encrypted`},
		{what: "filesystem unknown (environment)", args: []string{"up"}, env: env("HANDOVER_FS", "zfs"), code: usage, line: `environment HANDOVER_FS="zfs": want ext4 or xfs`},
		{what: "encrypted not a boolean (environment)", args: []string{"up"}, env: env("HANDOVER_ENCRYPTED", "yes please"), code: usage, line: `environment HANDOVER_ENCRYPTED="yes please": want true or false`},
		{what: "launch hook name with shell metacharacters (tag)", args: []string{"up"}, tags: tag("handover:launch-hook", "$(touch "+pwned+")"), code: usage, line: `instance tag handover:launch-hook=.*a lifecycle hook name uses letters`},
		{what: "network interface not an ENI ID", args: []string{"up", "--network-interface", "eth0"}, code: usage, line: `--network-interface "eth0": want a network interface ID`},
		{what: "private IP not IPv4 (environment)", args: []string{"up"}, env: env("HANDOVER_PRIVATE_IP", "fd00::1"), code: usage, line: `environment HANDOVER_PRIVATE_IP="fd00::1": want an IPv4 address`},
		{what: "timeout zero", args: []string{"up", "--timeout", "0s"}, code: usage, line: `--timeout "0s": must be positive`},
		{what: "release timeout negative (environment)", args: []string{"up"}, env: env("HANDOVER_RELEASE_TIMEOUT", "-1m"), code: usage, line: `environment HANDOVER_RELEASE_TIMEOUT="-1m0s": must be positive`},
		{what: "release timeout without a unit (tag)", args: []string{"up"}, tags: tag("handover:release-timeout", "300"), code: usage, line: `instance tag handover:release-timeout="300": want a duration such as 90s or 5m \(fix the tag or pass --release-timeout\)`},
		{what: "unit directory relative", args: []string{"up", "--unit-dir", "etc/systemd"}, code: usage, line: `--unit-dir "etc/systemd": must be an absolute path, or none`},
		{what: "lock file relative (environment)", args: []string{"up"}, env: env("HANDOVER_LOCK_FILE", "handover.lock"), code: usage, line: `environment HANDOVER_LOCK_FILE="handover.lock": must be an absolute path`},
		{what: "device name not an EBS one", args: []string{"up", "--volume", "data:/dev/sda1:{dir}/mnt/data"}, code: usage, line: `device "/dev/sda1": use an EBS device name`},
		{what: "mount point relative (environment)", args: []string{"up"}, env: env("HANDOVER_VOLUME", "data:/dev/sdf:data"), code: usage, line: `environment HANDOVER_VOLUME="data:/dev/sdf:data": mount point "data": must be an absolute path other than /`},
		{what: "mount point / (environment)", args: []string{"up"}, env: env("HANDOVER_VOLUME", "data:/dev/sdf:/"), code: usage, line: `environment HANDOVER_VOLUME="data:/dev/sdf:/": mount point "/": must be an absolute path other than /`},
		{what: "mount point with ../ (environment)", args: []string{"up"}, env: env("HANDOVER_VOLUME", "data:/dev/sdf:/data/../etc"), code: usage, line: `environment HANDOVER_VOLUME=.*mount point "/data/../etc": give the path without '..'`},
		{what: "mount options with a newline (environment)", args: []string{"up"}, env: env("HANDOVER_VOLUME", "data:/dev/sdf:/data:ro\nExecStart=/bin/sh"), code: usage, line: `environment HANDOVER_VOLUME=.*"ExecStart=/bin/sh": want SLOT:DEVICE:MOUNTPOINT`},
		{what: "one slot given twice (environment)", args: []string{"up"}, env: env("HANDOVER_VOLUME", "data:/dev/sdf:/srv/a data:/dev/sdg:/srv/b"), code: usage, line: `environment HANDOVER_VOLUME=.*slot "data" given twice`},
		{what: "log format unknown", args: []string{"up", "--log-format", "xml"}, code: usage, line: `--log-format "xml": want text or json`},
		{what: "log level unknown (environment)", args: []string{"status"}, env: env("HANDOVER_LOG_LEVEL", "loud"), code: usage, line: `environment HANDOVER_LOG_LEVEL="loud": want debug, info, warn or error`},
		{what: "metadata timeout zero", args: []string{"status", "--imds-timeout", "0s"}, code: usage, line: `--imds-timeout "0s": must be positive`},
		{what: "group name with a space (flag)", args: []string{"up", "--group", "orders db"}, code: usage, line: `--group "orders db": use letters, digits`},
		{what: "group tag with shell metacharacters", args: []string{"up"}, noGroup: true, tags: tag(cloud.TagGroup, "$(touch "+pwned+")"), code: usage, line: `instance tag handover:group="\$\(touch .*pwned\)": use letters, digits`},
		{what: "group tag with ../", args: []string{"status"}, noGroup: true, tags: tag(cloud.TagGroup, "../../etc"), code: usage, line: `instance tag handover:group="../../etc": use letters, digits`},
		{what: "unknown flag", args: []string{"up", "--mount-point", "/data"}, code: usage, line: `flag provided but not defined: -mount-point \(see --help\)`},
		{what: "stray argument", args: []string{"down", "now"}, code: usage, line: `unexpected argument "now" \(flags only; see --help\)`},
		{what: "termination hook name with shell metacharacters (tag)", args: []string{"down"}, tags: tag("handover:terminate-hook", "$(touch "+pwned+")"), code: usage,
			line: `instance tag handover:terminate-hook=.*a lifecycle hook name uses letters`},
		{what: "release mode unknown (tag)", args: []string{"down"}, tags: tag("handover:release", "detach"), code: usage, line: `instance tag handover:release="detach": want unmount or freeze`},
		{what: "pre-stop shell without a command (environment)", args: []string{"down"}, env: env("HANDOVER_PRE_STOP_SHELL", "true"), code: usage, line: `environment HANDOVER_PRE_STOP_SHELL="true": is set but --pre-stop is empty`},
		{what: "rebalance mode unknown", args: []string{"watch", "--on-rebalance=sometimes"}, code: usage, line: `--on-rebalance "sometimes": want off, snapshot or replace`},
		{what: "poll interval zero (tag)", args: []string{"watch"}, tags: tag("handover:poll-interval", "0s"), code: usage, line: `instance tag handover:poll-interval="0s": must be positive`},
		{what: "keep negative", args: []string{"snapshot", "--keep", "-1"}, code: usage, line: `--keep "-1": `},
		{what: "failover without a group or instance", args: []string{"failover"}, code: usage, line: `name the group \(--group or HANDOVER_GROUP\), the target \(--to\) or the failed primary \(--from\)`},
		{what: "version with an argument", args: []string{"version", "--short"}, code: usage, line: `^version takes no arguments$`},
		{what: "watch state file is a directory", args: []string{"watch", "--state-file", "{dir}"}, code: pre, line: `read state file \{dir\}: fix its permissions, or point --state-file elsewhere`},
		{what: "failover target not an instance ID", args: []string{"failover", "--to", "web-2"}, code: usage, line: `--to "web-2": want an instance ID`},

		// The world handover finds.
		{what: "missing group tag", args: []string{"up"}, noGroup: true, code: pre,
			line: `instance i-[0-9a-f]+ has no handover:group tag \(read from imds\) and no --group was given`},
		{what: "two Elastic IPs tagged for the group", setup: "a second address tagged handover:group=orders",
			world: func(b *badRun) { b.allocateAddress(testGroup) }, args: []string{"up"}, code: pre, line: `Elastic IP`},
		{what: "no Elastic IP tagged for the group", setup: "no address tagged for the group", args: []string{"up", "--group", "payments"}, code: pre, line: `Elastic IP`},
		{what: "only snapshot in error", setup: "the slot's one snapshot (of a deleted volume) is in state error",
			world: func(b *badRun) {
				vol := b.createSlotVolume("us-east-1b", 1, nil)
				snap := b.snapshot(vol, 1, true, true)
				if err := b.sim.FailSnapshot(snap); err != nil {
					b.t.Fatal(err)
				}
				if _, err := b.ec2.DeleteVolume(b.ctx(), &ec2.DeleteVolumeInput{VolumeId: aws.String(vol)}); err != nil {
					b.t.Fatal(err)
				}
			}, args: []string{"up"}, code: pre, line: `error`},
		{what: "volume in a third AZ held by a live instance and no snapshot", setup: "the slot's only volume is in us-east-1c, attached to a running instance outside the group",
			world: func(b *badRun) {
				other := b.runInstance("us-east-1c", map[string]string{cloud.TagGroup: "other"}, true)
				b.vol = b.createSlotVolume("us-east-1c", 1, nil)
				if _, err := b.ec2.AttachVolume(b.ctx(), &ec2.AttachVolumeInput{VolumeId: aws.String(b.vol), InstanceId: aws.String(other), Device: aws.String("/dev/sdf")}); err != nil {
					b.t.Fatal(err)
				}
			}, args: []string{"up", "--release-timeout", "1s"}, code: fail.CodeFenced,
			line: `vol-[0-9a-f]+ \(slot data\) is attached to i-[0-9a-f]+ \(running\), a live instance, after waiting 1s: stop it or let its group terminate it, or pass --takeover`,
			kept: keepAddressAndData("the address (handed back); the volume, with its live holder")},
		{what: "data required on first boot", setup: "the slot has no volume and no snapshot", args: []string{"up", "--require-data"}, code: pre,
			line: `slot data of group orders has no volume and no snapshot, and --require-data refuses to start blank`},
		{what: "Auto Scaling group launches before it terminates", setup: "the instance is in a group with MinHealthyPercentage=100 and a launch hook",
			world: func(b *badRun) {
				b.id = b.launchGroup("orders-asg", &astypes.InstanceMaintenancePolicy{MinHealthyPercentage: aws.Int32(100), MaxHealthyPercentage: aws.Int32(200)})
			}, args: []string{"up", "--launch-hook", "launch"}, code: pre, line: `MinHealthyPercentage=100.*update-auto-scaling-group`,
			kept: keepNoAddressNoVolume("the address and the volumes (none made); the launch hook is abandoned, so the group replaces the instance")},
		{what: "instance metadata unreachable", setup: "AWS_EC2_METADATA_SERVICE_ENDPOINT points at a closed port",
			args: []string{"up", "--imds-timeout", "1s"}, env: env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:9"), code: pre,
			line: `instance metadata (at|endpoint) http://127.0.0.1:9 .*: not on EC2, or IMDS unreachable`},
		{what: "tags not in metadata and ec2:DescribeTags denied", setup: "InstanceMetadataTags disabled; the role may not call DescribeTags",
			args: []string{"up"}, noIMDSTags: true, deny: []string{"DescribeTags"}, code: pre, line: `ec2:DescribeTags`},
		{what: "KMS key unusable", setup: "first boot, --encrypted with a KMS key that is disabled", args: []string{"up", "--encrypted", "--kms-key-id", "alias/gone"},
			world: func(b *badRun) {
				if err := b.sim.SetKMSKeyState("alias/gone", "Disabled"); err != nil {
					b.t.Fatal(err)
				}
			}, code: pre, line: `slot data: EBS put the new volume vol-[0-9a-f]+ in the error state: for an encrypted volume it could not use the KMS key alias/gone`,
			kept: keepAddressAndData("the address (handed back); the volume EBS could not create stays, in state error")},
		{what: "device never appears", setup: "HANDOVER_DEV_DIR is a directory no device appears in", args: []string{"up", "--timeout", "3s"},
			env: env("HANDOVER_DEV_DIR", "{dir}/nodev"), code: fail.CodeFailed, line: `up did not finish within --timeout 3s \(it was at step "volumes: data at device"\)`,
			kept: keepAddressAndData("the address (handed back); the new volume stays attached for the rerun")},
		{what: "IMDS refuses the token request (403)", setup: "the metadata endpoint answers 403 to PUT /latest/api/token (HttpEndpoint disabled)",
			world: func(b *badRun) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "Forbidden", http.StatusForbidden) }))
				b.t.Cleanup(srv.Close)
				b.imds = srv.URL
			}, args: []string{"up"}, env: env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "{imds}"), code: pre,
			line: `instance metadata at http://127.0.0.1:[0-9]+ refused the IMDSv2 token request \(PUT /latest/api/token answered 403 Forbidden\): .*set HttpEndpoint=enabled`},
		{what: "IMDS that serves IMDSv1 only (PUT 405)", setup: "the metadata endpoint answers 405 to PUT (IMDSv1 only, or a proxy that drops PUT); GET would answer",
			world: func(b *badRun) {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method == http.MethodPut {
						http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
						return
					}
					_, _ = io.WriteString(w, "i-0123456789abcdef0")
				}))
				b.t.Cleanup(srv.Close)
				b.imds = srv.URL
			}, args: []string{"up"}, env: env("AWS_EC2_METADATA_SERVICE_ENDPOINT", "{imds}"), code: pre,
			line: `does not issue IMDSv2 tokens .*never falls back to IMDSv1.*HttpTokens=required`},
		{what: "mount point is an existing regular file", setup: "a regular file where the slot's mount point would be",
			world: func(b *badRun) {
				if err := os.WriteFile(filepath.Join(b.dir, "notadir"), []byte("x"), 0o644); err != nil {
					b.t.Fatal(err)
				}
			}, args: []string{"up", "--volume", "data:/dev/sdf:{dir}/notadir"}, code: pre, line: `notadir.* is an existing regular file, not a directory`},
		{what: "mount point already in use", setup: "a tmpfs is mounted at the slot's mount point", root: true,
			world: func(b *badRun) {
				mp := filepath.Join(b.dir, "mnt", "busy")
				if err := os.MkdirAll(mp, 0o755); err != nil {
					b.t.Fatal(err)
				}
				if err := unix.Mount("tmpfs", mp, "tmpfs", 0, "size=1m"); err != nil {
					b.t.Fatal(err)
				}
				b.t.Cleanup(func() { _ = unix.Unmount(mp, unix.MNT_DETACH) })
			}, args: []string{"up", "--volume", "data:/dev/sdf:{dir}/mnt/busy"}, code: pre, line: `/mnt/busy already has tmpfs \(tmpfs\) mounted on it, not the slot's volume`},
		{what: "partition table on a created-blank volume", setup: "the slot's volume, tagged created-blank, holds an MBR partition table and nothing else", root: true,
			world: func(b *badRun) {
				b.vol = b.createSlotVolume("us-east-1a", 1, map[string]string{cloud.TagCreatedBlank: "true"})
				writeMBR(b.t, filepath.Join(b.dir, "sim", "volumes", b.vol+".img"))
			}, args: []string{"up"}, code: pre, line: `vol-[0-9a-f]+ \(/dev/loop[0-9]+\) holds a dos partition table, not a filesystem`,
			kept: keepPartitionTable},
		{what: "lock file is a directory", args: []string{"up", "--lock-file", "/"}, code: pre, line: `lock /: is a directory: give --lock-file the path of a file`},
		{what: "lock directory read-only", setup: "the lock file's directory is a read-only mount", root: true,
			world: func(b *badRun) { b.readOnlyDir("ro") }, args: []string{"up"}, env: env("HANDOVER_LOCK_FILE", "{dir}/ro/handover.lock"),
			code: pre, line: `lock \{dir\}/ro/handover.lock: read-only file system: make its directory writable`},
		{what: "lock directory full", setup: "the lock file's directory is a full tmpfs", root: true,
			world: func(b *badRun) { b.fullDir("full") }, args: []string{"snapshot"}, env: env("HANDOVER_LOCK_FILE", "{dir}/full/handover.lock"),
			code: pre, line: `lock \{dir\}/full/handover.lock: no space left on device: make its directory writable`},
		{what: "state file directory full", setup: "watch's state file is on a full tmpfs", root: true,
			world: func(b *badRun) { b.fullDir("full") }, args: []string{"watch", "--state-file", "{dir}/full/watch.json"},
			code: pre, line: `state file \{dir\}/full/watch.json: make its directory writable and give it room.*no space left on device`},
		{what: "state file directory read-only", setup: "watch's state file is on a read-only mount", root: true,
			world: func(b *badRun) { b.readOnlyDir("ro") }, args: []string{"watch", "--state-file", "{dir}/ro/watch.json"},
			code: pre, line: `state file \{dir\}/ro/watch.json: make its directory writable and give it room.*read-only file system`},
		{what: "unit directory read-only", setup: "the directory up writes its mount units to is a read-only mount (a read-only /etc)", root: true,
			world: func(b *badRun) { b.readOnlyDir("ro") }, args: []string{"up", "--unit-dir", "{dir}/ro"},
			code: pre, line: `--unit-dir \{dir\}/ro cannot take the mount units: \{dir\}/ro is on a read-only filesystem: make it writable, or give --unit-dir none`},
		{what: "mount point under a read-only directory", setup: "the slot's mount point would be made in a read-only mount (a read-only root)", root: true,
			world: func(b *badRun) { b.readOnlyDir("ro") }, args: []string{"up", "--volume", "data:/dev/sdf:{dir}/ro/data"},
			code: pre, line: `slot data: mount point \{dir\}/ro/data cannot be made: \{dir\}/ro is on a read-only filesystem`},
	}
}

// writeMBR writes a DOS partition table with one Linux partition (sectors 2048..4095) to a volume's image.
func writeMBR(t *testing.T, img string) {
	t.Helper()
	mbr := make([]byte, 512)
	entry := mbr[446:462]
	entry[4] = 0x83                                 // Linux
	binary.LittleEndian.PutUint32(entry[8:], 2048)  // first sector
	binary.LittleEndian.PutUint32(entry[12:], 2048) // sectors
	mbr[510], mbr[511] = 0x55, 0xaa
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
}

// keepNoAddressNoVolume: the address stays free and no volume is made; what else the row says it did
// (a lifecycle action completed) is the refusal itself.
func keepNoAddressNoVolume(say string) keep {
	return keep{say: say, check: func(t *testing.T, b *badRun, before worldState) {
		t.Helper()
		if holder := b.addressHolder(b.alloc); holder != "" {
			t.Errorf("the Elastic IP went to %s", holder)
		}
		for _, c := range b.sim.Calls() {
			if c.Code == "" && c.Mutating && c.Caller != "AKIDADMIN" && c.Action != "CompleteLifecycleAction" {
				t.Errorf("%s succeeded", c.Action)
			}
		}
	}}
}

// keepPartitionTable: the address is handed back and the volume still holds its partition table (no
// filesystem was made on it).
var keepPartitionTable = keep{say: "the address (handed back); the partition table: nothing formatted", allow: keepAddressAndData("").allow,
	check: func(t *testing.T, b *badRun, before worldState) {
		t.Helper()
		keepAddressAndData("").check(t, b, before)
		img := filepath.Join(b.dir, "sim", "volumes", b.vol+".img")
		out, err := exec.Command("blkid", "-p", "-o", "value", "-s", "PTTYPE", img).Output()
		if got := strings.TrimSpace(string(out)); err != nil || got != "dos" {
			t.Errorf("the volume's partition table is %q (%v), want dos: something wrote to it", got, err)
		}
	}}

// readOnlyDir mounts a read-only tmpfs at name under the test's directory.
func (b *badRun) readOnlyDir(name string) {
	b.t.Helper()
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_RDONLY, "size=64k"); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// fullDir mounts a tmpfs at name that has no room for another file.
func (b *badRun) fullDir(name string) {
	b.t.Helper()
	dir := filepath.Join(b.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	// Two inodes: the root directory and the filler; the filler takes every block.
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,nr_inodes=2"); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		b.t.Fatal(err)
	}
	_, _ = f.Write(make([]byte, 128<<10)) // fails once the tmpfs is full, as meant
	_ = f.Close()
}

// denyingEC2 is the instance role without some EC2 actions: they answer UnauthorizedOperation, as EC2 does.
type denyingEC2 struct {
	cloud.EC2
	deny map[string]bool
}

func unauthorized() error {
	return &smithy.GenericAPIError{Code: cloud.CodeUnauthorizedOp, Message: "You are not authorized to perform this operation."}
}

func (d denyingEC2) DescribeTags(ctx context.Context, in *ec2.DescribeTagsInput, o ...func(*ec2.Options)) (*ec2.DescribeTagsOutput, error) {
	if d.deny["DescribeTags"] {
		return nil, unauthorized()
	}
	return d.EC2.DescribeTags(ctx, in, o...)
}

// expand replaces {dir} with the test's directory.
func (b *badRun) expand(s string) string {
	return strings.NewReplacer("{dir}", b.dir, "{imds}", b.imds).Replace(s)
}

// commandArgs is the row's command line with the defaults the row does not set itself.
func (b *badRun) commandArgs(row badInput) []string {
	sets := func(opt string) bool {
		if _, ok := row.env[envName(opt)]; ok {
			return true
		}
		if _, ok := row.tags[tagName(opt)]; ok {
			return true
		}
		for _, a := range row.args {
			if a == "--"+opt || strings.HasPrefix(a, "--"+opt+"=") {
				return true
			}
		}
		return false
	}
	args := make([]string, 0, len(row.args)+6)
	for _, a := range row.args {
		args = append(args, b.expand(a))
	}
	defaults := map[string][][2]string{
		"up":       {{"size", "1"}, {"volume", "data:/dev/sdf:" + b.mountPoint(b.id)}, {"unit-dir", b.unitDir(b.id)}},
		"down":     {{"volume", "data:/dev/sdf:" + b.mountPoint(b.id)}},
		"snapshot": {{"volume", "data:/dev/sdf:" + b.mountPoint(b.id)}},
		"status":   {{"volume", "data:/dev/sdf:" + b.mountPoint(b.id)}},
		"watch":    {{"volume", "data:/dev/sdf:" + b.mountPoint(b.id)}, {"state-file", filepath.Join(b.dir, "watch.json")}},
	}
	for _, d := range defaults[row.args[0]] {
		if !sets(d[0]) {
			args = append(args, "--"+d[0], d[1])
		}
	}
	return args
}

// run runs the row's command as the instance and returns its exit code and output.
func (b *badRun) run(row badInput, args []string) agentResult {
	extra := map[string]string{}
	for k, v := range row.env {
		extra[k] = b.expand(v)
	}
	getenv := b.agentEnv(b.id, extra)
	var stdout, stderr bytes.Buffer
	e := Env{Getenv: getenv, Stdout: &stdout, Stderr: &stderr}
	ctx := b.ctx()
	var code int
	if len(row.deny) > 0 {
		deny := map[string]bool{}
		for _, a := range row.deny {
			deny[a] = true
		}
		newC := func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error) {
			c, err := cloud.NewClients(ctx, getenv, region)
			if err != nil {
				return nil, err
			}
			c.EC2 = denyingEC2{EC2: c.EC2, deny: deny}
			return c, nil
		}
		if args[0] != "up" {
			b.t.Fatalf("deny is for up only, not %s", args[0])
		}
		// As Main prints and maps it.
		err := up(ctx, e, args[1:], newC)
		if err != nil {
			fmt.Fprintf(&stderr, "handover %s: %s\n", args[0], fail.OneLine(err.Error()))
		}
		code = ExitCode(err)
	} else {
		code = Main(ctx, args, e)
	}
	return agentResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// TestBadInput runs every row of the table, and checks RELIABILITY.md's section against the table.
func TestBadInput(t *testing.T) {
	t.Parallel()
	rows := badInputs()
	checkReliabilityTable(t, rows)
	seen := map[string]bool{}
	for _, row := range rows {
		if seen[row.what] {
			t.Errorf("two rows are %q", row.what)
		}
		if strings.ContainsAny(row.what, ",;") {
			t.Errorf("row %q: no ',' or ';' in its name, which becomes its mount point's directory", row.what)
		}
		seen[row.what] = true
		t.Run(row.what, func(t *testing.T) {
			t.Parallel()
			if row.root {
				requireRoot(t)
			}
			b := &badRun{testRegion: newTestRegion(t), t: t, filesCheck: true}
			b.unmountOnCleanup()
			b.alloc = b.allocateAddress(testGroup)
			if row.world != nil {
				row.world(b)
			}
			tags := map[string]string{}
			if !row.noGroup {
				tags[cloud.TagGroup] = testGroup
			}
			for k, v := range row.tags {
				tags[k] = b.expand(v)
			}
			if b.id == "" { // a world may launch the instance itself (through a group)
				b.id = b.runInstance("us-east-1a", tags, !row.noIMDSTags)
			}
			before := b.state()
			b.sim.ResetCalls()
			args := b.commandArgs(row)
			res := b.run(row, args)
			if testing.Verbose() {
				t.Logf("handover %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), res.code, res.stdout, res.stderr)
			}
			if res.code != row.code {
				t.Errorf("exit %d, want %d\nstderr:\n%s", res.code, row.code, res.stderr)
			}
			checkOneLine(t, row, b, res.stderr)
			kept := row.kept
			if kept.check == nil {
				kept = keepAll
			}
			kept.check(t, b, before)
			if _, err := os.Stat(b.expand(pwned)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s exists: a value reached a shell", b.expand(pwned))
			}
		})
	}
}

// checkOneLine: at the default log level, the run ends with exactly one line that says what is wrong
// (matching the row's pattern), and logs no other error or warning.
func checkOneLine(t *testing.T, row badInput, b *badRun, stderr string) {
	t.Helper()
	prefix := "handover " + row.args[0] + ": "
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	var errLines, noise []string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, prefix):
			errLines = append(errLines, l)
		case row.kept.allow != "" && regexp.MustCompile(row.kept.allow).MatchString(l):
		case strings.Contains(l, "level=ERROR"), strings.Contains(l, "level=WARN"):
			noise = append(noise, l)
		}
	}
	if len(errLines) != 1 || lines[len(lines)-1] != errLines[0] {
		t.Errorf("want one error line %q... at the end of stderr, got %d:\n%s", prefix, len(errLines), stderr)
		return
	}
	pattern := strings.ReplaceAll(row.line, `\{dir\}`, regexp.QuoteMeta(b.dir))
	if !regexp.MustCompile(pattern).MatchString(strings.TrimPrefix(errLines[0], prefix)) {
		t.Errorf("the error line does not match %q:\n%s", row.line, errLines[0])
	}
	if len(noise) > 0 {
		t.Errorf("besides the error line, the run logged:\n%s", strings.Join(noise, "\n"))
	}
}

// The table in RELIABILITY.md lies between these markers.
const (
	badInputBegin = "<!-- bad-input table: generated from agent/badinput_test.go; go test ./agent/ -run TestBadInput -update -->"
	badInputEnd   = "<!-- end of the bad-input table -->"
)

// reliabilityTable renders the rows as the markdown table of RELIABILITY.md.
func reliabilityTable(rows []badInput) string {
	cell := func(s string) string {
		s = strings.ReplaceAll(s, "\n", `\n`)
		return strings.ReplaceAll(s, "|", `\|`)
	}
	code := func(s string) string {
		if s == "" {
			return ""
		}
		return "`" + cell(s) + "`"
	}
	var b strings.Builder
	b.WriteString("| # | bad input | setup | command (with env and instance tags) | exit | the one line (pattern) | left as it was |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		var cmd []string
		for _, k := range sortedKeys(r.env) {
			cmd = append(cmd, k+"="+fmt.Sprintf("%q", r.env[k]))
		}
		cmd = append(cmd, "handover "+strings.Join(r.args, " "))
		for _, k := range sortedKeys(r.tags) {
			cmd = append(cmd, "(tag "+k+"="+fmt.Sprintf("%q", r.tags[k])+")")
		}
		if len(r.deny) > 0 {
			cmd = append(cmd, "(role without ec2:"+strings.Join(r.deny, ", ec2:")+")")
		}
		setup := r.setup
		switch {
		case r.noGroup && setup == "":
			setup = "instance without the handover:group tag"
		case r.noIMDSTags && setup == "":
			setup = "instance tags not in metadata"
		}
		if r.root {
			setup = strings.TrimPrefix(setup+"; as root", "; ")
		}
		kept := r.kept.say
		if kept == "" {
			kept = keepAll.say
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %d | %s | %s |\n", i+1, cell(r.what), cell(setup), code(strings.Join(cmd, " ")), r.code, code(r.line), cell(kept))
	}
	return b.String()
}

// checkReliabilityTable fails unless RELIABILITY.md holds the table as the rows render it; with -update
// it writes it there.
func checkReliabilityTable(t *testing.T, rows []badInput) {
	t.Helper()
	path := filepath.Join("..", "RELIABILITY.md")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	doc := string(b)
	i, j := strings.Index(doc, badInputBegin), strings.Index(doc, badInputEnd)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the markers of the bad-input table:\n%s\n%s", path, badInputBegin, badInputEnd)
	}
	want := reliabilityTable(rows)
	have := doc[i+len(badInputBegin)+1 : j]
	if have == want {
		return
	}
	if *update {
		if err := os.WriteFile(path, []byte(doc[:i+len(badInputBegin)+1]+want+doc[j:]), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s's bad-input table differs from agent/badinput_test.go's: run go test ./agent/ -run TestBadInput -update", path)
}
