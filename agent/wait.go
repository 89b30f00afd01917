package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// waitSpec describes one bounded wait.
type waitSpec struct {
	What  string        // what we wait for, for the log: "volume vol-0abc available"
	Bound time.Duration // give up after this long
	Step  string        // the log's step key; leave empty when log already carries one
	// Initial and Max shape the poll schedule; zero means 250 ms doubling to a 2 s cap. EBS transitions
	// of small volumes take 1 to 10 s, so polling faster than the SDK waiters' 15 s minimum saves most of
	// the recovery time, and the cap keeps a long wait from hammering the API.
	Initial, Max time.Duration
}

// errWaitTimeout is wrapped when a wait runs past its bound.
var errWaitTimeout = errors.New("timed out")

// poll calls check until it reports done, it returns an error, the bound passes or ctx ends. check returns
// a progress string ("42%", "attaching") that is logged when it changes and at least every 5 s. A check
// error wrapped in backoff.Permanent, or any error that is not throttling, stops the wait at once.
func poll(ctx context.Context, log *slog.Logger, w waitSpec, check func(context.Context) (done bool, progress string, err error)) error {
	const logEvery = 5 * time.Second
	start := time.Now()
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = w.Initial
	if b.InitialInterval == 0 {
		b.InitialInterval = 250 * time.Millisecond
	}
	b.MaxInterval = w.Max
	if b.MaxInterval == 0 {
		b.MaxInterval = 2 * time.Second
	}
	b.RandomizationFactor = 0.2
	b.MaxElapsedTime = 0
	b.Reset()

	wctx, cancel := context.WithTimeout(ctx, w.Bound)
	defer cancel()
	var last string
	lastLog := start
	for {
		done, progress, err := check(wctx)
		if err != nil && !isThrottled(err) {
			var perm *backoff.PermanentError
			if errors.As(err, &perm) {
				return perm.Err
			}
			if wctx.Err() != nil && ctx.Err() == nil {
				break // the bound ran out during the call
			}
			return err
		}
		if done {
			return nil
		}
		if progress != last || time.Since(lastLog) >= logEvery {
			attrs := []any{"for", w.What, "progress", progress, keyElapsed, time.Since(start).Round(time.Millisecond).String()}
			if w.Step != "" {
				attrs = append(attrs, keyStep, w.Step)
			}
			log.Info("waiting", attrs...)
			last, lastLog = progress, time.Now()
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-wctx.Done():
			t.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("waited %s for %s (last seen: %s): %w", w.Bound, w.What, last, errWaitTimeout)
		case <-t.C:
		}
	}
	return fmt.Errorf("waited %s for %s (last seen: %s): %w", w.Bound, w.What, last, errWaitTimeout)
}
