package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// testRegion is a simulated region for one test, with admin clients to build the world through the
// ordinary API, and a way to run the agent as any of its instances.
type testRegion struct {
	t   testing.TB
	sim *sim.Region
	ec2 *ec2.Client
	as  *autoscaling.Client
	dir string
	lag time.Duration // the region's consistency delay (Faults.ConsistencyDelay), for settle
	// transcript, when set, gets everything the agent runs of runAgent and startAgent print (the
	// enforced IAM test reads what handover said about a refused call).
	transcript *syncBuffer
}

// tee is w where the transcript, if any, gets a copy.
func (w *testRegion) tee(out io.Writer) io.Writer {
	if w.transcript == nil {
		return out
	}
	return io.MultiWriter(out, w.transcript)
}

// waitBound limits every wait of these tests for a state of the simulated region: a wedged test fails,
// a slow machine does not.
const waitBound = time.Minute

// testSpeed makes the simulator's AWS-like delays (2 s create, 20 s snapshot, ...) 100 times shorter.
const testSpeed = 100

func newTestRegion(t testing.TB, opts ...func(*sim.Options)) *testRegion {
	t.Helper()
	dir := t.TempDir()
	o := sim.Options{StateDir: filepath.Join(dir, "sim"), Speed: testSpeed, Seed: 1}
	for _, fn := range opts {
		fn(&o)
	}
	r, err := sim.New(o)
	if err != nil {
		t.Fatalf("sim.New: %v", err)
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("sim start: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("AKIDADMIN", "secret", ""),
	}
	return &testRegion{
		t:   t,
		sim: r,
		dir: dir,
		lag: o.Faults.ConsistencyDelay,
		ec2: ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
		as:  autoscaling.NewFromConfig(cfg, func(o *autoscaling.Options) { o.BaseEndpoint = aws.String(r.Endpoint()) }),
	}
}

func (w *testRegion) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	w.t.Cleanup(cancel)
	return ctx
}

// runInstance launches a running instance in az with tags (exposed in metadata unless tagsInIMDS is false).
func (w *testRegion) runInstance(az string, tags map[string]string, tagsInIMDS bool) string {
	w.t.Helper()
	md := ec2types.InstanceMetadataTagsStateEnabled
	if !tagsInIMDS {
		md = ec2types.InstanceMetadataTagsStateDisabled
	}
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String("ami-0123456789abcdef0"),
		InstanceType: ec2types.InstanceTypeM6iLarge,
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
		Placement:    &ec2types.Placement{AvailabilityZone: aws.String(az)},
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens:           ec2types.HttpTokensStateRequired,
			InstanceMetadataTags: md,
		},
	}
	if len(tags) > 0 {
		in.TagSpecifications = cloud.TagSpec(ec2types.ResourceTypeInstance, tags)
	}
	out, err := w.ec2.RunInstances(w.ctx(), in)
	if err != nil {
		w.t.Fatalf("RunInstances: %v", err)
	}
	id := aws.ToString(out.Instances[0].InstanceId)
	w.waitInstanceState(id, "running")
	return id
}

func (w *testRegion) waitInstanceState(id, want string) {
	w.t.Helper()
	simtest.Eventually(w.t, waitBound, "instance "+id+" "+want, func() (bool, string) {
		out, err := w.ec2.DescribeInstances(w.ctx(), &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err != nil || len(out.Reservations) == 0 || len(out.Reservations[0].Instances) == 0 {
			return false, fmt.Sprintf("DescribeInstances: %v", err)
		}
		got := string(out.Reservations[0].Instances[0].State.Name)
		return got == want, "state " + got
	})
}

// allocateAddress allocates an Elastic IP tagged for group and returns its allocation ID.
func (w *testRegion) allocateAddress(group string) string {
	w.t.Helper()
	out, err := w.ec2.AllocateAddress(w.ctx(), &ec2.AllocateAddressInput{
		Domain:            ec2types.DomainTypeVpc,
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeElasticIp, map[string]string{cloud.TagGroup: group}),
	})
	if err != nil {
		w.t.Fatalf("AllocateAddress: %v", err)
	}
	return aws.ToString(out.AllocationId)
}

// addressHolder returns the instance the allocation is associated with ("" when free).
func (w *testRegion) addressHolder(alloc string) string {
	w.t.Helper()
	out, err := w.ec2.DescribeAddresses(w.ctx(), &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
	if err != nil || len(out.Addresses) != 1 {
		w.t.Fatalf("DescribeAddresses %s: %v", alloc, err)
	}
	return aws.ToString(out.Addresses[0].InstanceId)
}

// agentResult is one run of handover as an instance.
type agentResult struct {
	code           int
	stdout, stderr string
}

// agentEnv is the environment handover sees when run as instance id: the simulator's endpoints, the
// instance's credentials and device directories, and a per-instance lock file.
func (w *testRegion) agentEnv(id string, extra map[string]string) func(string) string {
	w.t.Helper()
	env, err := w.sim.InstanceEnv(id)
	if err != nil {
		w.t.Fatalf("InstanceEnv %s: %v", id, err)
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(w.dir, "locks", id+".lock")
	for k, v := range extra {
		env[k] = v
	}
	var mu sync.Mutex
	return func(k string) string {
		mu.Lock()
		defer mu.Unlock()
		return env[k]
	}
}

// runAgent runs `handover args...` as instance id, in process, with the real agent code.
func (w *testRegion) runAgent(ctx context.Context, id string, extra map[string]string, args ...string) agentResult {
	w.t.Helper()
	var stdout, stderr bytes.Buffer
	code := Main(ctx, args, Env{Getenv: w.agentEnv(id, extra), Stdout: w.tee(&stdout), Stderr: w.tee(&stderr)})
	res := agentResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
	if testing.Verbose() {
		w.t.Logf("handover %s as %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), id, code, res.stdout, res.stderr)
	}
	return res
}

// mutatingCalls counts the mutating API calls the simulator logged since the last ResetCalls.
func (w *testRegion) mutatingCalls() []string {
	var out []string
	for _, c := range w.sim.Calls() {
		if c.Mutating {
			out = append(out, c.Action)
		}
	}
	return out
}
