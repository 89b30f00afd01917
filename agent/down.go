package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

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

func runDown(ctx context.Context, e Env, args []string) error {
	return downCommand(ctx, e, args, host.FSCalls{})
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
		log.Warn("could not read the Spot interruption notice", logkey.Step, "down", "error", err.Error())
	} else if a != nil {
		return spotOccasion(a)
	}
	if st, ok, err := md.TargetLifecycleState(ctx); err != nil {
		log.Warn("could not read the Auto Scaling target lifecycle state", logkey.Step, "down", "error", err.Error())
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

// slotRelease is one slot's volume on this instance, as down found and left it.
type slotRelease struct {
	Spec       volumeSpec
	Volume     cloud.Volume
	AttachTime time.Time
	AttachSt   string       // attaching, attached, detaching
	Device     string       // block device on this instance; "" when not visible
	Mounts     []host.Mount // where Device is mounted, before down

	Existing *cloud.Snapshot // a snapshot this down took already (rerun)

	Still      string // how the data was kept still: "unmounted", "frozen", "not mounted", "" (not at all)
	Snapshot   cloud.Snapshot
	Reused     bool
	Consistent bool
	Detached   bool
	Note       string
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

// down runs the hand-over. A pre-stop failure does not stop it (the snapshot is still taken, without the
// consistent tag): it is reported in the report, and the caller decides the exit code.
//
// Every step is bounded by --timeout (or, for a Spot interruption, by the budget if that is shorter). The
// steps up to the snapshot must end finalReserve before the bound; one that does not (a lock held by a hung
// run, a pre-stop command, sync, unmount or FIFREEZE on a hung device) is given up on, and down still
// takes a crash-consistent snapshot when that is safe, completes the termination hook with CONTINUE (the
// termination goes ahead anyway) and fails with one line naming the step (pastBound).
func (in *thisInstance) down(ctx context.Context, log *slog.Logger, cfg downConfig, occ occasion, dryRun bool) (downReport, error) {
	start := time.Now()
	self := in.id.InstanceID
	log = log.With(logkey.Instance, self, logkey.AZ, in.id.AvailabilityZone)
	rep := downReport{Instance: self, Occasion: occ, DryRun: dryRun}

	// A Spot interruption leaves about two minutes: everything down does must fit before it, and the
	// snapshot comes before anything optional.
	spot := false
	if occ.Deadline.IsZero() {
		if a, err := in.md.SpotInstanceAction(ctx); err == nil && a != nil {
			occ.Deadline = a.Time
		}
	}
	bound, within := cfg.Timeout, "--timeout "+cfg.Timeout.String()
	if !occ.Deadline.IsZero() {
		spot = true
		budget := min(cfg.SpotBudget, time.Until(occ.Deadline))
		if budget <= 0 {
			// The interruption time has passed and the instance still runs: EC2 is late, not gone. Try
			// within the configured budget.
			budget = cfg.SpotBudget
		}
		if budget < bound {
			bound, within = budget, "the Spot budget "+budget.Round(time.Second).String()
		}
		log.Info("Spot interruption scheduled: working inside the budget", logkey.Step, "down", "budget", budget.Round(time.Second).String(), "interruption", occ.Deadline.UTC().Format(time.RFC3339))
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(parent, bound)
	defer cancel()
	// work bounds the steps up to the snapshot; the rest of the bound is kept for pastBound.
	work, cancelWork := context.WithTimeout(ctx, bound-finalReserve(bound))
	defer cancelWork()
	log.Info("down starting", logkey.Step, "down", "occasion", occ.Kind, "group", in.group, "timeout", bound.String())

	// Observe: the instance's place in its Auto Scaling group, then (under the lock, so that no `up`
	// changes them meanwhile) each slot's volume, its mounts and any snapshot this down took already.
	member, memberErr := cloud.MembershipOf(work, in.clients.AutoScaling, self)
	if memberErr != nil {
		log.Warn("could not read the Auto Scaling state; going on, and trying again before completing the hook", logkey.Step, "lifecycle", "error", memberErr.Error())
	}
	observe := func(ctx context.Context) ([]*slotRelease, error) {
		slots, err := in.findSlotVolumes(ctx, log, cfg.Volumes)
		if err != nil {
			return nil, err
		}
		for _, s := range slots {
			if s.Volume.ID == "" || s.Note != "" {
				continue
			}
			if s.Existing, err = findDownSnapshot(ctx, in.clients.EC2, in.group, s.Spec.Slot, s.Volume.ID, self, s.description(occ, self)); err != nil {
				return nil, err
			}
		}
		return slots, nil
	}
	if dryRun {
		slots, err := observe(ctx)
		if err != nil {
			return rep, err
		}
		rep.Slots, rep.Plan = slots, in.downPlan(cfg, occ, member, slots)
		return rep, nil
	}

	// Keep the termination hook alive from the first moment: waiting for the lock, a slow pre-stop
	// command or a throttled API must not let the hook time out.
	hookActive := member.LifecycleState == "Terminating:Wait"
	var action *cloud.LifecycleAction
	stopHeartbeat := func() {}
	if hookActive {
		if cfg.TerminateHook == "" {
			log.Warn("instance is in Terminating:Wait but --terminate-hook is not set: the group waits for the hook's heartbeat timeout", logkey.Step, "lifecycle", "asg", member.ASGName)
		} else {
			action = &cloud.LifecycleAction{As: in.clients.AutoScaling, Log: log, Kind: cloud.TerminateHookKind, AsgName: member.ASGName, Hook: cfg.TerminateHook, InstanceID: self}
			stopHeartbeat = action.KeepAlive(ctx, cfg.HeartbeatInterval)
			log.Info("sending lifecycle heartbeats while working", logkey.Step, "lifecycle", "asg", member.ASGName, "hook", cfg.TerminateHook, "every", cfg.HeartbeatInterval.String())
		}
	}
	defer stopHeartbeat()

	// completeHook lets the group go on: CONTINUE, after reading the group membership again when the
	// first read failed.
	completeHook := func(ctx context.Context) error {
		if memberErr != nil {
			m, err := cloud.MembershipOf(ctx, in.clients.AutoScaling, self)
			if err != nil {
				return err
			}
			member, memberErr = m, nil
			hookActive = member.LifecycleState == "Terminating:Wait"
			if hookActive && cfg.TerminateHook != "" {
				action = &cloud.LifecycleAction{As: in.clients.AutoScaling, Log: log, Kind: cloud.TerminateHookKind, AsgName: member.ASGName, Hook: cfg.TerminateHook, InstanceID: self}
			}
		}
		stopHeartbeat()
		switch {
		case action != nil:
			inactive, err := action.Complete(ctx, cloud.HookContinue)
			if err != nil {
				return err
			}
			rep.Hook = fmt.Sprintf("completed %s in %s with CONTINUE", cfg.TerminateHook, member.ASGName)
			if inactive != "" {
				rep.Hook = fmt.Sprintf("hook %s in %s: %s", cfg.TerminateHook, member.ASGName, inactive)
			}
		case hookActive:
			rep.Hook = "Terminating:Wait, but no --terminate-hook to complete"
		case member.ASGName != "":
			rep.Hook = fmt.Sprintf("%s in %s: no termination hook waiting", orDash(member.LifecycleState), member.ASGName)
		}
		return nil
	}

	var slots []*slotRelease
	describe := func(s *slotRelease) string { return s.description(occ, self) }
	// failed ends down after a failing step. A step that ran into the work bound (not a signal) is given
	// up on: down then takes a crash-consistent snapshot when that is safe, which it is once down holds
	// the lock and knows the volumes, and the failure is not in CreateSnapshot itself; it completes the
	// hook with CONTINUE (with a bound of its own: the group should not wait for the heartbeat timeout
	// too), and fails with one line naming the step.
	failed := func(step string, err error) (downReport, error) {
		if work.Err() == nil || parent.Err() != nil {
			return rep, err
		}
		var unfinished *host.UnfinishedError
		if errors.As(err, &unfinished) {
			step = unfinished.Step
		}
		log.Error("step did not finish within the bound; giving up on it", logkey.Step, step, "bound", within, "error", err.Error())
		var outcomes []string
		if slots != nil && (step == "pre-stop" || step == "sync" || step == "unmount" || step == "freeze") {
			if serr := in.snapshotCrashConsistent(ctx, log, slots, describe); serr != nil {
				outcomes = append(outcomes, "crash-consistent snapshot failed: "+serr.Error())
			}
		}
		outcomes = append(outcomes, snapshotsSummary(slots))
		if cfg.TerminateHook != "" && (action != nil || memberErr != nil) {
			log.Warn("completing the termination hook with CONTINUE anyway: the termination goes ahead", logkey.Step, "lifecycle", "hook", cfg.TerminateHook)
		}
		hctx, hcancel := context.WithTimeout(context.WithoutCancel(parent), hookCompleteBound)
		defer hcancel()
		switch herr := completeHook(hctx); {
		case herr != nil:
			log.Error("could not complete the termination hook; its heartbeat timeout ends it with its default result", logkey.Step, "lifecycle", "error", herr.Error())
			outcomes = append(outcomes, "could not complete the termination hook ("+herr.Error()+"): its heartbeat timeout ends it")
		case action != nil:
			outcomes = append(outcomes, rep.Hook+": the termination goes ahead")
		case rep.Hook != "":
			outcomes = append(outcomes, rep.Hook)
		}
		rep.Elapsed = time.Since(start)
		return rep, pastBound(overrun{Command: "down", Within: within, Step: step, Cause: err}, outcomes,
			"the replacement restores the newest snapshot; look for a hung device (dmesg) on this instance")
	}

	lock, err := in.host.Lock(work, cfg.LockFile, bound)
	if err != nil {
		return failed("lock", err)
	}
	defer lock.Unlock()
	if slots, err = observe(work); err != nil {
		return failed("observe", err)
	}
	rep.Slots = slots

	// Stop the writer, then flush.
	if cfg.PreStop != "" {
		ptimeout := cfg.PreStopTimeout
		if dl, ok := work.Deadline(); ok && spot {
			ptimeout = min(ptimeout, time.Until(dl)/2) // leave the other half for the snapshot
		}
		rep.PreStopErr = in.host.RunPreStop(work, log, host.PreStop{Command: cfg.PreStop, Shell: cfg.PreStopShell, Timeout: ptimeout})
		if rep.PreStopErr != nil && work.Err() != nil {
			return failed("pre-stop", rep.PreStopErr)
		}
	}
	if err := in.host.Sync(work, log); err != nil {
		return failed("sync", err)
	}

	st := stillness{Release: cfg.Release, FreezeTimeout: cfg.FreezeTimeout, PreStop: cfg.PreStop != "", PreStopErr: rep.PreStopErr, Rerun: "down"}
	if err := in.snapshotStill(work, log, slots, st, describe); err != nil {
		return failed("snapshot", err)
	}

	// Optional from here on: the data is in the snapshots.
	in.detachReleased(work, log, slots)
	if cfg.ReleaseEIP {
		rep.Address, err = releaseGroupAddress(work, log, in.clients.EC2, in.group, self)
		if err != nil {
			return failed("release-eip", err)
		}
	}
	if cfg.WaitSnapshot {
		if spot {
			log.Info("not waiting for the snapshots to complete: Spot interruption (they complete on their own)", logkey.Step, "snapshot")
		} else if err := waitSnapshotsDone(work, log, in.clients.EC2, slots, cfg.SnapshotTimeout); err != nil {
			return failed("wait-snapshot", err)
		}
	}

	// Let the group go on.
	if err := completeHook(ctx); err != nil {
		return failed("lifecycle", err)
	}
	rep.Elapsed = time.Since(start)
	log.Info("down done", logkey.Step, "down", logkey.Elapsed, rep.Elapsed.Round(time.Millisecond).String())
	return rep, nil
}

// overrun is a step of down or snapshot that ran past the command's bound.
type overrun struct {
	Command string // "down", "snapshot"
	Within  string // the bound as the operator set it: "--timeout 10m0s"
	Step    string // the step given up on: "lock", "pre-stop", "sync", "unmount", "freeze", "snapshot", ...
	Cause   error
}

// pastBound is the one line a command fails with (exit 1) when a step ran past its bound: the bound, the
// step and why, what the command still did (outcomes), and what to do.
func pastBound(o overrun, outcomes []string, advice string) error {
	why := o.Cause.Error()
	var unfinished *host.UnfinishedError
	if errors.As(o.Cause, &unfinished) {
		why = unfinished.What + " did not return"
	}
	if o.Step == "lock" {
		why = "another handover up, down or snapshot held the lock"
	}
	parts := []string{fmt.Sprintf("%s did not finish within %s: step %q timed out (%s)", o.Command, o.Within, o.Step, why)}
	for _, s := range outcomes {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return &fail.Error{Code: fail.CodeFailed, Msg: strings.Join(append(parts, advice), "; ")}
}

// snapshotCrashConsistent is what down and snapshot still do after a step before the snapshot (pre-stop,
// sync, unmount, freeze) ran past their bound: snapshot each slot's volume that has no snapshot yet,
// without keeping it still, and not tagged consistent (the writes the hung step was flushing may not be
// on the volume). A snapshot an earlier run of the same down took is kept instead.
func (in *thisInstance) snapshotCrashConsistent(ctx context.Context, log *slog.Logger, slots []*slotRelease, describe func(*slotRelease) string) error {
	var errs []error
	for _, s := range slots {
		if s.Volume.ID == "" || s.Note != "" || s.Snapshot.ID != "" {
			continue
		}
		vlog := log.With(logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, "slot", s.Spec.Slot)
		if s.Existing != nil {
			s.Snapshot, s.Reused, s.Consistent = *s.Existing, true, s.Existing.Consistent
			vlog.Info("snapshot already taken by this down", "snapshot_id", s.Snapshot.ID, "state", s.Snapshot.State)
			continue
		}
		s.Consistent = false
		snap, err := createSlotSnapshot(ctx, in.clients.EC2, snapshotRequest{
			Group: in.group, Slot: s.Spec.Slot, Volume: s.Volume, InstanceID: in.id.InstanceID, Description: describe(s),
		})
		if err != nil {
			vlog.Error("crash-consistent snapshot failed", "error", err.Error())
			errs = append(errs, err)
			continue
		}
		s.Snapshot = snap
		vlog.Warn("crash-consistent snapshot created past the bound (not tagged consistent)", "snapshot_id", snap.ID)
	}
	return errors.Join(errs...)
}

// snapshotsSummary says which snapshots a run has, for the line it fails with.
func snapshotsSummary(slots []*slotRelease) string {
	var have []string
	for _, s := range slots {
		if s.Snapshot.ID == "" {
			continue
		}
		how := "consistent"
		switch {
		case s.Reused:
			how = "from an earlier run"
		case !s.Consistent:
			how = "crash-consistent, not tagged consistent"
		}
		have = append(have, fmt.Sprintf("snapshot %s of %s (%s)", s.Snapshot.ID, s.Volume.ID, how))
	}
	if len(have) == 0 {
		return "no snapshot taken"
	}
	return "took " + strings.Join(have, ", ")
}

// findSlotVolumes finds, for each slot, the group's volume attached to this instance, its block device
// and where that is mounted.
func (in *thisInstance) findSlotVolumes(ctx context.Context, log *slog.Logger, specs volumeSpecs) ([]*slotRelease, error) {
	self := in.id.InstanceID
	var out []*slotRelease
	for _, spec := range specs {
		s := &slotRelease{Spec: spec}
		out = append(out, s)
		filters := append(cloud.SlotFilters(in.group, spec.Slot), ec2types.Filter{Name: aws.String("attachment.instance-id"), Values: []string{self}})
		res, err := in.clients.EC2.DescribeVolumes(ctx, &ec2.DescribeVolumesInput{Filters: filters})
		if err != nil {
			return nil, fmt.Errorf("describe volumes of %s/%s attached to %s: %w", in.group, spec.Slot, self, err)
		}
		switch len(res.Volumes) {
		case 0:
			s.Note = "no volume of this slot is attached to this instance (already detached, or never attached)"
			log.Info("no volume of the slot attached", logkey.Step, "volumes", "slot", spec.Slot)
			continue
		case 1:
		default:
			var ids []string
			for _, v := range res.Volumes {
				ids = append(ids, aws.ToString(v.VolumeId))
			}
			return nil, fail.Precondition(fmt.Sprintf("%d volumes tagged %s=%s, %s=%s are attached to %s (%s): detach all but the live one",
				len(ids), cloud.TagGroup, in.group, cloud.TagSlot, spec.Slot, self, strings.Join(ids, ", ")), nil)
		}
		v := res.Volumes[0]
		s.Volume = cloud.ToSlotVolume(v)
		for _, a := range v.Attachments {
			if aws.ToString(a.InstanceId) == self {
				s.AttachTime, s.AttachSt = aws.ToTime(a.AttachTime), string(a.State)
			}
		}
		vlog := log.With(logkey.Volume, s.Volume.ID, "slot", spec.Slot)
		if s.AttachSt == string(ec2types.VolumeAttachmentStateDetaching) || s.AttachSt == string(ec2types.VolumeAttachmentStateDetached) {
			s.Note = "already " + s.AttachSt
			vlog.Info("volume already being detached: handed over by an earlier run", logkey.Step, "volumes")
			continue
		}
		dev, seen, err := in.host.FindVolumeDevice(s.Volume.ID)
		switch {
		case err != nil:
			vlog.Warn("block device not usable; treating it as not visible", logkey.Step, "volumes", "error", err.Error())
		case dev == "":
			vlog.Warn("block device not visible", logkey.Step, "volumes", "seen", seen)
		}
		if dev == "" {
			continue
		}
		if mounts, err := in.host.MountsOf(dev); err != nil {
			vlog.Warn("cannot tell where the device is mounted; treating it as not visible", logkey.Step, "volumes", "device", dev, "error", err.Error())
		} else {
			s.Device, s.Mounts = dev, mounts
		}
	}
	return out, nil
}

// findDownSnapshot returns the newest snapshot (not in error) with down's description for this volume and
// occasion, or nil.
func findDownSnapshot(ctx context.Context, c cloud.EC2, group, slot, volumeID, instanceID, description string) (*cloud.Snapshot, error) {
	filters := append(cloud.SlotFilters(group, slot),
		ec2types.Filter{Name: aws.String("tag:" + cloud.TagSourceVolume), Values: []string{volumeID}},
		ec2types.Filter{Name: aws.String("tag:" + cloud.TagSourceInstance), Values: []string{instanceID}},
		ec2types.Filter{Name: aws.String("description"), Values: []string{description}},
	)
	res, err := c.DescribeSnapshots(ctx, &ec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: filters})
	if err != nil {
		return nil, fmt.Errorf("look for a snapshot of %s taken by an earlier down: %w", volumeID, err)
	}
	var best *cloud.Snapshot
	for _, sn := range res.Snapshots {
		s := cloud.ToSlotSnapshot(sn)
		if s.State == string(ec2types.SnapshotStateError) {
			continue
		}
		if best == nil || s.StartTime.After(best.StartTime) {
			best = &s
		}
	}
	return best, nil
}

// downPlan says what down would do, for --dry-run.
func (in *thisInstance) downPlan(cfg downConfig, occ occasion, member cloud.Membership, slots []*slotRelease) []string {
	var plan []string
	if occ.Kind == "spot" {
		plan = append(plan, fmt.Sprintf("Spot interruption at %s: everything below within %s", occ.Deadline.UTC().Format(time.RFC3339), min(cfg.SpotBudget, cfg.Timeout)))
	} else {
		plan = append(plan, fmt.Sprintf("everything below within --timeout %s (past it: a crash-consistent snapshot if the volumes are known, the hook completed with CONTINUE, exit 1)", cfg.Timeout))
	}
	if member.LifecycleState == "Terminating:Wait" && cfg.TerminateHook != "" {
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
		switch {
		case s.Volume.ID == "" || s.Note != "":
			plan = append(plan, fmt.Sprintf("slot %s: %s", s.Spec.Slot, s.Note))
			continue
		case s.Existing != nil:
			plan = append(plan, fmt.Sprintf("slot %s: %s already has snapshot %s from this down (%s): not taken again unless the new one would be consistent and it is not",
				s.Spec.Slot, s.Volume.ID, s.Existing.ID, s.Existing.State))
		}
		mps := mountPointsOf(s)
		step := fmt.Sprintf("slot %s: %s (generation %d)", s.Spec.Slot, s.Volume.ID, s.Volume.Generation)
		switch {
		case len(mps) == 0:
			step += ": not mounted; snapshot it, then detach it"
		case cfg.Release == releaseUnmount:
			step += fmt.Sprintf(": unmount %s, snapshot it, detach it", strings.Join(mps, ", "))
		default:
			step += fmt.Sprintf(": freeze %s for the CreateSnapshot call (at most %s), thaw; it stays attached", mps[0], cfg.FreezeTimeout)
		}
		plan = append(plan, step+fmt.Sprintf("; tags %s=%s %s=%s %s=%d %s=%s %s=%s", cloud.TagGroup, in.group, cloud.TagSlot, s.Spec.Slot,
			cloud.TagGeneration, s.Volume.Generation, cloud.TagSourceVolume, s.Volume.ID, cloud.TagSourceInstance, in.id.InstanceID))
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
	case member.LifecycleState == "Terminating:Wait" && cfg.TerminateHook != "":
		plan = append(plan, fmt.Sprintf("complete lifecycle hook %s of %s with CONTINUE", cfg.TerminateHook, member.ASGName))
	case member.LifecycleState == "Terminating:Wait":
		plan = append(plan, "the instance is in Terminating:Wait but --terminate-hook is not set: no hook to complete")
	}
	return plan
}

// mountPointsOf lists where the slot's volume is mounted on this instance, by its device.
func mountPointsOf(s *slotRelease) []string {
	var mps []string
	for _, m := range s.Mounts {
		mps = append(mps, m.MountPoint)
	}
	return mps
}

// stillness is how a run keeps the data still for its snapshots.
type stillness struct {
	Release       string // releaseUnmount or releaseFreeze
	FreezeTimeout time.Duration
	PreStop       bool   // a pre-stop command was configured
	PreStopErr    error  // and how it ended
	Rerun         string // what to tell the operator to rerun when a snapshot fails ("down", "snapshot")
}

// snapshotStill keeps each slot's volume still and snapshots it: unmount (falling back to a freeze when
// something still holds the filesystem) or freeze, then CreateSnapshot, thawing right after. A slot with an
// Existing snapshot (down's rerun) keeps it unless the new one would be consistent and it is not.
// describe gives each snapshot's description. down and snapshot share it.
func (in *thisInstance) snapshotStill(ctx context.Context, log *slog.Logger, slots []*slotRelease, st stillness, describe func(*slotRelease) string) error {
	preStopOK := st.PreStop && st.PreStopErr == nil
	preStopFailed := st.PreStop && st.PreStopErr != nil
	var toFreeze []string
	freezeOf := map[*slotRelease]string{}
	var work []*slotRelease
	for _, s := range slots {
		if s.Volume.ID == "" || s.Note != "" {
			continue
		}
		vlog := log.With(logkey.Volume, s.Volume.ID, "slot", s.Spec.Slot)
		if s.Device != "" {
			// Read the mounts again: the pre-stop command may have unmounted the filesystem itself.
			mounts, err := in.host.MountsOf(s.Device)
			if err != nil {
				return err
			}
			s.Mounts = mounts
		}
		mps := mountPointsOf(s)
		switch {
		case s.Device == "":
			// Without its device handover cannot tell where the volume is mounted, so it touches no
			// filesystem: the snapshot is crash-consistent only (unless the service was stopped).
			vlog.Warn("block device not visible: snapshot without unmount or freeze", logkey.Step, "release")
		case len(mps) == 0:
			s.Still = "not mounted"
		case st.Release == releaseUnmount:
			var unfinished *host.UnfinishedError
			if err := in.host.Unmount(ctx, vlog, s.Mounts); errors.As(err, &unfinished) {
				return err
			} else if err != nil {
				vlog.Warn("could not unmount; freezing for the snapshot instead, and leaving the volume attached", logkey.Step, "release", "error", err.Error())
				freezeOf[s] = mps[0]
			} else {
				s.Still = "unmounted"
			}
		default:
			freezeOf[s] = mps[0]
		}
		// Would a new snapshot be consistent? If one from this down exists and is no worse, keep it.
		wouldBe := !preStopFailed && (preStopOK || s.Still != "" || freezeOf[s] != "")
		if s.Existing != nil && (s.Existing.Consistent || !wouldBe) {
			s.Snapshot, s.Reused, s.Consistent = *s.Existing, true, s.Existing.Consistent
			delete(freezeOf, s)
			vlog.Info("snapshot already taken by this down", logkey.Step, "snapshot", "snapshot_id", s.Snapshot.ID, "state", s.Snapshot.State)
			continue
		}
		if mp := freezeOf[s]; mp != "" {
			toFreeze = append(toFreeze, mp)
		}
		work = append(work, s)
	}
	if len(work) == 0 {
		return nil
	}
	return in.host.WhileFrozen(ctx, log, toFreeze, st.FreezeTimeout, func(ctx context.Context, frozen map[string]bool) error {
		for _, s := range work {
			if mp := freezeOf[s]; mp != "" && frozen[mp] {
				s.Still = "frozen"
			}
			s.Consistent = !preStopFailed && (preStopOK || s.Still != "")
			snap, err := createSlotSnapshot(ctx, in.clients.EC2, snapshotRequest{
				Group: in.group, Slot: s.Spec.Slot, Volume: s.Volume, InstanceID: in.id.InstanceID,
				Consistent: s.Consistent, Description: describe(s),
			})
			if err != nil {
				bound := ""
				if errors.Is(err, context.DeadlineExceeded) && len(toFreeze) > 0 {
					bound = fmt.Sprintf(" within --freeze-timeout %s", st.FreezeTimeout)
				}
				return fmt.Errorf("snapshot of %s (slot %s) failed%s; the filesystem is thawed and the volume stays attached; rerun %s: %w",
					s.Volume.ID, s.Spec.Slot, bound, st.Rerun, err)
			}
			s.Snapshot = snap
			log.Info("snapshot created", logkey.Step, "snapshot", logkey.Volume, s.Volume.ID, "slot", s.Spec.Slot, "snapshot_id", snap.ID,
				"consistent", s.Consistent, "still", orDash(s.Still))
		}
		return nil
	})
}

// detachReleased detaches each volume that is snapshotted and no longer mounted, so that a replacement in
// the same AZ attaches it directly. It does not wait for the detach to finish: the replacement's `up`
// waits for the volume to be available, and the instance's termination detaches it anyway. Failures are
// logged, not fatal: the data is already in the snapshot.
func (in *thisInstance) detachReleased(ctx context.Context, log *slog.Logger, slots []*slotRelease) {
	for _, s := range slots {
		if s.Snapshot.ID == "" {
			continue
		}
		vlog := log.With(logkey.Volume, s.Volume.ID, "slot", s.Spec.Slot, logkey.Step, "detach")
		if !s.unmountedNow(in.host) {
			vlog.Info("volume still mounted (or its device is not visible): left attached")
			continue
		}
		_, err := in.clients.EC2.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(s.Volume.ID), InstanceId: aws.String(in.id.InstanceID)})
		switch {
		case err == nil:
			s.Detached = true
			vlog.Info("detaching")
		case cloud.HasCode(err, cloud.CodeIncorrectState, cloud.CodeAttachmentNotFound):
			s.Detached = true
			vlog.Info("already detached")
		default:
			vlog.Warn("detach failed; the volume detaches when the instance terminates", "error", err.Error())
		}
	}
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

// releaseGroupAddress disassociates the group's Elastic IP when this instance holds it (observe, act,
// verify). An address held elsewhere is left alone.
func releaseGroupAddress(ctx context.Context, log *slog.Logger, c cloud.EC2, group, self string) (string, error) {
	log = log.With(logkey.Step, "address")
	a, err := cloud.FindGroupAddress(ctx, c, group)
	if err != nil {
		return "", err
	}
	log = log.With(logkey.Allocation, a.AllocationID)
	if a.InstanceID != self {
		log.Info("Elastic IP not on this instance: nothing to release", "holder", orDash(a.InstanceID))
		return fmt.Sprintf("%s (%s) not on this instance (holder %s)", a.AllocationID, a.PublicIP, orDash(a.InstanceID)), nil
	}
	_, err = c.DisassociateAddress(ctx, &ec2.DisassociateAddressInput{AssociationId: aws.String(a.AssociationID)})
	if err != nil && !cloud.HasCode(err, cloud.CodeAssociationNotFound) {
		return "", fmt.Errorf("disassociate %s from %s: %w", a.AllocationID, self, err)
	}
	after, err := cloud.FindGroupAddress(ctx, c, group)
	if err != nil {
		return "", err
	}
	if after.InstanceID == self {
		return "", fmt.Errorf("disassociated %s but it is still on %s; rerun down", a.AllocationID, self)
	}
	log.Info("Elastic IP released", "public_ip", a.PublicIP)
	return fmt.Sprintf("released %s (%s)", a.AllocationID, a.PublicIP), nil
}

// waitSnapshotsDone waits until every snapshot down took or found is completed.
func waitSnapshotsDone(ctx context.Context, log *slog.Logger, c cloud.EC2, slots []*slotRelease, bound time.Duration) error {
	for _, s := range slots {
		if s.Snapshot.ID == "" {
			continue
		}
		if err := waitSnapshotCompleted(ctx, log, c, s.Snapshot.ID, bound); err != nil {
			return err
		}
	}
	return nil
}

// waitSnapshotCompleted waits, at most bound, until a snapshot is no longer pending (restore.go's wait),
// and fails when it ended in error.
func waitSnapshotCompleted(ctx context.Context, log *slog.Logger, c cloud.EC2, id string, bound time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	if err := cloud.WaitSnapshot(wctx, log.With(logkey.Step, "snapshot"), c, id); err != nil {
		return err
	}
	s, err := cloud.DescribeSnapshot(ctx, c, id)
	if err != nil {
		return err
	}
	if s.State != string(ec2types.SnapshotStateCompleted) {
		return fmt.Errorf("snapshot %s ended %s: take a new one with `handover snapshot`, or rerun down", id, s.State)
	}
	return nil
}
