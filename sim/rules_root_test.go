package sim

import (
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// TestDetachOfMountedVolumeStaysBusy: with the volume's device mounted, a
// detach stays busy (or detaching, per Options.DetachBusyState) until the
// device is unmounted; a forced detach completes while it is mounted.
func TestDetachOfMountedVolumeStaysBusy(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	for _, mode := range []string{"", "detaching"} {
		t.Run("state="+mode, func(t *testing.T) {
			t.Parallel()
			busy := ec2types.VolumeAttachmentStateBusy
			if mode != "" {
				busy = ec2types.VolumeAttachmentState(mode)
			}
			r := startRegion(t, Options{DetachBusyState: mode})
			c := ec2Client(r)
			ctx := ctxT(t)
			inst := runInstance(t, r, "us-east-1a", nil)
			vol := createVolume(t, r, "us-east-1a", 1, nil)
			idle(t, r)
			env, _ := r.InstanceEnv(inst)
			link := filepath.Join(env["HANDOVER_DEV_DIR"], "disk", "by-id", nvmeLinkName(vol))
			mount := func() string {
				t.Helper()
				if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
					t.Fatal(err)
				}
				idle(t, r)
				dev, err := filepath.EvalSymlinks(link)
				if err != nil {
					t.Fatal(err)
				}
				run(t, "mkfs.ext4", "-q", "-F", dev)
				mnt := t.TempDir()
				run(t, "mount", dev, mnt)
				t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
				return mnt
			}
			state := func() (string, ec2types.VolumeAttachmentState) {
				t.Helper()
				v := describeVolume(t, r, vol)
				if len(v.Attachments) == 0 {
					return string(v.State), "none"
				}
				return string(v.State), v.Attachments[0].State
			}
			wantState := func(vs string, as ec2types.VolumeAttachmentState) {
				t.Helper()
				if gv, ga := state(); gv != vs || ga != as {
					t.Fatalf("volume %s, attachment %s; want %s, %s", gv, ga, vs, as)
				}
			}

			mnt := mount()
			release := r.Hold(VolumeDetach, vol)
			out, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)})
			if err != nil {
				t.Fatal(err)
			}
			if out.State != busy {
				t.Fatalf("DetachVolume of a mounted volume answered %s, want %s", out.State, busy)
			}
			if _, err := r.WaitHeld(ctx, VolumeDetach, vol); err != nil {
				t.Fatal(err)
			}
			again := r.Hold(VolumeDetach, vol)
			release() // the delay is over, the device still mounted: the detach looks again later
			wantState("in-use", busy)
			if _, err := r.WaitHeld(ctx, VolumeDetach, vol); err != nil {
				t.Fatal(err)
			}
			wantState("in-use", busy)
			run(t, "umount", mnt)
			again() // unmounted: the detach completes
			wantState("available", "none")

			// Forced: completes although mounted.
			mount()
			if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
				t.Fatal(err)
			}
			wantState("in-use", busy)
			if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol), Force: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
			idle(t, r)
			wantState("available", "none")
			if _, err := filepath.EvalSymlinks(link); err == nil {
				t.Fatalf("device %s still there after a forced detach", link)
			}
		})
	}
}

// TestObserveDetachOfMountedVolume: the observer reports a DetachVolume of a volume whose device is
// mounted as mounted (what the reliability tests count), and one after the unmount as not.
func TestObserveDetachOfMountedVolume(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	r := startRegion(t, Options{})
	c := ec2Client(r)
	ctx := ctxT(t)
	var mu sync.Mutex
	var seen []Observation
	stop := r.Observe(func(o Observation) {
		mu.Lock()
		defer mu.Unlock()
		if o.Kind == ObserveDetach {
			seen = append(seen, o)
		}
	})
	defer stop()
	inst := runInstance(t, r, "us-east-1a", nil)
	vol := createVolume(t, r, "us-east-1a", 1, nil)
	idle(t, r)
	attach := func() string {
		t.Helper()
		if _, err := c.AttachVolume(ctx, &ec2.AttachVolumeInput{VolumeId: aws.String(vol), InstanceId: aws.String(inst), Device: aws.String("/dev/sdf")}); err != nil {
			t.Fatal(err)
		}
		idle(t, r)
		env, _ := r.InstanceEnv(inst)
		dev, err := filepath.EvalSymlinks(filepath.Join(env["HANDOVER_DEV_DIR"], "disk", "by-id", nvmeLinkName(vol)))
		if err != nil {
			t.Fatal(err)
		}
		return dev
	}
	dev := attach()
	run(t, "mkfs.ext4", "-q", "-F", dev)
	mnt := t.TempDir()
	run(t, "mount", dev, mnt)
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol), Force: aws.Bool(true)}); err != nil {
		t.Fatal(err)
	}
	run(t, "umount", mnt)
	idle(t, r)
	attach()
	if _, err := c.DetachVolume(ctx, &ec2.DetachVolumeInput{VolumeId: aws.String(vol)}); err != nil {
		t.Fatal(err)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || !seen[0].Mounted || !seen[0].Force || seen[1].Mounted || seen[0].VolumeID != vol || seen[0].Caller != "AKIDTEST" {
		t.Fatalf("detach observations %+v, want the first mounted and forced, the second not mounted", seen)
	}
}
