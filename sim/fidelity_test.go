package sim

// Fidelity: the simulated region is driven by clients nobody here wrote (the
// AWS CLI, aws-sdk-go-v2) and compared with an emulator nobody here wrote
// (moto_server). One scenario, parameterised by an endpoint and what the
// target models, runs against each; the outcomes are compared field by field
// on what both model. sim/README.md lists the deliberate differences.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/sim/motoserver"
)

// fidelitySpeed makes the sim fast while keeping every transition and the
// lifecycle heartbeat timeout (3600 s / 50 = 72 s) longer than the CLI's
// round trips.
const fidelitySpeed = 50

// capabilities says what a target models beyond what both targets share.
type capabilities struct {
	name string
	// transitions: creating -> available, attaching -> attached,
	// pending -> completed, pending -> running take time and show.
	transitions bool
	// azRules: AttachVolume checks zones (InvalidVolume.ZoneMismatch) and
	// attachments (VolumeInUse).
	azRules bool
	// clientToken: CreateVolume's ClientToken is idempotent and
	// IdempotentParameterMismatch guards it.
	clientToken bool
	// lifecycle: lifecycle hooks hold instances in Pending:Wait and
	// Terminating:Wait; heartbeats and CompleteLifecycleAction move them.
	lifecycle bool
	// azBalance: an Auto Scaling group spreads its instances over its zones
	// and replaces unhealthy ones.
	azBalance bool
	// asgInstanceHealthUpper: DescribeAutoScalingInstances answers HEALTHY
	// (as AWS does) rather than Healthy.
	asgInstanceHealthUpper bool
	// asgValidation: CreateAutoScalingGroup refuses an existing name
	// (AlreadyExists) and SetInstanceHealth answers ValidationError for an
	// instance outside any group, as AWS does.
	asgValidation bool
	// instanceAZFilter: DescribeInstances honours the availability-zone filter.
	instanceAZFilter bool
	// gp3Defaults: a gp3 volume created without --iops/--throughput reports
	// AWS's baseline (3000 IOPS, 125 MiB/s); encrypted volumes name a KMS key.
	gp3Defaults bool
}

var (
	simCaps = capabilities{name: "sim", transitions: true, azRules: true, clientToken: true, lifecycle: true, azBalance: true, asgInstanceHealthUpper: true,
		asgValidation: true, instanceAZFilter: true, gp3Defaults: true}
	motoCaps = capabilities{name: "moto"}
)

// inCI reports whether missing tools must fail the test rather than skip it.
func inCI() bool { return os.Getenv("CI") == "true" }

// requireTool returns the path of a preinstalled tool. In CI a missing tool
// fails the test; elsewhere it skips with a clear message.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed (PATH=%s): the fidelity tests need it (AWS CLI: pip install awscli or apt install awscli; moto_server: pip install 'moto[server]')", name, os.Getenv("PATH"))
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return p
}

// startFidelitySim runs the simulated region in process.
func startFidelitySim(t *testing.T) *Region {
	t.Helper()
	return startRegion(t, Options{Speed: fidelitySpeed})
}

// awsCLI runs the AWS CLI against one endpoint with an isolated environment.
type awsCLI struct {
	t        *testing.T
	bin      string
	endpoint string
	env      []string
	calls    int
}

func newAWSCLI(t *testing.T, endpoint string) *awsCLI {
	return &awsCLI{t: t, bin: requireTool(t, "aws"), endpoint: endpoint, env: motoserver.Env(t)}
}

// run returns the parsed JSON output (nil when the command prints nothing),
// stderr and the exit code.
func (c *awsCLI) run(args ...string) (any, string, int) {
	c.t.Helper()
	c.calls++
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--endpoint-url", c.endpoint, "--output", "json"}, args...)
	cmd := exec.CommandContext(ctx, c.bin, full...)
	cmd.Env = c.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
	}
	var v any
	if s := bytes.TrimSpace(out.Bytes()); len(s) > 0 {
		if err := json.Unmarshal(s, &v); err != nil {
			c.t.Fatalf("aws %s: output is not JSON (%v):\n%s\nstderr: %s", strings.Join(args, " "), err, s, errb.String())
		}
	}
	return v, errb.String(), code
}

// ok runs a command that must succeed.
func (c *awsCLI) ok(args ...string) any {
	c.t.Helper()
	v, stderr, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("aws %s: exit %d: %s", strings.Join(args, " "), code, stderr)
	}
	return v
}

// fails runs a command that must fail with an AWS error code: the CLI exits
// 254 (v2) or 255 (v1) and names the code in stderr.
func (c *awsCLI) fails(wantCode string, args ...string) {
	c.t.Helper()
	v, stderr, code := c.run(args...)
	if code != 254 && code != 255 {
		c.t.Errorf("aws %s: want an error exit (254/255) with %s, got exit %d, output %v, stderr %s", strings.Join(args, " "), wantCode, code, v, stderr)
		return
	}
	if !strings.Contains(stderr, "("+wantCode+")") {
		c.t.Errorf("aws %s: want error code %s in stderr, got: %s", strings.Join(args, " "), wantCode, stderr)
	}
}

// jget walks parsed JSON: string keys index objects, ints index arrays.
// A missing step yields nil.
func jget(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			a, ok := v.([]any)
			if !ok || k < 0 || k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

func jstr(v any, path ...any) string {
	s, _ := jget(v, path...).(string)
	return s
}

func jlist(v any, path ...any) []any {
	a, _ := jget(v, path...).([]any)
	return a
}

func jnum(v any, path ...any) int {
	f, _ := jget(v, path...).(float64)
	return int(f)
}

// tagMap turns [{Key,Value}] into a map, dropping aws: keys (moto adds
// aws:ec2launchtemplate:*; AWS reserves the prefix for itself).
func tagMap(v any, keepAWS bool) map[string]string {
	out := map[string]string{}
	for _, t := range jlist(v) {
		k := jstr(t, "Key")
		if !keepAWS && strings.HasPrefix(k, "aws:") {
			continue
		}
		out[k] = jstr(t, "Value")
	}
	return out
}

// instancesOf flattens DescribeInstances output.
func instancesOf(v any) []any {
	var out []any
	for _, r := range jlist(v, "Reservations") {
		out = append(out, jlist(r, "Instances")...)
	}
	return out
}

func idsOf(items []any, key string) []string {
	var out []string
	for _, it := range items {
		out = append(out, jstr(it, key))
	}
	sort.Strings(out)
	return out
}

// fidelityBound limits each wait of the fidelity scenarios, which go through the CLI (a Python process
// per call) or moto.
const fidelityBound = time.Minute

// outcome records, per scenario step, the values both targets model. IDs,
// times and IPs are normalised by normalise before comparison.
type outcome struct {
	keys []string
	vals map[string]any
}

func (o *outcome) rec(key string, v any) {
	if o.vals == nil {
		o.vals = map[string]any{}
	}
	if _, dup := o.vals[key]; dup {
		panic("fidelity: outcome key recorded twice: " + key)
	}
	o.keys = append(o.keys, key)
	o.vals[key] = v
}

var (
	reID   = regexp.MustCompile(`\b(i|vol|snap|eipalloc|eipassoc|lt|r|eni|subnet|vpc)-[0-9a-f]{8,17}\b`)
	reTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$`)
	reIP   = regexp.MustCompile(`^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$`)
)

// normaliser maps each ID to a stable placeholder in order of first
// appearance across the scenario, so that "the volume restored from the
// snapshot of the volume attached to the first instance" compares equal on
// both targets even though the IDs differ.
type normaliser struct{ ids map[string]string }

func (n *normaliser) norm(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for _, k := range sortedKeys(x) {
			out[k] = n.norm(x[k])
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i := range x {
			out[i] = n.norm(x[i])
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i := range x {
			out[i] = n.norm(x[i])
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(x))
		for _, k := range sortedKeys(x) {
			out[k] = n.norm(x[k])
		}
		return out
	case string:
		switch {
		case reTime.MatchString(x):
			return "<time>"
		case reIP.MatchString(x):
			return "<ip>"
		}
		return reID.ReplaceAllStringFunc(x, func(id string) string {
			if n.ids == nil {
				n.ids = map[string]string{}
			}
			if p, ok := n.ids[id]; ok {
				return p
			}
			prefix, _, _ := strings.Cut(id, "-")
			count := 0
			for _, p := range n.ids {
				if strings.HasPrefix(p, "<"+prefix+"#") {
					count++
				}
			}
			n.ids[id] = fmt.Sprintf("<%s#%d>", prefix, count+1)
			return n.ids[id]
		})
	}
	return v
}

// normalised returns the outcome's values with IDs, times and IPs replaced.
func (o *outcome) normalised() map[string]any {
	var n normaliser
	out := map[string]any{}
	for _, k := range o.keys {
		out[k] = n.norm(o.vals[k])
	}
	return out
}

// compareOutcomes fails on every step whose normalised values differ, and
// on steps recorded by only one target.
func compareOutcomes(t *testing.T, a, b *outcome, aName, bName string) {
	t.Helper()
	na, nb := a.normalised(), b.normalised()
	for _, k := range a.keys {
		vb, ok := nb[k]
		if !ok {
			t.Errorf("step %q recorded by %s only", k, aName)
			continue
		}
		if !reflect.DeepEqual(na[k], vb) {
			ja, _ := json.Marshal(na[k])
			jb, _ := json.Marshal(vb)
			t.Errorf("step %q differs:\n  %s: %s\n  %s: %s", k, aName, ja, bName, jb)
		}
	}
	for _, k := range b.keys {
		if _, ok := na[k]; !ok {
			t.Errorf("step %q recorded by %s only", k, bName)
		}
	}
}

// TestFidelityCLI runs the AWS CLI scenario against the sim and against
// moto_server in parallel, then compares what both model.
func TestFidelityCLI(t *testing.T) {
	t.Parallel()
	requireTool(t, "aws")
	var simOut, motoOut *outcome
	t.Run("targets", func(t *testing.T) {
		t.Run("sim", func(t *testing.T) {
			t.Parallel()
			r := startFidelitySim(t)
			simOut = cliScenario(t, r.Endpoint(), simCaps)
			checkSimCallLog(t, r)
		})
		t.Run("moto", func(t *testing.T) {
			t.Parallel()
			motoOut = cliScenario(t, motoserver.Start(t), motoCaps)
		})
	})
	if simOut == nil || motoOut == nil {
		t.Skip("a target did not finish the scenario: nothing to compare")
	}
	compareOutcomes(t, simOut, motoOut, "sim", "moto")
}

// checkSimCallLog: every CLI request reached an implemented action, was
// attributed to the CLI's access key (SigV4 parsed) and the CLI's
// pagination really asked for several pages.
func checkSimCallLog(t *testing.T, r *Region) {
	t.Helper()
	describeVolumes := 0
	for _, c := range r.Calls() {
		if c.Code == "InvalidAction" || c.Code == "MissingAction" || c.Code == "InternalError" {
			t.Errorf("call log: %s answered %s", c.Action, c.Code)
		}
		if c.Caller != "AKIDFIDELITY" {
			t.Errorf("call log: %s from caller %q, want AKIDFIDELITY (the CLI's access key)", c.Action, c.Caller)
		}
		if c.Action == "DescribeVolumes" {
			describeVolumes++
		}
	}
	if describeVolumes == 0 {
		t.Error("call log: no DescribeVolumes recorded")
	}
}
