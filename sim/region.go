package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Delays are the durations of AWS's asynchronous transitions before Speed
// and Jitter are applied. The defaults are close to what small volumes and
// instances take on AWS.
type Delays struct {
	CreateVolume             time.Duration // blank volume: creating -> available
	CreateVolumeFromSnapshot time.Duration // restored volume: creating -> available
	Attach                   time.Duration // attaching -> attached
	Detach                   time.Duration // detaching -> available
	Snapshot                 time.Duration // pending -> completed
	InstanceStart            time.Duration // pending -> running
	InstanceStop             time.Duration // stopping -> stopped
	InstanceTerminate        time.Duration // shutting-down -> terminated
	ModifyVolume             time.Duration // modifying -> optimizing (half-way) -> completed
	FastSnapshotRestore      time.Duration // fast snapshot restore enabling -> optimizing, disabling -> disabled (ec2_fast_restore.go)
}

// DefaultDelays are used for every zero field of Options.Delays.
var DefaultDelays = Delays{
	CreateVolume:             2 * time.Second,
	CreateVolumeFromSnapshot: 8 * time.Second,
	Attach:                   3 * time.Second,
	Detach:                   2 * time.Second,
	Snapshot:                 20 * time.Second,
	InstanceStart:            15 * time.Second,
	InstanceStop:             5 * time.Second,
	InstanceTerminate:        5 * time.Second,
	ModifyVolume:             2 * time.Second,
	FastSnapshotRestore:      30 * time.Second,
}

// Faults are injected into the API (not into IMDS).
type Faults struct {
	// ErrorRate maps an action name ("AttachVolume") or "*" to the
	// probability that a call fails with a retryable error
	// (EC2: RequestLimitExceeded 503 or InternalError 500; Auto Scaling:
	// Throttling 400 or InternalFailure 500).
	ErrorRate map[string]float64
	// Latency is added to every API call.
	Latency time.Duration
	// DropRate is the probability that the connection is closed without a
	// response.
	DropRate float64
	// SlowRate is the probability that a call is answered SlowLatency late (on top of Latency): it is
	// carried out first, so others see its change while its client still waits.
	SlowRate    float64
	SlowLatency time.Duration
	// DropAfterRate is the probability that a call is carried out and then the connection is closed
	// without a response: the client cannot tell that it happened (the SDK retries it).
	DropAfterRate float64
	// AgentsOnly limits ErrorRate, Latency, SlowRate, DropRate and DropAfterRate to the calls made
	// with an instance's credentials (InstanceEnv), so a test's own setup and checks are not hit.
	AgentsOnly bool
	// ConsistencyDelay is EC2's eventual consistency
	// (https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html):
	// for this long a created resource is not found, and reads of an
	// attachment or association show it as before the call (consistency.go).
	ConsistencyDelay time.Duration
}

// Options configure a Region.
type Options struct {
	StateDir string   // required: sparse volume images, snapshots, state.json
	Region   string   // default "us-east-1"
	AZs      []string // default us-east-1a, us-east-1b, us-east-1c
	Delays   Delays   // zero fields take DefaultDelays
	// DeviceLag is when an attached volume's block device appears on its instance, relative to the moment
	// DescribeVolumes reads the attachment as attached: later (positive) or earlier (negative, at the
	// soonest when the attach begins). AWS does not document the order of the two (the NVMe device is
	// the hypervisor's, the state EC2's, which is eventually consistent), so handover must work either
	// way and the tests run both; 0 (the default) makes them the same instant. Divided by Speed.
	// https://docs.aws.amazon.com/ebs/latest/userguide/identify-nvme-ebs-device.html
	DeviceLag time.Duration
	Speed     float64 // divides every delay (default 1)
	Jitter    float64 // +- fraction applied to each delay
	Throttle  bool    // EC2 request and resource token buckets, Auto Scaling's shared bucket (see throttle.go)
	Faults    Faults
	Logger    *slog.Logger // nil discards
	Seed      int64        // jitter and fault randomness
	// IMDSClock is the clock IMDSv2 token lifetimes are measured on
	// (default time.Now), so a test can expire a token without waiting out
	// its TTL. Transitions run on timers; tests hold them with Hold.
	IMDSClock func() time.Time
	// EC2 rules AWS leaves open, and limits the sim scales (see sim/README.md, "What it models").
	// TokenAcrossAZ: what a CreateVolume whose ClientToken was used in another AZ does: "first"
	// (default) returns the first volume, in its zone; "new" makes a volume in the asked zone.
	TokenAcrossAZ string
	// SnapshotInterval is the least time between two CreateSnapshot of one volume
	// (SnapshotCreationPerVolumeRateExceeded); 0 = AWS's 15 s, negative = no limit. Divided by Speed.
	SnapshotInterval time.Duration
	// DetachBusyState is the attachment state DescribeVolumes shows while a detach waits for a
	// mounted device: "busy" (default) or "detaching".
	DetachBusyState string
	// ThrottleEC2Only leaves Auto Scaling out of Throttle: its shared bucket's size is the sim's
	// assumption (AWS publishes none), so a benchmark that holds to documented numbers turns it off.
	ThrottleEC2Only bool
	// SaveInterval, when positive, writes StateDir/state.json at most that often (and at Close) instead of
	// after every change, for regions of thousands of resources; a crash of the simulator then loses up to
	// that much of the state. Close always saves.
	SaveInterval time.Duration
	// Replacement chooses what AWS leaves open when a group replaces a
	// member: the zone and the moment of the launch (sim/asg_replace.go).
	Replacement Replacement
	// InitializationRate is the MiB/s at which a volume restored without a VolumeInitializationRate loads
	// its blocks (AWS does not document it: it "fluctuates"); 0 = 64. See ec2_volume_init.go.
	InitializationRate float64
}

// Call is one entry of the API call log.
type Call struct {
	Time     time.Time `json:"time"`
	Action   string    `json:"action"`
	Caller   string    `json:"caller"`
	Code     string    `json:"code"` // "" on success
	Mutating bool      `json:"mutating"`
}

// Region is one simulated AWS region.
type Region struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex // guards everything below up to the next blank line
	w       *world
	closed  bool
	started bool
	timers  map[string]*simTimer
	holds   []*hold       // active Hold calls
	saved   bool          // Close has written the last state: nothing may write StateDir again
	changed chan struct{} // closed and replaced whenever timers, holds or the world change
	imds    map[string]*imdsServer
	loops   map[string]string // volume id -> loop device
	loopOK  bool
	tlog    transitionLog // transitions under way and done (transitions.go)
	// savePending: a save is scheduled (Options.SaveInterval, save.go)
	savePending bool

	rngMu sync.Mutex
	rng   *rand.Rand

	cfgMu    sync.Mutex
	faults   Faults
	throttle *throttler
	calls    []Call
	policies map[string]*Policy // access key -> the IAM policy of its role (SetInstancePolicy); none: not checked
	// releases of the holds made through /sim/hold, by name
	releases   map[string]func()
	adminHolds int

	probes probes // Observe and HoldCalls (observe.go)

	ln       net.Listener
	srv      *http.Server
	endpoint string
}

type simTimer struct {
	t          *time.Timer
	transition bool
	kind       Transition
	id         string // the resource the timer belongs to
	fn         func()
	due        bool // the delay is over but a Hold defers the change
}

// New builds a region from opts, loading StateDir/state.json if present. It
// starts nothing: Start serves the API and resumes pending transitions.
func New(o Options) (*Region, error) {
	if o.StateDir == "" {
		return nil, errors.New("sim: Options.StateDir is required")
	}
	if o.Region == "" {
		o.Region = "us-east-1"
	}
	if len(o.AZs) == 0 {
		o.AZs = []string{o.Region + "a", o.Region + "b", o.Region + "c"}
	}
	o.Delays = withDefaults(o.Delays)
	if o.Speed <= 0 {
		o.Speed = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.IMDSClock == nil {
		o.IMDSClock = time.Now
	}
	if err := checkRuleOptions(&o); err != nil {
		return nil, err
	}
	for _, d := range []string{"", "volumes", "snapshots", "instances"} {
		if err := os.MkdirAll(filepath.Join(o.StateDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("sim: create state dir: %w", err)
		}
	}
	r := &Region{
		opts:    o,
		log:     o.Logger,
		timers:  map[string]*simTimer{},
		changed: make(chan struct{}),
		imds:    map[string]*imdsServer{},
		loops:   map[string]string{},
		rng:     rand.New(rand.NewPCG(uint64(o.Seed), uint64(o.Seed)^0x5eed)),
		faults:  o.Faults,
	}
	if o.Throttle {
		r.throttle = newThrottler(!o.ThrottleEC2Only)
	}
	w, err := loadState(r.statePath())
	if err != nil {
		return nil, err
	}
	r.w = w
	return r, nil
}

func withDefaults(d Delays) Delays {
	pick := func(v, def time.Duration) time.Duration {
		if v == 0 {
			return def
		}
		return v
	}
	def := DefaultDelays
	return Delays{
		CreateVolume:             pick(d.CreateVolume, def.CreateVolume),
		CreateVolumeFromSnapshot: pick(d.CreateVolumeFromSnapshot, def.CreateVolumeFromSnapshot),
		Attach:                   pick(d.Attach, def.Attach),
		Detach:                   pick(d.Detach, def.Detach),
		Snapshot:                 pick(d.Snapshot, def.Snapshot),
		InstanceStart:            pick(d.InstanceStart, def.InstanceStart),
		InstanceStop:             pick(d.InstanceStop, def.InstanceStop),
		InstanceTerminate:        pick(d.InstanceTerminate, def.InstanceTerminate),
		ModifyVolume:             pick(d.ModifyVolume, def.ModifyVolume),
		FastSnapshotRestore:      pick(d.FastSnapshotRestore, def.FastSnapshotRestore),
	}
}

// Start serves the EC2 and Auto Scaling Query API on listen (for example
// "127.0.0.1:0"), starts the IMDS of every running instance, recreates the
// block devices of attached volumes and resumes interrupted transitions.
func (r *Region) Start(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("sim: listen: %w", err)
	}
	r.ln = ln
	r.endpoint = "http://" + ln.Addr().String()
	r.srv = &http.Server{Handler: r.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := r.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error("api server stopped", "err", err)
		}
	}()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started = true
	r.loopOK = probeLoop()
	r.resumeLocked()
	r.afterChangeLocked()
	r.log.Info("simulated region serving", "endpoint", r.endpoint, "region", r.opts.Region, "loop_devices", r.loopOK)
	return nil
}

// Endpoint is the base URL of the API, e.g. "http://127.0.0.1:34567".
func (r *Region) Endpoint() string { return r.endpoint }

// Close stops every server and timer, removes the instances' block devices
// (detaching loop devices) and saves the state. A later New+Start on the same
// StateDir picks up from here. Once Close returns nothing writes into StateDir
// any more, so a caller may remove it.
func (r *Region) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	// closed first: API calls from now on answer Unavailable, timers do
	// nothing, and WaitIdle (/sim/idle) returns, so the server's Shutdown
	// below does not wait for a long poll.
	r.closed = true
	for k, t := range r.timers {
		t.t.Stop()
		delete(r.timers, k)
	}
	r.notifyLocked()
	r.mu.Unlock()
	var srvErr error
	if r.srv != nil {
		// Shutdown waits for the handlers still running; what they change
		// is in the save below, not written after it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			srvErr = r.srv.Close()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, s := range r.imds {
		s.close()
		delete(r.imds, id)
	}
	for _, v := range r.w.Volumes {
		if v.Attachment != nil {
			r.removeDeviceLocked(v)
		}
	}
	r.saveLocked()
	r.saved = true
	r.notifyLocked()
	if srvErr != nil {
		return fmt.Errorf("sim: stop the API server: %w", srvErr)
	}
	return nil
}

// delay scales a base delay by Speed and applies jitter.
func (r *Region) delay(base time.Duration) time.Duration {
	d := float64(base) / r.opts.Speed
	if r.opts.Jitter > 0 {
		d *= 1 + (r.random()*2-1)*r.opts.Jitter
	}
	if d < 0 {
		d = 0
	}
	return time.Duration(d)
}

func (r *Region) random() float64 {
	r.rngMu.Lock()
	defer r.rngMu.Unlock()
	return r.rng.Float64()
}

// scheduleLocked runs fn under r.mu after d, replacing any timer with the
// same key ("family/RESOURCE-ID"). kind is the transition a Hold names;
// transition says whether WaitIdle waits for it (hook timeouts and spot
// deadlines are not transitions: they may be hours away).
func (r *Region) scheduleLocked(key string, kind Transition, d time.Duration, transition bool, fn func()) {
	if r.closed || !r.started {
		return
	}
	if old := r.timers[key]; old != nil {
		old.t.Stop()
	}
	_, id, _ := strings.Cut(key, "/")
	st := &simTimer{transition: transition, kind: kind, id: id, fn: fn}
	st.t = time.AfterFunc(d, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.closed || r.timers[key] != st {
			return
		}
		if r.heldLocked(st) {
			// The change waits for the release; the timer stays in r.timers so
			// that WaitIdle still counts it and a later schedule or cancel of
			// the same key (a heartbeat, DeleteSnapshot) still replaces it.
			st.due = true
			r.notifyLocked()
			return
		}
		r.fireLocked(key, st)
	})
	r.timers[key] = st
	r.transitionBeganLocked(key, st, d)
	r.notifyLocked()
}

// fireLocked applies a timer's state change.
func (r *Region) fireLocked(key string, st *simTimer) {
	delete(r.timers, key)
	r.transitionEndedLocked(key, st)
	st.fn()
	r.afterChangeLocked()
}

func (r *Region) cancelLocked(key string) {
	if t := r.timers[key]; t != nil {
		t.t.Stop()
		delete(r.timers, key)
		delete(r.tlog.running, key)
		r.notifyLocked()
	}
}

func (r *Region) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// afterChangeLocked runs after every mutation: groups reconcile, then the
// state is saved (unless Close has saved it for the last time).
func (r *Region) afterChangeLocked() {
	r.reconcileGroupsLocked()
	r.saveSoonLocked()
	r.notifyLocked()
}

// WaitIdle returns when no state transition is scheduled (lifecycle hook
// timeouts and spot deadlines do not count), or when ctx ends, or when the
// region closes. A held transition is still scheduled: WaitIdle waits for
// its release.
func (r *Region) WaitIdle(ctx context.Context) error {
	for {
		r.mu.Lock()
		busy := false
		for _, t := range r.timers {
			if t.transition {
				busy = true
				break
			}
		}
		ch := r.changed
		closed := r.closed
		r.mu.Unlock()
		if !busy || closed {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// InstanceEnv returns the environment that makes an AWS SDK program (the
// handover agent) act as instanceID: endpoints, region, credentials whose
// access key names the instance, the IMDS endpoint and the device
// directories.
func (r *Region) InstanceEnv(instanceID string) (map[string]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	in := r.w.Instances[instanceID]
	if in == nil {
		return nil, fmt.Errorf("sim: no instance %s", instanceID)
	}
	env := map[string]string{
		"AWS_ENDPOINT_URL_EC2":          r.endpoint,
		"AWS_ENDPOINT_URL_AUTO_SCALING": r.endpoint,
		"AWS_REGION":                    r.opts.Region,
		"AWS_ACCESS_KEY_ID":             "AKID" + strings.ReplaceAll(instanceID, "-", ""),
		"AWS_SECRET_ACCESS_KEY":         "simulated-secret",
		"HANDOVER_DEV_DIR":              r.instanceDir(instanceID, "dev"),
		"HANDOVER_SYS_DIR":              r.instanceDir(instanceID, "sys"),
	}
	if s := r.imds[instanceID]; s != nil {
		env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = s.url()
	} else if in.IMDSPort != 0 {
		env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = fmt.Sprintf("http://127.0.0.1:%d", in.IMDSPort)
	}
	return env, nil
}

// Calls returns a copy of the call log.
func (r *Region) Calls() []Call {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	return append([]Call(nil), r.calls...)
}

// ResetCalls empties the call log.
func (r *Region) ResetCalls() {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	r.calls = nil
}

// SetFaults replaces the injected faults.
func (r *Region) SetFaults(f Faults) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	r.faults = f
}

func (r *Region) currentFaults() Faults {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	return r.faults
}

// SetThrottle switches throttling (EC2 and Auto Scaling) on, with full
// buckets, or off.
func (r *Region) SetThrottle(on bool) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	if on {
		r.throttle = newThrottler(!r.opts.ThrottleEC2Only)
	} else {
		r.throttle = nil
	}
}

func (r *Region) recordCall(c Call) {
	r.cfgMu.Lock()
	defer r.cfgMu.Unlock()
	r.calls = append(r.calls, c)
}

func (r *Region) instanceDir(id string, sub ...string) string {
	return filepath.Join(append([]string{r.opts.StateDir, "instances", id}, sub...)...)
}
