package agent

import (
	"context"
	"errors"

	"github.com/handover/handover/imds"
)

// Exit codes, as fixed in DESIGN.md. They are mapped from errors in one place: ExitCode.
const (
	ExitOK           = 0 // done, or nothing to do
	ExitFailed       = 1 // failed while acting; state may be partial, rerun converges
	ExitUsage        = 2 // usage or bad configuration
	ExitPrecondition = 3 // precondition not met: not on EC2, no such tag, ambiguous match, wrong AZ and no snapshot
	ExitFenced       = 4 // lost a race to another instance
)

// Error is an error with the exit code it must end the process with. Its message is the one line the
// operator reads, so it says what to fix.
type Error struct {
	Code int
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Msg
	}
	if e.Msg == "" {
		return e.Err.Error()
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// usageErr is a bad flag, environment variable or tag value (exit 2).
func usageErr(msg string) error { return &Error{Code: ExitUsage, Msg: msg} }

// preconditionErr is a world that handover must not act on as it is (exit 3); err may be nil.
func preconditionErr(msg string, err error) error {
	return &Error{Code: ExitPrecondition, Msg: msg, Err: err}
}

// fencedErr is a race lost to another instance (exit 4).
func fencedErr(msg string, err error) error { return &Error{Code: ExitFenced, Msg: msg, Err: err} }

// ExitCode maps an error to the process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if errors.Is(err, imds.ErrUnreachable) {
		return ExitPrecondition
	}
	if errors.Is(err, context.Canceled) {
		return ExitFailed
	}
	return ExitFailed
}
