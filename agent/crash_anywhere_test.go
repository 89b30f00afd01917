package agent

// Crash anywhere (issue 14): the real binary (cmd/handover, built once for the package's tests) runs as
// an instance of the simulated region, and is killed with SIGKILL — it and every process it started — at a
// named step of up or down, or at a random moment. Then handover runs again, as systemd or an operator
// would, and must converge: the address and the data on the instance, exactly one volume per generation
// and no more volumes than one run makes, no filesystem made on a volume that held data, the files
// written before the crash byte for byte, and no filesystem left frozen.
//
// A step is caught without sleeping: an API call is held by the simulator (Region.HoldCalls: before it
// is carried out, or after it, its answer in flight), a transition is held (Region.Hold: the volume
// creating, the attachment attaching), or a host tool is replaced by a wrapper on the binary's PATH that
// tells the test it was reached and waits to be killed (blkid: after the attach, before the mount; mkfs:
// part way through, with some of its blocks written and no superblock; mount: the mount made, up not yet
// told). No crash hook lives in the production code.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"golang.org/x/sys/unix"

	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/sim"
	"github.com/handover/handover/sim/simtest"
)

// TestMain removes the binary the crash tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if crashBin.dir != "" {
		_ = os.RemoveAll(crashBin.dir)
	}
	os.Exit(code)
}

// crashBin is cmd/handover, built once for the tests that run it as a process.
var crashBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// handoverBinary builds cmd/handover (once) and returns its path.
func handoverBinary(t testing.TB) string {
	t.Helper()
	crashBin.once.Do(func() {
		crashBin.dir, crashBin.err = os.MkdirTemp("", "handover-crash-")
		if crashBin.err != nil {
			return
		}
		crashBin.path = filepath.Join(crashBin.dir, "handover")
		// go test puts its own GOROOT/bin first on the test's PATH.
		goTool, err := exec.LookPath("go")
		if err != nil {
			crashBin.err = fmt.Errorf("the go command, to build cmd/handover: %w", err)
			return
		}
		cmd := exec.Command(goTool, "build", "-o", crashBin.path, "./cmd/handover")
		cmd.Dir = ".." // the module root: this package's tests run in agent/
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			crashBin.err = fmt.Errorf("go build ./cmd/handover: %v\n%s", err, out)
		}
	})
	if crashBin.err != nil {
		t.Fatal(crashBin.err)
	}
	return crashBin.path
}

// proc is the binary running as an instance, in a process group of its own so that a kill takes the
// tools it started too.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	done           chan struct{}
	code           int
}

// startBinary runs `handover args...` as instance id, with the tool wrappers of pathDir ("" for none)
// first on its PATH.
func (w *testRegion) startBinary(id, pathDir string, args ...string) *proc {
	w.t.Helper()
	env, err := w.sim.InstanceEnv(id)
	if err != nil {
		w.t.Fatal(err)
	}
	env["HANDOVER_LOCK_FILE"] = filepath.Join(w.dir, "locks", id+".lock")
	env["PATH"] = os.Getenv("PATH")
	if pathDir != "" {
		env["PATH"] = pathDir + ":" + env["PATH"]
	}
	cmd := exec.Command(handoverBinary(w.t), args...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{cmd: cmd, stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.t.Fatalf("start handover: %v", err)
	}
	go func() {
		_ = cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	w.t.Cleanup(func() { p.kill(w.t) })
	return p
}

// kill sends SIGKILL to the process group and waits for the binary to be gone. It reports whether the
// binary was still running (false: it had ended by itself before the kill).
func (p *proc) kill(t testing.TB) bool {
	select {
	case <-p.done:
		return false
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(waitBound):
		t.Fatalf("handover (pid %d) did not die of SIGKILL", p.cmd.Process.Pid)
	}
	return true
}

// wait waits for the binary to end by itself.
func (p *proc) wait(t testing.TB) agentResult {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(2 * waitBound):
		p.kill(t)
		t.Fatalf("handover did not end within %s\n%s", 2*waitBound, p.stderr.String())
	}
	return agentResult{code: p.code, stdout: p.stdout.String(), stderr: p.stderr.String()}
}

// toolWrapper writes dir/name: a script that does before (shell), tells the test it was reached (the
// file dir/name.reached, with its arguments), does after, and waits to be killed.
func toolWrapper(t testing.TB, dir, name, before, after string) string {
	t.Helper()
	script := fmt.Sprintf("#!/bin/sh\n# crash-test wrapper of %s: reached, then wait for SIGKILL\n%s\necho \"$@\" > %q.tmp && mv %q.tmp %q\n%s\nexec sleep 600\n",
		name, before, filepath.Join(dir, name+".reached"), filepath.Join(dir, name+".reached"), filepath.Join(dir, name+".reached"), after)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, name+".reached")
}

// realTool is the absolute path of a tool on the test's own PATH.
func realTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: %v", name, err)
	}
	return p
}

// waitFile waits until path exists.
func waitFile(t testing.TB, path string, p *proc) {
	t.Helper()
	simtest.Eventually(t, waitBound, "the crash point "+filepath.Base(path), func() (bool, string) {
		_, err := os.Stat(path)
		select {
		case <-p.done:
			return true, "" // ended before the point: the caller's checks say so
		default:
		}
		return err == nil, "handover log:\n" + p.stderr.String()
	})
}

// crashWorld is a region with one group and what the tests need to check a crash's aftermath.
type crashWorld struct {
	*downWorld
	alloc string
	sums  map[string]string // files written before the crash, by path under the mount point
	rng   *rand.Rand
}

func newCrashWorld(t *testing.T, seed int64, opts ...func(*sim.Options)) *crashWorld {
	w := &crashWorld{downWorld: newDownWorld(t, append([]func(*sim.Options){func(o *sim.Options) { o.Seed = seed }}, opts...)...),
		rng: rand.New(rand.NewPCG(uint64(seed), 0xc7a5))}
	w.unmountOnCleanup()
	// Cleanups run last first: this one, before the unmounts, thaws what a killed run left frozen (a
	// frozen filesystem lazily unmounted could never be thawed again).
	t.Cleanup(func() {
		mounts, _ := host.New("/dev", "/sys").Mounts()
		for _, m := range mounts {
			if strings.HasPrefix(m.MountPoint, w.dir) {
				_ = host.ThawMountPoint(m.MountPoint)
			}
		}
	})
	w.alloc = w.allocateAddress(w.group)
	w.publicIP(w.alloc)
	return w
}

// oldWithData runs an instance in az whose (in-process) up made the slot's volume, and writes files.
func (w *crashWorld) oldWithData(az string) string {
	w.t.Helper()
	id := w.runInstance(az, groupTags, true)
	mustSucceed(w.t.(*testing.T), w.runAgent(w.ctx(), id, nil, w.upArgs(id)...))
	w.sums = writeChecksummed(w.t, w.rng, w.mountPoint(id), 4)
	return id
}

// handedOver gives the data away the ordinary way (in-process down, unmount mode) and terminates the
// instance.
func (w *crashWorld) handedOver(id string) {
	w.t.Helper()
	res := w.runAgent(w.ctx(), id, nil, w.downArgs(id, "--pre-stop", "true")...)
	mustSucceed(w.t.(*testing.T), res)
	w.terminate(id)
	w.settle()
}

// crashSetup is where a crash test starts: the instance the binary runs as, and what it runs.
type crashSetup struct {
	id   string
	args []string
	// volumesAfter is how many volumes the slot must have once the rerun converged.
	volumesAfter int
	// dataBefore: the slot already holds data (w.sums) that must survive.
	dataBefore bool
	down       bool   // the command is down: afterwards a replacement's up must find the data
	mountPoint string // where the slot is mounted (down: the old instance's)
	launchHook bool   // up completes the group's launch hook
}

// The setups: up on a first boot (no volume yet), up restoring in another zone what down left, up
// reattaching in the same zone; down unmounting, down freezing, down completing a termination hook.
func (w *crashWorld) setup(kind string) crashSetup {
	w.t.Helper()
	switch kind {
	case "first-boot":
		id := w.runInstance("us-east-1a", groupTags, true)
		return crashSetup{id: id, args: w.upArgs(id), volumesAfter: 1, mountPoint: w.mountPoint(id)}
	case "restore", "reattach":
		old := w.oldWithData("us-east-1a")
		w.handedOver(old)
		az, vols := "us-east-1b", 2
		if kind == "reattach" {
			az, vols = "us-east-1a", 1
		}
		id := w.runInstance(az, groupTags, true)
		return crashSetup{id: id, args: w.upArgs(id), volumesAfter: vols, dataBefore: true, mountPoint: w.mountPoint(id)}
	case "down-unmount", "down-freeze":
		id := w.oldWithData("us-east-1a")
		args := w.downArgs(id, "--pre-stop", "true")
		if kind == "down-freeze" {
			args = w.downArgs(id, "--release", "freeze")
		}
		return crashSetup{id: id, args: args, volumesAfter: 1, dataBefore: true, down: true, mountPoint: w.mountPoint(id)}
	case "down-hook":
		asgName, id := w.autoScalingGroup(6000)
		mustSucceed(w.t.(*testing.T), w.runAgent(w.ctx(), id, nil, w.upArgs(id)...))
		w.sums = writeChecksummed(w.t, w.rng, w.mountPoint(id), 4)
		if _, err := w.as.TerminateInstanceInAutoScalingGroup(w.ctx(), &autoscaling.TerminateInstanceInAutoScalingGroupInput{
			InstanceId: aws.String(id), ShouldDecrementDesiredCapacity: aws.Bool(false),
		}); err != nil {
			w.t.Fatal(err)
		}
		w.waitLifecycle(asgName, id, func(s string) bool { return s == "Terminating:Wait" })
		args := w.downArgs(id, "--pre-stop", "true", "--terminate-hook", terminateHook, "--heartbeat-interval", "500ms")
		return crashSetup{id: id, args: args, volumesAfter: 1, dataBefore: true, down: true, mountPoint: w.mountPoint(id)}
	case "up-hook":
		id := w.launchGroup("orders-asg", nil)
		return crashSetup{id: id, args: w.upArgs(id, "--launch-hook", "launch"), volumesAfter: 1, mountPoint: w.mountPoint(id), launchHook: true}
	}
	w.t.Fatalf("no crash setup %q", kind)
	return crashSetup{}
}

// crashPoint is a named step to kill the binary at, and the setups it applies to.
type crashPoint struct {
	name   string
	setups []string
	// arm prepares the point before the binary starts and returns how to wait for it, a release of
	// what it holds (after the kill), and the PATH directory of its wrappers ("" for none).
	arm func(w *crashWorld, p **proc) (reach func(), release func(), pathDir string)
	// formats says the crashed run has made the filesystem by the time it is killed here (first boot).
	formats bool
}

// holdCall arms a point at an API call: before it is carried out, or after (its answer in flight).
func holdCall(action string, after bool) func(*crashWorld, **proc) (func(), func(), string) {
	return func(w *crashWorld, p **proc) (func(), func(), string) {
		release := w.sim.HoldCalls(action, after)
		return func() {
				if _, err := w.sim.WaitCall(w.ctx(), action); err != nil {
					w.t.Fatalf("%v\nhandover log:\n%s", err, (*p).stderr.String())
				}
			}, func() {
				if !after {
					w.heldCallDropped(action)
				}
				release()
			}, ""
	}
}

// heldCallDropped waits until the simulator has dropped the killed run's call of action that it held
// before carrying it out. It notices the client is gone only when it sees the connection closed; a
// release before that would carry the killed run's call out (a CompleteLifecycleAction that terminates
// the instance under its rerun, a CreateSnapshot counted as the rerun's).
func (w *crashWorld) heldCallDropped(action string) {
	w.t.Helper()
	simtest.Eventually(w.t, waitBound, "the killed run's held "+action+" dropped", func() (bool, string) {
		for _, c := range w.sim.Calls() {
			if c.Action == action && c.Code == "ClientGone" {
				return true, ""
			}
		}
		return false, "no " + action + " with code ClientGone yet"
	})
}

// holdTransition arms a point at a transition the binary waits for.
func holdTransition(kind sim.Transition) func(*crashWorld, **proc) (func(), func(), string) {
	return func(w *crashWorld, p **proc) (func(), func(), string) {
		release := w.sim.Hold(kind, "")
		return func() {
			if _, err := w.sim.WaitHeld(w.ctx(), kind, ""); err != nil {
				w.t.Fatalf("%v\nhandover log:\n%s", err, (*p).stderr.String())
			}
		}, release, ""
	}
}

// wrapTool arms a point at a host tool: the wrapper does before, is reached, does after, waits.
func wrapTool(name, before, after string) func(*crashWorld, **proc) (func(), func(), string) {
	return func(w *crashWorld, p **proc) (func(), func(), string) {
		dir := w.t.TempDir()
		real := realTool(w.t, name)
		reached := toolWrapper(w.t, dir, name, strings.ReplaceAll(before, "REAL", real), strings.ReplaceAll(after, "REAL", real))
		return func() { waitFile(w.t, reached, *p) }, func() {}, dir
	}
}

// crashPoints are the named steps. mkfs is killed part way: some of its blocks written (as mke2fs
// writes its inode tables and bitmaps before the superblock), no signature yet.
var crashPoints = []crashPoint{
	{name: "after AssociateAddress (answer lost)", setups: []string{"first-boot", "restore"}, arm: holdCall("AssociateAddress", true)},
	{name: "after CreateVolume (answer lost)", setups: []string{"first-boot", "restore"}, arm: holdCall("CreateVolume", true)},
	{name: "volume creating", setups: []string{"first-boot", "restore"}, arm: holdTransition(sim.VolumeCreate)},
	{name: "during attach", setups: []string{"first-boot", "restore", "reattach"}, arm: holdTransition(sim.VolumeAttach)},
	{name: "after attach before mount", setups: []string{"first-boot", "restore", "reattach"}, arm: wrapTool("blkid", "", "")},
	{name: "during mkfs", setups: []string{"first-boot"}, arm: wrapTool("mkfs.ext4", "",
		`for dev; do :; done; head -c 65536 /dev/urandom | dd of="$dev" bs=4096 seek=64 conv=notrunc,fsync 2>/dev/null`)},
	{name: "during mount", setups: []string{"first-boot", "restore", "reattach"}, arm: wrapTool("mount", `REAL "$@" || exit $?`, ""), formats: true},
	{name: "before CompleteLifecycleAction", setups: []string{"up-hook", "down-hook"}, arm: holdCall("CompleteLifecycleAction", false), formats: true},
	{name: "while frozen", setups: []string{"down-freeze"}, arm: holdCall("CreateSnapshot", false)},
	{name: "after CreateSnapshot (answer lost)", setups: []string{"down-unmount", "down-freeze"}, arm: holdCall("CreateSnapshot", true)},
	{name: "after CreateSnapshot before detach", setups: []string{"down-unmount"}, arm: holdCall("DetachVolume", false)},
}

// TestCrashAtEveryStep kills up and down at every named step, reruns, and checks the aftermath.
func TestCrashAtEveryStep(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	handoverBinary(t)
	for i, cp := range crashPoints {
		for _, kind := range cp.setups {
			t.Run(cp.name+"/"+kind, func(t *testing.T) {
				t.Parallel()
				w := newCrashWorld(t, int64(i+1))
				s := w.setup(kind)
				var p *proc
				reach, release, pathDir := cp.arm(w, &p)
				p = w.startBinary(s.id, pathDir, s.args...)
				reach()
				if !p.kill(t) {
					release()
					t.Fatalf("handover ended (exit %d) before the crash point %q\n%s", p.code, cp.name, p.stderr.String())
				}
				release()
				w.afterCrash(t, s, p, cp.formats && (kind == "first-boot" || kind == "up-hook"))
			})
		}
	}
}

// TestCrashWhileFrozenThawedByWatch: down is killed while the filesystem is frozen for its CreateSnapshot
// (the call held before EC2 carries it out); no down runs again, but the instance's watch starts (systemd
// restarts it, or the next boot runs it): the filesystem is writable again once watch is up, without
// an operator and without a termination event.
func TestCrashWhileFrozenThawedByWatch(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	w := newCrashWorld(t, 7)
	s := w.setup("down-freeze")
	var p *proc
	reach, release, _ := holdCall("CreateSnapshot", false)(w, &p)
	p = w.startBinary(s.id, "", s.args...)
	reach()
	if !p.kill(t) {
		t.Fatalf("down ended (exit %d) before its CreateSnapshot\n%s", p.code, p.stderr.String())
	}
	release() // once the killed run's CreateSnapshot is dropped (heldCallDropped)
	watch := w.startAgent(s.id, "watch", "--volume", "data:/dev/sdf:"+s.mountPoint,
		"--state-file", filepath.Join(w.dir, "watch.json"), "--poll-interval", "50ms")
	watch.waitLog(t, "watching instance metadata")
	assertWritable(t, s.mountPoint)
	if code := watch.stop(t); code != fail.CodeOK {
		t.Errorf("watch exited %d", code)
	}
	if n := len(w.callsBy("CreateSnapshot", s.id)); n != 0 {
		t.Errorf("%d snapshots taken: watch saw no event and should not have run down", n)
	}
}

// afterCrash marks the data, reruns the command that was killed (in process, as systemd or an operator
// would) and checks that it converged; for down, a replacement in the other zone then takes the data.
// formatted says the killed run made the slot's filesystem itself.
func (w *crashWorld) afterCrash(t *testing.T, s crashSetup, killed *proc, formatted bool) {
	t.Helper()
	// A file written now, between the crash and the rerun, on a filesystem the killed run left mounted,
	// must be there after the rerun: a rerun that formats it would lose it.
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(s.mountPoint); mounted && !s.down {
		if w.sums == nil {
			w.sums = map[string]string{}
		}
		data := []byte(fmt.Sprintf("written after the crash of %s, before the rerun\n", s.id))
		if err := os.WriteFile(filepath.Join(s.mountPoint, "after-crash.txt"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		unix.Sync()
		sum := sha256.Sum256(data)
		w.sums["after-crash.txt"] = hex.EncodeToString(sum[:])
		s.dataBefore = true
	}
	w.settle()
	args := append(append([]string(nil), s.args...), "--timeout", "40s")
	res := w.runAgent(w.ctx(), s.id, nil, args...)
	if res.code != fail.CodeOK {
		t.Fatalf("the rerun after the crash exited %d, want 0\nrerun stderr:\n%s\nkilled run's stderr:\n%s", res.code, res.stderr, killed.stderr.String())
	}
	// A filesystem the killed run made counts once it was handed out (mounted): until then the volume
	// has held nothing, and the rerun makes it again by design (the formatting tag without handed-out).
	formatted = formatted || (strings.Contains(killed.stderr.String(), "filesystem made") && strings.Contains(killed.stderr.String(), "msg=mounted"))
	if (s.dataBefore || formatted) && strings.Contains(res.stderr, "filesystem made") {
		t.Errorf("the rerun made a filesystem on a volume that held data or a filesystem already:\n%s", res.stderr)
	}
	if s.launchHook {
		if st := w.lifecycleState(s.id); st != "InService" {
			t.Errorf("after the rerun the instance is %q in its group, want InService (the launch hook completed)", st)
		}
	}
	if s.down {
		assertWritable(t, s.mountPointIfMounted())
		w.replacementHasTheData(t, s, res)
		return
	}
	w.settle()
	w.checkConverged(t, s.id, s.mountPoint, s.volumesAfter)
}

// mountPointIfMounted is the old instance's mount point when down left it mounted (freeze), else the
// test directory (always writable), so that assertWritable checks the filesystem only when there is one.
func (s crashSetup) mountPointIfMounted() string {
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(s.mountPoint); mounted {
		return s.mountPoint
	}
	return filepath.Dir(s.mountPoint)
}

// replacementHasTheData: after down converged, the old instance goes away (its mounts with it) and an
// instance in the other zone runs up: it has the data and the address.
func (w *crashWorld) replacementHasTheData(t *testing.T, s crashSetup, downRes agentResult) {
	t.Helper()
	if n := len(w.callsBy("CreateSnapshot", s.id)); n != 1 {
		t.Errorf("%d CreateSnapshot calls by the old instance over the killed run and the rerun, want 1 (a rerun finds its snapshot)", n)
	}
	w.unmountUnder(filepath.Dir(s.mountPoint))
	if st := string(w.describeInstance(s.id).State.Name); st == "running" {
		w.terminate(s.id)
	}
	repl := w.runInstance("us-east-1b", groupTags, true)
	res := w.runAgent(w.ctx(), repl, nil, w.upArgs(repl)...)
	if res.code != fail.CodeOK {
		t.Fatalf("the replacement's up exited %d\n%s\ndown's rerun:\n%s", res.code, res.stderr, downRes.stderr)
	}
	if strings.Contains(res.stderr, "filesystem made") {
		t.Errorf("the replacement made a filesystem on the restored data:\n%s", res.stderr)
	}
	w.settle()
	w.checkConverged(t, repl, w.mountPoint(repl), 2)
}

// checkConverged: id holds the address and exactly one of the slot's volumes, mounted at mountPoint with
// every file written before the crash; the slot has volumes volumes, one per generation, none leaked.
func (w *crashWorld) checkConverged(t *testing.T, id, mountPoint string, volumes int) {
	t.Helper()
	if h := w.addressHolder(w.alloc); h != id {
		t.Errorf("the address is on %q, want %s", h, id)
	}
	if vols := w.attachedVolumes(id); len(vols) != 1 {
		t.Errorf("%s has volumes %v attached, want one", id, vols)
	}
	if _, mounted, _ := host.New("/dev", "/sys").MountedAt(mountPoint); !mounted {
		t.Errorf("nothing is mounted at %s", mountPoint)
	}
	if vols := w.slotVolumes(); len(vols) != volumes {
		t.Errorf("the slot has %d volumes, want %d", len(vols), volumes)
	}
	if leaked, dup := w.slotLeaks(id); leaked+dup != 0 {
		t.Errorf("%d volumes leaked, %d beyond one per generation", leaked, dup)
	}
	if bad := checksumMismatches(t, mountPoint, w.sums); bad != 0 {
		t.Errorf("%d of the %d files written before the crash differ", bad, len(w.sums))
	}
	assertWritable(t, mountPoint)
}

// crashRandomKinds are the setups the random crashes are played on.
var crashRandomKinds = []string{"first-boot", "restore", "reattach", "down-unmount", "down-freeze"}

// crashCalibration is how long each setup's command takes uncrashed (measured once per test process):
// the random crashes land uniformly within it.
var crashCalibration struct {
	mu  sync.Mutex
	ran map[string]time.Duration
}

func (w *crashWorld) calibrated(t *testing.T, kind string) time.Duration {
	crashCalibration.mu.Lock()
	defer crashCalibration.mu.Unlock()
	if d, ok := crashCalibration.ran[kind]; ok {
		return d
	}
	cw := newCrashWorld(t, 0)
	s := cw.setup(kind)
	start := time.Now()
	res := cw.startBinary(s.id, "", s.args...).wait(t)
	d := time.Since(start)
	if res.code != fail.CodeOK {
		t.Fatalf("uncrashed %s exited %d\n%s", kind, res.code, res.stderr)
	}
	if crashCalibration.ran == nil {
		crashCalibration.ran = map[string]time.Duration{}
	}
	crashCalibration.ran[kind] = d
	t.Logf("crash-calibration kind=%s took=%s", kind, d.Round(time.Millisecond))
	return d
}

// crashRandomCISeeds are the random crashes CI plays.
var crashRandomCISeeds = []int64{1, 2, 3, 4, 5}

// TestCrashAnywhere kills up or down at a random moment of its run (uniform over the time an uncrashed
// run of the same setup takes) and checks the aftermath as TestCrashAtEveryStep does. CI plays
// crashRandomCISeeds; HANDOVER_CRASH_RUNS=N (from HANDOVER_CRASH_SEED) plays N, as
// scripts/reliability.sh does. Each run logs crash-figures.
func TestCrashAnywhere(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	handoverBinary(t)
	seeds := crashRandomCISeeds
	if os.Getenv("HANDOVER_CRASH_RUNS") != "" {
		n, from := envCount(t, "HANDOVER_CRASH_RUNS", 1), envCount(t, "HANDOVER_CRASH_SEED", 1)
		seeds = nil
		for i := range n {
			seeds = append(seeds, int64(from+i))
		}
	}
	for _, seed := range seeds {
		t.Run("seed="+strconv.FormatInt(seed, 10), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(uint64(seed), 0x4a11))
			kind := crashRandomKinds[rng.IntN(len(crashRandomKinds))]
			w := newCrashWorld(t, seed)
			span := w.calibrated(t, kind)
			after := time.Duration(rng.Int64N(int64(span)))
			s := w.setup(kind)
			p := w.startBinary(s.id, "", s.args...)
			select {
			case <-p.done:
			case <-time.After(after):
			}
			killed := p.kill(t)
			t.Logf("crash-figures seed=%d kind=%s kill_after=%s of=%s killed=%t at=%q", seed, kind, after.Round(time.Millisecond),
				span.Round(time.Millisecond), killed, lastStep(p.stderr.String()))
			if !killed && p.code != fail.CodeOK {
				t.Fatalf("uncrashed %s exited %d\n%s", kind, p.code, p.stderr.String())
			}
			// A kill before up took the address (or before mkfs) leaves less to check, never less to converge.
			w.afterCrash(t, s, p, false)
		})
	}
}

var (
	logStepRE = regexp.MustCompile(`\bstep=(\S+)`)
	logMsgRE  = regexp.MustCompile(`\bmsg=("(?:[^"\\]|\\.)*"|\S+)`)
)

// lastStep is the step and message of the last line a run logged: where a kill found it.
func lastStep(log string) string {
	line := lastLine(log)
	step, msg := "", ""
	if m := logStepRE.FindStringSubmatch(line); m != nil {
		step = m[1]
	}
	if m := logMsgRE.FindStringSubmatch(line); m != nil {
		msg = strings.Trim(m[1], `"`)
	}
	if step == "" && msg == "" {
		return "(nothing logged yet)"
	}
	return step + ": " + msg
}
