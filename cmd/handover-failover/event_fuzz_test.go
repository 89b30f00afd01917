package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/handover/handover/failover"
)

// FuzzDecodeEvent fuzzes the function's event decoding (event.go), seeded with the AWS-documented samples
// under testdata/ and the fuzz corpus under testdata/fuzz/FuzzDecodeEvent. Properties:
//   - decode never panics, and decodes the same bytes the same way twice;
//   - a trigger that asks for a failover names one well-formed instance (the one failover.Run will take as
//     --from): an event naming anything else must be ignored, not fail, since a failed invocation is retried
//     by Lambda and a malformed event is malformed on every retry;
//   - only an alarm forces the move, and only an alarm in ALARM or an EC2 state that means the instance is
//     going or gone asks for one.
//
// Run with `go test -run '^$' -fuzz '^FuzzDecodeEvent$' -fuzztime 60s ./cmd/handover-failover/`.
func FuzzDecodeEvent(f *testing.F) {
	samples, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(samples) == 0 {
		f.Fatalf("no sample events under testdata/: %v", err)
	}
	for _, p := range samples {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tr, err := decode(raw)
		again, err2 := decode(raw)
		if (err == nil) != (err2 == nil) || !reflect.DeepEqual(tr, again) {
			t.Fatalf("%q decodes two ways: %+v (%v), then %+v (%v)", raw, tr, err, again, err2)
		}
		if err != nil {
			return
		}
		alarm := strings.HasPrefix(tr.Describe, "alarm ")
		if tr.Force && !alarm {
			t.Fatalf("%q: a %q event forces the move; only an alarm may", raw, tr.Describe)
		}
		if tr.Ignore != "" {
			return
		}
		req := failover.Request{From: tr.Failed, Force: tr.Force}
		if tr.Failed == "" || req.Validate() != nil {
			t.Fatalf("%q: the trigger asks to fail over from %q, which failover refuses (%v): the event must be ignored", raw, tr.Failed, req.Validate())
		}
		if !alarm && !strings.HasPrefix(tr.Describe, "EC2 ") {
			t.Fatalf("%q: a %q event asks for a failover", raw, tr.Describe)
		}
	})
}
