package main

import (
	"regexp"
	"sort"
	"strings"
	"time"
)

// Progress on long waits: every wait logs a "waiting" line when its progress changes and at least every
// 5 s (internal/wait.Poll), with the percent where AWS reports one (a snapshot's Progress). checkProgress
// reads the text log of a handover run and notes each wait that stayed silent for longer than
// progressBound, or a snapshot wait whose lines carry no percent.

const progressBound = 6 * time.Second // the 5 s of Poll, plus one poll interval

var (
	logTime  = regexp.MustCompile(`time=(\S+)`)
	logFor   = regexp.MustCompile(`for="([^"]+)"`)
	logProg  = regexp.MustCompile(`progress=("[^"]*"|\S*)`)
	percentR = regexp.MustCompile(`[0-9]+%`)
)

// waitLine is one "waiting" line of a run's log.
type waitLine struct {
	at       time.Time
	what     string
	progress string
}

func waitLines(stderr string) []waitLine {
	var out []waitLine
	for _, line := range strings.Split(stderr, "\n") {
		if !strings.Contains(line, "msg=waiting") {
			continue
		}
		t, f, p := logTime.FindStringSubmatch(line), logFor.FindStringSubmatch(line), logProg.FindStringSubmatch(line)
		if t == nil || f == nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, t[1])
		if err != nil {
			continue
		}
		wl := waitLine{at: at, what: f[1]}
		if p != nil {
			wl.progress = strings.Trim(p[1], `"`)
		}
		out = append(out, wl)
	}
	return out
}

// checkProgress records every silent stretch longer than progressBound within one wait, and snapshot waits
// without a percent; b.progress is reported at the end of the recovery section (progressReport).
func (b *bench) checkProgress(who, stderr string) {
	last := map[string]waitLine{}
	for _, wl := range waitLines(stderr) {
		if prev, ok := last[wl.what]; ok && wl.at.Sub(prev.at) > progressBound {
			b.progress = append(b.progress, who+": "+wl.what+": no progress line for "+wl.at.Sub(prev.at).Round(time.Millisecond).String())
		}
		if strings.HasPrefix(wl.what, "snapshot ") && b.progressSeen[wl.what] == "" {
			if b.progressSeen == nil {
				b.progressSeen = map[string]string{}
			}
			b.progressSeen[wl.what] = wl.progress
		}
		b.progressLines++
		if strings.HasPrefix(wl.what, "snapshot ") && !percentR.MatchString(wl.progress) {
			b.progress = append(b.progress, who+": "+wl.what+": progress "+wl.progress+" without a percent")
		}
		last[wl.what] = wl
	}
}

// progressReport prints what checkProgress found in the handover runs' logs.
func (b *bench) progressReport() {
	var snaps []string
	for what, p := range b.progressSeen {
		snaps = append(snaps, what+": "+p)
	}
	sort.Strings(snaps)
	if len(snaps) > 3 {
		snaps = snaps[:3]
	}
	b.printf("\n### Progress on long waits\n\nThe handover runs above logged %d `waiting` lines (internal/wait.Poll: on each change and at least every 5 s). Checked here: no wait silent for more than %s, and a percent on every snapshot wait (first lines of some: %s).\n",
		b.progressLines, progressBound, strings.Join(snaps, "; "))
	if len(b.progress) == 0 {
		b.printf("\nFound: nothing to report.\n")
		return
	}
	b.printf("\nFound:\n")
	for _, p := range b.progress {
		b.printf("- %s\n", p)
	}
}
