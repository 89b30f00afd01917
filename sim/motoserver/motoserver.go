// Package motoserver starts moto_server, a third-party AWS emulator (EC2 and Auto Scaling among
// others), for a test, so that code can be checked against a model of AWS nobody here wrote. It is for
// tests only: nothing outside _test.go files may import it.
//
// moto_server runs as a separate process on 127.0.0.1 with a free port, in an environment without the
// caller's AWS settings or proxies. It is looked up on PATH (pip install 'moto[server]'); when it is
// missing the test is skipped, or fails when CI=true.
// https://docs.getmoto.org/en/latest/docs/server_mode.html
package motoserver

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const binaryName = "moto_server"

// readyBound is how long Start waits for moto_server to answer.
const readyBound = 30 * time.Second

// Start runs moto_server on a free 127.0.0.1 port, waits until it answers a reset, and returns its
// endpoint ("http://127.0.0.1:port"). Its whole process group is killed when the test ends.
func Start(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(binaryName)
	if err != nil {
		msg := fmt.Sprintf("%s is not installed (PATH=%s): pip install 'moto[server]'", binaryName, os.Getenv("PATH"))
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	var out bytes.Buffer // read only once moto_server has exited: the exec package writes it until then
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", fmt.Sprint(port))
	cmd.Env = Env(t)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	t.Cleanup(stop)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(readyBound)
	for {
		if err := Reset(endpoint); err == nil {
			return endpoint
		}
		select {
		case <-exited:
			t.Fatalf("moto_server exited before answering:\n%s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("moto_server did not answer on %s within %s:\n%s", endpoint, readyBound, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Reset empties moto_server's state (POST /moto-api/reset).
func Reset(endpoint string) error {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Post(endpoint+"/moto-api/reset", "application/json", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("moto reset: %s", resp.Status)
	}
	return nil
}

// Env is the environment moto_server runs in, and suits any other AWS tool pointed at a local endpoint
// (such as the AWS CLI): the caller's environment without AWS settings or proxies, plus dummy
// credentials, a region, empty config files and IMDS disabled, so nothing reaches the internet or a real
// account.
func Env(t testing.TB) []string {
	t.Helper()
	dir := t.TempDir()
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		lk := strings.ToLower(k)
		if strings.HasPrefix(k, "AWS_") || strings.HasSuffix(lk, "_proxy") || lk == "http_proxy" {
			continue
		}
		env = append(env, kv)
	}
	return append(env,
		"AWS_ACCESS_KEY_ID=AKIDFIDELITY", "AWS_SECRET_ACCESS_KEY=fidelity-secret",
		"AWS_DEFAULT_REGION=us-east-1", "AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE="+filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_MAX_ATTEMPTS=1", "AWS_PAGER=",
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost",
	)
}
