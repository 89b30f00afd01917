package imds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/handover/handover/internal/logkey"
)

// ErrUnreachable is wrapped by WaitIdentity when IMDS did not answer within the bound.
var ErrUnreachable = errors.New("not on EC2, or IMDS unreachable")

// ErrConnectionRefused is wrapped, with ErrUnreachable, when the last attempt found nothing accepting
// connections at the endpoint.
var ErrConnectionRefused = errors.New("connection refused")

// WaitIdentity reads the identity, retrying while IMDS is unreachable, for at most bound.
//
// At boot, user data and early systemd units can run before the instance's network is fully configured
// (the link-local route to 169.254.169.254 comes with it), so the first calls may time out or be refused.
// The schedule is capped exponential: 250 ms doubling to 2 s, jittered, until bound. It logs what it waits
// for every logEvery. An answer that is not a connectivity failure (a 4xx, a malformed document) is returned
// at once: retrying will not heal it; a token request that IMDS refused is a *TokenError.
//
// A token request that reaches IMDS and is never answered is retried for the client's TokenBound (10 s),
// not for all of bound: IMDS answers a request it received at once, so this is the PUT response hop limit,
// and waiting longer only delays the one line that says so (a *TokenError with Unanswered). When ctx ends
// before the bound (the agent is being stopped), the error wraps ctx's cause, not ErrUnreachable: IMDS was
// not given its full bound. A nil log logs nothing.
func (c *Client) WaitIdentity(ctx context.Context, bound time.Duration, log *slog.Logger) (Identity, error) {
	const logEvery = 5 * time.Second
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	waitCtx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 250 * time.Millisecond
	b.MaxInterval = 2 * time.Second
	b.MaxElapsedTime = 0 // the context is the bound

	var (
		id              Identity
		lastErr         error
		lastLog         = start
		unansweredSince time.Time // the first of the token requests that reached IMDS and got no answer
	)
	unanswered := func(err error) *TokenError {
		return &TokenError{Endpoint: c.endpoint, Unanswered: true, Waited: time.Since(unansweredSince), err: err}
	}
	op := func() error {
		var err error
		attempt := time.Now()
		id, err = c.Identity(waitCtx)
		if err == nil {
			return nil
		}
		if !Unreachable(err) {
			return backoff.Permanent(err)
		}
		lastErr = err
		switch {
		case !tokenUnanswered(err):
			unansweredSince = time.Time{}
		case unansweredSince.IsZero():
			unansweredSince = attempt
			fallthrough
		default:
			if time.Since(unansweredSince) >= c.tokenBound {
				return backoff.Permanent(unanswered(err))
			}
		}
		if time.Since(lastLog) >= logEvery {
			lastLog = time.Now()
			log.Info("waiting for instance metadata", logkey.Step, "imds", "endpoint", c.endpoint,
				logkey.Elapsed, time.Since(start).Round(time.Millisecond).String(), logkey.Error, err.Error())
		}
		return err
	}
	err := backoff.Retry(op, backoff.WithContext(b, waitCtx))
	if err == nil {
		return id, nil
	}
	if ctx.Err() != nil {
		return Identity{}, fmt.Errorf("waiting for IMDS at %s: stopped after %s: %w", c.endpoint,
			time.Since(start).Round(time.Millisecond), context.Cause(ctx))
	}
	var te *TokenError
	if errors.As(err, &te) {
		return Identity{}, te
	}
	if lastErr != nil && (errors.Is(err, context.DeadlineExceeded) || Unreachable(err)) {
		switch {
		case tokenUnanswered(lastErr):
			return Identity{}, unanswered(lastErr)
		case connectionRefused(lastErr):
			return Identity{}, fmt.Errorf("IMDS at %s refused connections for %s: %w: %w", c.endpoint, bound, ErrUnreachable, ErrConnectionRefused)
		}
		return Identity{}, fmt.Errorf("IMDS at %s did not answer within %s: %w", c.endpoint, bound, ErrUnreachable)
	}
	return Identity{}, err
}
