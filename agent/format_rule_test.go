package agent

import (
	"strings"
	"testing"

	"github.com/handover/handover/host"
)

// TestDecideFormat is the rule of filesystem.go (when handover formats) as a table: every combination of
// what the device holds and what the volume's tags record, and what handover does with it.
func TestDecideFormat(t *testing.T) {
	t.Parallel()
	var (
		none    = host.Signature{}
		ext4    = host.Signature{Type: "ext4", UUID: "u", Usage: "filesystem"}
		luks    = host.Signature{Type: "crypto_LUKS", Usage: "crypto"}
		gpt     = host.Signature{PTType: "gpt"}
		created = blankState{CreatedBlank: true}
		mkfs    = blankState{CreatedBlank: true, Formatting: true}
		out     = blankState{CreatedBlank: true, HandedOut: true}
		outMkfs = blankState{CreatedBlank: true, Formatting: true, HandedOut: true}
		restore = blankState{}
	)
	tests := []struct {
		name string
		sig  host.Signature
		b    blankState
		want formatAction
		why  string // part of the refusal
	}{
		{"blank, never handed out, nothing on it: make one (after the byte check)", none, created, makeFresh, ""},
		{"blank, our mkfs interrupted, no signature: make again", none, mkfs, makeAgain, ""},
		{"blank, our mkfs interrupted, a signature of it: make again (it may be half made)", ext4, mkfs, makeAgain, ""},
		{"blank, handed out raw, no filesystem: never", none, out, refuse, "handed it out before"},
		{"blank, handed out after our mkfs, filesystem gone: never", none, outMkfs, refuse, "handed it out before"},
		{"blank, handed out, a filesystem: mount it", ext4, out, useAsIs, ""},
		{"blank, handed out after our mkfs, a filesystem: mount it", ext4, outMkfs, useAsIs, ""},
		{"blank, a filesystem someone else made: mount it", ext4, created, useAsIs, ""},
		{"restored, no filesystem: never", none, restore, refuse, "did not create it blank"},
		{"restored, a filesystem: mount it", ext4, restore, useAsIs, ""},
		{"a partition table: never", gpt, created, refuse, "partition table"},
		{"a partition table, tagged formatting: never (no mkfs of ours writes one)", gpt, mkfs, refuse, "partition table"},
		{"not a filesystem: never", luks, restore, refuse, "not a filesystem"},
		{"not a filesystem on a handed-out blank volume: never", luks, out, refuse, "not a filesystem"},
	}
	for _, tt := range tests {
		got, why := decideFormat("vol-1", "/dev/nvme1n1", tt.sig, tt.b)
		if got != tt.want || !strings.Contains(why, tt.why) || (got == refuse) != (why != "") {
			t.Errorf("%s: decideFormat = %s, %q; want %s with %q", tt.name, got, why, tt.want, tt.why)
		}
	}
	// Whatever the device holds, a volume handed out is never formatted, nor is one handover did not
	// create blank.
	for _, sig := range []host.Signature{none, ext4, luks, gpt} {
		for _, b := range []blankState{out, outMkfs, restore, {Formatting: true}, {HandedOut: true}} {
			if got, _ := decideFormat("vol-1", "/dev/x", sig, b); got == makeFresh || got == makeAgain {
				t.Errorf("decideFormat(%+v, %+v) = %s: formats a volume handed out or not created blank", sig, b, got)
			}
		}
	}
}
