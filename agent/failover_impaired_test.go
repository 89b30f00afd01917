package agent

import (
	"strings"
	"testing"

	"github.com/handover/handover/internal/fail"
)

// A running primary whose status checks fail is not healthy: failover without --force moves the address
// to the standby. (A healthy primary is refused with exit 3: TestFailoverCLIRefusesHealthyPrimaryWithoutForce.)
func TestFailoverCLIMovesAddressFromImpairedPrimary(t *testing.T) {
	t.Parallel()
	w := newFailoverWorld(t)
	w.waitHealthy(w.primary)
	w.waitHealthy(w.standby)
	if err := w.sim.SetInstanceStatus(w.primary, "", "impaired"); err != nil {
		t.Fatal(err)
	}
	if got := w.state(w.primary); got != "running" {
		t.Fatalf("setup: primary is %s, want running", got)
	}
	w.sim.ResetCalls()

	res := w.failover("--group", w.group)
	if res.code != fail.CodeOK {
		t.Fatalf("failover exit %d, stderr:\n%s", res.code, res.stderr)
	}
	if got := w.addressHolder(w.alloc); got != w.standby {
		t.Errorf("address on %q, want the standby %s", got, w.standby)
	}
	if !strings.Contains(res.stdout, "moved Elastic IP") {
		t.Errorf("stdout %q: want the move reported", res.stdout)
	}
	if !strings.Contains(res.stdout+res.stderr, "instance=impaired") {
		t.Errorf("output does not say why the primary is not healthy:\nstdout %s\nstderr %s", res.stdout, res.stderr)
	}
	if n := failoverCalls(w.testRegion, "AssociateAddress"); n != 1 {
		t.Errorf("AssociateAddress called %d times, want 1", n)
	}
	if n := failoverCalls(w.testRegion, "StartInstances"); n != 0 {
		t.Errorf("StartInstances called %d times for a running standby", n)
	}
}
