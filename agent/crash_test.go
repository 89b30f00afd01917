package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Crashes: handover killed with SIGKILL part way, as the OOM killer, a kernel panic on another CPU or an
// operator's kill -9 would. The run cannot clean up after itself, so the agent runs in a process of its
// own: this test binary again, running agent.Main (TestHelperHandoverProcess), with the environment of one
// simulated instance and nothing of the test process's own environment.

// childEnvVar marks the test binary started as handover.
const childEnvVar = "HANDOVER_TEST_CHILD_ARGS"

// TestHelperHandoverProcess is not a test: it is handover's main when the test binary is started by
// startAgentProcess, and does nothing otherwise.
func TestHelperHandoverProcess(t *testing.T) {
	raw := os.Getenv(childEnvVar)
	if raw == "" {
		return
	}
	var args []string
	if err := json.Unmarshal([]byte(raw), &args); err != nil {
		os.Exit(99)
	}
	os.Exit(Main(context.Background(), args, Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr}))
}

// agentProcess is handover running in a process of its own.
type agentProcess struct {
	cmd            *exec.Cmd
	stdout, stderr syncBuffer
	done           chan struct{}
	err            error // Wait's, once done is closed
}

// startAgentProcess starts `handover args...` as instance id in its own process. extra overrides or adds
// environment variables; PATH is the test's unless extra sets it.
func (w *testRegion) startAgentProcess(id string, extra map[string]string, args ...string) *agentProcess {
	w.t.Helper()
	env, err := w.sim.InstanceEnv(id)
	if err != nil {
		w.t.Fatalf("InstanceEnv %s: %v", id, err)
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(w.dir, "locks", id+".lock")
	env["PATH"] = os.Getenv("PATH")
	for k, v := range extra {
		env[k] = v
	}
	raw, _ := json.Marshal(args)
	env[childEnvVar] = string(raw)
	p := &agentProcess{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperHandoverProcess$", "-test.count=1")
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		w.t.Fatalf("start handover %v: %v", args, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	w.t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if testing.Verbose() {
			w.t.Logf("handover %v in its own process as %s: %v\nstdout:\n%s\nstderr:\n%s", args, id, p.err, p.stdout.String(), p.stderr.String())
		}
	})
	return p
}

// kill ends the process with SIGKILL and waits for it to be gone.
func (p *agentProcess) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// (syncBuffer, watch_test.go, takes the process's output.)

// ec2Stall is a proxy in front of the simulator's endpoint that never answers one action: the calls of it
// are announced on reached and held until the caller gives up (or dies). Everything else passes through.
type ec2Stall struct {
	action  string
	reached chan struct{}
	once    sync.Once
	proxy   *httputil.ReverseProxy
}

func (w *testRegion) stallEC2Action(action string) (endpoint string, reached <-chan struct{}) {
	w.t.Helper()
	u, err := url.Parse(w.sim.Endpoint())
	if err != nil {
		w.t.Fatal(err)
	}
	s := &ec2Stall{action: action, reached: make(chan struct{}), proxy: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(s)
	w.t.Cleanup(srv.Close)
	w.t.Cleanup(srv.CloseClientConnections)
	return srv.URL, s.reached
}

func (s *ec2Stall) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if strings.Contains(string(body), "Action="+s.action+"&") || strings.HasSuffix(string(body), "Action="+s.action) {
		s.once.Do(func() { close(s.reached) })
		<-r.Context().Done()
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	s.proxy.ServeHTTP(w, r)
}
