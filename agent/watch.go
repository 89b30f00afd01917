package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

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
//   - events/recommendations/rebalance (with --on-rebalance): a Spot instance at elevated risk.
//     https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html

// defaultWatchStateFile records the events whose down finished. /var/lib survives a restart of the
// watcher and a reboot (a Spot stop/start keeps the instance).
const defaultWatchStateFile = "/var/lib/handover/watch.json"

// notice is an event that calls for a hand-over.
type notice struct {
	Source string   // the monitor that saw it
	Detail string   // for the log
	Occ    occasion // passed to down; Occ.Key identifies the event
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

// rebalanceMonitor watches for a rebalance recommendation.
type rebalanceMonitor struct{ md rebalanceReader }

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
	return "rebalance recommended at " + at, &notice{Source: "rebalance", Detail: "rebalance recommendation at " + at, Occ: rebalanceOccasion(r)}, nil
}

// watchConfig is `handover watch`: down's flags plus its own.
type watchConfig struct {
	Down         downConfig
	PollInterval time.Duration
	OnRebalance  bool
	StateFile    string
}

// register declares down's flags, which watch runs with, and watch's own.
func (c *watchConfig) register(f *flags) {
	c.Down.addFlags(f)
	f.fs.DurationVar(&c.PollInterval, "poll-interval", 5*time.Second, "how often to read the notices from instance metadata")
	f.fs.BoolVar(&c.OnRebalance, "on-rebalance", false, "also hand over on an EC2 rebalance recommendation (Spot)")
	f.fs.StringVar(&c.StateFile, "state-file", defaultWatchStateFile, "where the events already handed over are recorded")
}

// validate checks watch's options and down's, which it runs.
func (c *watchConfig) validate() error {
	if err := c.Down.validate(); err != nil {
		return err
	}
	if c.PollInterval <= 0 {
		return badOption("poll-interval", "must be positive")
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
	monitors := []monitor{lifecycleMonitor{md: in.md, instanceID: in.id.InstanceID}, spotMonitor{md: in.md}}
	if cfg.OnRebalance {
		monitors = append(monitors, rebalanceMonitor{md: in.md})
	}
	dryRun := st.dryRun
	w := newWatcher(log.With(logkey.Instance, in.id.InstanceID), monitors, cfg.PollInterval, state, dryRun,
		func(ctx context.Context, n notice) error {
			rep, err := in.down(ctx, log, cfg.Down, n.Occ, dryRun)
			rep.print(e.Stdout)
			if err == nil && rep.PreStopErr != nil {
				log.Error("handed over, but the pre-stop command failed, so no snapshot is marked consistent; fix the command", logkey.Step, "watch", logkey.Error, rep.PreStopErr.Error())
			}
			return err
		})
	return w.run(ctx)
}

// watcher polls the monitors and runs down (handle) once per event.
type watcher struct {
	log      *slog.Logger
	monitors []monitor
	every    time.Duration
	state    *watchState
	dryRun   bool
	handle   func(ctx context.Context, n notice) error

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

// handleNotice runs down for an event unless it is recorded as handled. A failed down is retried at a
// later poll, with a growing delay; a down cut short by ctx is left for the next start of the watcher.
func (w *watcher) handleNotice(ctx context.Context, n notice) {
	key := n.Occ.Key
	log := w.log.With(logkey.Source, n.Source, logkey.Event, key)
	if ev := w.state.Events[key]; ev != nil && !ev.Finished.IsZero() {
		if !w.quiet[key] {
			log.Info("event already handed over; not running down again", "finished", ev.Finished.UTC().Format(time.RFC3339))
			w.quiet[key] = true
		}
		return
	}
	if time.Now().Before(w.retryAt[key]) {
		return
	}
	if w.dryRun {
		if !w.quiet[key] {
			log.Info("event seen (dry run): printing down's plan")
			if err := w.handle(ctx, n); err != nil {
				log.Error("down plan failed", logkey.Error, err.Error())
			}
			w.quiet[key] = true
		}
		return
	}
	ev := w.state.Events[key]
	if ev == nil {
		ev = &watchEvent{Source: n.Source, Detail: n.Detail, Started: time.Now().UTC()}
		w.state.Events[key] = ev
		log.Info("hand-over triggered: running down", "detail", n.Detail)
	} else if w.attempts[key] == 0 {
		log.Info("down for this event started earlier but did not finish: running it again", logkey.Started, ev.Started.Format(time.RFC3339), "attempts", ev.Attempts)
	}
	ev.Attempts++
	if err := w.state.save(); err != nil {
		log.Warn("could not record the event; running down anyway", logkey.Error, err.Error())
	}
	err := w.handle(ctx, n)
	if err != nil {
		if ctx.Err() != nil {
			log.Warn("stopped while down was running; the next start of the watcher runs it again", logkey.Error, err.Error())
			return
		}
		w.attempts[key]++
		delay := min(w.every<<min(w.attempts[key], 10), maxDownRetryDelay)
		w.retryAt[key] = time.Now().Add(delay)
		ev.LastError = fail.OneLine(err.Error())
		if serr := w.state.save(); serr != nil {
			log.Warn("could not record the failed attempt", logkey.Error, serr.Error())
		}
		log.Error("down failed; retrying", "in", delay.String(), logkey.ExitCode, ExitCode(err), logkey.Error, err.Error())
		return
	}
	ev.Finished, ev.LastError = time.Now().UTC(), ""
	if err := w.state.save(); err != nil {
		// down converges when rerun, so a restart that runs it again does no harm; say so.
		log.Error("down finished but could not be recorded: a restarted watcher will run it again (harmless, it converges)", logkey.Error, err.Error())
	}
	log.Info("hand-over done for this event")
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
		return nil, fmt.Errorf("read state file %s (fix its permissions, or point --state-file elsewhere): %w", path, err)
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
