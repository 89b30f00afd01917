package sim

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestHoldDefersTransitionsUntilRelease: a held volume stays creating past its delay, WaitIdle counts it,
// a hold on one volume outlives a release of the hold on all, and each release applies the change at once.
func TestHoldDefersTransitionsUntilRelease(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	ctx := ctxT(t)
	releaseAll := r.Hold(VolumeCreate, "*")
	a := createVolume(t, r, "us-east-1a", 1, nil)
	b := createVolume(t, r, "us-east-1a", 1, nil)
	for _, id := range []string{a, b} {
		if got, err := r.WaitHeld(ctx, VolumeCreate, id); err != nil || got != id {
			t.Fatalf("WaitHeld(%s) = %q, %v", id, got, err)
		}
		if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateCreating {
			t.Fatalf("held volume %s is %s, want creating", id, v.State)
		}
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.WaitIdle(done); err == nil {
		t.Fatal("WaitIdle says idle while two transitions are held")
	}
	releaseA := r.Hold(VolumeCreate, a)
	releaseAll()
	releaseAll() // a second call changes nothing
	if va, vb := describeVolume(t, r, a), describeVolume(t, r, b); va.State != ec2types.VolumeStateCreating || vb.State != ec2types.VolumeStateAvailable {
		t.Fatalf("after releasing the hold on all: %s %s, %s %s; want %s still held, %s available", a, va.State, b, vb.State, a, b)
	}
	releaseA()
	if v := describeVolume(t, r, a); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("after its release %s is %s, want available", a, v.State)
	}
	idle(t, r)
}

// TestHeldTransitionSurvivesRestart: Close saves a held volume as creating; the resumed region resumes
// the transition (a hold made before Start catches it again), and without a hold completes it.
func TestHeldTransitionSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r := startRegion(t, Options{StateDir: dir})
	r.Hold(VolumeCreate, "")
	id := createVolume(t, r, "us-east-1a", 1, nil)
	if _, err := r.WaitHeld(ctxT(t), VolumeCreate, id); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.WaitHeld(ctxT(t), VolumeCreate, id); err == nil {
		t.Fatal("WaitHeld on a closed region succeeded")
	}
	r2, err := New(Options{StateDir: dir, Speed: 1000})
	if err != nil {
		t.Fatal(err)
	}
	release := r2.Hold(VolumeCreate, id)
	if err := r2.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r2.Close() })
	if _, err := r2.WaitHeld(ctxT(t), VolumeCreate, id); err != nil {
		t.Fatal(err)
	}
	if v := describeVolume(t, r2, id); v.State != ec2types.VolumeStateCreating {
		t.Fatalf("resumed volume is %s, want creating", v.State)
	}
	release()
	idle(t, r2)
	if v := describeVolume(t, r2, id); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("resumed volume is %s after WaitIdle, want available", v.State)
	}
}

// TestAdminHold: /sim/hold, /sim/held and /sim/release do what Hold, WaitHeld and release do.
func TestAdminHold(t *testing.T) {
	t.Parallel()
	r := startRegion(t, Options{})
	post := func(path string, out any) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctxT(t), http.MethodPost, r.Endpoint()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode
	}
	var errOut map[string]string
	if code := post("/sim/hold?transition=volume-melt", &errOut); code != 400 || errOut["error"] == "" {
		t.Fatalf("unknown transition: %d %v", code, errOut)
	}
	var h map[string]string
	if code := post("/sim/hold?transition=volume-create&id=*", &h); code != 200 || h["hold"] == "" {
		t.Fatalf("hold: %d %v", code, h)
	}
	id := createVolume(t, r, "us-east-1a", 1, nil)
	var held map[string]string
	if code := post("/sim/held?transition=volume-create", &held); code != 200 || held["id"] != id {
		t.Fatalf("held: %d %v, want %s", code, held, id)
	}
	var ok map[string]string
	if code := post("/sim/release?hold="+h["hold"], &ok); code != 200 {
		t.Fatalf("release: %d %v", code, ok)
	}
	if v := describeVolume(t, r, id); v.State != ec2types.VolumeStateAvailable {
		t.Fatalf("after /sim/release the volume is %s, want available", v.State)
	}
	if code := post("/sim/release?hold="+h["hold"], &errOut); code != 400 {
		t.Fatalf("second release of %s: %d, want 400", h["hold"], code)
	}
}
