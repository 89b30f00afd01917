package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/handover/handover/failover"
	"github.com/handover/handover/internal/fail"
)

// `handover failover`: the CLI face of the failover package, which the Lambda shares.

// runFailover is `handover failover`. It runs anywhere with credentials and a region (an operator's shell,
// a script, the standby itself): it needs no instance metadata.
func runFailover(ctx context.Context, e Env, args []string) error {
	var r failover.Request
	st, err := start(ctx, e, args, startSpec{name: "failover", imdsTimeout: 5 * time.Second, dryRun: true, noInstance: true,
		declare: func(f *flags) { declareFailover(&r, f) }, validate: func() error { return checkFailoverTimeouts(&r) }})
	if err != nil {
		return err
	}
	r.Group, r.DryRun = st.group, st.dryRun
	if err := r.Validate(); err != nil {
		return err
	}
	if st.clients.Region == "" {
		return fail.Usage("no AWS region: set AWS_REGION (or a region in the shared AWS config)")
	}
	res, err := failover.Run(ctx, st.log, st.clients, r)
	if err != nil {
		return err
	}
	printFailover(e.Stdout, res)
	return nil
}

// declareFailover declares failover's flags into r.
func declareFailover(r *failover.Request, f *flags) {
	f.fs.Lookup("group").Usage = "handover group whose Elastic IP moves (default: the group of --to or --from)"
	f.fs.StringVar(&r.To, "to", "", "target instance ID (default: the group's instance tagged handover:role=standby)")
	f.fs.StringVar(&r.From, "from", "", "the failed primary: move the address only away from it (what the Lambda does for an event)")
	f.fs.BoolVar(&r.Force, "force", false, "move the address even when its holder is running with status checks ok")
	f.fs.BoolVar(&r.WaitStatusOK, "wait-status-ok", false, "after the target runs, wait until both its status checks pass before moving the address")
	f.fs.BoolVar(&r.SwapRoles, "swap-roles", false, "then tag the target handover:role=primary and the old primary standby, so the next failover goes back")
	f.fs.DurationVar(&r.StartTimeout, "start-timeout", failover.DefaultStartTimeout, "how long to wait for a stopped target to be running")
	f.fs.DurationVar(&r.StatusTimeout, "status-timeout", failover.DefaultStatusTimeout, "with --wait-status-ok, how long to wait for the status checks")
}

// checkFailoverTimeouts: the CLI's bounds must be positive (the Lambda's zero means its default).
func checkFailoverTimeouts(r *failover.Request) error {
	if r.StartTimeout <= 0 {
		return badOption("start-timeout", "must be positive")
	}
	if r.StatusTimeout <= 0 {
		return badOption("status-timeout", "must be positive")
	}
	return nil
}

// printFailover writes the result for the operator, one line (a plan has one line per step).
func printFailover(w io.Writer, res failover.Result) {
	ip := fmt.Sprintf("%s (%s)", res.PublicIP, res.AllocationID)
	switch res.Action {
	case failover.Planned:
		fmt.Fprintf(w, "failover plan for group %s (dry run, nothing changed):\n", res.Group)
		for i, step := range res.Plan {
			fmt.Fprintf(w, "  %d. %s\n", i+1, step)
		}
		return
	case failover.NothingToDo:
		fmt.Fprintf(w, "nothing to do: %s\n", res.Reason)
		return
	case failover.Already:
		fmt.Fprintf(w, "Elastic IP %s is already on %s", ip, res.Target)
	default:
		if res.Previous == "" {
			fmt.Fprintf(w, "moved Elastic IP %s to %s (it was not associated)", ip, res.Target)
		} else {
			fmt.Fprintf(w, "moved Elastic IP %s from %s to %s", ip, res.Previous, res.Target)
		}
	}
	if res.Started {
		fmt.Fprintf(w, "; started %s", res.Target)
	}
	if res.RolesSwapped {
		fmt.Fprintf(w, "; %s is now the primary", res.Target)
	}
	fmt.Fprintln(w)
}
