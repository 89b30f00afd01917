package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Footprint: what handover costs an instance. The binary as `make build` makes it (static, stripped) for
// amd64 and arm64; peak RSS during up (from the recovery runs); the time from exec to its first request to
// the instance metadata service (a proxy in front of the simulator's IMDS notes when the first connection
// arrives); and a converged rerun: up on an instance that has everything already.

// firstConn is a TCP proxy that notes when its first connection arrives.
type firstConn struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	first time.Time
}

func newFirstConn(to string) (*firstConn, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &firstConn{ln: ln, to: to}
	go p.serve()
	return p, nil
}

func (p *firstConn) url() string { return "http://" + p.ln.Addr().String() }

func (p *firstConn) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.first.IsZero() {
			p.first = time.Now()
		}
		p.mu.Unlock()
		go func() {
			defer c.Close()
			up, err := net.Dial("tcp", p.to)
			if err != nil {
				return
			}
			defer up.Close()
			go func() { _, _ = io.Copy(up, c) }()
			_, _ = io.Copy(c, up)
		}()
	}
}

func (p *firstConn) reset() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.first
	p.first = time.Time{}
	return t
}

func (b *bench) footprintSection(ctx context.Context) error {
	b.printf("\n## Footprint\n")
	b.printf("\n| binary (as `make build`: CGO_ENABLED=0, -trimpath, no inlining in the SDK and handover, -s -w, version set) | bytes | MB | target | linking |\n|---|---|---|---|---|\n")
	repo := filepath.Dir(filepath.Dir(filepath.Dir(b.script)))
	for _, arch := range []string{"amd64", "arm64"} {
		out := filepath.Join(b.work, "handover-"+arch)
		// The Makefile's GCFLAGS, repeated here: the figure is the shipped binary's.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-gcflags=github.com/aws/...=-l", "-gcflags=github.com/handover/handover/...=-l", "-ldflags", "-s -w -X github.com/handover/handover/agent.Version=v0.0.0-bench -X github.com/handover/handover/agent.Commit=0000000", "-o", out, "./cmd/handover")
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		if msg, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v: %s", arch, err, msg)
		}
		st, err := os.Stat(out)
		if err != nil {
			return err
		}
		link := "?"
		if f, err := exec.Command("file", "-b", out).Output(); err == nil {
			link = strings.TrimSpace(strings.Split(string(f), ",")[0])
			if strings.Contains(string(f), "statically linked") {
				link += ", statically linked"
			}
		}
		b.printf("| linux/%s | %d | %.2f | ≤ 12 MB | %s |\n", arch, st.Size(), float64(st.Size())/1e6, link)
	}

	// A converged world: the replacement has recovered once (at setup speed); every run below is a rerun.
	dir, err := os.MkdirTemp(b.work, "footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w, err := buildRecovery(ctx, b, sameAZ, dir)
	if err != nil {
		unmountUnder(dir)
		return err
	}
	g, err := openRegion(w.stateDir(), measuredOptions(b.jitter, 0, 1))
	if err != nil {
		return err
	}
	defer func() {
		unmountUnder(dir)
		_ = g.close()
	}()
	env, err := g.instanceEnv(w.repl, dir)
	if err != nil {
		return err
	}
	if p := run(ctx, env, upArgs(b.handover, dir, w.repl)...); p.Code != 0 {
		return fmt.Errorf("first up exited %d:\n%s", p.Code, p.Stderr)
	}
	imdsURL := strings.TrimPrefix(env["AWS_EC2_METADATA_SERVICE_ENDPOINT"], "http://")
	proxy, err := newFirstConn(imdsURL)
	if err != nil {
		return err
	}
	defer proxy.ln.Close()
	env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = proxy.url()
	key := env["AWS_ACCESS_KEY_ID"]
	var toIMDS, walls, calls, mutating, rss []float64
	for i := 0; i < b.rounds; i++ {
		g.r.ResetCalls()
		proxy.reset()
		p := runBare(ctx, env, upArgs(b.handover, dir, w.repl)...)
		if p.Code != 0 {
			return fmt.Errorf("converged rerun exited %d:\n%s", p.Code, p.Stderr)
		}
		first := proxy.reset()
		if first.IsZero() {
			return fmt.Errorf("the rerun made no IMDS request through the proxy")
		}
		toIMDS = append(toIMDS, first.Sub(p.Start).Seconds()*1000)
		walls = append(walls, p.Wall.Seconds()*1000)
		// Its peak RSS from a second rerun, under rssWrapper (whose fork and exec would count in the timing).
		g.r.ResetCalls()
		q := run(ctx, env, upArgs(b.handover, dir, w.repl)...)
		if q.Code != 0 {
			return fmt.Errorf("converged rerun exited %d:\n%s", q.Code, q.Stderr)
		}
		rss = append(rss, float64(q.MaxRSSKB)/1024)
		proxy.reset()
		n, m := 0, 0
		for _, c := range g.r.Calls() {
			if c.Caller == key {
				n++
				if c.Mutating {
					m++
				}
			}
		}
		calls, mutating = append(calls, float64(n)), append(mutating, float64(m))
	}
	b.printf("\n| `handover up`, %d runs | median (min–max) | target |\n|---|---|---|\n", b.rounds)
	b.printf("| exec to first IMDS request | %s ms | ≤ 15 ms |\n", spread(toIMDS, "%.1f"))
	b.printf("| converged rerun: exec to exit | %s ms | |\n", spread(walls, "%.0f"))
	b.printf("| converged rerun: API calls (mutating) | %.0f (%.0f) | 0 mutating |\n", median(calls), median(mutating))
	b.printf("| converged rerun: peak RSS | %.1f MiB | ≤ 20 MiB |\n", median(rss))
	how := "GNU time's `%M` (/usr/bin/time: it forks, so the process starts from time's memory, not the harness's)"
	if rssWrapper == "" {
		how = "the rusage of the harness's child, an upper bound: /usr/bin/time is not installed, and a child Go starts inherits the harness's peak RSS at exec"
	}
	b.printf("\nPeak RSS during a recovery: see the recovery tables (`peak RSS`). Every peak RSS here is %s.\n", how)
	return nil
}
