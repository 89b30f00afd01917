package sim

import (
	"fmt"
	"time"
)

// Options for the EC2 rules AWS leaves open (see Options.TokenAcrossAZ and the fields after it).
const (
	TokenFirst = "first" // a ClientToken reused in another AZ returns the first volume, in its AZ
	TokenNew   = "new"   // a ClientToken reused in another AZ makes a new volume there

	defaultSnapshotInterval = 15 * time.Second
)

// checkRuleOptions fills in and checks the rule options of o.
func checkRuleOptions(o *Options) error {
	switch o.TokenAcrossAZ {
	case "":
		o.TokenAcrossAZ = TokenFirst
	case TokenFirst, TokenNew:
	default:
		return fmt.Errorf("sim: Options.TokenAcrossAZ %q: want %q or %q", o.TokenAcrossAZ, TokenFirst, TokenNew)
	}
	switch o.DetachBusyState {
	case "":
		o.DetachBusyState = "busy"
	case "busy", "detaching":
	default:
		return fmt.Errorf("sim: Options.DetachBusyState %q: want busy or detaching", o.DetachBusyState)
	}
	if o.SnapshotInterval == 0 {
		o.SnapshotInterval = defaultSnapshotInterval
	}
	return nil
}
