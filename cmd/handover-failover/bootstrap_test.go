package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/handover/handover/failover"
)

// TestBootstrapAnswersAnInvocation builds the function as `make lambda` does and runs it as Lambda would:
// a Runtime API (here a fake on 127.0.0.1) hands it one event, and the AWS endpoints are the simulator's.
// It covers what the handler tests cannot: main's configuration from the environment, the client wiring and
// the aws-lambda-go runtime loop built with -tags lambda.norpc.
// https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html
func TestBootstrapAnswersAnInvocation(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "bootstrap")
	build := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	w := newRegion(t)
	w.stop(w.primary)
	ev := event(t, "ec2-state-stopped.json", w.primary)

	const requestID = "8476a536-e9f4-11e8-9739-2dfe598c3fcd"
	results := make(chan string, 4)
	stop := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", func(rw http.ResponseWriter, r *http.Request) {
		first := false
		once.Do(func() { first = true })
		if !first { // one invocation only: hold the next poll until the test ends
			select {
			case <-stop:
			case <-r.Context().Done():
			}
			return
		}
		rw.Header().Set("Lambda-Runtime-Aws-Request-Id", requestID)
		rw.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10))
		rw.Header().Set("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:123456789012:function:handover-failover")
		rw.Header().Set("Lambda-Runtime-Trace-Id", "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1")
		_, _ = rw.Write(ev)
	})
	record := func(kind string) http.HandlerFunc {
		return func(rw http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			results <- kind + " " + string(b)
			rw.WriteHeader(http.StatusAccepted)
		}
	}
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/"+requestID+"/response", record("response"))
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/"+requestID+"/error", record("error"))
	mux.HandleFunc("POST /2018-06-01/runtime/init/error", record("init-error"))
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	fn := exec.CommandContext(ctx, bin)
	fn.Env = []string{
		"AWS_LAMBDA_RUNTIME_API=" + api.Listener.Addr().(*net.TCPAddr).String(),
		"AWS_REGION=us-east-1",
		"AWS_ENDPOINT_URL_EC2=" + w.sim.Endpoint(),
		"AWS_ENDPOINT_URL_AUTO_SCALING=" + w.sim.Endpoint(),
		"AWS_ACCESS_KEY_ID=AKIDLAMBDAROLE",
		"AWS_SECRET_ACCESS_KEY=secret",
		"AWS_SESSION_TOKEN=token",
		"AWS_EC2_METADATA_DISABLED=true",
		"HOME=" + t.TempDir(),
		"HANDOVER_MAX_EVENT_AGE=0",
	}
	logs := &lockedBuffer{}
	fn.Stdout, fn.Stderr = logs, logs
	if err := fn.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		close(stop)
		_ = fn.Process.Kill()
		_ = fn.Wait()
		if t.Failed() || testing.Verbose() {
			t.Logf("bootstrap output:\n%s", logs.String())
		}
	})

	var got string
	select {
	case got = <-results:
	case <-ctx.Done():
		t.Fatalf("no answer from bootstrap within the bound")
	}
	var out Outcome
	kind, body, _ := strings.Cut(got, " ")
	if kind != "response" || json.Unmarshal([]byte(body), &out) != nil {
		t.Fatalf("bootstrap answered %s", got)
	}
	if out.Action != failover.Moved || out.Result == nil || out.Result.Target != w.standby {
		t.Errorf("outcome %+v: want moved to %s", out, w.standby)
	}
	if h := w.holder(); h != w.standby {
		t.Errorf("address on %q, want %s", h, w.standby)
	}
}

// lockedBuffer collects a child process's output; the process writes while the test may read.
type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}
