package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// With SaveInterval the state is written at most once per interval, and always at Close; without it,
// after every change.
func TestSaveInterval(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		atOnce   bool
	}{{0, true}, {time.Hour, false}} {
		dir := t.TempDir()
		r := startRegion(t, Options{StateDir: dir, SaveInterval: tc.interval})
		vol := createVolume(t, r, "us-east-1a", 1, nil)
		state, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if got := strings.Contains(string(state), vol); got != tc.atOnce {
			t.Errorf("SaveInterval %s: state.json holds %s right after CreateVolume: %v, want %v", tc.interval, vol, got, tc.atOnce)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if state, err = os.ReadFile(filepath.Join(dir, "state.json")); err != nil || !strings.Contains(string(state), vol) {
			t.Errorf("SaveInterval %s: state.json lacks %s after Close (err %v)", tc.interval, vol, err)
		}
	}
}
