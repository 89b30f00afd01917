package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/agent"
	"github.com/handover/handover/sim"
)

// `handover-sim demo` plays handover's story with the real agent code against an in-process simulated
// region: an Auto Scaling group of one over two AZs with a launch hook launches an instance in AZ a,
// whose `handover up` makes a blank volume, a filesystem, a mount and claims the Elastic IP; a file is
// written; a snapshot is taken; AZ a fails and the instance dies; the group launches a replacement in AZ
// b, whose `handover up` restores the volume there; the file and the Elastic IP are back. Each agent run
// is agent.Main with the simulator's environment for that instance, as user data would run it.
//
// Each step is a small function, so that when `handover down` takes the snapshot the demo only swaps
// snapshotThroughAPI for a run of the agent on the dying instance.

func init() {
	subcommands["demo"] = demo
}

const (
	demoGroup = "orders"
	demoASG   = "orders-asg"
	demoHook  = "launch"
	demoFile  = "orders.db"
	azA       = "us-east-1a"
	azB       = "us-east-1b"
)

// demoRun is one play of the demo.
type demoRun struct {
	sim     *sim.Region
	speed   float64
	ec2     *ec2.Client
	as      *autoscaling.Client
	dir     string // mounts, units, locks, the simulator's state
	out     io.Writer
	verbose bool
	start   time.Time
	steps   []demoStep
}

// demoStep is one line of the timeline.
type demoStep struct {
	at, took time.Duration
	what     string
}

func demo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	speed := fs.Float64("speed", 10, "divide the simulator's AWS-like delays by this (1: real EBS and EC2 timings, about a minute)")
	dir := fs.String("dir", "", "working directory for the simulator's state and the mounts (default: a temporary one, removed at the end)")
	verbose := fs.Bool("verbose", false, "show the agent's logs")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *speed <= 0 {
		fmt.Fprintln(stderr, "handover-sim demo: takes only flags; --speed must be positive")
		return 2
	}
	if err := demoPreflight(); err != nil {
		fmt.Fprintln(stderr, "handover-sim demo:", err)
		return 1
	}
	work := *dir
	if work == "" {
		tmp, err := os.MkdirTemp("", "handover-demo-")
		if err != nil {
			fmt.Fprintln(stderr, "handover-sim demo:", err)
			return 1
		}
		defer os.RemoveAll(tmp)
		work = tmp
	}
	d, err := startDemo(work, *speed, stdout, *verbose)
	if err != nil {
		fmt.Fprintln(stderr, "handover-sim demo:", err)
		return 1
	}
	defer d.stop()
	if err := d.play(ctx); err != nil {
		fmt.Fprintln(stderr, "handover-sim demo:", oneLine(err.Error()))
		return 1
	}
	return 0
}

// demoPreflight checks what the demo needs to mount real filesystems.
func demoPreflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts real ext4 filesystems on loop devices: run it as root (sudo scripts/demo.sh)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "blkid", "mount", "dumpe2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: install util-linux and e2fsprogs", tool)
		}
	}
	return nil
}

// startDemo starts the simulated region in process and admin clients for it.
func startDemo(dir string, speed float64, out io.Writer, verbose bool) (*demoRun, error) {
	r, err := sim.New(sim.Options{StateDir: filepath.Join(dir, "sim"), Speed: speed, Seed: 1})
	if err != nil {
		return nil, err
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("AKIDDEMO", "demo", "")}
	return &demoRun{
		sim: r, speed: speed, dir: dir, out: out, verbose: verbose, start: time.Now(),
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
		as:  autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
	}, nil
}

// stop unmounts what the demo mounted, then stops the simulator (which detaches its loop devices).
func (d *demoRun) stop() {
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		lines := strings.Split(string(b), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			f := strings.Fields(lines[i])
			if len(f) > 4 && strings.HasPrefix(f[4], d.dir) {
				_ = unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
	}
	_ = d.sim.Close()
}

// step runs fn and records it on the timeline.
func (d *demoRun) step(what string, fn func() error) error {
	at := time.Since(d.start)
	fmt.Fprintf(d.out, "==> %s\n", what)
	begin := time.Now()
	err := fn()
	d.steps = append(d.steps, demoStep{at: at, took: time.Since(begin), what: what})
	return err
}

func (d *demoRun) play(ctx context.Context) error {
	var first, second string
	var alloc, ip string
	var data []byte
	steps := []struct {
		what string
		fn   func() error
	}{
		{"set up the group: launch template, Elastic IP tagged handover:group=" + demoGroup + ", Auto Scaling group of one over " + azA + " and " + azB + " with a launch hook",
			func() (err error) { alloc, ip, err = d.setUpGroup(ctx); return err }},
		{"the group launches the first instance (in " + azA + ") and it boots", func() (err error) { first, err = d.waitForInstance(ctx, ""); return err }},
		{"handover up on the first instance: blank volume, mkfs, mount, Elastic IP, launch hook", func() error { return d.up(ctx, first) }},
		{"the service writes " + demoFile, func() (err error) { data, err = d.writeData(first); return err }},
		{"a snapshot of the volume, through the API (handover down takes it once it exists)", func() error { return d.snapshotThroughAPI(ctx, first) }},
		{azA + " fails: the first instance dies, and the group may only launch in " + azB, func() error { return d.failZone(ctx, first) }},
		{"the group launches the replacement (in " + azB + ") and it boots", func() (err error) { second, err = d.waitForInstance(ctx, first); return err }},
		{"handover up on the replacement: restore the snapshot in " + azB + ", attach, mount, Elastic IP, launch hook", func() error { return d.up(ctx, second) }},
		{"check: the data and the Elastic IP are back", func() error { return d.check(ctx, second, alloc, ip, data) }},
	}
	for _, s := range steps {
		if err := d.step(s.what, s.fn); err != nil {
			return err
		}
	}
	d.printTimeline()
	return nil
}

// setUpGroup builds the world through the ordinary API, as the AWS CLI or Terraform would.
func (d *demoRun) setUpGroup(ctx context.Context) (alloc, ip string, err error) {
	a, err := d.ec2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp,
			Tags: []ec2types.Tag{{Key: aws.String("handover:group"), Value: aws.String(demoGroup)}}}}})
	if err != nil {
		return "", "", fmt.Errorf("allocate the Elastic IP: %w", err)
	}
	lt, err := d.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
		LaunchTemplateName: aws.String("orders-db"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{
			ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
			MetadataOptions: &ec2types.LaunchTemplateInstanceMetadataOptionsRequest{
				HttpTokens: ec2types.LaunchTemplateHttpTokensStateRequired, InstanceMetadataTags: ec2types.LaunchTemplateInstanceMetadataTagsStateEnabled,
			},
		},
	})
	if err != nil {
		return "", "", fmt.Errorf("create the launch template: %w", err)
	}
	_, err = d.as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(demoASG),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Version: aws.String("$Latest")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{azA, azB},
		Tags:              []astypes.Tag{{Key: aws.String("handover:group"), Value: aws.String(demoGroup), PropagateAtLaunch: aws.Bool(true)}},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{{
			LifecycleHookName: aws.String(demoHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
			HeartbeatTimeout: aws.Int32(600), DefaultResult: aws.String("ABANDON"),
		}},
	})
	if err != nil {
		return "", "", fmt.Errorf("create the Auto Scaling group: %w", err)
	}
	return aws.ToString(a.AllocationId), aws.ToString(a.PublicIp), nil
}

// waitForInstance waits for the group's instance other than previous to be running, as user data would
// only start then.
func (d *demoRun) waitForInstance(ctx context.Context, previous string) (string, error) {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		g, err := d.as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{demoASG}})
		if err != nil {
			return "", err
		}
		for _, g := range g.AutoScalingGroups {
			for _, in := range g.Instances {
				id := aws.ToString(in.InstanceId)
				if id == previous {
					continue
				}
				out, err := d.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
				if err != nil {
					return "", err
				}
				for _, r := range out.Reservations {
					for _, i := range r.Instances {
						if i.State != nil && i.State.Name == ec2types.InstanceStateNameRunning {
							fmt.Fprintf(d.out, "    %s is running in %s (lifecycle %s)\n", id, aws.ToString(in.AvailabilityZone), in.LifecycleState)
							return id, nil
						}
					}
				}
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return "", errors.New("the group launched no instance within 5 minutes")
}

func (d *demoRun) mountPoint(id string) string { return filepath.Join(d.dir, "instances", id, "data") }

// up runs `handover up` as instance id, in process, with the simulator's environment for it.
func (d *demoRun) up(ctx context.Context, id string) error {
	env, err := d.sim.InstanceEnv(id)
	if err != nil {
		return err
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(d.dir, "locks", id+".lock")
	args := []string{"up", "--launch-hook", demoHook, "--size", "1",
		"--volume", "data:/dev/sdf:" + d.mountPoint(id), "--unit-dir", filepath.Join(d.dir, "units", id)}
	fmt.Fprintf(d.out, "    handover %s\n", strings.Join(args, " "))
	var logs bytes.Buffer
	stderr := io.Writer(&logs)
	if d.verbose {
		stderr = io.MultiWriter(&logs, d.out)
	}
	var summary bytes.Buffer
	code := agent.Main(ctx, args, agent.Env{Getenv: func(k string) string { return env[k] }, Stdout: &summary, Stderr: stderr})
	for _, line := range strings.Split(strings.TrimRight(summary.String(), "\n"), "\n") {
		fmt.Fprintf(d.out, "    | %s\n", line)
	}
	if code != agent.ExitOK {
		return fmt.Errorf("handover up on %s exited %d:\n%s", id, code, logs.String())
	}
	return nil
}

// writeData is the service writing its data on the mounted volume, synced to the device.
func (d *demoRun) writeData(id string) ([]byte, error) {
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	copy(data, "orders written in "+azA+" at "+time.Now().UTC().Format(time.RFC3339)+"\n")
	if err := os.WriteFile(filepath.Join(d.mountPoint(id), demoFile), data, 0o644); err != nil {
		return nil, err
	}
	unix.Sync()
	fmt.Fprintf(d.out, "    %s: 1 MiB, starting %q\n", filepath.Join(d.mountPoint(id), demoFile), strings.TrimSpace(string(data[:48])))
	return data, nil
}

// snapshotThroughAPI snapshots the instance's volume with the tags `handover down` sets. The filesystem is
// synced but not frozen, so the snapshot is crash-consistent (no handover:consistent tag): the restore
// replays the ext4 journal, as after a power cut.
func (d *demoRun) snapshotThroughAPI(ctx context.Context, id string) error {
	vols, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{id}},
		{Name: aws.String("tag:handover:group"), Values: []string{demoGroup}},
	}})
	if err != nil || len(vols.Volumes) != 1 {
		return fmt.Errorf("find the volume of %s: %d found, %v", id, len(vols.Volumes), err)
	}
	v := vols.Volumes[0]
	gen := "0"
	for _, t := range v.Tags {
		if aws.ToString(t.Key) == "handover:generation" {
			gen = aws.ToString(t.Value)
		}
	}
	tags := map[string]string{"handover:group": demoGroup, "handover:volume": "data", "handover:generation": gen,
		"handover:source-volume": aws.ToString(v.VolumeId), "handover:source-instance": id}
	spec := ec2types.TagSpecification{ResourceType: ec2types.ResourceTypeSnapshot}
	for k, val := range tags {
		spec.Tags = append(spec.Tags, ec2types.Tag{Key: aws.String(k), Value: aws.String(val)})
	}
	s, err := d.ec2.CreateSnapshot(ctx, &ec2.CreateSnapshotInput{VolumeId: v.VolumeId, TagSpecifications: []ec2types.TagSpecification{spec}})
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", aws.ToString(v.VolumeId), err)
	}
	id = aws.ToString(s.SnapshotId)
	for {
		out, err := d.ec2.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{SnapshotIds: []string{id}})
		if err != nil {
			return err
		}
		if st := out.Snapshots[0].State; st != ec2types.SnapshotStatePending {
			fmt.Fprintf(d.out, "    %s of %s (generation %s): %s\n", id, aws.ToString(v.VolumeId), gen, st)
			if st != ec2types.SnapshotStateCompleted {
				return fmt.Errorf("snapshot %s ended %s", id, st)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// failZone takes AZ a out of the group's zones (as an outage of that zone would) and kills the instance
// there abruptly: no termination hook, no `down`, its OS and mounts are gone.
func (d *demoRun) failZone(ctx context.Context, id string) error {
	if _, err := d.as.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(demoASG), AvailabilityZones: []string{azB}}); err != nil {
		return err
	}
	_ = unix.Unmount(d.mountPoint(id), unix.MNT_DETACH) // the instance's OS goes with it
	if err := d.sim.KillInstance(id); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    %s killed\n", id)
	return nil
}

// check reads the file back on the replacement and finds the Elastic IP there.
func (d *demoRun) check(ctx context.Context, id, alloc, ip string, want []byte) error {
	got, err := os.ReadFile(filepath.Join(d.mountPoint(id), demoFile))
	if err != nil {
		return fmt.Errorf("read %s on the replacement: %w", demoFile, err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s on the replacement differs from what was written (%d bytes, want %d)", demoFile, len(got), len(want))
	}
	fmt.Fprintf(d.out, "    %s is back on %s, byte for byte (%d bytes)\n", demoFile, id, len(got))
	out, err := d.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
	if err != nil {
		return err
	}
	if holder := aws.ToString(out.Addresses[0].InstanceId); holder != id {
		return fmt.Errorf("the Elastic IP %s is on %q, not on the replacement %s", ip, holder, id)
	}
	fmt.Fprintf(d.out, "    the Elastic IP %s is on %s\n", ip, id)
	return nil
}

func (d *demoRun) printTimeline() {
	fmt.Fprintf(d.out, "\ntimeline (the simulator's EC2 and EBS delays divided by %g; --speed 1 for real ones)\n", d.speed)
	for _, s := range d.steps {
		fmt.Fprintf(d.out, "  %7s  %7s  %s\n", seconds(s.at), "+"+seconds(s.took), s.what)
	}
	fmt.Fprintf(d.out, "  total %s\n", seconds(time.Since(d.start)))
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s" }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
