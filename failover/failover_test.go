package failover

import (
	"errors"
	"strings"
	"testing"

	"github.com/handover/handover/internal/fail"
)

func TestPickStandby(t *testing.T) {
	t.Parallel()
	live := MemberInstance{ID: "i-0000000000000000b", State: "stopped", Role: RoleStandby}
	gone := MemberInstance{ID: "i-0000000000000000c", State: "terminated", Role: RoleStandby}
	primary := MemberInstance{ID: "i-0000000000000000a", State: "running", Role: RolePrimary}
	for _, tc := range []struct {
		name    string
		members []MemberInstance
		want    string // the picked ID, or a fragment of the error
	}{
		{"one live standby", []MemberInstance{primary, gone, live}, live.ID},
		{"only a terminated standby", []MemberInstance{primary, gone}, "is terminated: launch a new standby"},
		{"none", []MemberInstance{primary}, "no instance is tagged"},
		{"two live", []MemberInstance{live, {ID: "i-0000000000000000d", State: "running", Role: RoleStandby}}, "2 instances of group db"},
	} {
		m, err := PickStandby("db", tc.members)
		got := m.ID
		if err != nil {
			got = err.Error()
			if fail.Code(err) != fail.CodePrecondition {
				t.Errorf("%s: exit code %d", tc.name, fail.Code(err))
			}
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRoleChangesPromoteTheTargetFirstAndSkipTerminated(t *testing.T) {
	t.Parallel()
	target := MemberInstance{ID: "i-0000000000000000b", State: "running", Role: RoleStandby}
	members := []MemberInstance{
		{ID: "i-0000000000000000a", State: "stopped", Role: RolePrimary},
		target,
		{ID: "i-0000000000000000c", State: "terminated", Role: RolePrimary},
	}
	got := RoleChanges(target, members)
	want := []RoleChange{{target.ID, RolePrimary}, {"i-0000000000000000a", RoleStandby}}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("change %d: got %v, want %v", i, got[i], want[i])
		}
	}
	target.Role = RolePrimary
	if got := RoleChanges(target, []MemberInstance{target, {ID: "i-0000000000000000a", State: "stopped", Role: RoleStandby}}); len(got) != 0 {
		t.Errorf("roles already swapped: got %v, want no change", got)
	}
}

func TestReasonErrKeepsExitCodeAndReason(t *testing.T) {
	t.Parallel()
	err := NotConcerned("instance i-0123456789abcdef0 has no handover:group tag")
	if fail.Code(err) != fail.CodePrecondition || !errors.Is(err, ErrNotConcerned) || errors.Is(err, ErrPrimaryHealthy) {
		t.Errorf("exit %d, is-not-concerned %v, is-primary-healthy %v", fail.Code(err), errors.Is(err, ErrNotConcerned), errors.Is(err, ErrPrimaryHealthy))
	}
	if err.Error() != "instance i-0123456789abcdef0 has no handover:group tag" {
		t.Errorf("message %q: the reason must not be appended to the operator's line", err.Error())
	}
}
