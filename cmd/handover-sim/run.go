package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/handover/handover/sim"
)

const usage = `usage: handover-sim <command> [flags]

commands:
  serve          run the simulated region (EC2 + Auto Scaling API, IMDS per instance)
  env            print the export lines that make a program act as an instance
  spot           publish a Spot interruption notice (and carry it out when due)
  rebalance      publish a rebalance recommendation
  kill           make an instance die abruptly (hardware failure)
  status-checks  force an instance's status checks (--system/--instance impaired, ok, ...)
  calls          print the API call log as JSON
`

// subcommands is extended by other files (e.g. demo.go) through init.
var subcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"serve":         serve,
	"env":           env,
	"spot":          spot,
	"rebalance":     rebalance,
	"kill":          kill,
	"status-checks": statusChecks,
	"calls":         calls,
}

// run dispatches a command line and returns the exit code: 0 done, 1
// failed, 2 usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd := subcommands[args[0]]
	if cmd == nil {
		fmt.Fprintf(stderr, "handover-sim: unknown command %q\n%s", args[0], usage)
		return 2
	}
	return cmd(ctx, args[1:], stdout, stderr)
}

// faultRates collects repeatable --fault-rate ACTION=P flags.
type faultRates map[string]float64

func (f faultRates) String() string {
	var parts []string
	for k, v := range f {
		parts = append(parts, k+"="+strconv.FormatFloat(v, 'g', -1, 64))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (f faultRates) Set(s string) error {
	action, p, ok := strings.Cut(s, "=")
	if !ok || action == "" {
		return errors.New("want ACTION=PROBABILITY (ACTION may be *)")
	}
	v, err := strconv.ParseFloat(p, 64)
	if err != nil || v < 0 || v > 1 {
		return fmt.Errorf("probability %q is not between 0 and 1", p)
	}
	f[action] = v
	return nil
}

// serveFlags parses the serve command line into options and a listen address.
func serveFlags(args []string, stderr io.Writer) (sim.Options, string, string, error) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o sim.Options
	d := sim.DefaultDelays
	listen := fs.String("listen", "127.0.0.1:4566", "address of the EC2 + Auto Scaling API")
	fs.StringVar(&o.StateDir, "state", "", "state directory (volume images, snapshots, state.json); required")
	fs.StringVar(&o.Region, "region", "us-east-1", "region name")
	azs := fs.String("azs", "", "comma-separated zones (default REGIONa,REGIONb,REGIONc)")
	fs.DurationVar(&d.CreateVolume, "delay-create-volume", d.CreateVolume, "blank volume creating -> available")
	fs.DurationVar(&d.CreateVolumeFromSnapshot, "delay-create-volume-from-snapshot", d.CreateVolumeFromSnapshot, "restored volume creating -> available")
	fs.DurationVar(&d.Attach, "delay-attach", d.Attach, "attaching -> attached")
	fs.DurationVar(&d.Detach, "delay-detach", d.Detach, "detaching -> available")
	fs.DurationVar(&d.Snapshot, "delay-snapshot", d.Snapshot, "snapshot pending -> completed")
	fs.DurationVar(&d.InstanceStart, "delay-instance-start", d.InstanceStart, "instance pending -> running")
	fs.DurationVar(&d.InstanceStop, "delay-instance-stop", d.InstanceStop, "instance stopping -> stopped")
	fs.DurationVar(&d.InstanceTerminate, "delay-instance-terminate", d.InstanceTerminate, "instance shutting-down -> terminated")
	fs.DurationVar(&d.ModifyVolume, "delay-modify-volume", d.ModifyVolume, "volume modification: modifying, then optimizing (half each), then completed")
	fs.DurationVar(&d.FastSnapshotRestore, "delay-fast-snapshot-restore", d.FastSnapshotRestore, "fast snapshot restore enabling -> optimizing and disabling -> disabled (optimizing: 60 min per TiB, at least this)")
	fs.Float64Var(&o.InitializationRate, "initialization-rate", 64, "MiB/s at which a volume restored without a VolumeInitializationRate loads its blocks (AWS does not document its default)")
	fs.Float64Var(&o.Speed, "speed", 1, "divide every delay by this")
	fs.Float64Var(&o.Jitter, "jitter", 0, "random +- fraction applied to each delay")
	fs.DurationVar(&o.DeviceLag, "device-lag", 0, "an attached volume's block device appears this long after DescribeVolumes reads attached (negative: before; AWS does not document the order), divided by --speed")
	fs.BoolVar(&o.Throttle, "throttle", false, "EC2 request and resource token buckets (RequestLimitExceeded), Auto Scaling bucket (Throttling)")
	rates := faultRates{}
	fs.Var(rates, "fault-rate", "ACTION=P: probability of a retryable error for ACTION (or *); repeatable")
	fs.DurationVar(&o.Faults.Latency, "fault-latency", 0, "latency added to every API call")
	fs.Float64Var(&o.Faults.DropRate, "fault-drop", 0, "probability a connection is closed without a response")
	fs.Float64Var(&o.Faults.DropAfterRate, "fault-drop-after", 0, "probability a call is carried out and then its connection closed without a response")
	fs.Float64Var(&o.Faults.SlowRate, "fault-slow", 0, "probability a call is answered --fault-slow-latency late (carried out first)")
	fs.DurationVar(&o.Faults.SlowLatency, "fault-slow-latency", time.Second, "how late a slow call (--fault-slow) is answered")
	fs.DurationVar(&o.Faults.ConsistencyDelay, "consistency-delay", 0, "eventual consistency: a created resource is not found, and attachments and associations read as before, this long")
	fs.StringVar(&o.TokenAcrossAZ, "token-across-az", sim.TokenFirst, "CreateVolume with a ClientToken used in another zone: first (the first volume, in its zone) or new (a volume in the asked zone)")
	fs.DurationVar(&o.SnapshotInterval, "snapshot-interval", 15*time.Second, "least time between two CreateSnapshot of one volume (SnapshotCreationPerVolumeRateExceeded), divided by --speed; negative: no limit")
	fs.StringVar(&o.DetachBusyState, "detach-busy-state", "busy", "attachment state while a detach waits for a mounted device: busy or detaching")
	fs.Int64Var(&o.Seed, "seed", 1, "seed for jitter and faults")
	logFormat := fs.String("log-format", "text", "text or json")
	fs.StringVar(&o.Replacement.AZ, "replacement-az", sim.ReplaceAZBalance,
		"zone of a group's replacement for a member: balance (zone balancing), same (the replaced instance's), other (another of the group's)")
	fs.StringVar(&o.Replacement.Launch, "replacement-launch", sim.ReplaceLaunchAtOnce,
		"when a group without launch-before-terminate launches a replacement: at-once (as the old instance enters Terminating) or after-gone (once it is Terminated)")
	if err := fs.Parse(args); err != nil {
		return o, "", "", err
	}
	if err := o.Replacement.Validate(); err != nil {
		return o, "", "", err
	}
	if o.StateDir == "" {
		return o, "", "", errors.New("--state DIR is required")
	}
	if *azs != "" {
		o.AZs = strings.Split(*azs, ",")
	}
	if len(rates) > 0 {
		o.Faults.ErrorRate = rates
	}
	o.Delays = d
	return o, *listen, *logFormat, nil
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, listen, logFormat, err := serveFlags(args, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "handover-sim serve:", err)
		return 2
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	o.Logger = slog.New(h)
	r, err := sim.New(o)
	if err != nil {
		fmt.Fprintln(stderr, "handover-sim serve:", err)
		return 1
	}
	if err := r.Start(listen); err != nil {
		fmt.Fprintln(stderr, "handover-sim serve:", err)
		return 1
	}
	fmt.Fprintln(stdout, r.Endpoint())
	<-ctx.Done()
	if err := r.Close(); err != nil {
		fmt.Fprintln(stderr, "handover-sim serve: close:", err)
		return 1
	}
	return 0
}

// adminFlags reads the flags the admin subcommands share.
func adminFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*flag.FlagSet, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", os.Getenv("HANDOVER_SIM_ENDPOINT"), "simulator endpoint (default $HANDOVER_SIM_ENDPOINT or http://127.0.0.1:4566)")
	if extra != nil {
		extra(fs)
	}
	// Allow the instance id before the flags ("kill i-0123 --endpoint ...").
	var pos []string
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	_ = fs.Parse(append(pos, fs.Args()...)) // flags are done; keep positionals in order
	if *endpoint == "" {
		*endpoint = "http://127.0.0.1:4566"
	}
	return fs, strings.TrimSuffix(*endpoint, "/"), nil
}

// admin calls the simulator's /sim/ path and decodes its JSON answer.
func admin(ctx context.Context, method, endpoint, path string, q url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, endpoint+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("reach the simulator at %s: %w", endpoint, err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

func oneInstance(fs *flag.FlagSet, stderr io.Writer, name string) (string, bool) {
	if fs.NArg() != 1 {
		fmt.Fprintf(stderr, "handover-sim %s: want exactly one INSTANCE_ID\n", name)
		return "", false
	}
	return fs.Arg(0), true
}

func env(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var state string
	fs, endpoint, err := adminFlags("env", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&state, "state", "", "read the environment from a stopped simulator's state directory instead")
	})
	if err != nil {
		return 2
	}
	id, ok := oneInstance(fs, stderr, "env")
	if !ok {
		return 2
	}
	var vars map[string]string
	if state != "" {
		vars, err = envFromState(state, id, endpoint)
	} else {
		err = admin(ctx, http.MethodGet, endpoint, "/sim/env", url.Values{"instance": {id}}, &vars)
	}
	if err != nil {
		fmt.Fprintln(stderr, "handover-sim env:", err)
		return 1
	}
	for _, k := range sortedKeys(vars) {
		fmt.Fprintf(stdout, "export %s='%s'\n", k, strings.ReplaceAll(vars[k], "'", `'\''`))
	}
	return 0
}

// envFromState builds the environment from a state directory without a
// running API (the IMDS port recorded there is reused by the next serve).
func envFromState(state, id, endpoint string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(state, "state.json"))
	if err != nil {
		return nil, err
	}
	var w struct {
		Instances map[string]struct {
			IMDSPort int    `json:"imdsPort"`
			AZ       string `json:"az"`
		} `json:"instances"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, err
	}
	in, ok := w.Instances[id]
	if !ok {
		return nil, fmt.Errorf("no instance %s in %s", id, state)
	}
	dir, err := filepath.Abs(filepath.Join(state, "instances", id))
	if err != nil {
		return nil, err
	}
	vars := map[string]string{
		"AWS_ENDPOINT_URL_EC2":          endpoint,
		"AWS_ENDPOINT_URL_AUTO_SCALING": endpoint,
		"AWS_REGION":                    regionOfZone(in.AZ),
		"AWS_ACCESS_KEY_ID":             "AKID" + strings.ReplaceAll(id, "-", ""),
		"AWS_SECRET_ACCESS_KEY":         "simulated-secret",
		"HANDOVER_DEV_DIR":              filepath.Join(dir, "dev"),
		"HANDOVER_SYS_DIR":              filepath.Join(dir, "sys"),
	}
	if in.IMDSPort != 0 {
		vars["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = fmt.Sprintf("http://127.0.0.1:%d", in.IMDSPort)
	}
	return vars, nil
}

// regionOfZone is the Region of an AZ name: us-east-1a -> us-east-1. The state file keeps zones, not the
// Region the sim was started with.
func regionOfZone(az string) string {
	if az == "" {
		return "us-east-1"
	}
	return strings.TrimRight(az, "abcdefghijklmnopqrstuvwxyz")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func spot(ctx context.Context, args []string, _, stderr io.Writer) int {
	var action string
	var in time.Duration
	fs, endpoint, err := adminFlags("spot", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&action, "action", "terminate", "terminate, stop, hibernate, or clear")
		fs.DurationVar(&in, "in", 2*time.Minute, "when the action happens (AWS gives two minutes)")
	})
	if err != nil {
		return 2
	}
	id, ok := oneInstance(fs, stderr, "spot")
	if !ok {
		return 2
	}
	if action == "clear" {
		action = ""
	}
	if err := admin(ctx, http.MethodPost, endpoint, "/sim/spot", url.Values{"instance": {id}, "action": {action}, "in": {in.String()}}, nil); err != nil {
		fmt.Fprintln(stderr, "handover-sim spot:", err)
		return 1
	}
	return 0
}

func rebalance(ctx context.Context, args []string, _, stderr io.Writer) int {
	var clear bool
	fs, endpoint, err := adminFlags("rebalance", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&clear, "clear", false, "remove the recommendation")
	})
	if err != nil {
		return 2
	}
	id, ok := oneInstance(fs, stderr, "rebalance")
	if !ok {
		return 2
	}
	if err := admin(ctx, http.MethodPost, endpoint, "/sim/rebalance", url.Values{"instance": {id}, "clear": {strconv.FormatBool(clear)}}, nil); err != nil {
		fmt.Fprintln(stderr, "handover-sim rebalance:", err)
		return 1
	}
	return 0
}

func kill(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs, endpoint, err := adminFlags("kill", args, stderr, nil)
	if err != nil {
		return 2
	}
	id, ok := oneInstance(fs, stderr, "kill")
	if !ok {
		return 2
	}
	if err := admin(ctx, http.MethodPost, endpoint, "/sim/kill", url.Values{"instance": {id}}, nil); err != nil {
		fmt.Fprintln(stderr, "handover-sim kill:", err)
		return 1
	}
	return 0
}

func statusChecks(ctx context.Context, args []string, _, stderr io.Writer) int {
	var system, instance string
	fs, endpoint, err := adminFlags("status-checks", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&system, "system", "", "system status check: ok, impaired, insufficient-data, initializing; empty = automatic")
		fs.StringVar(&instance, "instance", "", "instance status check: ok, impaired, insufficient-data, initializing; empty = automatic")
	})
	if err != nil {
		return 2
	}
	id, ok := oneInstance(fs, stderr, "status-checks")
	if !ok {
		return 2
	}
	if err := admin(ctx, http.MethodPost, endpoint, "/sim/status-checks", url.Values{"instance": {id}, "system": {system}, "instance-status": {instance}}, nil); err != nil {
		fmt.Fprintln(stderr, "handover-sim status-checks:", err)
		return 1
	}
	return 0
}

func calls(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var reset bool
	_, endpoint, err := adminFlags("calls", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&reset, "reset", false, "empty the log after printing it")
	})
	if err != nil {
		return 2
	}
	var log []sim.Call
	if err := admin(ctx, http.MethodGet, endpoint, "/sim/calls", nil, &log); err != nil {
		fmt.Fprintln(stderr, "handover-sim calls:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(log); err != nil {
		return 1
	}
	if reset {
		if err := admin(ctx, http.MethodPost, endpoint, "/sim/calls/reset", nil, nil); err != nil {
			fmt.Fprintln(stderr, "handover-sim calls:", err)
			return 1
		}
	}
	return 0
}
