package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// `handover down` hands the instance's data and address over before the instance goes away:
//
//	lock -> pre-stop command -> sync -> unmount (or freeze) -> CreateSnapshot (thaw) -> detach
//	     -> [release the EIP] -> [wait for the snapshots] -> CompleteLifecycleAction CONTINUE
//
// with RecordLifecycleActionHeartbeat sent while it works when the instance is held in Terminating:Wait by
// the termination hook. Every step observes first, so a rerun (the watcher restarted, an operator retrying)
// converges: a snapshot this down already took is found by its description and not taken again, a detached
// volume stays detached, an unmounted filesystem stays unmounted.
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/lifecycle-hooks.html

// Defaults of down's bounds.
const (
	// The shortest heartbeat timeout a lifecycle hook can have is 30 s; a heartbeat every 10 s keeps even
	// that one alive through two lost calls.
	// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_PutLifecycleHook.html
	defaultHeartbeatInterval = 10 * time.Second
	// A Spot instance gets a two-minute warning before it is interrupted.
	// https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
	defaultSpotBudget = 2 * time.Minute
	// defaultDownTimeout bounds a whole down (and snapshot), so that a hung device cannot hold it
	// forever: sync, unmount and FIFREEZE then block in the kernel and no signal ends them. The
	// termination hook is not what limits it: each heartbeat renews the hook's heartbeat timeout, up to
	// 48 hours or 100 heartbeat timeouts, whichever is smaller (50 minutes at the shortest heartbeat
	// timeout a hook can have, 30 s). What should limit it is the replacement, which waits for the
	// volume or the snapshot. A healthy down takes seconds plus its pre-stop command (bounded by
	// --pre-stop-timeout, 1 minute by default); 10 minutes leaves room for a slow service stop and a
	// throttled API, and fits inside any hook's life.
	// https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_LifecycleHook.html (GlobalTimeout)
	defaultDownTimeout = 10 * time.Minute
)

// finalReserve is the part of a down's (or snapshot's) bound kept for what must still happen when a step
// before the snapshot hangs: a crash-consistent snapshot and completing the lifecycle hook. A quarter of
// the bound, at most a minute: the two calls take well under a second each when the API answers.
func finalReserve(bound time.Duration) time.Duration { return min(bound/4, time.Minute) }

// downConfig is down's configuration; watch takes the same flags, because it runs down.
type downConfig struct {
	hostOptions
	PreStop           string
	PreStopShell      bool
	PreStopTimeout    time.Duration
	Release           string
	FreezeTimeout     time.Duration
	TerminateHook     string
	HeartbeatInterval time.Duration
	WaitSnapshot      bool
	SnapshotTimeout   time.Duration
	ReleaseEIP        bool
	SpotBudget        time.Duration
	Timeout           time.Duration
	LockSnapshots     lockDays // lock each consistent snapshot (snaplock.go)
}

// addFlags declares down's flags on f.
func (c *downConfig) addFlags(f *flags) {
	c.hostOptions.register(f, "lock shared with up and snapshot, so that they never run at once")
	f.fs.StringVar(&c.PreStop, "pre-stop", "", "command that stops the service writing the data, e.g. 'systemctl stop postgresql' (split on spaces, no shell)")
	f.fs.BoolVar(&c.PreStopShell, "pre-stop-shell", false, "run --pre-stop through /bin/sh -c (for quoting, pipes, &&)")
	f.fs.DurationVar(&c.PreStopTimeout, "pre-stop-timeout", time.Minute, "bound on the pre-stop command; then its process group is killed and the snapshot is not marked consistent")
	f.fs.StringVar(&c.Release, "release", "", "how the filesystem is kept still for the snapshot: unmount or freeze (default: unmount when --pre-stop is set, else freeze)")
	f.fs.DurationVar(&c.FreezeTimeout, "freeze-timeout", 30*time.Second, "longest a filesystem stays frozen waiting for CreateSnapshot; then it is thawed and the run fails")
	f.fs.StringVar(&c.TerminateHook, "terminate-hook", "", "name of the group's termination lifecycle hook to heartbeat and complete")
	f.fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", defaultHeartbeatInterval, "interval of RecordLifecycleActionHeartbeat while down works (below the hook's heartbeat timeout)")
	f.fs.BoolVar(&c.WaitSnapshot, "wait-snapshot", false, "wait for the snapshots to complete before completing the hook (not needed: a snapshot is point-in-time when created)")
	f.fs.DurationVar(&c.SnapshotTimeout, "snapshot-timeout", 30*time.Minute, "bound on --wait-snapshot")
	f.fs.BoolVar(&c.ReleaseEIP, "release-eip", false, "disassociate the group's Elastic IP (by default the replacement takes it over)")
	f.fs.DurationVar(&c.SpotBudget, "spot-budget", defaultSpotBudget, "time down may take after a Spot interruption notice (capped by the interruption time)")
	f.fs.DurationVar(&c.Timeout, "timeout", defaultDownTimeout, "bound on the whole down; past it down takes a crash-consistent snapshot if it can, completes the hook with CONTINUE and exits 1")
	registerLock(f, &c.LockSnapshots)
}

// validate checks down's configuration in one place. openThisInstance runs it twice: on flags and
// environment before reaching for metadata (a bad flag fails at once, exit 2), and again once the
// instance's tags are applied. It changes nothing; applyDefaults then fills what depends on other options.
func (c *downConfig) validate() error {
	if c.Release != "" && c.Release != releaseUnmount && c.Release != releaseFreeze {
		return badOption("release", "want unmount or freeze")
	}
	if c.PreStopShell && c.PreStop == "" {
		return badOption("pre-stop-shell", "is set but --pre-stop is empty: give the command to run")
	}
	// Checked before down changes anything: a name Auto Scaling refuses would only fail at the end, with
	// the snapshot taken and the volume detached, and leave the hook to its timeout.
	if c.TerminateHook != "" && !launchHookRE.MatchString(c.TerminateHook) {
		return badOption("terminate-hook", "a lifecycle hook name uses letters, digits, '-', '_' and '/'")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"pre-stop-timeout", c.PreStopTimeout}, {"freeze-timeout", c.FreezeTimeout},
		{"heartbeat-interval", c.HeartbeatInterval}, {"snapshot-timeout", c.SnapshotTimeout}, {"spot-budget", c.SpotBudget}, {"timeout", c.Timeout},
	} {
		if d.v <= 0 {
			return badOption(d.name, "must be positive")
		}
	}
	return c.hostOptions.validate()
}

// applyDefaults fills the defaults that depend on other options: --release is unmount when a pre-stop
// command stops the service (nothing holds the filesystem any more), else freeze (the service keeps
// running, so it cannot be unmounted).
func (c *downConfig) applyDefaults() {
	if c.Release == "" {
		c.Release = releaseFreeze
		if c.PreStop != "" {
			c.Release = releaseUnmount
		}
	}
	c.Volumes = c.Volumes.orDefault()
}

// thisInstance is what down, watch and snapshot know about the instance they run on.
type thisInstance struct {
	id      imds.Identity
	md      *imds.Client
	clients *cloud.Clients
	group   string
	host    *host.Linux // this machine: --dev-dir, --sys-dir and the calls that can hang
}

// openThisInstance starts down, watch and snapshot: the start-up pipeline (start), then this instance as
// they share it, with the host its settled options describe.
func openThisInstance(ctx context.Context, e Env, args []string, spec startSpec, opts *hostOptions, calls host.FSCalls) (*started, *thisInstance, error) {
	st, err := start(ctx, e, args, spec)
	if err != nil {
		return nil, nil, err
	}
	return st, &thisInstance{id: st.id, md: st.md, clients: st.clients, group: st.group, host: opts.machine(calls)}, nil
}

// downCommand is `handover down` with the filesystem calls fsys (tests substitute ones that block).
func downCommand(ctx context.Context, e Env, args []string, calls host.FSCalls) error {
	var cfg downConfig
	st, in, err := openThisInstance(ctx, e, args, startSpec{name: "down", imdsTimeout: 10 * time.Second, dryRun: true,
		declare: cfg.addFlags, validate: cfg.validate}, &cfg.hostOptions, calls)
	if err != nil {
		return err
	}
	log := st.log
	cfg.applyDefaults()
	occ := occasionFromMetadata(ctx, log, in.md, in.id.InstanceID)
	rep, err := in.down(ctx, log, cfg, occ, st.dryRun)
	rep.print(e.Stdout)
	if err != nil {
		return err
	}
	if rep.PreStopErr != nil {
		return &fail.Error{Code: fail.CodeFailed, Msg: "handed over, but the pre-stop command failed, so no snapshot is marked consistent; fix the command", Err: rep.PreStopErr}
	}
	return nil
}

// occasion is why down runs. Its key scopes idempotency: a snapshot down took for the same key (it is in
// the snapshot's description) is not taken again by a rerun.
type occasion struct {
	Kind     string    // "lifecycle", "spot", "rebalance", "manual"
	Key      string    // "" for manual: the volume's attach time scopes it instead
	Deadline time.Time // Spot: when EC2 interrupts the instance; zero otherwise
}

// occasionFromMetadata works out why down runs when an operator or a unit runs it directly: the group is
// terminating the instance, or a Spot interruption is scheduled; otherwise it is a manual hand-over.
// Metadata errors leave it "manual": down must not fail because the notices could not be read.
func occasionFromMetadata(ctx context.Context, log *slog.Logger, md *imds.Client, instanceID string) occasion {
	if a, err := md.SpotInstanceAction(ctx); err != nil {
		log.Warn("could not read the Spot interruption notice", logkey.Step, "down", logkey.Error, err.Error())
	} else if a != nil {
		return spotOccasion(a)
	}
	if st, ok, err := md.TargetLifecycleState(ctx); err != nil {
		log.Warn("could not read the Auto Scaling target lifecycle state", logkey.Step, "down", logkey.Error, err.Error())
	} else if ok && st == targetTerminated {
		return lifecycleOccasion(instanceID)
	}
	return occasion{Kind: "manual"}
}

// targetTerminated is autoscaling/target-lifecycle-state once the group has decided to terminate the
// instance. https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html
const targetTerminated = "Terminated"

func lifecycleOccasion(instanceID string) occasion {
	// An instance is terminated once: the key needs nothing but the instance.
	return occasion{Kind: "lifecycle", Key: "terminate " + instanceID}
}

func spotOccasion(a *imds.SpotAction) occasion {
	return occasion{Kind: "spot", Key: "spot " + a.Action + " " + a.Time.UTC().Format(time.RFC3339), Deadline: a.Time}
}

func rebalanceOccasion(r *imds.Rebalance) occasion {
	return occasion{Kind: "rebalance", Key: "rebalance " + r.NoticeTime.UTC().Format(time.RFC3339)}
}

// description is the snapshot description down uses for this volume and occasion. It makes a rerun find
// the snapshot it took: CreateSnapshot takes no idempotency token.
func (s *slotRelease) description(occ occasion, instanceID string) string {
	key := occ.Key
	if key == "" {
		key = "manual, attached " + s.AttachTime.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("handover down (%s): %s of %s", key, s.Volume.ID, instanceID)
}

// downReport says what a down did, for stdout and for watch.
type downReport struct {
	Instance   string
	Occasion   occasion
	DryRun     bool
	Plan       []string
	Slots      []*slotRelease
	PreStopErr error
	Hook       string // what happened to the lifecycle action
	Address    string // what happened to the Elastic IP
	Elapsed    time.Duration
}

func (r downReport) print(w io.Writer) {
	if r.DryRun {
		fmt.Fprintf(w, "down plan for %s (%s):\n", r.Instance, r.Occasion.Kind)
		for i, p := range r.Plan {
			fmt.Fprintf(w, "  %d. %s\n", i+1, p)
		}
		return
	}
	for _, s := range r.Slots {
		if s.Snapshot.ID == "" {
			note := s.Note
			if note == "" {
				note = "no snapshot taken"
			}
			fmt.Fprintf(w, "slot %s: %s: %s\n", s.Spec.Slot, orDash(s.Volume.ID), note)
			continue
		}
		how := "new"
		if s.Reused {
			how = "already taken"
		}
		cons := "consistent"
		if !s.Consistent {
			cons = "NOT consistent"
		}
		fmt.Fprintf(w, "slot %s: %s (generation %d) -> snapshot %s (%s, %s, %s)", s.Spec.Slot, s.Volume.ID, s.Volume.Generation, s.Snapshot.ID, how, cons, orDash(s.Still))
		if s.Detached {
			fmt.Fprint(w, ", detached")
		}
		if s.Note != "" {
			fmt.Fprint(w, ", "+s.Note)
		}
		if set := s.Snapshot.SetID(); set != "" {
			fmt.Fprint(w, "; snapshot set "+set)
		}
		fmt.Fprintln(w)
	}
	if r.Address != "" {
		fmt.Fprintf(w, "address: %s\n", r.Address)
	}
	if r.Hook != "" {
		fmt.Fprintf(w, "lifecycle: %s\n", r.Hook)
	}
	if r.Elapsed > 0 {
		fmt.Fprintf(w, "down took %s\n", r.Elapsed.Round(time.Millisecond))
	}
}

// hookCompleteBound bounds CompleteLifecycleAction after down ran past its bound: the group should not
// wait for the hook's heartbeat timeout as well.
const hookCompleteBound = 30 * time.Second

// downRun is one run of down. Its steps are its methods, run in this order:
//
//	observeMembership   where the instance is in its Auto Scaling group (member, memberErr)
//	startHeartbeats     keep the termination hook alive (action, stopHeartbeat)
//	lock                the lock shared with up and snapshot (held)
//	observe             the slot volumes attached here and their snapshots from this down (slots)
//	stopWriter          the pre-stop command (rep.PreStopErr)
//	sync                flush
//	snapshot            keep still (unmount or freeze) and snapshot: snapshotStill, shared with snapshot
//	detach              detach what is snapshotted and unmounted (slot.Detached)
//	releaseAddress      --release-eip (rep.Address)
//	waitSnapshots       --wait-snapshot
//	completeHook        CONTINUE, with a fresh membership when the first read failed (rep.Hook)
//
// and, for --dry-run, plan instead of the steps from startHeartbeats on. A step that runs past the bound
// ends in giveUp. Each field is written by the step named beside it.
type downRun struct {
	in     *thisInstance
	log    *slog.Logger
	cfg    downConfig
	occ    occasion // with the Spot interruption time, when there is one
	start  time.Time
	spot   bool          // a Spot interruption is scheduled: the budget may bound the run
	bound  time.Duration // --timeout, or the Spot budget when shorter
	within string        // bound as the operator knows it

	member    cloud.Membership
	memberErr error // the first read of member failed; completeHook reads it again

	action        *cloud.LifecycleAction // the termination hook to heartbeat and complete; nil for none
	stopHeartbeat func()

	held  *host.Lock
	slots []*slotRelease
	rep   downReport
}

// down runs the hand-over. A pre-stop failure does not stop it (the snapshot is still taken, without the
// consistent tag): it is reported in the report, and the caller decides the exit code.
//
// Every step is bounded by --timeout (or, for a Spot interruption, by the budget if that is shorter). The
// steps up to the snapshot must end finalReserve before the bound; one that does not (a lock held by a hung
// run, a pre-stop command, sync, unmount or FIFREEZE on a hung device) is given up on, and down still
// takes a crash-consistent snapshot when that is safe, completes the termination hook with CONTINUE (the
// termination goes ahead anyway) and fails with one line naming the step (giveUp, pastBound).
func (in *thisInstance) down(ctx context.Context, log *slog.Logger, cfg downConfig, occ occasion, dryRun bool) (downReport, error) {
	r := in.newDownRun(ctx, log, cfg, occ, dryRun)
	b, cancel := newRunBounds(ctx, r.bound, r.within)
	defer cancel()
	r.log.Info("down starting", logkey.Step, "down", "occasion", r.occ.Kind, logkey.Group, in.group, logkey.Timeout, r.bound.String())

	r.observeMembership(b.work)
	if dryRun {
		return r.plan(b.all)
	}
	r.startHeartbeats(b.all)
	defer r.endHeartbeats()
	defer func() { r.held.Unlock() }() // r.held is set by the lock step, after this defer
	for _, st := range []runStep{
		{"lock", r.lock}, {"observe", r.observe}, {"pre-stop", r.stopWriter}, {"sync", r.sync}, {"snapshot", r.snapshot},
		// Optional from here on: the data is in the snapshots.
		{"detach", r.detach}, {"release-eip", r.releaseAddress}, {"wait-snapshot", r.waitSnapshots},
	} {
		if err := st.run(b.work); err != nil {
			return r.giveUp(b, st.name, err)
		}
	}
	// Let the group go on.
	if err := r.completeHook(b.all); err != nil {
		return r.giveUp(b, "lifecycle", err)
	}
	r.rep.Elapsed = time.Since(r.start)
	r.log.Info("down done", logkey.Step, "down", logkey.Elapsed, r.rep.Elapsed.Round(time.Millisecond).String())
	return r.rep, nil
}

// newDownRun works out the run's bound. A Spot interruption leaves about two minutes: everything down
// does must fit before it, and the snapshot comes before anything optional.
func (in *thisInstance) newDownRun(ctx context.Context, log *slog.Logger, cfg downConfig, occ occasion, dryRun bool) *downRun {
	r := &downRun{
		in: in, log: log.With(logkey.Instance, in.id.InstanceID, logkey.AZ, in.id.AvailabilityZone), cfg: cfg, start: time.Now(),
		bound: cfg.Timeout, within: "--timeout " + cfg.Timeout.String(),
		rep: downReport{Instance: in.id.InstanceID, Occasion: occ, DryRun: dryRun},
	}
	if occ.Deadline.IsZero() {
		if a, err := in.md.SpotInstanceAction(ctx); err == nil && a != nil {
			occ.Deadline = a.Time
		}
	}
	r.occ = occ
	if occ.Deadline.IsZero() {
		return r
	}
	r.spot = true
	budget := min(cfg.SpotBudget, time.Until(occ.Deadline))
	if budget <= 0 {
		// The interruption time has passed and the instance still runs: EC2 is late, not gone. Try
		// within the configured budget.
		budget = cfg.SpotBudget
	}
	if budget < r.bound {
		r.bound, r.within = budget, "the Spot budget "+budget.Round(time.Second).String()
	}
	r.log.Info("Spot interruption scheduled: working inside the budget", logkey.Step, "down", "budget", budget.Round(time.Second).String(), "interruption", occ.Deadline.UTC().Format(time.RFC3339))
	return r
}

// describe is the description of the snapshots this down takes (slotRelease.description).
func (r *downRun) describe(s *slotRelease) string { return s.description(r.occ, r.in.id.InstanceID) }

// hookActive reports whether the group holds the instance in Terminating:Wait, as last read.
func (r *downRun) hookActive() bool { return r.member.LifecycleState == "Terminating:Wait" }

// termination is the termination hook's action when the group holds the instance for it and
// --terminate-hook names it; nil otherwise.
func (r *downRun) termination() *cloud.LifecycleAction {
	if !r.hookActive() || r.cfg.TerminateHook == "" {
		return nil
	}
	return &cloud.LifecycleAction{As: r.in.clients.AutoScaling, Log: r.log, Kind: cloud.TerminateHookKind,
		AsgName: r.member.ASGName, Hook: r.cfg.TerminateHook, InstanceID: r.in.id.InstanceID}
}

// observeMembership reads the instance's place in its Auto Scaling group. A failure is not the end: down
// goes on, and completeHook reads it again.
func (r *downRun) observeMembership(ctx context.Context) {
	r.member, r.memberErr = cloud.MembershipOf(ctx, r.in.clients.AutoScaling, r.in.id.InstanceID)
	if r.memberErr != nil {
		r.log.Warn("could not read the Auto Scaling state; going on, and trying again before completing the hook", logkey.Step, "lifecycle", logkey.Error, r.memberErr.Error())
	}
}

// startHeartbeats keeps the termination hook alive from the first moment: waiting for the lock, a slow
// pre-stop command or a throttled API must not let the hook time out.
func (r *downRun) startHeartbeats(ctx context.Context) {
	if !r.hookActive() {
		return
	}
	if r.cfg.TerminateHook == "" {
		r.log.Warn("instance is in Terminating:Wait but --terminate-hook is not set: the group waits for the hook's heartbeat timeout", logkey.Step, "lifecycle", logkey.ASG, r.member.ASGName)
		return
	}
	r.action = r.termination()
	r.stopHeartbeat = r.action.KeepAlive(ctx, r.cfg.HeartbeatInterval)
	r.log.Info("sending lifecycle heartbeats while working", logkey.Step, "lifecycle", logkey.ASG, r.member.ASGName, logkey.Hook, r.cfg.TerminateHook, logkey.Every, r.cfg.HeartbeatInterval.String())
}

// endHeartbeats stops the heartbeats, if they run; it may be called more than once.
func (r *downRun) endHeartbeats() {
	if r.stopHeartbeat != nil {
		r.stopHeartbeat()
	}
}

// lock takes the lock shared with up and snapshot, so that no `up` changes the volumes meanwhile, then
// thaws what a run killed while frozen left frozen.
func (r *downRun) lock(ctx context.Context) (err error) {
	r.held, err = r.in.host.Lock(ctx, r.cfg.LockFile, r.bound)
	if err == nil {
		thawLeftFrozen(ctx, r.log, r.in.host)
	}
	return err
}

// thawLeftFrozen thaws the filesystems that a run killed while they were frozen left frozen (their freeze
// markers, host/freezemark.go), holding the instance lock: up, down and snapshot do it as soon as they
// have the lock, watch at every poll when the lock is free. A failure is logged, not fatal: it is the
// dead run's filesystem, and this run's own steps say what they need.
func thawLeftFrozen(ctx context.Context, log *slog.Logger, h host.Host) {
	thawed, err := h.ThawLeftFrozen(ctx, log)
	if err != nil {
		log.Error("could not thaw every filesystem a killed run left frozen", logkey.Step, "thaw", logkey.Error, err.Error())
	}
	if len(thawed) > 0 {
		log.Warn("thawed filesystems left frozen by a run that did not finish", logkey.Step, "thaw", "mount_points", strings.Join(thawed, ","))
	}
}

// observe finds each slot's volume, its mounts and any snapshot this down took already.
func (r *downRun) observe(ctx context.Context) error {
	slots, err := r.findSlots(ctx)
	if err != nil {
		return err
	}
	r.slots, r.rep.Slots = slots, slots
	return nil
}

// findSlots is observe's reading: findSlotVolumes, then each volume's snapshot from this down (rerun).
func (r *downRun) findSlots(ctx context.Context) ([]*slotRelease, error) {
	slots, err := r.in.findSlotVolumes(ctx, r.log, r.cfg.Volumes)
	if err != nil {
		return nil, err
	}
	for _, s := range slots {
		if s.released() {
			continue
		}
		q := cloud.SnapshotQuery{Group: r.in.group, Slot: s.Spec.Slot, VolumeID: s.Volume.ID, InstanceID: r.in.id.InstanceID, Description: r.describe(s)}
		if s.Existing, err = cloud.FindSnapshotOf(ctx, r.in.clients.EC2, q); err != nil {
			return nil, err
		}
	}
	return slots, nil
}

// stopWriter runs the pre-stop command. Its failure is recorded, not returned: the snapshot is still
// taken, not tagged consistent. Only running past the bound ends the run here.
func (r *downRun) stopWriter(ctx context.Context) error {
	if r.cfg.PreStop == "" {
		return nil
	}
	timeout := r.cfg.PreStopTimeout
	if dl, ok := ctx.Deadline(); ok && r.spot {
		timeout = min(timeout, time.Until(dl)/2) // leave the other half for the snapshot
	}
	r.rep.PreStopErr = r.in.host.RunPreStop(ctx, r.log, host.PreStop{Command: r.cfg.PreStop, Shell: r.cfg.PreStopShell, Timeout: timeout})
	if r.rep.PreStopErr != nil && ctx.Err() != nil {
		return r.rep.PreStopErr
	}
	return nil
}

// sync flushes every filesystem, after the writer stopped.
func (r *downRun) sync(ctx context.Context) error { return r.in.host.Sync(ctx, r.log) }

// snapshot keeps each slot's data still and snapshots it (snapshotStill, shared with `handover snapshot`).
func (r *downRun) snapshot(ctx context.Context) error {
	st := stillness{Release: r.cfg.Release, FreezeTimeout: r.cfg.FreezeTimeout, PreStop: r.cfg.PreStop != "", PreStopErr: r.rep.PreStopErr, Rerun: "down", Final: true}
	if err := r.in.snapshotStill(ctx, r.log, r.slots, st, r.describe); err != nil {
		return err
	}
	// The hand-over does not wait on the lock: a snapshot that could not be locked is still the data (the
	// failure is logged), and the replacement needs it now.
	_, _ = r.in.lockSnapshots(ctx, r.log, r.slots, r.cfg.LockSnapshots)
	return nil
}

// detach detaches each volume that is snapshotted and no longer mounted, so that a replacement in the
// same AZ attaches it directly. It does not wait for the detach to finish: the replacement's `up` waits
// for the volume to be available, and the instance's termination detaches it anyway. Failures are logged,
// not fatal: the data is already in the snapshot.
func (r *downRun) detach(ctx context.Context) error {
	for _, s := range r.slots {
		if s.Snapshot.ID == "" {
			continue
		}
		vlog := s.slotLog(r.log).With(logkey.Step, "detach")
		if !s.unmountedNow(r.in.host) {
			vlog.Info("volume still mounted (or its device is not visible): left attached")
			continue
		}
		already, err := cloud.DetachVolume(ctx, r.in.clients.EC2, s.Volume.ID, r.in.id.InstanceID)
		switch {
		case err != nil:
			vlog.Warn("detach failed; the volume detaches when the instance terminates", logkey.Error, err.Error())
		case already:
			s.Detached = true
			vlog.Info("already detached")
		default:
			s.Detached = true
			vlog.Info("detaching")
		}
	}
	return nil
}

// unmountedNow reports whether the slot's volume is mounted nowhere on this instance, read afresh: only
// then may it be detached. A volume whose device is not visible counts as unmounted only when nothing is
// mounted at its configured mount point.
func (s *slotRelease) unmountedNow(h host.Host) bool {
	if s.Device == "" {
		_, mounted, err := h.MountedAt(s.Spec.MountPoint)
		return err == nil && !mounted
	}
	m, err := h.MountsOf(s.Device)
	return err == nil && len(m) == 0
}

// releaseAddress disassociates the group's Elastic IP from this instance, with --release-eip.
func (r *downRun) releaseAddress(ctx context.Context) error {
	if !r.cfg.ReleaseEIP {
		return nil
	}
	res, err := cloud.ReleaseAddress(ctx, r.log, r.in.clients.EC2, r.in.group, r.in.id.InstanceID)
	if err != nil {
		return err
	}
	a := res.Address
	if res.Released {
		r.rep.Address = fmt.Sprintf("released %s (%s)", a.AllocationID, a.PublicIP)
	} else {
		r.rep.Address = fmt.Sprintf("%s (%s) not on this instance (holder %s)", a.AllocationID, a.PublicIP, orDash(a.InstanceID))
	}
	return nil
}

// waitSnapshots waits, with --wait-snapshot, until every snapshot down took or found is completed; not
// for a Spot interruption, where they complete on their own.
func (r *downRun) waitSnapshots(ctx context.Context) error {
	if !r.cfg.WaitSnapshot {
		return nil
	}
	if r.spot {
		r.log.Info("not waiting for the snapshots to complete: Spot interruption (they complete on their own)", logkey.Step, "snapshot")
		return nil
	}
	for _, s := range r.slots {
		if s.Snapshot.ID == "" {
			continue
		}
		err := cloud.WaitSnapshotCompleted(ctx, r.log, r.in.clients.EC2, s.Snapshot.ID, r.cfg.SnapshotTimeout)
		var ended *cloud.SnapshotEndedError
		if errors.As(err, &ended) {
			return fmt.Errorf("%w: take a new one with `handover snapshot`, or rerun down", err)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// completeHook lets the group go on: CONTINUE, after reading the group membership again when the first
// read failed.
func (r *downRun) completeHook(ctx context.Context) error {
	if r.memberErr != nil {
		m, err := cloud.MembershipOf(ctx, r.in.clients.AutoScaling, r.in.id.InstanceID)
		if err != nil {
			return err
		}
		r.member, r.memberErr = m, nil
		r.action = r.termination()
	}
	r.endHeartbeats()
	switch {
	case r.action != nil:
		inactive, err := r.action.Complete(ctx, cloud.HookContinue)
		if err != nil {
			return err
		}
		r.rep.Hook = fmt.Sprintf("completed %s in %s with CONTINUE", r.cfg.TerminateHook, r.member.ASGName)
		if inactive != "" {
			r.rep.Hook = fmt.Sprintf("hook %s in %s: %s", r.cfg.TerminateHook, r.member.ASGName, inactive)
		}
	case r.hookActive():
		r.rep.Hook = "Terminating:Wait, but no --terminate-hook to complete"
	case r.member.ASGName != "":
		r.rep.Hook = fmt.Sprintf("%s in %s: no termination hook waiting", orDash(r.member.LifecycleState), r.member.ASGName)
	}
	return nil
}

// giveUp ends down after step failed with err. A step that ran into the work bound (not a signal) is
// given up on: down takes a crash-consistent snapshot when that is safe (givingUp), completes the hook
// with CONTINUE (with a bound of its own: the group should not wait for the heartbeat timeout too), and
// fails with one line naming the step. Any other failure is returned as it is.
func (r *downRun) giveUp(b runBounds, step string, err error) (downReport, error) {
	step, outcomes, over := r.in.givingUp(b, r.log, step, err, r.slots, r.describe)
	if !over {
		return r.rep, err
	}
	if r.cfg.TerminateHook != "" && (r.action != nil || r.memberErr != nil) {
		r.log.Warn("completing the termination hook with CONTINUE anyway: the termination goes ahead", logkey.Step, "lifecycle", logkey.Hook, r.cfg.TerminateHook)
	}
	hctx, hcancel := context.WithTimeout(context.WithoutCancel(b.parent), hookCompleteBound)
	defer hcancel()
	switch herr := r.completeHook(hctx); {
	case herr != nil:
		r.log.Error("could not complete the termination hook; its heartbeat timeout ends it with its default result", logkey.Step, "lifecycle", logkey.Error, herr.Error())
		outcomes = append(outcomes, "could not complete the termination hook ("+herr.Error()+"): its heartbeat timeout ends it")
	case r.action != nil:
		outcomes = append(outcomes, r.rep.Hook+": the termination goes ahead")
	case r.rep.Hook != "":
		outcomes = append(outcomes, r.rep.Hook)
	}
	r.rep.Elapsed = time.Since(r.start)
	return r.rep, pastBound(overrun{Command: "down", Within: r.within, Step: step, Cause: err, Bound: b.work.Err()}, outcomes,
		"the replacement restores the newest snapshot; look for a hung device (dmesg) on this instance")
}

// findSlotVolumes finds, for each slot, the group's volume attached to this instance, its block device
// and where that is mounted. down and snapshot share it.
func (in *thisInstance) findSlotVolumes(ctx context.Context, log *slog.Logger, specs volumeSpecs) ([]*slotRelease, error) {
	var out []*slotRelease
	for _, spec := range specs {
		s := &slotRelease{Spec: spec}
		out = append(out, s)
		v, err := cloud.FindAttachedSlotVolume(ctx, in.clients.EC2, in.group, spec.Slot, in.id.InstanceID)
		if err != nil {
			return nil, err
		}
		if v == nil {
			s.Note = "no volume of this slot is attached to this instance (already detached, or never attached)"
			log.Info("no volume of the slot attached", logkey.Step, "volumes", logkey.Slot, spec.Slot)
			continue
		}
		s.Volume = *v
		if a, ok := v.AttachmentTo(in.id.InstanceID); ok {
			s.AttachTime, s.AttachSt = a.AttachTime, a.State
		}
		vlog := s.slotLog(log)
		if s.AttachSt == cloud.AttachmentDetaching || s.AttachSt == cloud.AttachmentDetached {
			s.Note = "already " + s.AttachSt
			vlog.Info("volume already being detached: handed over by an earlier run", logkey.Step, "volumes")
			continue
		}
		s.Device, s.Mounts = in.findDevice(vlog, s.Volume.ID)
	}
	return out, nil
}

// findDevice finds the volume's block device and where it is mounted; "" when it is not visible, or not
// usable, or its mounts cannot be read (then handover touches no filesystem of it).
func (in *thisInstance) findDevice(vlog *slog.Logger, volumeID string) (string, []host.Mount) {
	dev, seen, err := in.host.FindVolumeDevice(volumeID)
	switch {
	case err != nil:
		vlog.Warn("block device not usable; treating it as not visible", logkey.Step, "volumes", logkey.Error, err.Error())
	case dev == "":
		vlog.Warn("block device not visible", logkey.Step, "volumes", "seen", seen)
	}
	if dev == "" {
		return "", nil
	}
	mounts, err := in.host.MountsOf(dev)
	if err != nil {
		vlog.Warn("cannot tell where the device is mounted; treating it as not visible", logkey.Step, "volumes", logkey.Device, dev, logkey.Error, err.Error())
		return "", nil
	}
	return dev, mounts
}

// plan is --dry-run: observe, and say what down would do.
func (r *downRun) plan(ctx context.Context) (downReport, error) {
	slots, err := r.findSlots(ctx)
	if err != nil {
		return r.rep, err
	}
	r.rep.Slots, r.rep.Plan = slots, r.planSteps(slots)
	return r.rep, nil
}

// planSteps lists down's steps as they would run, for --dry-run.
func (r *downRun) planSteps(slots []*slotRelease) []string {
	cfg, member := r.cfg, r.member
	var plan []string
	if r.occ.Kind == "spot" {
		plan = append(plan, fmt.Sprintf("Spot interruption at %s: everything below within %s", r.occ.Deadline.UTC().Format(time.RFC3339), min(cfg.SpotBudget, cfg.Timeout)))
	} else {
		plan = append(plan, fmt.Sprintf("everything below within --timeout %s (past it: a crash-consistent snapshot if the volumes are known, the hook completed with CONTINUE, exit 1)", cfg.Timeout))
	}
	if r.hookActive() && cfg.TerminateHook != "" {
		plan = append(plan, fmt.Sprintf("heartbeat lifecycle hook %s of %s every %s while working", cfg.TerminateHook, member.ASGName, cfg.HeartbeatInterval))
	}
	plan = append(plan, "lock "+cfg.LockFile)
	if cfg.PreStop != "" {
		how := "without a shell"
		if cfg.PreStopShell {
			how = "with /bin/sh -c"
		}
		plan = append(plan, fmt.Sprintf("run the pre-stop command %q %s, at most %s", cfg.PreStop, how, cfg.PreStopTimeout))
	}
	plan = append(plan, "sync")
	for _, s := range slots {
		plan = append(plan, r.planSlot(s)...)
	}
	if cfg.ReleaseEIP {
		plan = append(plan, "disassociate the group's Elastic IP from this instance")
	} else {
		plan = append(plan, "keep the Elastic IP associated (the replacement takes it over)")
	}
	if cfg.WaitSnapshot {
		plan = append(plan, fmt.Sprintf("wait for the snapshots to complete, at most %s", cfg.SnapshotTimeout))
	}
	switch {
	case r.hookActive() && cfg.TerminateHook != "":
		plan = append(plan, fmt.Sprintf("complete lifecycle hook %s of %s with CONTINUE", cfg.TerminateHook, member.ASGName))
	case r.hookActive():
		plan = append(plan, "the instance is in Terminating:Wait but --terminate-hook is not set: no hook to complete")
	}
	return plan
}

// planSlot says what down would do with one slot's volume, for --dry-run.
func (r *downRun) planSlot(s *slotRelease) []string {
	if s.released() {
		return []string{fmt.Sprintf("slot %s: %s", s.Spec.Slot, s.Note)}
	}
	var plan []string
	if s.Existing != nil {
		plan = append(plan, fmt.Sprintf("slot %s: %s already has snapshot %s from this down (%s): not taken again unless the new one would be consistent and it is not",
			s.Spec.Slot, s.Volume.ID, s.Existing.ID, s.Existing.State))
	}
	mps := mountPointsOf(s.Mounts)
	step := fmt.Sprintf("slot %s: %s (generation %d)", s.Spec.Slot, s.Volume.ID, s.Volume.Generation)
	switch {
	case len(mps) == 0:
		step += ": not mounted; snapshot it, then detach it"
	case r.cfg.Release == releaseUnmount:
		step += fmt.Sprintf(": unmount %s, snapshot it, detach it", strings.Join(mps, ", "))
	default:
		step += fmt.Sprintf(": freeze %s for the CreateSnapshot call (at most %s), thaw; it stays attached", mps[0], r.cfg.FreezeTimeout)
	}
	return append(plan, step+fmt.Sprintf("; tags %s=%s %s=%s %s=%d %s=%s %s=%s", cloud.TagGroup, r.in.group, cloud.TagSlot, s.Spec.Slot,
		cloud.TagGeneration, s.Volume.Generation, cloud.TagSourceVolume, s.Volume.ID, cloud.TagSourceInstance, r.in.id.InstanceID))
}
