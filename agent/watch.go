package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
)

// `handover watch` runs for the life of the instance (the packaged handover-watch.service). It polls
// instance metadata for the notices that announce the instance's end, one monitor per source, and runs
// down once per event: an event whose down finished is recorded in the state file, so neither a later
// poll nor a restarted watcher runs it again.
//
// The sources (each a path in IMDS; the watcher reads them with IMDSv2 tokens, which the SDK's metadata
// client renews when they expire and fetches afresh after a 401):
//   - autoscaling/target-lifecycle-state = Terminated: the group is terminating the instance (a
//     termination lifecycle hook holds it in Terminating:Wait until down completes it).
//     https://docs.aws.amazon.com/autoscaling/ec2/userguide/retrieving-target-lifecycle-state-through-imds.html
//   - spot/instance-action: a Spot interruption in about two minutes; there is no hook to hold it.
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
//   - events/recommendations/rebalance (with --on-rebalance): a Spot instance at elevated risk. It is
//     not the instance's end: the instance stays InService and nothing replaces it, so down (service
//     stopped, volume detached) would be an outage. The watcher answers it with a snapshot (the one
//     `handover snapshot` takes, the service running) or by asking the group for a replacement, whose
//     termination hook then hands over as above.
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html
//   - events/maintenance/scheduled (unless --replace-before off): an instance-stop or instance-retirement
//     EC2 announced. --replace-before (1h) before its NotBefore the watcher asks the group for a
//     replacement, as --on-rebalance=replace does, so that the ordinary hand-over runs at a time handover
//     chose rather than when EC2 stops the instance (scheduledMonitor says which events, and why).
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instances-status-check_sched.html
//
// A warm pool's instance (target state Warmed:*) holds neither the address nor the data, so none of its
// target states calls for a hand-over.
// https://docs.aws.amazon.com/autoscaling/ec2/userguide/warm-pool-instance-lifecycle.html

// defaultWatchStateFile records the events whose down finished. /var/lib survives a restart of the
// watcher and a reboot (a Spot stop/start keeps the instance).
const defaultWatchStateFile = "/var/lib/handover/watch.json"

// notice is an event that calls for a hand-over, or for another response (Run).
type notice struct {
	Source string   // the monitor that saw it
	Detail string   // for the log
	Occ    occasion // passed to down; Occ.Key identifies the event
	Run    response // what the watcher runs for it; "" is down
}

// response is what the watcher runs for a notice.
type response string

const (
	runDown     response = "down"     // hand over: the instance is going away
	runSnapshot response = "snapshot" // a consistent snapshot, the service running (`handover snapshot`)
	runReplace  response = "replace"  // ask the group to replace this instance (cloud.RequestReplacement)
	// runReplaceEvent is runReplace for a scheduled event (its own log lines).
	runReplaceEvent response = "replace-before-event"
)

// response is what the watcher runs for n.
func (n notice) response() response {
	if n.Run == "" {
		return runDown
	}
	return n.Run
}

// watchLines are the log lines of one response; down's are the ones operators (and the demo) know.
type watchLines struct{ triggered, done, handled string }

var responseLines = map[response]watchLines{
	runDown:     {"hand-over triggered: running down", "hand-over done for this event", "event already handed over; not running down again"},
	runSnapshot: {"rebalance recommendation: taking a snapshot, the service keeps running", "snapshot done for this event", "event already answered with a snapshot; not taking another"},
	runReplace:  {"rebalance recommendation: asking the group to replace this instance", "replacement requested for this event; the termination hook hands over", "replacement already requested for this event"},
	runReplaceEvent: {"scheduled event: asking the group to replace this instance before it", "replacement requested for this event; the termination hook hands over",
		"replacement already requested for this event"},
}

// monitor watches one source of notices. observe reads the source once and returns its state in a few
// words (the watcher logs it when it changes), and a notice when the source says to hand over.
type monitor interface {
	source() string
	observe(ctx context.Context) (state string, n *notice, err error)
}

// The metadata reads each monitor needs; *imds.Client has them all.
type (
	lifecycleStateReader interface {
		TargetLifecycleState(ctx context.Context) (string, bool, error)
	}
	spotActionReader interface {
		SpotInstanceAction(ctx context.Context) (*imds.SpotAction, error)
	}
	rebalanceReader interface {
		RebalanceRecommendation(ctx context.Context) (*imds.Rebalance, error)
	}
	scheduledEventsReader interface {
		ScheduledEvents(ctx context.Context) ([]imds.ScheduledEvent, error)
	}
)

// lifecycleMonitor watches the Auto Scaling target lifecycle state.
type lifecycleMonitor struct {
	md         lifecycleStateReader
	instanceID string
}

func (lifecycleMonitor) source() string { return "lifecycle" }

func (m lifecycleMonitor) observe(ctx context.Context) (string, *notice, error) {
	st, ok, err := m.md.TargetLifecycleState(ctx)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "not in an Auto Scaling group", nil, nil
	}
	if cloud.WarmedState(st) {
		// Warmed:Terminated included: a warmed instance leaving the pool has nothing to hand over.
		return "target " + st + " (warm pool: nothing to hand over)", nil, nil
	}
	if st != targetTerminated {
		return "target " + st, nil, nil
	}
	return "target " + st, &notice{Source: "lifecycle", Detail: "the Auto Scaling group is terminating this instance", Occ: lifecycleOccasion(m.instanceID)}, nil
}

// spotMonitor watches for a Spot interruption notice.
type spotMonitor struct{ md spotActionReader }

func (spotMonitor) source() string { return "spot" }

func (m spotMonitor) observe(ctx context.Context) (string, *notice, error) {
	a, err := m.md.SpotInstanceAction(ctx)
	if err != nil {
		return "", nil, err
	}
	if a == nil {
		return "no interruption scheduled", nil, nil
	}
	at := a.Time.UTC().Format(time.RFC3339)
	return a.Action + " at " + at, &notice{Source: "spot", Detail: "Spot interruption: " + a.Action + " at " + at, Occ: spotOccasion(a)}, nil
}

// rebalanceMonitor watches for a rebalance recommendation and answers it with run.
type rebalanceMonitor struct {
	md  rebalanceReader
	run response
}

func (rebalanceMonitor) source() string { return "rebalance" }

func (m rebalanceMonitor) observe(ctx context.Context) (string, *notice, error) {
	r, err := m.md.RebalanceRecommendation(ctx)
	if err != nil {
		return "", nil, err
	}
	if r == nil {
		return "no rebalance recommendation", nil, nil
	}
	at := r.NoticeTime.UTC().Format(time.RFC3339)
	return "rebalance recommended at " + at, &notice{Source: "rebalance", Detail: "rebalance recommendation at " + at, Occ: rebalanceOccasion(r), Run: m.run}, nil
}

// watchConfig is `handover watch`: down's flags plus its own.
type watchConfig struct {
	Down         downConfig
	PollInterval time.Duration
	OnRebalance  rebalanceMode
	StateFile    string
	// ReplaceBefore is --replace-before: how long before a scheduled stop or retirement the watcher asks
	// for a replacement; negative is off.
	ReplaceBefore leadTime
	// ReplaceFor is --replace-for: the scheduled events that call for a replacement.
	ReplaceFor eventCodes
}

// rebalanceMode is --on-rebalance: what watch does on a rebalance recommendation. Never down: the
// instance stays in service and nothing would replace it.
//   - off: nothing (the default);
//   - snapshot: a consistent snapshot, the service running: a recent recovery point should the
//     interruption come and down not finish inside its two minutes, and a smaller increment for down's
//     own snapshot then; it needs no permission down does not. `--on-rebalance` alone and the old
//     boolean `true` mean snapshot: they used to mean "hand over", and snapshot is the part of that
//     which does not stop the service.
//   - replace: ask the group to replace the instance (TerminateInstanceInAutoScalingGroup without
//     decrement); the termination hook then hands over as for any termination.
type rebalanceMode string

const (
	rebalanceOff      rebalanceMode = "off"
	rebalanceSnapshot rebalanceMode = "snapshot"
	rebalanceReplace  rebalanceMode = "replace"
)

func (m *rebalanceMode) String() string {
	if m == nil || *m == "" {
		return string(rebalanceOff)
	}
	return string(*m)
}

// Set takes off, snapshot or replace, and the boolean values the flag had before it took a mode. Any other
// value is kept for validate, which names where it came from.
func (m *rebalanceMode) Set(v string) error {
	switch strings.ToLower(v) {
	case "off", "false", "0":
		*m = rebalanceOff
	case "snapshot", "true", "1":
		*m = rebalanceSnapshot
	case "replace":
		*m = rebalanceReplace
	default:
		*m = rebalanceMode(v)
	}
	return nil
}

// IsBoolFlag lets --on-rebalance stand alone (meaning snapshot); a mode is then given as --on-rebalance=MODE.
func (m *rebalanceMode) IsBoolFlag() bool { return true }

// response is what the watcher runs for a recommendation; "" when it does not watch for them.
func (m rebalanceMode) response() response {
	switch m {
	case rebalanceSnapshot:
		return runSnapshot
	case rebalanceReplace:
		return runReplace
	}
	return ""
}

// register declares down's flags, which watch runs with, and watch's own.
func (c *watchConfig) register(f *flags) {
	c.Down.addFlags(f)
	f.fs.DurationVar(&c.PollInterval, "poll-interval", 5*time.Second, "how often to read the notices from instance metadata")
	c.OnRebalance = rebalanceOff
	f.fs.Var(&c.OnRebalance, "on-rebalance", "on an EC2 rebalance recommendation (Spot): off, snapshot (a consistent snapshot, the service keeps running; --on-rebalance alone) or replace (ask the Auto Scaling group to replace this instance; its termination hook hands over); give a mode as --on-rebalance=MODE")
	f.fs.StringVar(&c.StateFile, "state-file", defaultWatchStateFile, "where the events already handed over are recorded")
	c.ReplaceBefore = defaultReplaceBefore
	f.fs.Var(&c.ReplaceBefore, "replace-before", "how long before a scheduled event of --replace-for (instance metadata) to ask the Auto Scaling group to replace this instance, so that the hand-over runs before EC2 stops it; off: do not read scheduled events")
	c.ReplaceFor = defaultReplaceFor()
	f.fs.Var(&c.ReplaceFor, "replace-for", "the scheduled events that call for a replacement, comma-separated: instance-stop, instance-retirement (the default), system-reboot, instance-reboot, system-maintenance (after those the instance comes back with its volume and address)")
}

// validate checks watch's options and down's, which it runs.
func (c *watchConfig) validate() error {
	if err := c.Down.validate(); err != nil {
		return err
	}
	if c.PollInterval <= 0 {
		return badOption("poll-interval", "must be positive")
	}
	switch c.OnRebalance {
	case rebalanceOff, rebalanceSnapshot, rebalanceReplace:
	default:
		return badOption("on-rebalance", "want off, snapshot or replace (given alone: snapshot)")
	}
	if c.ReplaceBefore == leadTimeInvalid {
		return badOption("replace-before", "want a duration such as 1h or 30m, or off")
	}
	if err := c.ReplaceFor.check(); err != nil {
		return badOption("replace-for", "%v", err)
	}
	if !filepath.IsAbs(c.StateFile) {
		return badOption("state-file", "must be an absolute path")
	}
	return nil
}

func runWatch(ctx context.Context, e Env, args []string) error {
	// Started at boot: the network, and so IMDS, may not be up yet.
	var cfg watchConfig
	st, in, err := openThisInstance(ctx, e, args, startSpec{name: "watch", imdsTimeout: 5 * time.Minute, dryRun: true,
		declare: cfg.register, validate: cfg.validate}, &cfg.Down.hostOptions, host.FSCalls{})
	if err != nil {
		return err
	}
	log := st.log
	cfg.Down.applyDefaults()
	state, err := loadWatchState(log, cfg.StateFile, in.id.InstanceID)
	if err != nil {
		return err
	}
	if !st.dryRun {
		// Written once now, so that a state file watch cannot write (a read-only or full filesystem) is
		// found at start, with one line, not at the termination it was to record.
		if err := state.save(); err != nil {
			return fail.Precondition(fmt.Sprintf("state file %s: make its directory writable and give it room, or point --state-file elsewhere", cfg.StateFile), err)
		}
	}
	monitors := []monitor{lifecycleMonitor{md: in.md, instanceID: in.id.InstanceID}, spotMonitor{md: in.md}}
	if run := cfg.OnRebalance.response(); run != "" {
		monitors = append(monitors, rebalanceMonitor{md: in.md, run: run})
	}
	if cfg.ReplaceBefore >= 0 {
		monitors = append(monitors, scheduledMonitor{md: in.md, before: time.Duration(cfg.ReplaceBefore), codes: cfg.ReplaceFor, now: time.Now})
	}
	dryRun := st.dryRun
	w := newWatcher(log.With(logkey.Instance, in.id.InstanceID), monitors, cfg.PollInterval, state, dryRun,
		func(ctx context.Context, n notice) error {
			switch n.response() {
			case runSnapshot:
				// A warm pool's instance (Running pools watch too) has no volume to snapshot; Auto Scaling
				// tells RequestReplacement the same for replace.
				if st, ok, err := in.md.TargetLifecycleState(ctx); err == nil && ok && cloud.WarmedState(st) {
					fmt.Fprintf(e.Stdout, "no snapshot for %s: it is in the warm pool (target %s) and holds no data\n", in.id.InstanceID, st)
					return nil
				}
				return in.snapshotNow(ctx, log, e.Stdout, cfg.snapshotConfig(), dryRun)
			case runReplace, runReplaceEvent:
				return in.requestReplacement(ctx, log, e.Stdout, dryRun)
			}
			rep, err := in.down(ctx, log, cfg.Down, n.Occ, dryRun)
			rep.print(e.Stdout)
			if err == nil && rep.PreStopErr != nil {
				log.Error("handed over, but the pre-stop command failed, so no snapshot is marked consistent; fix the command", logkey.Step, "watch", logkey.Error, rep.PreStopErr.Error())
			}
			return err
		})
	if !dryRun {
		// From the first poll, at start, on: a filesystem left frozen blocks the service until thawed.
		w.eachPoll = func(ctx context.Context) { in.thawLeftFrozenIfIdle(ctx, log, cfg.Down.LockFile) }
	}
	return w.run(ctx)
}

// thawLeftFrozenIfIdle thaws what a killed run left frozen (thawLeftFrozen) when no up, down or snapshot
// holds the instance lock now; when one does, it is that run's to do.
func (in *thisInstance) thawLeftFrozenIfIdle(ctx context.Context, log *slog.Logger, lockFile string) {
	held, err := in.host.Lock(ctx, lockFile, 0)
	if err != nil {
		return
	}
	defer held.Unlock()
	thawLeftFrozen(ctx, log, in.host)
}

// snapshotConfig is `handover snapshot` with watch's options: the same volumes, lock, freeze bound and
// overall bound as its down, no retention (the snapshot timer's --keep does that).
func (c *watchConfig) snapshotConfig() snapshotConfig {
	return snapshotConfig{hostOptions: c.Down.hostOptions, FreezeTimeout: c.Down.FreezeTimeout, Freeze: true, Timeout: c.Down.Timeout, LockSnapshots: c.Down.LockSnapshots}
}

// replaceTimeout bounds a replacement request: two Auto Scaling calls, retried while throttled.
const replaceTimeout = 2 * time.Minute

// requestReplacement asks this instance's group to replace it (cloud.RequestReplacement) and prints what
// happened; with dryRun it only says what it would ask.
func (in *thisInstance) requestReplacement(ctx context.Context, log *slog.Logger, out io.Writer, dryRun bool) error {
	if dryRun {
		fmt.Fprintf(out, "would ask the Auto Scaling group to replace %s (TerminateInstanceInAutoScalingGroup, ShouldDecrementDesiredCapacity=false); its termination hook then hands over\n", in.id.InstanceID)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, replaceTimeout)
	defer cancel()
	r, err := cloud.RequestReplacement(ctx, log.With(logkey.Instance, in.id.InstanceID), in.clients.AutoScaling, in.id.InstanceID)
	if err != nil {
		return err
	}
	if r.Requested {
		fmt.Fprintf(out, "asked Auto Scaling group %s to replace %s (it was %s); the termination hook hands over\n", r.ASGName, in.id.InstanceID, r.State)
	} else {
		fmt.Fprintf(out, "no replacement asked for %s: %s\n", in.id.InstanceID, r.Note)
	}
	return nil
}

// watcher polls the monitors and runs the response to each event (handle: down, or for a rebalance
// recommendation a snapshot or a replacement request) once.
type watcher struct {
	log      *slog.Logger
	monitors []monitor
	every    time.Duration
	state    *watchState
	dryRun   bool
	handle   func(ctx context.Context, n notice) error
	eachPoll func(ctx context.Context) // before each poll's reads; nil: nothing

	last     map[string]string    // monitor -> last state logged
	failing  map[string]bool      // monitor -> its last read failed
	retryAt  map[string]time.Time // event -> earliest next attempt after a failed down
	attempts map[string]int       // event -> failed downs in this process
	quiet    map[string]bool      // event -> "already handled" was logged
}

func newWatcher(log *slog.Logger, monitors []monitor, every time.Duration, state *watchState, dryRun bool, handle func(context.Context, notice) error) *watcher {
	return &watcher{
		log: log.With(logkey.Step, "watch"), monitors: monitors, every: every, state: state, dryRun: dryRun, handle: handle,
		last: map[string]string{}, failing: map[string]bool{}, retryAt: map[string]time.Time{}, attempts: map[string]int{}, quiet: map[string]bool{},
	}
}

// maxDownRetryDelay caps the wait between downs that failed for one event.
const maxDownRetryDelay = time.Minute

// run polls until ctx ends (SIGTERM), then returns nil: stopping is the normal end of a watcher.
func (w *watcher) run(ctx context.Context) error {
	var sources []string
	for _, m := range w.monitors {
		sources = append(sources, m.source())
	}
	w.log.Info("watching instance metadata", logkey.Sources, strings.Join(sources, ","), logkey.Every, w.every.String(), "state_file", w.state.path)
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			w.log.Info("stopping")
			return nil
		case <-t.C:
		}
		w.tick(ctx)
		t.Reset(w.every)
	}
}

// tick reads every monitor once and acts on what they report. A read that fails is logged when the
// source starts failing and when it answers again, not at every poll: IMDS hiccups are expected.
func (w *watcher) tick(ctx context.Context) {
	if w.eachPoll != nil {
		w.eachPoll(ctx)
	}
	for _, m := range w.monitors {
		src := m.source()
		st, n, err := m.observe(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !w.failing[src] {
				w.log.Warn("cannot read the notice; retrying at every poll", logkey.Source, src, logkey.Error, err.Error())
				w.failing[src] = true
			}
			continue
		}
		if w.failing[src] {
			w.log.Info("notice readable again", logkey.Source, src)
			w.failing[src] = false
		}
		if st != w.last[src] {
			w.log.Info("state changed", logkey.Source, src, logkey.From, orDash(w.last[src]), "to", st)
			w.last[src] = st
		}
		if n != nil {
			w.handleNotice(ctx, *n)
		}
	}
}

// handleNotice runs the event's response (down, snapshot, replace) unless the event is recorded as handled.
// A failed response is retried at a later poll, with a growing delay; one cut short by ctx is left for the
// next start of the watcher.
func (w *watcher) handleNotice(ctx context.Context, n notice) {
	key := n.Occ.Key
	run := n.response()
	lines := responseLines[run]
	log := w.log.With(logkey.Source, n.Source, logkey.Event, key)
	if ev := w.state.Events[key]; ev != nil && !ev.Finished.IsZero() {
		if !w.quiet[key] {
			log.Info(lines.handled, "finished", ev.Finished.UTC().Format(time.RFC3339))
			w.quiet[key] = true
		}
		return
	}
	if time.Now().Before(w.retryAt[key]) {
		return
	}
	if w.dryRun {
		if !w.quiet[key] {
			log.Info("event seen (dry run): printing " + string(run) + "'s plan")
			if err := w.handle(ctx, n); err != nil {
				log.Error(string(run)+" plan failed", logkey.Error, err.Error())
			}
			w.quiet[key] = true
		}
		return
	}
	ev := w.state.Events[key]
	if ev == nil {
		ev = &watchEvent{Source: n.Source, Detail: n.Detail, Started: time.Now().UTC()}
		w.state.Events[key] = ev
		log.Info(lines.triggered, "detail", n.Detail)
	} else if w.attempts[key] == 0 {
		log.Info(string(run)+" for this event started earlier but did not finish: running it again", logkey.Started, ev.Started.Format(time.RFC3339), "attempts", ev.Attempts)
	}
	ev.Attempts++
	if err := w.state.save(); err != nil {
		log.Warn("could not record the event; running down anyway", logkey.Error, err.Error())
	}
	err := w.handle(ctx, n)
	if err != nil {
		if ctx.Err() != nil {
			log.Warn("stopped while "+string(run)+" was running; the next start of the watcher runs it again", logkey.Error, err.Error())
			return
		}
		w.attempts[key]++
		delay := min(w.every<<min(w.attempts[key], 10), maxDownRetryDelay)
		w.retryAt[key] = time.Now().Add(delay)
		ev.LastError = fail.OneLine(err.Error())
		if serr := w.state.save(); serr != nil {
			log.Warn("could not record the failed attempt", logkey.Error, serr.Error())
		}
		log.Error(string(run)+" failed; retrying", "in", delay.String(), logkey.ExitCode, ExitCode(err), logkey.Error, err.Error())
		return
	}
	ev.Finished, ev.LastError = time.Now().UTC(), ""
	if err := w.state.save(); err != nil {
		// down converges when rerun, so a restart that runs it again does no harm; say so.
		log.Error(string(run)+" finished but could not be recorded: a restarted watcher will run it again (harmless, it converges)", logkey.Error, err.Error())
	}
	log.Info(lines.done)
}

// watchState is the state file: the events seen by this instance's watcher and whether their down
// finished.
type watchState struct {
	path       string
	InstanceID string                 `json:"instance_id"`
	Events     map[string]*watchEvent `json:"events"`
}

// watchEvent is one event in the state file.
type watchEvent struct {
	Source    string    `json:"source"`
	Detail    string    `json:"detail"`
	Started   time.Time `json:"started"`
	Finished  time.Time `json:"finished,omitzero"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
}

// loadWatchState reads the state file. A missing file, or one written by another instance (an image made
// from a running instance), starts empty. A file that is not valid JSON is moved aside (never deleted) and
// the watcher starts empty: running down again for an event converges, while not watching at all would
// lose data.
func loadWatchState(log *slog.Logger, path, instanceID string) (*watchState, error) {
	s := &watchState{path: path, InstanceID: instanceID, Events: map[string]*watchEvent{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		// The host's configuration, before watch has done anything: no rerun heals it (exit 3).
		return nil, fail.Precondition(fmt.Sprintf("read state file %s: fix its permissions, or point --state-file elsewhere", path), err)
	}
	var got watchState
	if err := json.Unmarshal(b, &got); err != nil {
		aside := path + ".corrupt-" + time.Now().UTC().Format("20060102T150405Z")
		if rerr := os.Rename(path, aside); rerr != nil {
			return nil, fmt.Errorf("state file %s is not valid JSON (%v) and could not be moved aside: %w", path, err, rerr)
		}
		log.Warn("state file was not valid JSON; moved aside, starting with no recorded events", logkey.Step, "watch", "moved_to", aside, logkey.Error, err.Error())
		return s, nil
	}
	if got.InstanceID != instanceID {
		log.Info("state file belongs to another instance; starting with no recorded events", logkey.Step, "watch", "file_instance", orDash(got.InstanceID))
		return s, nil
	}
	if got.Events != nil {
		s.Events = got.Events
	}
	return s, nil
}

// save writes the state file atomically: a temporary file in the same directory, synced, then renamed over
// the old one, then the directory synced, so that a crash leaves the old or the new file, never half of one.
func (s *watchState) save() error {
	dir := filepath.Dir(s.path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state file directory: %w", err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(s.path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.path); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
