// Package wait is handover's one way to wait: every wait has a bound, follows the context, backs off,
// and tells the operator what it waits for and how far along it is. Both the cloud layer (EBS and
// Auto Scaling transitions) and the host layer (a device to appear) wait through it.
package wait

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/handover/handover/internal/logkey"
)

// Spec describes one bounded wait.
type Spec struct {
	What  string        // what we wait for, for the log: "volume vol-0abc available"
	Bound time.Duration // give up after this long
	Step  string        // the log's step key; leave empty when log already carries one
	// Initial and Max shape the poll schedule; zero means 250 ms doubling to a 2 s cap. EBS transitions
	// of small volumes take 1 to 10 s, so polling faster than the SDK waiters' 15 s minimum saves most of
	// the recovery time, and the cap keeps a long wait from hammering the API.
	Initial, Max time.Duration
	// Transient reports a check error that heals with time (AWS throttling): the wait goes on. Any other
	// error stops it. nil: every error stops it.
	Transient func(error) bool
}

// ErrTimeout is wrapped when a wait runs past its bound.
var ErrTimeout = errors.New("timed out")

// Poll calls check until it reports done, it returns an error, the bound passes or ctx ends. check returns
// a progress string ("42%", "attaching") that is logged when it changes and at least every 5 s. A check
// error wrapped in backoff.Permanent, or any error Spec.Transient does not excuse, stops the wait at once.
func Poll(ctx context.Context, log *slog.Logger, w Spec, check func(context.Context) (done bool, progress string, err error)) error {
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
	// pressure slows this wait down while checks are throttled (Transient): the schedule's interval is
	// multiplied by it, doubling on each throttled check up to 16 and halving on each answered one. Many
	// instances polling one account's request bucket (a whole AZ recovering at once) then share it instead
	// of spending it on refusals. https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
	pressure := 1
	for {
		done, progress, err := check(wctx)
		if err != nil && w.Transient != nil && w.Transient(err) {
			pressure = min(pressure*2, 16)
		} else if pressure > 1 {
			pressure /= 2
		}
		if err != nil && (w.Transient == nil || !w.Transient(err)) {
			if wctx.Err() != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				break // the bound ran out during the call: a timeout of this wait, not a failure of the call
			}
			var perm *backoff.PermanentError
			if errors.As(err, &perm) {
				return perm.Err
			}
			return err
		}
		if done {
			return nil
		}
		if progress != last || time.Since(lastLog) >= logEvery {
			attrs := []any{"for", w.What, "progress", progress, logkey.Elapsed, time.Since(start).Round(time.Millisecond).String()}
			if w.Step != "" {
				attrs = append(attrs, logkey.Step, w.Step)
			}
			log.Info("waiting", attrs...)
			last, lastLog = progress, time.Now()
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("waited %s for %s (last seen: %s): %w", w.Bound, w.What, last, ErrTimeout)
		case <-after(b.NextBackOff() * time.Duration(pressure)):
		}
	}
	return fmt.Errorf("waited %s for %s (last seen: %s): %w", w.Bound, w.What, last, ErrTimeout)
}

// after is time.After; the package's tests read the schedule through it.
var after = time.After

// Pause waits d or until ctx ends.
func Pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Deadline returns ctx's deadline, or an hour from now when it has none (every command context has one).
func Deadline(ctx context.Context) time.Time {
	d, ok := ctx.Deadline()
	if !ok {
		return time.Now().Add(time.Hour)
	}
	return d
}
