package agent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
)

// Set at build time with -ldflags "-X github.com/handover/handover/agent.Version=... -X ...Commit=...".
var (
	Version = "dev"
	Commit  = "none"
)

// Env is what a command receives from the process: its environment (read through Getenv only) and its
// output streams. Tests build one by hand.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

// command is one subcommand of handover.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e Env, args []string) error
}

// commands is the table of subcommands, in the order `handover help` lists them. A command is listed only
// once it works.
var commands = []command{
	{name: "up", summary: "converge this instance: Elastic IP, volumes, filesystems, mounts, launch hook", run: runUp},
	{name: "down", summary: "hand over: pre-stop command, sync, snapshot, detach, complete the termination hook", run: onHost(downCommand)},
	{name: "watch", summary: "long-running: watch metadata for termination and Spot notices (run down once per event) and rebalance recommendations", run: runWatch},
	{name: "snapshot", summary: "a consistent snapshot of each slot's volume now, then retention (--keep N)", run: onHost(snapshotCommand)},
	{name: "status", summary: "read-only: identity, group, who holds the Elastic IP, volumes, snapshots, what up would do", run: runStatus},
	{name: "failover", summary: "move the group's Elastic IP to its standby, starting it if stopped", run: runFailover},
	{name: "iam-policy", summary: "print the least-privilege IAM policy (JSON) for the commands and options given", run: runIAMPolicy},
	{name: "version", summary: "print version, commit and Go version", run: runVersion},
}

// onHost runs a command that takes the filesystem calls with the kernel's (tests pass ones that hang).
func onHost(cmd func(context.Context, Env, []string, host.FSCalls) error) func(context.Context, Env, []string) error {
	return func(ctx context.Context, e Env, args []string) error { return cmd(ctx, e, args, host.FSCalls{}) }
}

func lookupCommand(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// Main runs handover with args (without the program name) and returns the exit code. It prints the
// error, one line that says what to fix, on stderr.
func Main(ctx context.Context, args []string, e Env) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.Stderr)
		if len(args) == 0 {
			return fail.CodeUsage
		}
		return fail.CodeOK
	}
	c, ok := lookupCommand(args[0])
	if !ok {
		fmt.Fprintf(e.Stderr, "handover: unknown command %q (run 'handover help' for the list)\n", args[0])
		return fail.CodeUsage
	}
	err := c.run(ctx, e, args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return fail.CodeOK
	}
	if err != nil {
		fmt.Fprintf(e.Stderr, "handover %s: %s\n", c.name, errorLine(err))
	}
	return ExitCode(err)
}

// errorLine is the one line a failed command prints after its name. A call the IAM role does not allow is
// told as such, whatever step made it: the action to add, and AWS's words (cloud.DeniedError).
func errorLine(err error) string {
	if d := cloud.DeniedIn(err); d != nil && deniedExit(err) {
		return fail.OneLine(d.Error())
	}
	return fail.OneLine(err.Error())
}

// deniedExit reports whether err ends the command because the IAM role refused a call: exit 3, a
// precondition (the role must change; a rerun fails the same way, so nothing retries it). A lost race
// stays exit 4 even when a refused call is in its chain: that another instance won is what matters.
func deniedExit(err error) bool { return cloud.IsDenied(err) && fail.Code(err) != fail.CodeFenced }

// ExitCode maps an error to the process exit code (DESIGN.md): fail.Code, and 3 for metadata that did not
// answer at all and for a call the IAM role does not allow.
func ExitCode(err error) int {
	if errors.Is(err, imds.ErrUnreachable) || deniedExit(err) {
		return fail.CodePrecondition
	}
	return fail.Code(err)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "handover: keep one stateful EC2 instance's Elastic IP and data across instances and AZs.")
	fmt.Fprintln(w, "\nusage: handover COMMAND [flags]   (handover COMMAND --help for its flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nexit codes: 0 done, 1 failed while acting (rerun converges), 2 usage, 3 precondition not met, 4 lost a race")
}

func runVersion(_ context.Context, e Env, args []string) error {
	if len(args) > 0 {
		return fail.Usage("version takes no arguments")
	}
	fmt.Fprintf(e.Stdout, "handover %s (commit %s, %s, %s/%s)\n", Version, Commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
