package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/agent"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/wait"
	"github.com/handover/handover/sim"
)

// `handover-sim demo` plays handover's whole story with the real agent code against an in-process
// simulated region, with no API shortcut: the demo only sets up the world and acts as the operator and the
// service; everything that touches volumes, snapshots, the Elastic IP and lifecycle hooks is the agent's.
//
//  1. An Auto Scaling group of one over two AZs, with a launch hook and a termination hook, launches an
//     instance in AZ a; its `handover up` makes a blank volume, a filesystem, a mount, claims the Elastic
//     IP and completes the launch hook.
//  2. `handover watch` runs on it in the background (its systemd unit); the service writes a file.
//  3. AZ a is taken out of the group and the group terminates the instance; the termination hook holds it
//     in Terminating:Wait. watch sees target-lifecycle-state Terminated and runs `handover down`: the
//     pre-stop command stops the service, sync, unmount, a consistent snapshot, detach, heartbeats while it
//     works, and the termination hook completed.
//  4. The group launches the replacement in AZ b; its `handover up` waits for down's snapshot and restores
//     it there; the file written just before the termination and the Elastic IP are back.
//
// Each agent run is agent.Main with the simulator's environment for that instance (as user data and the
// packaged units would run it), logging JSON that the demo reads for the timeline.

func init() {
	subcommands["demo"] = demo
}

const (
	demoGroup         = "orders"
	demoASG           = "orders-asg"
	demoLaunchHook    = "launch"
	demoTerminateHook = "terminate"
	demoFile          = "orders.db"
	demoCaller        = "AKIDDEMO" // the demo's access key: the operator's calls in the simulator's log
	azA               = "us-east-1a"
	azB               = "us-east-1b"
	// waitBound bounds each wait of the demo, at any speed.
	waitBound = 5 * time.Minute
)

// demoRun is one play of the demo.
type demoRun struct {
	sim     *sim.Region
	speed   float64
	ec2     *ec2.Client
	as      *autoscaling.Client
	dir     string    // mounts, units, locks, state files, the simulator's state
	out     io.Writer // shared with the agents' logs under --verbose
	verbose bool
	start   time.Time
	steps   []*demoStep

	// The story so far, for the checks (and the tests).
	alloc, ip     string
	first, second string    // the instance in AZ a and its replacement in AZ b
	data          []byte    // what the service wrote just before the termination
	watch         *bgAgent  // handover watch on the first instance
	trigger       logRecord // watch saw the termination
	downSnapshot  string    // the snapshot down took
	terminateAt   time.Time // the group was told to terminate the first instance
	downDone      time.Time // down finished: the termination hook is completed
	upDone        time.Time // the replacement's up finished
}

// demoStep is one line of the timeline, with the steps it is made of.
type demoStep struct {
	begin, end time.Time
	what       string
	sub        []*demoStep
}

func demo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	speed := fs.Float64("speed", 10, "divide the simulator's AWS-like delays by this (1: real EBS and EC2 timings, about a minute)")
	dir := fs.String("dir", "", "working directory for the simulator's state and the mounts (default: a temporary one, removed at the end)")
	verbose := fs.Bool("verbose", false, "show the agents' logs")
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

// demoPreflight checks what the demo needs to mount real filesystems and to stand in for the service.
func demoPreflight() error {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts real ext4 filesystems on loop devices: run it as root (sudo scripts/demo.sh)")
	}
	for _, tool := range []string{"losetup", "mkfs.ext4", "blkid", "mount", "dumpe2fs", "sleep"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing: install util-linux, e2fsprogs and coreutils", tool)
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
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(demoCaller, "demo", "")}
	return &demoRun{
		sim: r, speed: speed, dir: dir, out: &lockedWriter{w: out}, verbose: verbose, start: time.Now(),
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
		as:  autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
	}, nil
}

// stop stops the watcher, unmounts what the demo mounted, then stops the simulator (which detaches its
// loop devices).
func (d *demoRun) stop() {
	if d.watch != nil {
		d.watch.stop()
	}
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

// Timings of the agents, divided by --speed like the simulator's delays so that the story keeps its
// proportions, with floors that keep them meaningful at high speeds.
func (d *demoRun) scaled(full, floor time.Duration) time.Duration {
	return max(time.Duration(float64(full)/d.speed), floor)
}

// pollInterval is watch's --poll-interval (its default is 5 s).
func (d *demoRun) pollInterval() time.Duration { return d.scaled(2*time.Second, 20*time.Millisecond) }

// serviceStop is how long the service takes to stop: the pre-stop command stands in for
// `systemctl stop orders` with a sleep that long.
func (d *demoRun) serviceStop() time.Duration { return d.scaled(2*time.Second, 50*time.Millisecond) }

// heartbeatInterval is down's --heartbeat-interval (its default is 10 s), short enough that the service's
// stop alone outlasts a few of them.
func (d *demoRun) heartbeatInterval() time.Duration {
	return d.scaled(500*time.Millisecond, 10*time.Millisecond)
}

// step runs fn and records it on the timeline; fn may move the step's begin and end to when things
// happened rather than when the demo noticed.
func (d *demoRun) step(what string, fn func(*demoStep) error) error {
	fmt.Fprintf(d.out, "==> %s\n", what)
	s := &demoStep{what: what, begin: time.Now()}
	err := fn(s)
	if s.end.IsZero() {
		s.end = time.Now()
	}
	d.steps = append(d.steps, s)
	return err
}

func (d *demoRun) play(ctx context.Context) error {
	steps := []struct {
		what string
		fn   func(*demoStep) error
	}{
		{"set up the group: launch template, Elastic IP tagged handover:group=" + demoGroup + ", Auto Scaling group of one over " + azA + " and " + azB +
			" with a launch hook and a termination hook", func(s *demoStep) error { return d.setUpGroup(ctx) }},
		{"the group launches the first instance (in " + azA + ") and it boots",
			func(s *demoStep) (err error) { d.first, err = d.waitForInstance(ctx, s, ""); return err }},
		{"handover up on the first instance (user data): blank volume, mkfs, mount, Elastic IP, launch hook",
			func(s *demoStep) error { return d.up(ctx, s, d.first) }},
		{"handover watch starts on the first instance, in the background (handover-watch.service)",
			func(s *demoStep) error { return d.startWatch(ctx) }},
		{"the service writes " + demoFile + ", not synced to the volume yet", func(s *demoStep) error { return d.writeData() }},
		{azA + " is taken out of the group's zones and the group terminates the first instance; the termination hook holds it",
			func(s *demoStep) error { return d.terminate(ctx) }},
		{"handover watch sees target-lifecycle-state Terminated", func(s *demoStep) error { return d.waitTrigger(ctx, s) }},
		{"handover down, run by watch: stop the service, sync, unmount, snapshot, detach, heartbeats, complete the termination hook",
			func(s *demoStep) error { return d.waitDown(ctx, s) }},
		{"the group terminates the first instance", func(s *demoStep) error { return d.waitTerminated(ctx, s) }},
		{"the group launches the replacement (in " + azB + ") and it boots",
			func(s *demoStep) (err error) { d.second, err = d.waitForInstance(ctx, s, d.first); return err }},
		{"handover up on the replacement (user data): restore down's snapshot in " + azB + ", attach, mount, Elastic IP, launch hook",
			func(s *demoStep) error { return d.up(ctx, s, d.second) }},
		{"check: the data written just before the termination and the Elastic IP are back", func(s *demoStep) error { return d.check(ctx) }},
	}
	for _, s := range steps {
		if err := d.step(s.what, s.fn); err != nil {
			return err
		}
	}
	d.printTimeline()
	d.printCalls()
	return nil
}

// setUpGroup builds the world through the ordinary API, as the AWS CLI or Terraform would.
func (d *demoRun) setUpGroup(ctx context.Context) error {
	a, err := d.ec2.AllocateAddress(ctx, &ec2.AllocateAddressInput{Domain: ec2types.DomainTypeVpc,
		TagSpecifications: []ec2types.TagSpecification{{ResourceType: ec2types.ResourceTypeElasticIp,
			Tags: []ec2types.Tag{{Key: aws.String("handover:group"), Value: aws.String(demoGroup)}}}}})
	if err != nil {
		return fmt.Errorf("allocate the Elastic IP: %w", err)
	}
	d.alloc, d.ip = aws.ToString(a.AllocationId), aws.ToString(a.PublicIp)
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
		return fmt.Errorf("create the launch template: %w", err)
	}
	_, err = d.as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(demoASG),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateId: lt.LaunchTemplate.LaunchTemplateId, Version: aws.String("$Latest")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(1), DesiredCapacity: aws.Int32(1),
		AvailabilityZones: []string{azA, azB},
		Tags:              []astypes.Tag{{Key: aws.String("handover:group"), Value: aws.String(demoGroup), PropagateAtLaunch: aws.Bool(true)}},
		LifecycleHookSpecificationList: []astypes.LifecycleHookSpecification{{
			LifecycleHookName: aws.String(demoLaunchHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_LAUNCHING"),
			HeartbeatTimeout: aws.Int32(600), DefaultResult: aws.String("ABANDON"),
		}, {
			LifecycleHookName: aws.String(demoTerminateHook), LifecycleTransition: aws.String("autoscaling:EC2_INSTANCE_TERMINATING"),
			HeartbeatTimeout: aws.Int32(300), DefaultResult: aws.String("CONTINUE"),
		}},
	})
	if err != nil {
		return fmt.Errorf("create the Auto Scaling group: %w", err)
	}
	fmt.Fprintf(d.out, "    Elastic IP %s (%s); hooks %s (launching) and %s (terminating)\n", d.ip, d.alloc, demoLaunchHook, demoTerminateHook)
	return nil
}

// waitForInstance waits for the group's instance other than previous to be running, as user data would
// only start then. The step begins when the group launched it.
func (d *demoRun) waitForInstance(ctx context.Context, s *demoStep, previous string) (string, error) {
	deadline := time.Now().Add(waitBound)
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
				i, err := d.describeInstance(ctx, id)
				if err != nil {
					return "", err
				}
				if i.State != nil && i.State.Name == ec2types.InstanceStateNameRunning {
					s.begin = aws.ToTime(i.LaunchTime)
					fmt.Fprintf(d.out, "    %s launched at %s, running in %s (lifecycle %s)\n", id, d.at(s.begin), aws.ToString(in.AvailabilityZone), in.LifecycleState)
					return id, nil
				}
			}
		}
		if err := wait.Pause(ctx, 20*time.Millisecond); err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("the group launched no instance within %s", waitBound)
}

func (d *demoRun) describeInstance(ctx context.Context, id string) (ec2types.Instance, error) {
	out, err := d.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return ec2types.Instance{}, err
	}
	for _, r := range out.Reservations {
		for _, i := range r.Instances {
			return i, nil
		}
	}
	return ec2types.Instance{}, fmt.Errorf("instance %s not found", id)
}

func (d *demoRun) mountPoint(id string) string { return filepath.Join(d.dir, "instances", id, "data") }

func (d *demoRun) volumeFlag(id string) string { return "data:/dev/sdf:" + d.mountPoint(id) }

// up runs `handover up` as instance id, in process, as user data would, and puts the volume's plans on
// the timeline.
func (d *demoRun) up(ctx context.Context, s *demoStep, id string) error {
	args := []string{"up", "--launch-hook", demoLaunchHook, "--size", "1", "--volume", d.volumeFlag(id),
		"--unit-dir", filepath.Join(d.dir, "units", id), "--log-format", "json"}
	fmt.Fprintf(d.out, "    handover %s\n", shellJoin(args))
	run, err := d.startAgent(ctx, id, "up", args)
	if err != nil {
		return err
	}
	code := run.wait()
	d.upDone = time.Now()
	d.printIndented(run.stdout.String())
	s.sub = upSteps(run.log.records())
	if code != fail.CodeOK {
		return fmt.Errorf("handover up on %s exited %d:\n%s", id, code, run.log.String())
	}
	return nil
}

// upSteps turns up's log into the timeline's steps. up works in sequence and logs "<step> done" at the
// end of each; the volume's step is shown as the plans it followed (each until the next), which is where
// the replacement waits for down's snapshot.
func upSteps(recs []logRecord) []*demoStep {
	var out []*demoStep
	var prev time.Time
	add := func(what string, end time.Time) {
		out = append(out, &demoStep{begin: prev, end: end, what: what})
		prev = end
	}
	var plans []logRecord
	mkfs := false
	for _, r := range recs {
		if prev.IsZero() {
			el, _ := time.ParseDuration(r.attr("elapsed"))
			prev = r.Time.Add(-el)
		}
		switch r.Msg {
		case "asg-policy done":
			add("identity and tags from IMDS, lock, the instance's place in its group", r.Time)
		case "address done":
			add("Elastic IP "+r.attr("public_ip")+": "+r.attr("action"), r.Time)
		case "plan":
			plans = append(plans, r)
		case "volume done":
			for i, p := range plans {
				end := r.Time
				if i+1 < len(plans) {
					end = plans[i+1].Time
				}
				if p.attr("action") == "done" {
					continue
				}
				out = append(out, &demoStep{begin: p.Time, end: end, what: "volume plan " + p.attr("action") + ": " + p.attr("why")})
			}
			plans, prev = nil, r.Time
		case "filesystem made on a blank volume":
			mkfs = true
		case "mount done":
			what := "device, mount " + r.attr("fs")
			if mkfs {
				what = "device, mkfs." + r.attr("fs") + " (created blank), mount"
			}
			add(what, r.Time)
		case "superseded done":
			if t := r.attr("tagged"); t != "" {
				add("tag "+t+" handover:superseded", r.Time)
			}
		case "lifecycle action completed":
			add("CompleteLifecycleAction "+r.attr("hook")+" "+r.attr("result"), r.Time)
		}
	}
	return out
}

// startWatch starts `handover watch` on the first instance in the background, as its systemd unit does,
// and waits until it watches.
func (d *demoRun) startWatch(ctx context.Context) error {
	stopCmd := "sleep " + strconv.FormatFloat(d.serviceStop().Seconds(), 'f', -1, 64)
	args := []string{"watch", "--terminate-hook", demoTerminateHook, "--pre-stop", stopCmd,
		"--volume", d.volumeFlag(d.first), "--poll-interval", d.pollInterval().String(), "--heartbeat-interval", d.heartbeatInterval().String(),
		"--state-file", filepath.Join(d.dir, "instances", d.first, "watch.json"), "--log-format", "json"}
	fmt.Fprintf(d.out, "    handover %s\n", shellJoin(args))
	fmt.Fprintf(d.out, "    (--pre-stop %q stands in for `systemctl stop orders`: the service takes %s to stop; --release is unmount, down's default with a pre-stop command)\n",
		stopCmd, d.serviceStop())
	run, err := d.startAgent(ctx, d.first, "watch", args)
	if err != nil {
		return err
	}
	d.watch = run
	r, err := run.waitLog(ctx, "watching instance metadata")
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    watch: %s (sources %s, every %s)\n", r.Msg, r.attr("sources"), r.attr("every"))
	return nil
}

// writeData is the service writing its data on the mounted volume just before the termination. It is not
// synced: down's sync and unmount must carry it to the volume before the snapshot.
func (d *demoRun) writeData() error {
	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)
	copy(data, "orders written in "+azA+" at "+time.Now().UTC().Format(time.RFC3339Nano)+"\n")
	p := filepath.Join(d.mountPoint(d.first), demoFile)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		return err
	}
	d.data = data
	fmt.Fprintf(d.out, "    %s: 1 MiB, starting %q\n", p, strings.TrimSpace(string(data[:bytes.IndexByte(data, '\n')])))
	return nil
}

// terminate is the operator (or a zone's health) taking AZ a out of the group's zones, so the replacement
// launches in AZ b, and the group terminating the instance there with its termination hook.
func (d *demoRun) terminate(ctx context.Context) error {
	if _, err := d.as.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String(demoASG), AvailabilityZones: []string{azB}}); err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    aws autoscaling update-auto-scaling-group --auto-scaling-group-name %s --availability-zones %s\n", demoASG, azB)
	act, err := d.as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(d.first), ShouldDecrementDesiredCapacity: aws.Bool(false)})
	if err != nil {
		return err
	}
	d.terminateAt = time.Now()
	fmt.Fprintf(d.out, "    aws autoscaling terminate-instance-in-auto-scaling-group --instance-id %s --no-should-decrement-desired-capacity\n", d.first)
	state, err := d.lifecycleState(ctx, d.first)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "    %s; %s is %s\n", aws.ToString(act.Activity.Description), d.first, state)
	return nil
}

// lifecycleState is the instance's lifecycle state in the group ("Terminated" once the group forgot it).
func (d *demoRun) lifecycleState(ctx context.Context, id string) (string, error) {
	out, err := d.as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{id}})
	if err != nil {
		return "", err
	}
	for _, i := range out.AutoScalingInstances {
		return aws.ToString(i.LifecycleState), nil
	}
	return "Terminated", nil
}

// waitTrigger waits for watch to see the group terminating the instance. The step ends when watch saw it.
func (d *demoRun) waitTrigger(ctx context.Context, s *demoStep) error {
	r, err := d.watch.waitLog(ctx, "hand-over triggered: running down")
	if err != nil {
		return err
	}
	d.trigger = r
	s.begin, s.end = d.terminateAt, r.Time
	for _, c := range d.watch.log.records() {
		if c.Msg == "state changed" && c.attr("source") == "lifecycle" && strings.HasSuffix(c.attr("to"), "Terminated") {
			fmt.Fprintf(d.out, "    watch: lifecycle state changed: %s -> %s\n", c.attr("from"), c.attr("to"))
		}
	}
	fmt.Fprintf(d.out, "    watch: %s (%s)\n", r.Msg, r.attr("detail"))
	return nil
}

// waitDown waits for the down that watch runs to finish, prints its report and puts its steps on the
// timeline.
func (d *demoRun) waitDown(ctx context.Context, s *demoStep) error {
	done, err := d.watch.waitLog(ctx, "hand-over done for this event", "down failed; retrying")
	if err != nil {
		return err
	}
	s.begin, s.end, d.downDone = d.trigger.Time, done.Time, done.Time
	d.printIndented(d.watch.stdout.String())
	var downLog []logRecord
	for _, r := range d.watch.log.records() {
		if !r.Time.Before(d.trigger.Time) && !r.Time.After(done.Time) {
			downLog = append(downLog, r)
		}
	}
	s.sub = d.downSteps(downLog)
	for _, r := range downLog {
		if r.Msg == "snapshot created" {
			d.downSnapshot = r.attr("snapshot_id")
		}
	}
	if d.downSnapshot == "" {
		return fmt.Errorf("handover down took no snapshot:\n%s", d.watch.log.String())
	}
	return nil
}

// downSteps turns down's log into the timeline's steps: each step ends with the record that reports it
// and began when the previous one ended (down works in sequence). The heartbeats, sent alongside from the
// moment down starts, are one line, counted in the simulator's call log.
func (d *demoRun) downSteps(recs []logRecord) []*demoStep {
	var out []*demoStep
	prev := d.trigger.Time
	preStop := ""
	for _, r := range recs {
		what := ""
		switch r.Msg {
		case "sending lifecycle heartbeats while working":
			if n, last := d.heartbeats(r.Time); n > 0 {
				out = append(out, &demoStep{begin: r.Time, end: last,
					what: fmt.Sprintf("RecordLifecycleActionHeartbeat x%d, every %s while down works", n, r.attr("every"))})
			}
		case "running pre-stop command":
			what, preStop = "observe: the instance in its group, the lock, the volume and its mount", r.attr("command")
		case "pre-stop command done", "pre-stop command failed", "pre-stop command timed out; its process group was killed":
			what = fmt.Sprintf("pre-stop command %q: the service stops", preStop)
			if r.Msg != "pre-stop command done" {
				what += " (" + r.Msg + ": the snapshot is not marked consistent)"
			}
		case "synced":
			what = "sync"
		case "unmounted":
			what = "unmount " + strings.TrimPrefix(r.attr("mount_point"), d.dir+"/")
		case "snapshot created":
			what = fmt.Sprintf("CreateSnapshot %s of %s (%s; handover:consistent=%s)", r.attr("snapshot_id"), r.attr("volume_id"), r.attr("still"), r.attr("consistent"))
		case "detaching":
			what = "DetachVolume " + r.attr("volume_id")
		case "lifecycle action completed":
			what = fmt.Sprintf("CompleteLifecycleAction %s %s", r.attr("hook"), r.attr("result"))
		}
		if what != "" {
			out = append(out, &demoStep{begin: prev, end: r.Time, what: what})
			prev = r.Time
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].begin.Before(out[j].begin) })
	return out
}

// heartbeats counts the first instance's successful RecordLifecycleActionHeartbeat calls since from, and
// when the last one was made.
func (d *demoRun) heartbeats(from time.Time) (n int, last time.Time) {
	for _, c := range d.sim.Calls() {
		if c.Action == "RecordLifecycleActionHeartbeat" && c.Caller == instanceCaller(d.first) && c.Code == "" && !c.Time.Before(from) {
			n, last = n+1, c.Time
		}
	}
	return n, last
}

// waitTerminated waits for the group to terminate the first instance once down completed the hook, then
// stops its watcher (the instance's shutdown would).
func (d *demoRun) waitTerminated(ctx context.Context, s *demoStep) error {
	s.begin = d.downDone
	deadline := time.Now().Add(waitBound)
	for {
		i, err := d.describeInstance(ctx, d.first)
		if err != nil {
			return err
		}
		if i.State != nil && i.State.Name == ec2types.InstanceStateNameTerminated {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s was not terminated within %s", d.first, waitBound)
		}
		if err := wait.Pause(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	s.end = time.Now()
	code := d.watch.stop()
	fmt.Fprintf(d.out, "    %s terminated; its handover watch stopped (exit %d)\n", d.first, code)
	if code != fail.CodeOK {
		return fmt.Errorf("handover watch exited %d:\n%s", code, d.watch.log.String())
	}
	return nil
}

// check reads the file back on the replacement, finds the Elastic IP there, and the restored volume made
// from down's snapshot.
func (d *demoRun) check(ctx context.Context) error {
	got, err := os.ReadFile(filepath.Join(d.mountPoint(d.second), demoFile))
	if err != nil {
		return fmt.Errorf("read %s on the replacement: %w", demoFile, err)
	}
	if !bytes.Equal(got, d.data) {
		return fmt.Errorf("%s on the replacement differs from what was written (%d bytes, want %d)", demoFile, len(got), len(d.data))
	}
	fmt.Fprintf(d.out, "    %s is back on %s, byte for byte (%d bytes)\n", demoFile, d.second, len(got))
	out, err := d.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{d.alloc}})
	if err != nil {
		return err
	}
	if holder := aws.ToString(out.Addresses[0].InstanceId); holder != d.second {
		return fmt.Errorf("the Elastic IP %s is on %q, not on the replacement %s", d.ip, holder, d.second)
	}
	fmt.Fprintf(d.out, "    the Elastic IP %s is on %s\n", d.ip, d.second)
	vols, err := d.ec2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: []ec2types.Filter{
		{Name: aws.String("attachment.instance-id"), Values: []string{d.second}},
		{Name: aws.String("tag:handover:group"), Values: []string{demoGroup}},
	}})
	if err != nil {
		return err
	}
	if len(vols.Volumes) != 1 || aws.ToString(vols.Volumes[0].SnapshotId) != d.downSnapshot {
		return fmt.Errorf("the replacement's volume is not made from down's snapshot %s: %+v", d.downSnapshot, vols.Volumes)
	}
	fmt.Fprintf(d.out, "    its volume %s was restored from %s, the snapshot handover down took on %s\n",
		aws.ToString(vols.Volumes[0].VolumeId), d.downSnapshot, d.first)
	return nil
}

func (d *demoRun) at(t time.Time) string { return "+" + seconds(t.Sub(d.start)) }

// printTimeline prints the steps in the order they began, each with what it was made of.
func (d *demoRun) printTimeline() {
	fmt.Fprintf(d.out, "\ntimeline (the simulator's EC2 and EBS delays divided by %g; --speed 1 for real ones)\n", d.speed)
	steps := slices.Clone(d.steps)
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].begin.Before(steps[j].begin) })
	line := func(s *demoStep, indent string) {
		fmt.Fprintf(d.out, "  %7s  %7s  %s%s\n", seconds(s.begin.Sub(d.start)), "+"+seconds(s.end.Sub(s.begin)), indent, s.what)
	}
	for _, s := range steps {
		line(s, "")
		for _, sub := range s.sub {
			line(sub, "  - ")
		}
	}
	fmt.Fprintf(d.out, "  total %s; the hand-over, from watch seeing the termination to the replacement's up done: %s\n",
		seconds(time.Since(d.start)), seconds(d.upDone.Sub(d.trigger.Time)))
}

// printCalls prints, from the simulator's call log, who changed what: the demo only built the world and
// terminated the instance; the agent on each instance did the rest.
func (d *demoRun) printCalls() {
	fmt.Fprintf(d.out, "\nAPI calls that changed something, by caller (the simulator's call log)\n")
	var callers []string
	actions := map[string][]string{}
	count := map[string]map[string]int{}
	for _, c := range d.sim.Calls() {
		if !c.Mutating || c.Code != "" {
			continue
		}
		if count[c.Caller] == nil {
			callers = append(callers, c.Caller)
			count[c.Caller] = map[string]int{}
		}
		if count[c.Caller][c.Action] == 0 {
			actions[c.Caller] = append(actions[c.Caller], c.Action)
		}
		count[c.Caller][c.Action]++
	}
	width := 0
	for _, caller := range callers {
		width = max(width, len(d.callerName(caller))+1)
	}
	for _, caller := range callers {
		var parts []string
		for _, a := range actions[caller] {
			if n := count[caller][a]; n > 1 {
				a += fmt.Sprintf(" x%d", n)
			}
			parts = append(parts, a)
		}
		fmt.Fprintf(d.out, "  %-*s %s\n", width, d.callerName(caller)+":", strings.Join(parts, ", "))
	}
}

func (d *demoRun) callerName(caller string) string {
	switch caller {
	case demoCaller:
		return "the demo (operator)"
	case instanceCaller(d.first):
		return "handover on " + d.first + " (" + azA + ")"
	case instanceCaller(d.second):
		return "handover on " + d.second + " (" + azB + ")"
	}
	return caller
}

// instanceCaller is the access key the simulator gives an instance (sim.Region.InstanceEnv), which names
// it in the call log.
func instanceCaller(id string) string { return "AKID" + strings.ReplaceAll(id, "-", "") }

// printIndented prints an agent's stdout under the step.
func (d *demoRun) printIndented(s string) {
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Fprintf(d.out, "    | %s\n", line)
	}
}

// bgAgent is one run of the agent as an instance, in process, in its own goroutine with its own context
// (cancelling it is the SIGTERM of its systemd unit).
type bgAgent struct {
	cancel context.CancelFunc
	done   chan struct{}
	code   int
	stdout *lockedBuffer
	log    *agentLog
}

// startAgent runs `handover args...` as instance id with the simulator's environment for it.
func (d *demoRun) startAgent(ctx context.Context, id, name string, args []string) (*bgAgent, error) {
	env, err := d.sim.InstanceEnv(id)
	if err != nil {
		return nil, err
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(d.dir, "locks", id+".lock")
	ctx, cancel := context.WithCancel(ctx)
	b := &bgAgent{cancel: cancel, done: make(chan struct{}), stdout: &lockedBuffer{}, log: &agentLog{who: name + " " + id}}
	if d.verbose {
		b.log.tee = d.out
	}
	go func() {
		defer close(b.done)
		b.code = agent.Main(ctx, args, agent.Env{Getenv: func(k string) string { return env[k] }, Stdout: b.stdout, Stderr: b.log})
	}()
	return b, nil
}

// wait waits for the run to end and returns its exit code.
func (b *bgAgent) wait() int {
	<-b.done
	b.cancel()
	return b.code
}

// stop ends the run as SIGTERM would and returns its exit code.
func (b *bgAgent) stop() int {
	b.cancel()
	return b.wait()
}

// waitLog waits until the run logs a record with message msg and returns it. It fails when the run logs
// one of failures first, exits, or the wait runs past waitBound.
func (b *bgAgent) waitLog(ctx context.Context, msg string, failures ...string) (logRecord, error) {
	deadline := time.Now().Add(waitBound)
	for {
		exited := false
		select {
		case <-b.done:
			exited = true
		default:
		}
		for _, r := range b.log.records() {
			switch {
			case r.Msg == msg:
				return r, nil
			case slices.Contains(failures, r.Msg):
				return r, fmt.Errorf("handover %s: %s: %s\n%s", b.log.who, r.Msg, r.attr("error"), b.log.String())
			}
		}
		if exited {
			return logRecord{}, fmt.Errorf("handover %s exited %d before %q:\n%s", b.log.who, b.code, msg, b.log.String())
		}
		if time.Now().After(deadline) {
			return logRecord{}, fmt.Errorf("handover %s did not log %q within %s:\n%s", b.log.who, msg, waitBound, b.log.String())
		}
		if err := wait.Pause(ctx, 10*time.Millisecond); err != nil {
			return logRecord{}, err
		}
	}
}

// agentLog is an agent's JSON log, readable while it runs; with tee set it also shows each record.
type agentLog struct {
	who string
	tee io.Writer

	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *agentLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	l.mu.Unlock()
	if l.tee != nil {
		for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
			if r, ok := parseLogLine(line); ok {
				fmt.Fprintf(l.tee, "      [%s] %s\n", l.who, r)
			} else {
				fmt.Fprintf(l.tee, "      [%s] %s\n", l.who, line)
			}
		}
	}
	return len(p), nil
}

func (l *agentLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *agentLog) records() []logRecord {
	var out []logRecord
	for _, line := range strings.Split(l.String(), "\n") {
		if r, ok := parseLogLine(line); ok {
			out = append(out, r)
		}
	}
	return out
}

// logRecord is one line of an agent's JSON log (log/slog's JSON handler).
type logRecord struct {
	Time       time.Time
	Level, Msg string
	Attrs      map[string]any
}

func parseLogLine(line string) (logRecord, bool) {
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return logRecord{}, false
	}
	r := logRecord{Attrs: m}
	if t, ok := m["time"].(string); ok {
		r.Time, _ = time.Parse(time.RFC3339Nano, t)
	}
	r.Level, _ = m["level"].(string)
	r.Msg, _ = m["msg"].(string)
	delete(m, "time")
	delete(m, "level")
	delete(m, "msg")
	return r, true
}

func (r logRecord) attr(k string) string {
	v, ok := r.Attrs[k]
	if !ok {
		return ""
	}
	return fmt.Sprint(v)
}

// String renders the record for --verbose: level, message, then its attributes by name (the instance is
// in the prefix already).
func (r logRecord) String() string {
	var b strings.Builder
	b.WriteString(r.Level + " " + r.Msg)
	keys := make([]string, 0, len(r.Attrs))
	for k := range r.Attrs {
		if k != "instance_id" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%s", k, r.attr(k))
	}
	return b.String()
}

// lockedBuffer is a bytes.Buffer for one writer goroutine and readers in others.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lockedWriter serialises writes to the demo's output: under --verbose the agents' logs share it.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// shellJoin prints a command line, quoting the arguments that need it.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "" || strings.ContainsAny(a, " \t'\"\\$`") {
			out[i] = strconv.Quote(a)
		}
	}
	return strings.Join(out, " ")
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s" }

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
