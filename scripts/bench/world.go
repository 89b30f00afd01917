package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/sim"
)

// A world is one scenario's simulated region on disk. It is built fast (Speed setupSpeed: the setup is not
// what is measured), closed, and opened again with the measured options, so the measured run starts
// from a settled region whose clock, jitter and latency are the benchmark's (sim.Region's Close+New+Start
// resumes a saved state).

// setupSpeed divides the simulator's delays while a world is built.
const setupSpeed = 100

// adminKey is the access key the harness calls the API with; the call log tells it from the instances'.
const adminKey = "AKIDBENCHADMIN"

type region struct {
	r   *sim.Region
	ec2 *ec2.Client
}

func openRegion(stateDir string, o sim.Options) (*region, error) {
	o.StateDir = stateDir
	o.SaveInterval = 5 * time.Second // thousands of resources in the mass recovery; Close saves the rest
	r, err := sim.New(o)
	if err != nil {
		return nil, err
	}
	if err := r.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	cfg := aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(adminKey, "secret", "")}
	c := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		o.BaseEndpoint = aws.String(r.Endpoint())
		o.RetryMaxAttempts = 10 // setup calls ride out throttling when it is on
	})
	return &region{r: r, ec2: c}, nil
}

func (g *region) close() error { return g.r.Close() }

func (g *region) idle(ctx context.Context) error { return g.r.WaitIdle(ctx) }

// runInstance launches an instance tagged for group in az (tags in metadata, IMDSv2 required) and returns
// its ID without waiting for it to run.
func (g *region) runInstance(ctx context.Context, az, group string) (string, error) {
	out, err := g.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeM6iLarge,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		Placement: &ec2types.Placement{AvailabilityZone: aws.String(az)},
		MetadataOptions: &ec2types.InstanceMetadataOptionsRequest{
			HttpTokens: ec2types.HttpTokensStateRequired, InstanceMetadataTags: ec2types.InstanceMetadataTagsStateEnabled,
		},
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeInstance, map[string]string{cloud.TagGroup: group}),
	})
	if err != nil {
		return "", fmt.Errorf("RunInstances in %s: %w", az, err)
	}
	return aws.ToString(out.Instances[0].InstanceId), nil
}

func (g *region) allocateAddress(ctx context.Context, group string) (string, error) {
	out, err := g.ec2.AllocateAddress(ctx, &ec2.AllocateAddressInput{
		Domain:            ec2types.DomainTypeVpc,
		TagSpecifications: cloud.TagSpec(ec2types.ResourceTypeElasticIp, map[string]string{cloud.TagGroup: group}),
	})
	if err != nil {
		return "", fmt.Errorf("AllocateAddress: %w", err)
	}
	return aws.ToString(out.AllocationId), nil
}

func (g *region) addressHolder(ctx context.Context, alloc string) (string, error) {
	out, err := g.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{alloc}})
	if err != nil {
		return "", err
	}
	if len(out.Addresses) != 1 {
		return "", fmt.Errorf("address %s: %d found", alloc, len(out.Addresses))
	}
	return aws.ToString(out.Addresses[0].InstanceId), nil
}

func (g *region) terminate(ctx context.Context, ids ...string) error {
	_, err := g.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids})
	return err
}

// proc is one process the harness ran: how long it took from exec to exit, its exit code, its peak
// resident set (the largest of the process and every descendant it waited for: for a shell script, its
// largest command), and what it printed.
type proc struct {
	Wall     time.Duration
	Code     int
	MaxRSSKB int64
	Stdout   string
	Stderr   string
	Start    time.Time
}

// rssWrapper is GNU time, which measures a process's peak RSS as its own: the rusage of a child of this
// harness is not. Go starts a child with clone(CLONE_VM|CLONE_VFORK), so until it execs it runs in the
// harness's memory, and execve keeps the larger of that memory's high-water mark and the new one in the
// process's ru_maxrss (kernel: setmax_mm_hiwater_rss at exec): every child reported at least the
// harness's own peak (339 MiB after the mass section: the "converged rerun" figure of an earlier run).
// time fork()s, so its child starts from time's small memory. "" when it is not installed: then the
// figures are the rusage, an upper bound, and the report says so.
var rssWrapper = ""

func init() {
	if _, err := os.Stat("/usr/bin/time"); err == nil {
		rssWrapper = "/usr/bin/time"
	}
}

// run execs argv with exactly env (plus PATH and HOME) and waits for it, its peak RSS measured by
// rssWrapper.
func run(ctx context.Context, env map[string]string, argv ...string) proc {
	if rssWrapper == "" {
		return runBare(ctx, env, argv...)
	}
	f, err := os.CreateTemp("", "bench-rss-")
	if err != nil {
		return runBare(ctx, env, argv...)
	}
	f.Close()
	defer os.Remove(f.Name())
	p := runBare(ctx, env, append([]string{rssWrapper, "-q", "-f", "%M", "-o", f.Name()}, argv...)...)
	p.MaxRSSKB = 0
	if b, err := os.ReadFile(f.Name()); err == nil {
		fields := strings.Fields(string(b))
		if len(fields) > 0 {
			fmt.Sscan(fields[len(fields)-1], &p.MaxRSSKB)
		}
	}
	return p
}

// runBare is run without the wrapper: for timing from exec (the wrapper's own fork and exec would count).
func runBare(ctx context.Context, env map[string]string, argv ...string) proc {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Its own process group, killed whole when ctx ends (the wrapper's child with it).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "LANG=C"}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+env[k])
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	p := proc{Start: time.Now()}
	err := cmd.Run()
	p.Wall = time.Since(p.Start)
	p.Stdout, p.Stderr = stdout.String(), stderr.String()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		p.Code = ee.ExitCode()
	default:
		p.Code = -1
		p.Stderr += "\nexec: " + err.Error()
	}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			p.MaxRSSKB = ru.Maxrss
		}
	}
	return p
}

// instanceEnv is what a process acting as instance id sees: the simulator's endpoints and the instance's
// credentials, IMDS and device directories (sim.Region.InstanceEnv), its own lock file.
func (g *region) instanceEnv(id, dir string) (map[string]string, error) {
	env, err := g.r.InstanceEnv(id)
	if err != nil {
		return nil, err
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(dir, "locks", id+".lock")
	env["AWS_DEFAULT_REGION"] = "us-east-1"
	return env, nil
}

// mountPoint is where instance id mounts the slot in a world under dir.
func mountPoint(dir, id string) string { return filepath.Join(dir, "mnt", id, "data") }

func unitDir(dir, id string) string { return filepath.Join(dir, "units", id) }

// upArgs is `handover up` for one 1 GiB slot, as the benchmarks run it.
func upArgs(bin, dir, id string, extra ...string) []string {
	return append([]string{bin, "up", "--size", "1", "--volume", "data:/dev/sdf:" + mountPoint(dir, id), "--unit-dir", unitDir(dir, id)}, extra...)
}

// writeData writes size random bytes to name under mnt, syncs, and returns their digest.
func writeData(mnt, name string, size int) ([32]byte, error) {
	b := make([]byte, size)
	_, _ = rand.Read(b)
	f, err := os.Create(filepath.Join(mnt, name))
	if err != nil {
		return [32]byte{}, err
	}
	if _, err := f.Write(b); err != nil {
		_ = f.Close()
		return [32]byte{}, err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return [32]byte{}, err
	}
	return sha256.Sum256(b), f.Close()
}

func readDigest(path string) ([32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// unmountUnder unmounts every mount below dir, deepest first (lazily: the region detaches the loop
// devices right after).
func unmountUnder(dir string) {
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

// waitState polls an instance until it is in want.
func (g *region) waitState(ctx context.Context, id, want string) error {
	for {
		out, err := g.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{id}})
		if err == nil && len(out.Reservations) > 0 && len(out.Reservations[0].Instances) > 0 &&
			string(out.Reservations[0].Instances[0].State.Name) == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("instance %s did not become %s: %w", id, want, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
