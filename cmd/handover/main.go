// Command handover keeps one stateful EC2 instance's Elastic IP and data volumes across instance
// replacements and Availability Zones. All of it lives in package agent; main only wires the process in.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/handover/handover/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := agent.Main(ctx, os.Args[1:], agent.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	os.Exit(code)
}
