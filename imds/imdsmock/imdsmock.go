// Package imdsmock starts AWS's instance metadata mock (amazon-ec2-metadata-mock, "AEMM") for a test, so
// that the imds package and its callers can be tested against IMDS as AWS models it rather than only
// against fakes of our own. It is for tests only: nothing outside _test.go files may import it.
//
// The mock runs as a separate process on 127.0.0.1 with a free port and IMDSv2 required (unless
// Config.TokensOptional), from a JSON config generated from Config (or from a committed file, see
// StartFile). The binary is looked up, in this order, in $EC2_METADATA_MOCK, in .tools/bin of the module
// root (where the pinned version is installed), and on PATH. When it is missing the test is skipped, or
// fails when CI=true.
//
// What the mock (v1.13.0) can and cannot model is noted on each Config field.
// https://github.com/aws/amazon-ec2-metadata-mock
package imdsmock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version is the mock version these helpers are written against.
const Version = "v1.13.0"

// BinaryEnv names the environment variable that points at the mock binary.
const BinaryEnv = "EC2_METADATA_MOCK"

const binaryName = "ec2-metadata-mock"

// installHint is how to get the binary, for the skip and failure messages.
const installHint = "GOBIN=$PWD/.tools/bin go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@" + Version

// readyBound is how long Start waits for the mock to answer. It starts in well under a second; the rest is
// room for a loaded CI machine.
const readyBound = 15 * time.Second

// Config is the instance the mock pretends to be. Empty fields take the defaults named on them.
type Config struct {
	// InstanceID, default "i-0123456789abcdef0". Served in the identity document and at instance-id.
	InstanceID string
	// Region, default "eu-west-1". Served in the identity document, which is where the SDK and handover
	// read it, and at placement/region.
	Region string
	// AvailabilityZone, default Region+"a". Served in the identity document and at
	// placement/availability-zone.
	AvailabilityZone string
	// AvailabilityZoneID such as "euw1-az1". Empty means placement/availability-zone-id is not served
	// (404), as on hosts that predate it.
	AvailabilityZoneID string
	// AccountID, default "111122223333"; InstanceType, default "t3.micro"; PrivateIP, default "10.0.0.10";
	// ImageID, default "ami-0123456789abcdef0". Served in the identity document.
	AccountID, InstanceType, PrivateIP, ImageID string

	// Tags are the instance tags under tags/instance. The mock serves at most two keys; Start fails the
	// test for more. No tags means tags/instance is not served at all (404), which reads as tags disabled
	// in metadata: the mock cannot serve an empty tag listing.
	Tags map[string]string

	// ASGTerminated makes autoscaling/target-lifecycle-state answer "Terminated" from the start; otherwise
	// it answers "InService". The mock serves no other state, and cannot model an instance outside an
	// Auto Scaling group (404): it always serves the path.
	ASGTerminated bool

	// Spot, when set, is served at spot/instance-action (and its time at spot/termination-time) from the
	// start; nil means no interruption is scheduled (404).
	Spot *SpotInterruption

	// RebalanceNotice, when non-zero, is served at events/recommendations/rebalance from the start; zero
	// means there is no recommendation (404).
	RebalanceNotice time.Time

	// TokensOptional makes the mock answer tokenless (IMDSv1) requests too, as an instance with
	// HttpTokens=optional does; by default it requires a token (HttpTokens=required). Either way it issues
	// tokens. A test of "never falls back to IMDSv1" needs this: a fallback would succeed here.
	TokensOptional bool
}

// SpotInterruption is a scheduled spot interruption.
type SpotInterruption struct {
	Action string    // "terminate", "stop" or "hibernate"; default "terminate"
	Time   time.Time // zero: the mock answers with the time of the request plus two minutes
}

// never is a delay, in seconds, past the life of any test: the mock's notices are all "scheduled after a
// delay", so a notice that must not appear is delayed by this much.
const never = 10 * 365 * 24 * 3600

// Start starts the mock for the test with cfg and returns its endpoint ("http://127.0.0.1:port"), for
// imds.Options.Endpoint. The mock is stopped when the test ends.
func Start(t testing.TB, cfg Config) string {
	t.Helper()
	doc, err := cfg.mockConfig()
	if err != nil {
		t.Fatalf("imdsmock: %v", err)
	}
	path := filepath.Join(t.TempDir(), "metadata-mock.json")
	if err := os.WriteFile(path, doc, 0o600); err != nil {
		t.Fatalf("imdsmock: %v", err)
	}
	return StartFile(t, path)
}

// StartFile starts the mock for the test with the mock config file at path (such as the committed example
// imds/testdata/metadata-mock.json) and returns its endpoint. Its server hostname and port are overridden:
// the mock always listens on 127.0.0.1 on a free port. The mock is stopped when the test ends.
func StartFile(t testing.TB, path string) string {
	t.Helper()
	bin := findBinary(t)
	checkVersion(t, bin)
	path, err := filepath.Abs(path) // the mock runs in a directory of its own
	if err != nil {
		t.Fatalf("imdsmock: %v", err)
	}

	// Picking a free port and handing it to another process can race with a third process taking it;
	// a mock that dies at once is started again on another port.
	var lastErr error
	for range 3 {
		endpoint, err := start(t, bin, path)
		if err == nil {
			return endpoint
		}
		if !errors.Is(err, errExited) {
			t.Fatalf("imdsmock: %v", err)
		}
		lastErr = err
	}
	t.Fatalf("imdsmock: %v", lastErr)
	return ""
}

var errExited = errors.New("ec2-metadata-mock exited")

func start(t testing.TB, bin, cfgPath string) (string, error) {
	t.Helper()
	port, err := freePort()
	if err != nil {
		return "", err
	}
	endpoint := "http://127.0.0.1:" + port

	out := &syncBuffer{}
	cmd := exec.Command(bin, "--config-file", cfgPath, "--hostname", "127.0.0.1", "--port", port)
	cmd.Env = mockEnv(t.TempDir())
	cmd.Dir = t.TempDir()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("starting %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}

	if err := waitReady(endpoint, exited); err != nil {
		stop()
		return "", fmt.Errorf("%w\nmock output (tail):\n%s", err, out.tail(4096))
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("ec2-metadata-mock at %s, output (tail):\n%s", endpoint, out.tail(8192))
		}
	})
	return endpoint, nil
}

// waitReady polls the token endpoint until the mock issues a token, the mock exits, or readyBound passes.
func waitReady(endpoint string, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyBound)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, endpoint+"/latest/api/token", nil)
		if err != nil {
			return err
		}
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("token request: HTTP %d", resp.StatusCode)
		}
		lastErr = err
		select {
		case <-exited:
			return fmt.Errorf("%w before answering at %s", errExited, endpoint)
		case <-ctx.Done():
			return fmt.Errorf("ec2-metadata-mock did not answer at %s within %s: %v", endpoint, readyBound, lastErr)
		case <-tick.C:
		}
	}
}

// findBinary returns the mock binary, or ends the test: skipped with install instructions, or failed
// under CI=true, where a missing mock must not pass silently.
func findBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("imdsmock: %s=%s: %v", BinaryEnv, p, err)
		}
		return p
	}
	var looked []string
	if root, err := moduleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "bin", binaryName)
		looked = append(looked, p)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	looked = append(looked, "PATH")
	if p, err := exec.LookPath(binaryName); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s %s not found (looked at $%s, %s); install it from the module root with:\n  %s",
		binaryName, Version, BinaryEnv, strings.Join(looked, ", "), installHint)
	if os.Getenv("CI") == "true" {
		t.Fatal("imdsmock: " + msg)
	}
	t.Skip("imdsmock: " + msg)
	return ""
}

// checkVersion fails the test when bin is not the pinned version: the mock's behaviour (which paths it
// serves, how it treats tokens) differs between releases, and a mismatch would surface as puzzling failures.
func checkVersion(t testing.TB, bin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--version")
	cmd.Env = mockEnv(t.TempDir())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("imdsmock: %s --version: %v", bin, err)
	}
	if got := strings.TrimSpace(string(out)); got != Version {
		t.Fatalf("imdsmock: %s is version %q, want %s; reinstall it with:\n  %s", bin, got, Version, installHint)
	}
}

// moduleRoot is the nearest directory at or above the working directory that holds go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// mockEnv is the environment for the mock: the caller's, without AEMM_* variables (the mock reads its
// config from them too), and with HOME in home so the mock never reads or writes the user's
// ~/aemm-config.json.
func mockEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(strings.ToUpper(kv), "AEMM_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, err := net.SplitHostPort(ln.Addr().String())
	return port, err
}

// mockConfig renders c as the mock's JSON config. The keys are the mock's own (pkg/config/types.go and
// pkg/mock/spot/config in its source); values not given here keep the mock's defaults.
func (c Config) mockConfig() ([]byte, error) {
	c = c.withDefaults()
	if len(c.Tags) > 2 {
		return nil, fmt.Errorf("%d tags configured; the mock serves at most two tag keys", len(c.Tags))
	}
	switch c.Spot.action() {
	case "terminate", "stop", "hibernate":
	default:
		return nil, fmt.Errorf("spot action %q: the mock accepts terminate, stop or hibernate", c.Spot.Action)
	}

	// The mock has exactly two tag slots, named after its default keys; each is a path and a value.
	// An empty path unregisters the slot.
	paths := map[string]string{"tags-instance-name": "", "tags-instance-test": ""}
	values := map[string]string{
		"instance-id":                 c.InstanceID,
		"instance-type":               c.InstanceType,
		"local-ipv4":                  c.PrivateIP,
		"ami-id":                      c.ImageID,
		"placement-availability-zone": c.AvailabilityZone,
		"placement-region":            c.Region,
	}
	if c.AvailabilityZoneID == "" {
		paths["placement-availability-zone-id"] = ""
	} else {
		values["placement-availability-zone-id"] = c.AvailabilityZoneID
	}
	keys := make([]string, 0, len(c.Tags))
	for k := range c.Tags {
		if k == "" || strings.ContainsAny(k, "/ ") {
			return nil, fmt.Errorf("tag key %q cannot be served in instance metadata", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		slot := []string{"tags-instance-name", "tags-instance-test"}[i]
		paths[slot] = "/latest/meta-data/tags/instance/" + k
		values[slot] = c.Tags[k]
	}

	doc := map[string]any{
		"imdsv2": !c.TokensOptional,
		// Notices appear after a delay counted from the mock's start: 0 means at once, never means not at all.
		"mock-delay-sec":            delay(c.Spot != nil),
		"rebalance-delay-sec":       delay(!c.RebalanceNotice.IsZero()),
		"asg-termination-delay-sec": delay(c.ASGTerminated),
		"spot":                      map[string]string{"action": c.Spot.action(), "time": rfc3339(c.Spot.time()), "rebalance-rec-time": rfc3339(c.RebalanceNotice)},
		"metadata":                  map[string]any{"paths": paths, "values": values},
		"dynamic": map[string]any{"values": map[string]any{"instance-identity-document": map[string]any{
			"accountId":        c.AccountID,
			"architecture":     "x86_64",
			"availabilityZone": c.AvailabilityZone,
			"imageId":          c.ImageID,
			"instanceId":       c.InstanceID,
			"instanceType":     c.InstanceType,
			"pendingTime":      "2025-01-01T00:00:00Z",
			"privateIp":        c.PrivateIP,
			"region":           c.Region,
			"version":          "2017-09-30",
		}}},
	}
	return json.MarshalIndent(doc, "", "  ")
}

func (c Config) withDefaults() Config {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.InstanceID, "i-0123456789abcdef0")
	def(&c.Region, "eu-west-1")
	def(&c.AvailabilityZone, c.Region+"a")
	def(&c.AccountID, "111122223333")
	def(&c.InstanceType, "t3.micro")
	def(&c.PrivateIP, "10.0.0.10")
	def(&c.ImageID, "ami-0123456789abcdef0")
	return c
}

// action is the configured action, "terminate" when none is (the mock validates it even while no
// interruption is scheduled).
func (s *SpotInterruption) action() string {
	if s == nil || s.Action == "" {
		return "terminate"
	}
	return s.Action
}

func (s *SpotInterruption) time() time.Time {
	if s == nil {
		return time.Time{}
	}
	return s.Time
}

func delay(now bool) int64 {
	if now {
		return 0
	}
	return never
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// syncBuffer collects the mock's output, written from the exec package's copying goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
