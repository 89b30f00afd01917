package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// syncBuffer lets the test read what serve prints while it runs.
type syncBuffer struct {
	ch chan string
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	select {
	case b.ch <- string(p):
	default:
	}
	return len(p), nil
}

func TestServeEnvKillCalls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	out := &syncBuffer{ch: make(chan string, 1)}
	done := make(chan int)
	// The state directory is made here, before the cleanup below is registered: cleanups run last in
	// first out, so serve has stopped (and Close has saved for the last time) before the directory is
	// removed. Made inside the goroutine, its removal ran first and raced the server's last save.
	state := t.TempDir()
	go func() {
		done <- run(ctx, []string{"serve", "--listen", "127.0.0.1:0", "--state", state, "--speed", "1000",
			"--fault-rate", "RebootInstances=0.5", "--log-format", "json"}, out, &bytes.Buffer{})
	}()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("serve exited %d", code)
		}
	})
	var endpoint string
	select {
	case endpoint = <-out.ch:
		endpoint = strings.TrimSpace(endpoint)
	case <-time.After(5 * time.Second):
		t.Fatal("serve printed no endpoint")
	}
	c := ec2.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("AKIDCLI", "s", "")})
	res, err := c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-1"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	id := *res.Instances[0].InstanceId

	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"env", id, "--endpoint", endpoint}, &stdout, &stderr); code != 0 {
		t.Fatalf("env: %d %s", code, stderr.String())
	}
	for _, want := range []string{"export AWS_ENDPOINT_URL_EC2='" + endpoint + "'", "export AWS_EC2_METADATA_SERVICE_ENDPOINT='http://127.0.0.1:",
		"export AWS_ACCESS_KEY_ID='AKID" + strings.ReplaceAll(id, "-", "") + "'", "export HANDOVER_DEV_DIR='"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("env output lacks %q:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if code := run(ctx, []string{"spot", id, "--endpoint", endpoint, "--in", "1h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("spot: %s", stderr.String())
	}
	if code := run(ctx, []string{"rebalance", id, "--endpoint", endpoint}, &stdout, &stderr); code != 0 {
		t.Fatalf("rebalance: %s", stderr.String())
	}
	if code := run(ctx, []string{"status-checks", id, "--endpoint", endpoint, "--system", "impaired"}, &stdout, &stderr); code != 0 {
		t.Fatalf("status-checks: %s", stderr.String())
	}
	if code := run(ctx, []string{"status-checks", id, "--endpoint", endpoint, "--instance", "broken"}, &stdout, &stderr); code != 1 {
		t.Fatalf("status-checks with a bad value should fail")
	}
	if code := run(ctx, []string{"kill", id, "--endpoint", endpoint}, &stdout, &stderr); code != 0 {
		t.Fatalf("kill: %s", stderr.String())
	}
	if code := run(ctx, []string{"kill", "i-0123456789abcdef0", "--endpoint", endpoint}, &stdout, &stderr); code != 1 {
		t.Fatalf("kill of an unknown instance should fail")
	}
	if code := run(ctx, []string{"calls", "--endpoint", endpoint}, &stdout, &stderr); code != 0 {
		t.Fatalf("calls: %s", stderr.String())
	}
	if !strings.Contains(stdout.String(), `"action": "RunInstances"`) || !strings.Contains(stdout.String(), `"caller": "AKIDCLI"`) {
		t.Fatalf("calls output:\n%s", stdout.String())
	}
	if code := run(ctx, []string{"bogus"}, &stdout, &stderr); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	if code := run(ctx, []string{"serve"}, &stdout, &stderr); code != 2 {
		t.Fatalf("serve without --state: %d", code)
	}
}

func TestServeReplacementFlags(t *testing.T) {
	o, _, _, err := serveFlags([]string{"--state", t.TempDir(), "--replacement-az", "same", "--replacement-launch", "after-gone"}, io.Discard)
	if err != nil || o.Replacement.AZ != "same" || o.Replacement.Launch != "after-gone" {
		t.Fatalf("serve flags: %+v %v", o.Replacement, err)
	}
	if o, _, _, err := serveFlags([]string{"--state", t.TempDir()}, io.Discard); err != nil || o.Replacement.AZ != "balance" || o.Replacement.Launch != "at-once" {
		t.Fatalf("defaults: %+v %v", o.Replacement, err)
	}
	if _, _, _, err := serveFlags([]string{"--state", t.TempDir(), "--replacement-az", "nearest"}, io.Discard); err == nil {
		t.Fatal("--replacement-az nearest accepted")
	}
	if code := run(context.Background(), []string{"serve", "--state", t.TempDir(), "--replacement-launch", "later"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("serve --replacement-launch later: exit %d, want 2", code)
	}
}
