// Command bench measures handover against the simulated region: recovery against the limit the region
// allowed in that very run, against the AWS CLI way of doing the same job (awscli-user-data.sh), mass
// recovery under EC2's throttling, the RTO/RPO model, and the binary's footprint. It prints the tables of
// BENCHMARKS.md (Markdown) on stdout, progress on stderr, and every run's raw figures as JSON into -out.
//
//	sudo go run ./scripts/bench -handover bin/handover        (scripts/bench/run.sh builds and runs it)
//
// It runs as root: volumes are loop devices, filesystems are really made and mounted. Nothing here is
// linked into a production binary; CI compiles it (go vet ./...) but does not run it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

type bench struct {
	handover   string // bin/handover
	script     string // scripts/bench/awscli-user-data.sh
	work       string // scratch directory
	out        string // raw results
	rounds     int
	jitter     float64
	only       string // recovery tables to run ("cross-az-0ms,..."); "" all
	massPeers  []string
	cliStartup time.Duration // an aws invocation's start-up on this machine (climodel.go)
	stdout     io.Writer
	stderr     io.Writer
	started    time.Time
	progress   []string                 // problems found in the progress lines of long waits
	recovered  map[string][]recoveryRun // the recovery tables' runs, by table, for the RTO model
	// what checkProgress read: the first progress of each snapshot wait, and the lines read
	progressSeen  map[string]string
	progressLines int
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.stderr, "[%6.1fs] %s\n", time.Since(b.started).Seconds(), fmt.Sprintf(format, args...))
}

func (b *bench) printf(format string, args ...any) { fmt.Fprintf(b.stdout, format, args...) }

// save writes v as JSON to out/name.
func (b *bench) save(name string, v any) {
	if b.out == "" {
		return
	}
	data, err := json.MarshalIndent(v, "", " ")
	if err == nil {
		err = os.WriteFile(filepath.Join(b.out, name), data, 0o644)
	}
	if err != nil {
		b.logf("could not save %s: %v", name, err)
	}
}

// saveLog keeps a run's log (stderr) in out/logs/name.
func (b *bench) saveLog(name, text string) {
	if b.out == "" {
		return
	}
	dir := filepath.Join(b.out, "logs")
	if err := os.MkdirAll(dir, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)
	}
}

func main() {
	b := &bench{stdout: os.Stdout, stderr: os.Stderr, started: time.Now()}
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.StringVar(&b.handover, "handover", "bin/handover", "the handover binary to measure (make build)")
	fs.StringVar(&b.script, "script", "scripts/bench/awscli-user-data.sh", "the AWS CLI peer")
	fs.StringVar(&b.work, "work", "", "scratch directory (default: a new one under /tmp)")
	fs.StringVar(&b.out, "out", "", "directory for the raw results (JSON)")
	fs.IntVar(&b.rounds, "rounds", 5, "rounds of each comparison (each figure is the median)")
	fs.Float64Var(&b.jitter, "jitter", 0.3, "the simulator's jitter in the measured runs")
	fs.StringVar(&b.only, "recovery", "", "recovery tables to run, comma-separated (cross-az-0ms, cross-az-80ms, same-az-0ms, same-az-80ms; default all)")
	sections := fs.String("sections", "recovery,mass,rto,footprint", "what to run, comma-separated")
	massN := fs.String("mass", "50,200,500", "group counts of the mass recovery")
	massPeers := fs.String("mass-peers", "handover,cli-waiter-model,cli-poll-model", "peers of the mass recovery: handover, cli-waiter-model, cli-poll-model (the script's calls, modelled), cli-waiter, cli-poll (the script itself, N processes)")
	massRounds := fs.Int("mass-rounds", 1, "rounds of each mass recovery")
	_ = fs.Parse(os.Args[1:])
	b.massPeers = strings.Split(*massPeers, ",")
	if err := b.prepare(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	b.header()
	var failed bool
	for _, s := range strings.Split(*sections, ",") {
		var err error
		switch strings.TrimSpace(s) {
		case "recovery":
			err = b.recoverySection(ctx)
		case "mass":
			err = b.massSection(ctx, *massN, *massRounds)
		case "rto":
			err = b.rtoSection(ctx)
		case "footprint":
			err = b.footprintSection(ctx)
		case "":
		default:
			err = fmt.Errorf("unknown section %q", s)
		}
		if err != nil {
			b.logf("section %s FAILED: %v", s, err)
			b.printf("\n**Section %s failed:** %s\n", s, oneLine(err.Error()))
			failed = true
		}
	}
	b.printf("\nWhole run: %s (load average at the end: %s).\n", time.Since(b.started).Round(time.Second), loadAverage())
	if failed {
		os.Exit(1)
	}
}

func (b *bench) prepare() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("run as root: volumes are loop devices, filesystems are made and mounted")
	}
	for _, p := range []*string{&b.handover, &b.script} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if _, err := os.Stat(abs); err != nil {
			return err
		}
		*p = abs
	}
	if b.work == "" {
		dir, err := os.MkdirTemp("", "handover-bench-")
		if err != nil {
			return err
		}
		b.work = dir
	}
	if b.out != "" {
		if err := os.MkdirAll(b.out, 0o755); err != nil {
			return err
		}
	}
	// The AWS CLI as an AMI has it: its own interpreter on PATH, not a version manager's shim (pyenv's
	// adds a shell script and a Python start-up to every call).
	if real, err := exec.Command("pyenv", "which", "aws").Output(); err == nil {
		dir := filepath.Dir(strings.TrimSpace(string(real)))
		os.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	}
	if _, err := exec.LookPath("aws"); err != nil {
		return fmt.Errorf("the AWS CLI is not on PATH: %w", err)
	}
	return nil
}

// header prints the machine the run is on.
func (b *bench) header() {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	awsVersion, _ := exec.Command("aws", "--version").CombinedOutput()
	kernel, _ := exec.Command("uname", "-r").Output()
	b.printf("Machine: %d CPUs (%s), %s, Linux %s, %s; %s. Load average at the start: %s.\n",
		runtime.NumCPU(), cpu, memTotal(), strings.TrimSpace(string(kernel)), runtime.Version(), strings.TrimSpace(string(awsVersion)), loadAverage())
	b.printf("Simulator: in this process (sim.Region), Speed 1 (AWS-like delays), jitter %.1f in every measured run.\n", b.jitter)
}

func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func memTotal() string {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	var kb int64
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "MemTotal:") {
			_, _ = fmt.Sscanf(strings.TrimPrefix(line, "MemTotal:"), "%d", &kb)
		}
	}
	return fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}
