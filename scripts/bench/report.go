package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

func secs(d time.Duration) float64 { return d.Seconds() }

// pick returns f of every run of peer.
func pick(runs []recoveryRun, peer string, f func(recoveryRun) float64) []float64 {
	var out []float64
	for _, r := range runs {
		if r.Peer == peer {
			out = append(out, f(r))
		}
	}
	return out
}

// pairedRatios divides f of peer a by f of peer b round by round (both ran in the same round, one after
// the other, with the same jitter draws).
func pairedRatios(runs []recoveryRun, a, b string, f func(recoveryRun) float64) []float64 {
	byRound := map[int]map[string]float64{}
	for _, r := range runs {
		if byRound[r.Round] == nil {
			byRound[r.Round] = map[string]float64{}
		}
		byRound[r.Round][r.Peer] = f(r)
	}
	var out []float64
	for _, m := range byRound {
		if x, ok := m[a]; ok {
			if y, ok := m[b]; ok && y > 0 {
				out = append(out, x/y)
			}
		}
	}
	return out
}

// medianRun is the run of peer whose wall time is the median one (for its call breakdown).
func medianRun(runs []recoveryRun, peer string) recoveryRun {
	var rs []recoveryRun
	for _, r := range runs {
		if r.Peer == peer {
			rs = append(rs, r)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].Wall < rs[j].Wall })
	if len(rs) == 0 {
		return recoveryRun{}
	}
	return rs[len(rs)/2]
}

func spread(xs []float64, format string) string {
	lo, hi := minMax(xs)
	return fmt.Sprintf(format+" ("+format+"–"+format+")", median(xs), lo, hi)
}

// recoveryTable prints one comparison: medians (range) over the rounds, per peer.
func (b *bench) recoveryTable(cfg recoveryConfig, runs []recoveryRun) {
	b.printf("\n| peer | wall | limit (recorded) | × limit | API calls (mutating) | throttled | peak RSS | CreateVolume after |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range cfg.Peers {
		walls := pick(runs, p, func(r recoveryRun) float64 { return secs(r.Wall) })
		limits := pick(runs, p, func(r recoveryRun) float64 { return secs(r.Limit) })
		ratios := pick(runs, p, recoveryRun.ratio)
		calls := pick(runs, p, func(r recoveryRun) float64 { return float64(r.Calls) })
		mut := pick(runs, p, func(r recoveryRun) float64 { return float64(r.Mutating) })
		thr := pick(runs, p, func(r recoveryRun) float64 { return float64(r.Throttled) })
		rss := pick(runs, p, func(r recoveryRun) float64 { return float64(r.MaxRSSKB) / 1024 })
		first := pick(runs, p, func(r recoveryRun) float64 { return r.FirstCreate.Seconds() * 1000 })
		fc := "–"
		if cfg.Kind == crossAZ {
			fc = fmt.Sprintf("%.0f ms", median(first))
		}
		b.printf("| %s | %s s | %.2f s | %s | %.0f (%.0f) | %.0f | %.1f MiB | %s |\n", peerLabel(p, cfg.Kind), spread(walls, "%.2f"), median(limits),
			spread(ratios, "%.3f"), median(calls), median(mut), median(thr), median(rss), fc)
	}
	for _, p := range cfg.Peers {
		if r := medianRun(runs, p); r.Peer != "" {
			b.printf("\nCalls of the median %s run: %s.", peerLabel(p, cfg.Kind), actionSummary(r.ByAction))
		}
	}
	b.printf("\n")
	if len(cfg.Peers) > 1 && cfg.Peers[0] == peerHandover {
		for _, p := range cfg.Peers[1:] {
			rs := pairedRatios(runs, p, peerHandover, func(r recoveryRun) float64 { return secs(r.Wall) })
			b.printf("\n%s ÷ handover, wall time, round by round: median %s (%d rounds).", peerLabel(p, cfg.Kind), spread(rs, "%.2f×"), len(rs))
		}
		b.printf("\n")
	}
}

func peerLabel(p string, kind recoveryKind) string {
	switch {
	case p == peerHandover:
		return "`handover up`"
	case p == peerCLIWaiter && kind == sameAZ:
		return "AWS CLI user data (no API wait on this path: both variants)"
	case p == peerCLIWaiter:
		return "AWS CLI user data, standard waiters"
	case p == peerCLIPoll:
		return "AWS CLI user data, its own 1 s polling"
	case p == peerCLIWaiter+"-model":
		return "AWS CLI user data, standard waiters (model)"
	case p == peerCLIPoll+"-model":
		return "AWS CLI user data, 1 s polling (model)"
	}
	return p
}

func (c recoveryConfig) name() string {
	return fmt.Sprintf("%s-%dms", c.Kind, c.Latency.Milliseconds())
}

// recoveryConfigs are the tables of "Recovery against its limit" and "Against the AWS CLI".
var recoveryConfigs = []recoveryConfig{
	{Kind: crossAZ, Latency: 0, Peers: []string{peerHandover, peerCLIWaiter, peerCLIPoll}},
	{Kind: crossAZ, Latency: 80 * time.Millisecond, Peers: []string{peerHandover}},
	{Kind: sameAZ, Latency: 0, Peers: []string{peerHandover, peerCLIWaiter}},
	{Kind: sameAZ, Latency: 80 * time.Millisecond, Peers: []string{peerHandover}},
	{Kind: pendingAZ, Latency: 0, Peers: []string{peerHandover}},
}

func (b *bench) recoverySection(ctx context.Context) error {
	b.printf("\n## Recovery against its limit, and against the AWS CLI\n")
	b.printf("\nEach peer runs as a process on the replacement instance (`bin/handover up`, or `bash awscli-user-data.sh`), in a fresh world each time, %d rounds, the peers of a round one after the other (order rotated each round) with the same jitter draws. Figures: median (min–max). The limit is the sum of the transitions on the critical path as the simulator recorded them in that run.\n", b.rounds)
	all := map[string][]recoveryRun{}
	for _, cfg := range recoveryConfigs {
		if b.only != "" && !strings.Contains(","+b.only+",", ","+cfg.name()+",") {
			continue
		}
		b.logf("recovery %s, latency %s: %s", cfg.Kind, cfg.Latency, strings.Join(cfg.Peers, ", "))
		runs, err := runRecoveries(ctx, b, cfg, b.rounds)
		all[cfg.name()] = runs
		b.recovered = all
		b.save("recovery.json", all)
		if err != nil {
			return err
		}
		b.printf("\n### %s, %d ms added to every API call\n", cfg.Kind, cfg.Latency.Milliseconds())
		if cfg.Kind == pendingAZ {
			b.printf("\nThe final snapshot (%s) is taken as the measured run starts: up waits for it, then restores. The limit is the snapshot, the restore and the attach as recorded.\n", pendingSnapshot)
		}
		b.recoveryTable(cfg, runs)
	}
	b.progressReport()
	return nil
}
