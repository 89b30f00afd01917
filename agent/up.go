package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// `handover up` converges this instance: identity, lock, Auto Scaling policy check, Elastic IP, volumes,
// filesystems and mounts, launch lifecycle hook. Every step observes first and acts only on the
// difference, so a rerun after a crash or after success is safe (after success it makes no mutating
// call at all).

// upConfig is `handover up`'s configuration after flags, environment and instance tags.
type upConfig struct {
	hostOptions
	Shape            cloud.VolumeShape
	FS               string
	RequireData      bool
	Takeover         bool
	NetworkInterface string
	PrivateIP        string
	LaunchHook       string
	NoComplete       bool
	NoMount          bool
	DeleteSuperseded bool
	KeepSuperseded   int // older volumes kept as a way back (Retire); --delete-superseded makes it 0
	Timeout          time.Duration
	ReleaseTimeout   time.Duration
	UnitDir          string // "none": do not persist mounts
}

// unitDirNone turns off writing mount units (for users who manage fstab themselves).
const unitDirNone = "none"

// register declares up's flags on f. `handover status` declares them too, so that the plan it shows is the
// one `up` would follow with the same environment and tags.
func (c *upConfig) register(f *flags) {
	fs := f.fs
	c.hostOptions.register(f, "lock that serialises up and down on this instance")
	f.intVar(&c.Shape.SizeGiB, "size", 10, "`GiB` of a volume handover creates; grow only: a larger snapshot restores at its own size")
	fs.StringVar(&c.Shape.Type, "type", "gp3", "EBS volume type of a volume handover creates: gp3, gp2, io1, io2, st1, sc1 or standard")
	f.intVar(&c.Shape.IOPS, "iops", 0, "provisioned `IOPS` of a volume handover creates (gp3, io1, io2; 0: the type's default)")
	f.intVar(&c.Shape.Throughput, "throughput", 0, "throughput in `MiB/s` of a gp3 volume handover creates (0: the default)")
	fs.BoolVar(&c.Shape.Encrypted, "encrypted", false, "encrypt volumes handover creates (restores of encrypted snapshots are always encrypted)")
	fs.StringVar(&c.Shape.KMSKeyID, "kms-key-id", "", "KMS key for encrypted volumes handover creates (needs --encrypted; default: the account's EBS key)")
	fs.StringVar(&c.FS, "fs", "ext4", "filesystem to make on a volume handover created blank: ext4 or xfs")
	fs.BoolVar(&c.RequireData, "require-data", false, "refuse to create a blank volume when the slot has no volume and no snapshot (exit 3)")
	fs.BoolVar(&c.Takeover, "takeover", false, "stop the live instance holding the Elastic IP (StopInstances with Force), then take the address and the data from it")
	fs.StringVar(&c.NetworkInterface, "network-interface", "", "associate the Elastic IP with this network interface (eni-...) instead of the primary one")
	fs.StringVar(&c.PrivateIP, "private-ip", "", "associate the Elastic IP with this private IPv4 address of the interface")
	fs.StringVar(&c.LaunchHook, "launch-hook", "", "name of the group's launch lifecycle hook to heartbeat and complete")
	fs.BoolVar(&c.NoComplete, "no-complete", false, "heartbeat the launch hook but do not complete it")
	fs.BoolVar(&c.NoMount, "no-mount", false, "attach volumes but do not wait for devices, make filesystems or mount")
	fs.BoolVar(&c.DeleteSuperseded, "delete-superseded", false, "delete the slot's volumes of older generations once they are detached (never attached ones): --keep-superseded 0")
	fs.IntVar(&c.KeepSuperseded, "keep-superseded", 1, "after a successful up, keep this many of the slot's older volumes (the newest; a way back) and delete the detached ones beyond them that a completed snapshot already holds")
	fs.IntVar(&c.Shape.InitializationRate, "initialization-rate", 0, "MiB/s (100 to 300) at which a volume restored from a snapshot loads its blocks (EBS Provisioned Rate for Volume Initialization, billed); 0: EBS's default rate; never for blank volumes nor snapshots enabled for fast snapshot restore here")
	fs.DurationVar(&c.Timeout, "timeout", 30*time.Minute, "bound on the whole command")
	fs.DurationVar(&c.ReleaseTimeout, "release-timeout", 5*time.Minute, "how long to wait for a leaving instance to release the Elastic IP or the volume before recovering without it, and for a live one before exit 4 (default 5m; in a group with a termination hook: its heartbeat timeout, at least 10m, plus 1m)")
	fs.StringVar(&c.UnitDir, "unit-dir", "/etc/systemd/system", "where to write the systemd mount unit of each volume, or \"none\"")
}

var (
	launchHookRE = regexp.MustCompile(`^[A-Za-z0-9\-_/]{1,255}$`)
	eniRE        = regexp.MustCompile(`^eni-[0-9a-f]{8}([0-9a-f]{9})?$`)
)

// claimSpec is how up claims the group's address; status plans with the same spec.
func (c *upConfig) claimSpec(group, instanceID string) cloud.ClaimSpec {
	return cloud.ClaimSpec{Group: group, InstanceID: instanceID, NetworkInterfaceID: c.NetworkInterface, PrivateIP: c.PrivateIP,
		Takeover: c.Takeover, StopLiveHolder: c.Takeover, Wait: c.ReleaseTimeout}
}

// minSizeGiB is the smallest volume of each type; the largest sizes have grown over the years, so EBS
// itself judges those. https://docs.aws.amazon.com/ebs/latest/userguide/ebs-volume-types.html
var minSizeGiB = map[string]int{"gp3": 1, "gp2": 1, "io1": 4, "io2": 4, "st1": 125, "sc1": 125, "standard": 1}

// minIOPS is the least provisioned IOPS of each type that takes them (same page).
var minIOPS = map[string]int{"gp3": 3000, "io1": 100, "io2": 100}

// validate checks up's options in one place; every error names the flag to fix. It does not require the
// group, which may still come from the instance's tags.
func (c *upConfig) validate() error {
	s := c.Shape
	minSize, ok := minSizeGiB[s.Type]
	if !ok {
		return badOption("type", "want gp3, gp2, io1, io2, st1, sc1 or standard")
	}
	if s.SizeGiB < minSize || s.SizeGiB > 65536 {
		return badOption("size", "a %s volume takes %d to 65536 GiB", s.Type, minSize)
	}
	switch {
	case s.IOPS < 0:
		return badOption("iops", "must be positive")
	case s.IOPS > 0 && s.Type != "gp3" && s.Type != "io1" && s.Type != "io2":
		return badOption("iops", "%s volumes have no provisioned IOPS (use --type gp3, io1 or io2)", s.Type)
	case s.IOPS == 0 && (s.Type == "io1" || s.Type == "io2"):
		return badOption("type", "needs --iops")
	case s.Throughput < 0:
		return badOption("throughput", "must be positive")
	case s.Throughput > 0 && s.Type != "gp3":
		return badOption("throughput", "only gp3 volumes take it, not %s", s.Type)
	// The least provisioned performance of each type, which has not changed as the largest have grown (EBS
	// judges those): below it CreateVolume fails, and only after the address has been taken.
	case s.IOPS > 0 && s.IOPS < minIOPS[s.Type]:
		return badOption("iops", "a %s volume takes at least %d IOPS (0: the type's default)", s.Type, minIOPS[s.Type])
	case s.Throughput > 0 && s.Throughput < 125:
		return badOption("throughput", "a gp3 volume takes at least 125 MiB/s (0: the default)")
	case s.KMSKeyID != "" && !s.Encrypted:
		return badOption("kms-key-id", "needs --encrypted")
	case s.InitializationRate != 0 && (s.InitializationRate < cloud.MinInitializationRate || s.InitializationRate > cloud.MaxInitializationRate):
		return badOption("initialization-rate", "want %d to %d MiB/s (EBS Provisioned Rate for Volume Initialization), or 0 for EBS's default rate", cloud.MinInitializationRate, cloud.MaxInitializationRate)
	case c.KeepSuperseded < 0:
		return badOption("keep-superseded", "must be 0 (keep none) or more")
	}
	if c.FS != "ext4" && c.FS != "xfs" {
		return badOption("fs", "want ext4 or xfs")
	}
	if c.LaunchHook != "" && !launchHookRE.MatchString(c.LaunchHook) {
		return badOption("launch-hook", "a lifecycle hook name uses letters, digits, '-', '_' and '/'")
	}
	if c.NetworkInterface != "" && !eniRE.MatchString(c.NetworkInterface) {
		return badOption("network-interface", "want a network interface ID such as eni-0123456789abcdef0")
	}
	if c.PrivateIP != "" {
		if ip := net.ParseIP(c.PrivateIP); ip == nil || ip.To4() == nil {
			return badOption("private-ip", "want an IPv4 address")
		}
	}
	if c.Timeout <= 0 {
		return badOption("timeout", "must be positive")
	}
	if c.ReleaseTimeout <= 0 {
		return badOption("release-timeout", "must be positive")
	}
	if err := c.hostOptions.validate(); err != nil {
		return err
	}
	if c.UnitDir != unitDirNone && !filepath.IsAbs(c.UnitDir) {
		return badOption("unit-dir", "must be an absolute path, or none")
	}
	return nil
}

func runUp(ctx context.Context, e Env, args []string) error {
	return up(ctx, e, args, cloud.NewClients)
}

// upRun is one run of `handover up`: what it was given and what it has found so far.
type upRun struct {
	cfg     upConfig
	group   string
	dryRun  bool
	log     *slog.Logger
	addrLog *slog.Logger // log without the instance key, which claimAddress adds
	clients *cloud.Clients
	lease   cloud.Lease // the Elastic IP association this run holds: the fence
	asgName string      // the Auto Scaling group this instance is in, "" when none
	flags   *flags      // where each option came from
	me      imds.Identity
	host    *host.Linux
	start   time.Time
	pin     cloud.SetPin // what the slots restore their moment from (a group of several slots)

	mu    sync.Mutex        // guards step and slots, shared by the slots' goroutines for messages
	step  string            // the step the run is at
	slots map[string]string // during the volume steps: slot -> the step that slot is at
	// failedAt is where the run was when a slot first failed: the other slots go on, and the run moves to
	// the next step before it returns the error.
	failedAt string

	upSlots []*upSlot // what converge brought, for the steps after the launch hook (retire)
	// prechecked carries the verdict of the precheck run begun beside the Auto Scaling checks (run).
	prechecked <-chan error
}

// stepDone logs the one line each step ends with.
func (r *upRun) stepDone(step string, attrs ...any) {
	r.log.Info(step+" done", append([]any{logkey.Step, step, logkey.Elapsed, time.Since(r.start).Round(time.Millisecond).String()}, attrs...)...)
}

func (r *upRun) enter(step string) {
	r.mu.Lock()
	r.step, r.slots = step, nil
	r.mu.Unlock()
}

// enterSlot records the step one slot is at: the slots converge in parallel, so a timeout names each.
func (r *upRun) enterSlot(slot, step string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slots == nil {
		r.slots = map[string]string{}
	}
	r.slots[slot] = step
}

// slotFailed records where the run was when a slot's step failed; it returns err.
func (r *upRun) slotFailed(err error) error {
	if err != nil {
		where := r.current()
		r.mu.Lock()
		if r.failedAt == "" {
			r.failedAt = where
		}
		r.mu.Unlock()
	}
	return err
}

// where names the step a failure happened at: the first failed slot's, else the current one.
func (r *upRun) where() string {
	r.mu.Lock()
	at := r.failedAt
	r.mu.Unlock()
	if at != "" {
		return at
	}
	return r.current()
}

// current names where the run is: the step, and while slots are at work, the step of each
// ("volumes: data at device, wal at volume").
func (r *upRun) current() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.slots) == 0 {
		return r.step
	}
	names := make([]string, 0, len(r.slots))
	for slot := range r.slots {
		names = append(names, slot)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, slot := range names {
		parts[i] = slot + " at " + r.slots[slot]
	}
	return r.step + ": " + strings.Join(parts, ", ")
}

// upResult is what the final summary reports.
type upResult struct {
	InstanceID string
	AZ         string
	Group      string
	Address    cloud.ClaimResult
	Slots      []slotResult
	Lifecycle  string
	Took       time.Duration
}

func up(ctx context.Context, e Env, args []string, newC clientFactory) error {
	r := &upRun{start: time.Now()}
	r.enter("identity")
	st, err := start(ctx, e, args, startSpec{name: "up", imdsTimeout: 60 * time.Second, dryRun: true,
		declare: r.cfg.register, validate: r.cfg.validate, groupTagWait: groupTagBound, newClients: newC})
	if err != nil {
		return err
	}
	// r.cfg is the configuration the flags, the environment and the tags were written into: up follows
	// exactly what start settled, tags included.
	r.cfg.Volumes = r.cfg.Volumes.orDefault()
	r.me, r.clients, r.group, r.dryRun, r.flags = st.id, st.clients, st.group, st.dryRun, st.flags
	r.cfg.Shape.TypeSet = r.flags.isSet("type") // an explicit --type wins over the type recorded on a snapshot
	r.host = r.cfg.machine(host.FSCalls{})
	// claimAddress adds the instance itself; everything else gets it here.
	r.addrLog = st.log.With(logkey.AZ, r.me.AvailabilityZone, logkey.Group, r.group)
	r.log = r.addrLog.With(logkey.Instance, r.me.InstanceID)
	r.stepDone("identity", "tags_from", st.tagsFrom)
	if err := r.checkNVMe(); err != nil {
		return err
	}

	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	if r.dryRun {
		return r.explain(parent, r.plan(ctx, e.Stdout))
	}
	res, err := r.run(ctx, parent)
	if err != nil {
		return err
	}
	res.Took = time.Since(r.start)
	r.log.Info("up done", logkey.Step, "up", logkey.Elapsed, res.Took.Round(time.Millisecond).String())
	printUpResult(e.Stdout, res)
	return nil
}

// checkNVMe refuses, before any call to AWS, an instance that does not present EBS volumes as NVMe
// devices (a Xen instance type): up finds a volume's device by its NVMe serial and would wait the whole
// device bound for one that never appears, with the address taken and the volume attached. --no-mount
// needs no device, so it is not refused. host.Storage says which facts count and why.
func (r *upRun) checkNVMe() error {
	if r.cfg.NoMount {
		return nil
	}
	st, err := r.host.Storage()
	if err != nil {
		r.log.Warn("cannot read how EBS volumes are attached here; going on", logkey.Step, "identity", logkey.Error, err.Error())
		return nil
	}
	if st.Xen && !st.EBSNVMe {
		return fail.Precondition(fmt.Sprintf("instance %s (%s) runs on %s and has no NVMe EBS controller (%s/class/nvme): handover needs an instance type built on the Nitro System, whose EBS volumes are NVMe devices; launch a Nitro type (m5, c6i, t3, ...) or run up with --no-mount and mount the volumes yourself",
			r.me.InstanceID, orDash(r.me.InstanceType), orDash(st.Hypervisor), r.host.SysDir), nil)
	}
	return nil
}

// run is up after start: lock, Auto Scaling checks, converge with the launch hook kept alive, then the
// hook's completion. parent is the caller's context, ctx the one bounded by --timeout.
func (r *upRun) run(ctx, parent context.Context) (upResult, error) {
	r.enter("lock")
	lock, err := r.host.Lock(ctx, r.cfg.LockFile, time.Until(wait.Deadline(ctx)))
	if errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil {
		return upResult{}, fail.Failed(fmt.Sprintf("another handover up or down held %s for all of --timeout %s; let it finish, then rerun", r.cfg.LockFile, r.cfg.Timeout), err)
	}
	if err != nil {
		return upResult{}, r.explain(parent, err)
	}
	defer lock.Unlock()
	thawLeftFrozen(ctx, r.log, r.host)
	r.stepDone("lock", "path", r.cfg.LockFile)

	// The precheck (read-only: the slots planned from one observation) goes out beside the Auto Scaling
	// checks (read-only too): both come before the first change, and neither needs the other. Its verdict
	// is read once the checks have passed (converge).
	prechecked := make(chan error, 1)
	go func() { prechecked <- r.precheck(ctx) }()
	r.prechecked = prechecked
	r.enter("asg")
	hook, err := r.launchAction(ctx)
	if err != nil {
		<-prechecked
		return upResult{}, r.explain(parent, err)
	}
	r.sizeReleaseTimeout(ctx)
	stopHeartbeats := func() {}
	if hook != nil {
		// Heartbeats cover everything from here on: address waits, snapshot waits, restores. 10 s is a
		// third of the shortest heartbeat timeout a hook can have (30 s).
		stopHeartbeats = hook.KeepAlive(ctx, 10*time.Second)
	}
	res, err := r.converge(ctx)
	stopHeartbeats() // before the completion, so no heartbeat races it
	if err != nil {
		r.handBack(parent, err)
		err = r.explain(parent, err)
		if hook != nil && !r.cfg.NoComplete && parent.Err() == nil {
			// ABANDON makes the group replace this instance. A run stopped from outside (parent
			// cancelled) is interrupted rather than failed: the hook's own timeout decides then.
			r.abandon(parent, hook)
		}
		return res, err
	}
	// Initialization takes minutes to hours: up follows it while it runs and never waits for it.
	watch := r.watchInitialization(ctx, r.upSlots)
	res.Lifecycle, err = r.completeLaunch(ctx, hook)
	if err == nil {
		// Off the critical path: the group has its instance, the service its data.
		r.retire(ctx, &res)
	}
	watch.stop(ctx, &res)
	return res, r.explain(parent, err)
}

// retire tags each slot's older volumes superseded and deletes those the retention lets go
// (cloud.SlotRun.Retire), once the launch hook is completed; failures are warnings in the summary.
func (r *upRun) retire(ctx context.Context, res *upResult) {
	r.enter("superseded")
	keep := r.cfg.KeepSuperseded
	if r.cfg.DeleteSuperseded {
		keep = 0
	}
	for i, s := range r.upSlots {
		r.enterSlot(s.spec.Slot, "superseded")
		s.run.Retire(ctx, keep)
		res.Slots[i].SlotOutcome = s.run.Res
		if out := s.run.Res; len(out.Superseded)+len(out.Deleted) > 0 {
			r.stepDone("superseded", "slot", s.spec.Slot, "tagged", strings.Join(out.Superseded, ","), "deleted", strings.Join(out.Deleted, ","))
		}
	}
}

// completeLaunch completes the launch lifecycle action with CONTINUE (unless --no-complete) and says what
// happened, for the summary.
func (r *upRun) completeLaunch(ctx context.Context, hook *cloud.LifecycleAction) (string, error) {
	if hook == nil {
		return "no launch lifecycle action pending", nil
	}
	r.enter("lifecycle")
	if r.cfg.NoComplete {
		return fmt.Sprintf("hook %s left pending (--no-complete)", hook.Hook), nil
	}
	if err := r.fence(ctx); err != nil {
		return "", err // the group must not put an instance in service that no longer holds the lease
	}
	inactive, err := hook.Complete(ctx, cloud.HookContinue)
	if err != nil {
		return "", err
	}
	r.stepDone("lifecycle", "hook", hook.Hook)
	if inactive != "" {
		return fmt.Sprintf("hook %s: %s", hook.Hook, inactive), nil
	}
	return fmt.Sprintf("hook %s completed with CONTINUE", hook.Hook), nil
}

// abandon completes the launch lifecycle action with ABANDON, bounded on its own: the run's context may be
// the one that ran out.
func (r *upRun) abandon(ctx context.Context, hook *cloud.LifecycleAction) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := hook.Complete(actx, cloud.HookAbandon); err != nil {
		r.log.Error("could not abandon the launch lifecycle action", logkey.Step, "lifecycle", logkey.Error, err.Error())
	}
}

// explain turns the command's own deadline running out into a line that names the step and the flag.
func (r *upRun) explain(parent context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil {
		return &fail.Error{Code: fail.CodeFailed, Msg: fmt.Sprintf("up did not finish within --timeout %s (it was at step %q); rerun to carry on, or raise --timeout", r.cfg.Timeout, r.where()), Err: err}
	}
	return err
}

// groupTagBound is how long a missing group tag is read again at boot before it is an error.
const groupTagBound = 10 * time.Second

// launchAction looks this instance up in Auto Scaling, checks that the group terminates before it
// launches a replacement (cloud.CheckReplacementOrder: no Capacity Rebalancing, no launch-before-terminate
// policy), and returns the launch lifecycle action to heartbeat and complete, or nil when there is none.
// An instance in the group's warm pool ends the run here (stayWarm).
func (r *upRun) launchAction(ctx context.Context) (*cloud.LifecycleAction, error) {
	m, err := cloud.MembershipOf(ctx, r.clients.AutoScaling, r.me.InstanceID)
	if err != nil {
		return nil, err
	}
	r.asgName = m.ASGName
	if cloud.WarmedState(m.LifecycleState) {
		return nil, r.stayWarm(ctx, m)
	}
	var hook *cloud.LifecycleAction
	if m.ASGName != "" && m.LifecycleState == "Pending:Wait" {
		if r.cfg.LaunchHook != "" {
			hook = &cloud.LifecycleAction{As: r.clients.AutoScaling, Log: r.log, Kind: cloud.LaunchHookKind, AsgName: m.ASGName, Hook: r.cfg.LaunchHook, InstanceID: r.me.InstanceID}
		} else {
			r.log.Warn("this instance waits in Pending:Wait but no --launch-hook was given: the group waits for the hook's timeout", logkey.Step, "asg", logkey.ASG, m.ASGName)
		}
	}
	r.stepDone("asg", "asg", orDash(m.ASGName), "lifecycle_state", orDash(m.LifecycleState), "hook_pending", hook != nil)
	if m.ASGName == "" {
		return nil, nil
	}
	r.enter("asg-policy")
	if err := cloud.CheckReplacementOrder(ctx, r.log, r.clients.AutoScaling, m.ASGName); err != nil {
		if hook != nil && !r.cfg.NoComplete {
			r.abandon(ctx, hook)
		}
		return nil, err
	}
	r.stepDone("asg-policy", "asg", m.ASGName)
	return hook, nil
}

// warmPoolHookState is a warm pool instance's state while its launch hook holds it.
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html
const warmPoolHookState = "Warmed:Pending:Wait"

// stayWarm is up on an instance of the group's warm pool: one prepared for the group, not its live member
// (https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-warm-pools.html). It must not take
// the Elastic IP or a volume from the live instance, so up only completes the launch hook that holds it in
// Warmed:Pending:Wait with CONTINUE (the pool then stops, hibernates or keeps it running) and ends with exit
// 0 and a line that says why: the error it returns carries exit code 0 and ends the run before converge.
// When the group takes the instance from a Stopped pool it boots again, in Pending:Wait with target
// InService, and up converges then as on any new instance.
func (r *upRun) stayWarm(ctx context.Context, m cloud.Membership) error {
	r.stepDone("asg", logkey.ASG, m.ASGName, "lifecycle_state", m.LifecycleState, "warm_pool", true)
	hookNote := "no launch lifecycle action pending"
	if m.LifecycleState == warmPoolHookState {
		r.enter("lifecycle")
		switch {
		case r.cfg.LaunchHook == "":
			hookNote = "no --launch-hook given: the pool waits for the hook's timeout"
			r.log.Warn("this warmed instance waits in "+warmPoolHookState+" but no --launch-hook was given: the pool waits for the hook's timeout", logkey.Step, "lifecycle", logkey.ASG, m.ASGName)
		case r.cfg.NoComplete:
			hookNote = fmt.Sprintf("hook %s left pending (--no-complete)", r.cfg.LaunchHook)
		default:
			// No fence: this run holds no lease, and CONTINUE here puts nothing in service.
			hook := &cloud.LifecycleAction{As: r.clients.AutoScaling, Log: r.log, Kind: cloud.LaunchHookKind, AsgName: m.ASGName, Hook: r.cfg.LaunchHook, InstanceID: r.me.InstanceID}
			inactive, err := hook.Complete(ctx, cloud.HookContinue)
			if err != nil {
				return err
			}
			hookNote = fmt.Sprintf("hook %s completed with CONTINUE", r.cfg.LaunchHook)
			if inactive != "" {
				hookNote = fmt.Sprintf("hook %s: %s", r.cfg.LaunchHook, inactive)
			}
		}
	}
	msg := fmt.Sprintf("instance %s is in the warm pool of Auto Scaling group %s (%s): a warmed instance takes neither the Elastic IP nor a volume; up converges when the group takes it from the pool and it boots again; %s",
		r.me.InstanceID, m.ASGName, m.LifecycleState, hookNote)
	r.log.Info("warm pool instance: nothing to converge", logkey.Step, "asg", logkey.ASG, m.ASGName, logkey.State, m.LifecycleState, logkey.Why, hookNote)
	return &fail.Error{Code: fail.CodeOK, Msg: msg}
}

// converge claims the address, then brings every slot's volume here: the volumes in parallel, one
// goroutine per slot (a restore is mostly waiting on EBS, and slots do not depend on each other); then
// the filesystems one after the other, parents first, so that a mount point inside another slot's
// mount point is mounted on top of it, not hidden under it.
func (r *upRun) converge(ctx context.Context) (upResult, error) {
	res := upResult{InstanceID: r.me.InstanceID, AZ: r.me.AvailabilityZone, Group: r.group}
	// What can be refused is refused before the address is taken: address and data stay together.
	r.enter("precheck")
	check := r.precheck
	if r.prechecked != nil {
		ch := r.prechecked
		r.prechecked = nil
		check = func(context.Context) error { return <-ch }
	}
	if err := check(ctx); err != nil {
		return res, err
	}
	r.enter("address")
	claim, err := cloud.ClaimAddress(ctx, r.addrLog, r.clients, r.cfg.claimSpec(r.group, r.me.InstanceID))
	res.Address = claim
	if err != nil {
		return res, err
	}
	r.lease = claim.Lease
	r.stepDone("address", logkey.Allocation, claim.Address.AllocationID, logkey.PublicIP, claim.Address.PublicIP, logkey.Action, claim.Action, "epoch", r.lease.AssociationID)

	r.enter("volumes")
	n := len(r.cfg.Volumes)
	slots := make([]*upSlot, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, spec := range r.cfg.Volumes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			slots[i], errs[i] = r.bringVolume(ctx, spec)
			errs[i] = r.slotFailed(errs[i])
		}()
	}
	wg.Wait()

	r.enter("filesystems")
	order := make([]int, 0, n)
	for i := range slots {
		if errs[i] == nil {
			order = append(order, i)
		}
	}
	sort.SliceStable(order, func(a, b int) bool {
		pa, pb := r.cfg.Volumes[order[a]].MountPoint, r.cfg.Volumes[order[b]].MountPoint
		if da, db := strings.Count(pa, "/"), strings.Count(pb, "/"); da != db {
			return da < db
		}
		return pa < pb
	})
	for _, i := range order {
		errs[i] = r.slotFailed(r.finishSlot(ctx, slots[i]))
	}
	res.Slots = make([]slotResult, n)
	for i, s := range slots {
		res.Slots[i] = slotResult{SlotOutcome: s.run.Res, Device: s.device, FS: s.fs}
	}
	r.upSlots = slots
	return res, firstError(errs)
}

// sizeReleaseTimeout sets --release-timeout, when it was not given, from the group's own termination hook:
// the old instance may hold the address and the volume for as long as its termination hook lets its down
// run (the hook's heartbeat timeout, longer with heartbeats, which down sends until its own --timeout, 10
// minutes by default), so the replacement waits that long and a minute more before it recovers without
// it; meanwhile its launch hook's heartbeats keep it alive. Without a group or a termination hook the
// default (5 minutes) stands. https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_DescribeLifecycleHooks.html
func (r *upRun) sizeReleaseTimeout(ctx context.Context) {
	if r.asgName == "" || r.flags.isSet("release-timeout") {
		return
	}
	hb, err := cloud.TerminationHookTimeout(ctx, r.clients.AutoScaling, r.asgName)
	if err != nil || hb == 0 {
		if err != nil {
			r.log.Warn("could not read the group's termination hook; --release-timeout stays at its default", logkey.Step, "asg", logkey.ASG, r.asgName, logkey.Error, err.Error())
		}
		return
	}
	bound := max(hb, defaultDownTimeout) + time.Minute
	if bound > r.cfg.ReleaseTimeout {
		r.cfg.ReleaseTimeout = bound
		r.log.Info("--release-timeout sized from the group's termination hook", logkey.Step, "asg", logkey.ASG, r.asgName,
			"heartbeat_timeout", hb.String(), "release_timeout", bound.String())
	}
}

// precheck plans every slot from one observation, before the address is claimed, and returns the first
// refusal (no data where data is required, a volume in a third AZ and no snapshot, snapshots all in
// error, a mount point that cannot take the volume): such a run would end without the data, so it must
// not take the address first.
func (r *upRun) precheck(ctx context.Context) error {
	if !r.cfg.NoMount && r.cfg.UnitDir != unitDirNone {
		// The mount units are written after the mount: a directory that cannot take them (a read-only
		// /etc) used to end the run there, with the volume attached and mounted and the address taken.
		if problem := r.host.WriteProblem(r.cfg.UnitDir); problem != "" {
			return fail.Precondition(fmt.Sprintf("--unit-dir %s cannot take the mount units: %s: make it writable, or give --unit-dir none (mounts then do not come back at boot without up)",
				r.cfg.UnitDir, problem), nil)
		}
	}
	var sets *cloud.SetChoice
	if slots := r.groupSlots(); len(slots) > 1 {
		ch, err := cloud.ObserveSets(ctx, r.clients.EC2, r.group, slots, nil, "")
		if err != nil {
			return err
		}
		sets = &ch
	}
	for _, spec := range r.cfg.Volumes {
		view, err := cloud.ObserveSlot(ctx, r.clients, r.group, spec.Slot, r.me.InstanceID)
		if err != nil {
			return err
		}
		if !r.cfg.NoMount {
			if err := checkMountPoint(r.host, spec, attachedTo(view.Volumes, r.me.InstanceID)); err != nil {
				return err
			}
		}
		p := cloud.PlanSlot(cloud.PlanInput{InstanceID: r.me.InstanceID, AZ: r.me.AvailabilityZone, Group: r.group, Slot: spec.Slot,
			View: view, Takeover: r.cfg.Takeover, RequireData: r.cfg.RequireData, Sets: sets})
		if p.Action == cloud.PlanRefuse {
			return r.refusalOrRace(ctx, p.Err)
		}
		if !r.cfg.NoMount {
			if err := mountPointFree(r.host, spec, view, r.me.InstanceID); err != nil {
				return err
			}
		}
	}
	return nil
}

// groupSlots are the slots of the group, as --volume names them.
func (r *upRun) groupSlots() []string {
	var slots []string
	for _, spec := range r.cfg.Volumes {
		slots = append(slots, spec.Slot)
	}
	return slots
}

// refusalOrRace tells a refusal that is another instance at work from one the operator must fix: when a
// live instance holds the group's address, the data it is making is not missing, this run lost the race
// (exit 4); otherwise the refusal stands (exit 3).
func (r *upRun) refusalOrRace(ctx context.Context, refusal error) error {
	a, err := cloud.FindGroupAddress(ctx, r.clients.EC2, r.group)
	if err != nil || a.InstanceID == "" || a.InstanceID == r.me.InstanceID {
		return refusal
	}
	v, err := cloud.JudgeHolder(ctx, r.clients, a.InstanceID)
	if err != nil || v.MayTake {
		return refusal
	}
	return fail.Fenced(fmt.Sprintf("another instance holds the group's Elastic IP (%s) and is making its data: this one stops here", v.Why), refusal)
}

// fence re-checks this run's lease on the group's Elastic IP (agent/FENCING.md): every step that creates,
// attaches, formats, mounts or completes the launch goes through it first.
func (r *upRun) fence(ctx context.Context) error { return r.lease.Check(ctx, r.clients.EC2) }

// handBack disassociates the address this run took when the run ends without the data, so that the
// address is never on one instance and the data on another. An address found here is left here.
func (r *upRun) handBack(ctx context.Context, cause error) {
	if !r.lease.TookIt || ctx.Err() != nil {
		return // not ours, or the run was stopped from outside: its rerun carries on under the lease
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// A lost race usually means the address is not ours any more; but a live instance that keeps the
	// slot's volume past --release-timeout leaves it here, and this run must not end with the address on
	// this instance and the data on that one.
	if fail.Code(cause) == fail.CodeFenced && r.fence(hctx) != nil {
		return
	}
	if err := r.lease.Release(hctx, r.clients.EC2); err != nil {
		r.log.Error("could not hand back the Elastic IP this run took; disassociate it by hand", logkey.Step, "address", logkey.Error, err.Error())
		return
	}
	r.log.Warn("handed back the Elastic IP: this run ends without the data", logkey.Step, "address", logkey.Allocation, r.lease.AllocationID)
}

// firstError returns the first non-nil error, keeping its exit code; the others are joined in its text.
func firstError(errs []error) error {
	var first error
	var rest []string
	for _, err := range errs {
		switch {
		case err == nil:
		case first == nil:
			first = err
		default:
			rest = append(rest, err.Error())
		}
	}
	if first == nil || len(rest) == 0 {
		return first
	}
	return &fail.Error{Code: ExitCode(first), Msg: first.Error() + "; also: " + strings.Join(rest, "; "), Err: first}
}

// slotResult is what up did for one slot: the volume's outcome, and the device and filesystem here.
type slotResult struct {
	cloud.SlotOutcome
	Device string   `json:"device,omitempty"`
	FS     fsResult `json:"filesystem"`
}

// upSlot is one slot of an up run: the cloud side converges its volume, then the host side its device
// and filesystem.
type upSlot struct {
	spec   volumeSpec
	run    *cloud.SlotRun
	device string
	fs     fsResult
}

// bringVolume makes one slot's volume attached here and, unless --no-mount, waits for its device.
func (r *upRun) bringVolume(ctx context.Context, spec volumeSpec) (*upSlot, error) {
	s := &upSlot{spec: spec, run: &cloud.SlotRun{Fence: r.fence, Epoch: r.lease.AssociationID,
		C: r.clients, Log: r.log.With(logkey.Slot, spec.Slot), InstanceID: r.me.InstanceID, Az: r.me.AvailabilityZone, Group: r.group,
		Slot: spec.Slot, Device: spec.Device, Shape: r.cfg.Shape, Takeover: r.cfg.Takeover, RequireData: r.cfg.RequireData,
		ReleaseTimeout: r.cfg.ReleaseTimeout, GroupSlots: r.groupSlots(), Pin: &r.pin,
	}}
	if !r.cfg.NoMount {
		s.run.DeviceReady = func(volumeID string) bool {
			dev, _, err := r.host.FindVolumeDevice(volumeID)
			return err == nil && dev != ""
		}
	}
	r.enterSlot(spec.Slot, "volume")
	if err := s.run.Converge(ctx); err != nil {
		return s, err
	}
	vol := s.run.Res.Volume
	r.stepDone("volume", "slot", spec.Slot, logkey.Volume, vol.ID, "how", s.run.Res.How)
	if r.cfg.NoMount {
		return s, nil
	}
	r.enterSlot(spec.Slot, "device")
	dev, err := r.host.WaitForDevice(ctx, s.run.Log, vol.ID, host.DeviceBound)
	if err != nil {
		return s, err
	}
	s.device = dev
	r.stepDone("device", "slot", spec.Slot, logkey.Volume, vol.ID, "device", dev)
	return s, nil
}

// finishSlot makes the slot's filesystem mounted and persisted. Its older generations are retired after
// the launch hook (retire).
func (r *upRun) finishSlot(ctx context.Context, s *upSlot) error {
	spec, vol := s.spec, s.run.Res.Volume
	mark := func(ctx context.Context, key string) error {
		return cloud.MarkVolume(ctx, s.run.Log, r.clients.EC2, vol.ID, key)
	}
	if r.cfg.NoMount {
		if err := handOutRaw(ctx, vol, mark); err != nil {
			return err
		}
	} else {
		r.enterSlot(spec.Slot, "mount")
		fsr, err := prepareFilesystem(ctx, s.run.Log, r.host, fsRequest{
			Device: s.device, VolumeID: vol.ID, Blank: blankStateOf(vol), Fence: r.fence, Mark: mark, Spec: spec, FS: r.cfg.FS, UnitDir: r.cfg.UnitDir, Group: r.group,
		})
		s.fs = fsr
		if err != nil {
			return err
		}
		r.stepDone("mount", "slot", spec.Slot, logkey.Volume, vol.ID, "mount_point", spec.MountPoint, "fs", fsr.Type, "uuid", fsr.UUID)
	}
	return nil
}

// printUpResult writes the final summary: what an operator checks after a recovery.
func printUpResult(w io.Writer, res upResult) {
	fmt.Fprintf(w, "handover up: done in %s\n", res.Took.Round(10*time.Millisecond))
	fmt.Fprintf(w, "  instance   %s (%s), group %s\n", res.InstanceID, res.AZ, res.Group)
	a := res.Address
	addr := fmt.Sprintf("%s %s: %s", a.Address.PublicIP, a.Address.AllocationID, a.Action)
	if a.Previous != "" {
		addr += " from " + a.Previous
	}
	fmt.Fprintf(w, "  address    %s\n", addr)
	for _, s := range res.Slots {
		v := s.Volume
		fmt.Fprintf(w, "  volume     %s: %s (generation %d, %d GiB %s, %s) %s", s.Slot, v.ID, v.Generation, v.SizeGiB, v.VolumeType, v.AZ, s.How)
		if s.Snapshot != "" {
			fmt.Fprintf(w, " %s", s.Snapshot)
		}
		if s.Set != "" {
			fmt.Fprintf(w, " (snapshot set %s)", s.Set)
		}
		fmt.Fprintln(w)
		if s.Device != "" {
			fs := s.FS
			line := fmt.Sprintf("%s %s UUID=%s at %s", s.Device, fs.Type, fs.UUID, fs.MountPoint)
			if fs.Formatted {
				line += ", formatted (created blank)"
			}
			if fs.Grown != "" {
				line += ", " + fs.Grown
			}
			if fs.Unit != "" {
				line += ", unit " + fs.Unit
			}
			fmt.Fprintf(w, "  mount      %s: %s\n", s.Slot, line)
		}
		printRestoreNotes(w, s)
		if len(s.Superseded) > 0 {
			fmt.Fprintf(w, "  superseded %s: %s\n", s.Slot, strings.Join(s.Superseded, ", "))
		}
		if len(s.Deleted) > 0 {
			fmt.Fprintf(w, "  deleted    %s: %s\n", s.Slot, strings.Join(s.Deleted, ", "))
		}
		for _, warning := range s.Warnings {
			fmt.Fprintf(w, "  warning    %s: %s\n", s.Slot, warning)
		}
	}
	fmt.Fprintf(w, "  lifecycle  %s\n", res.Lifecycle)
}
