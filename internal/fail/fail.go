// Package fail is the errors handover ends with: each carries the exit code fixed in DESIGN.md and one
// line that tells the operator what to fix. The cloud layer, the host layer and the commands all build
// them; only the command's main turns one into a process exit code (Code).
package fail

import (
	"errors"
	"strings"
)

// Exit codes, as fixed in DESIGN.md.
const (
	CodeOK           = 0 // done, or nothing to do
	CodeFailed       = 1 // failed while acting; state may be partial, rerun converges
	CodeUsage        = 2 // usage or bad configuration
	CodePrecondition = 3 // precondition not met: not on EC2, no such tag, ambiguous match, wrong AZ and no snapshot
	CodeFenced       = 4 // lost a race to another instance
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

// Usage is a bad flag, environment variable or tag value (exit 2).
func Usage(msg string) error { return &Error{Code: CodeUsage, Msg: msg} }

// Precondition is a world that handover must not act on as it is (exit 3); err may be nil.
func Precondition(msg string, err error) error {
	return &Error{Code: CodePrecondition, Msg: msg, Err: err}
}

// Fenced is a race lost to another instance (exit 4).
func Fenced(msg string, err error) error { return &Error{Code: CodeFenced, Msg: msg, Err: err} }

// Failed is a failure while acting whose line says what to do (exit 1); err may be nil.
func Failed(msg string, err error) error { return &Error{Code: CodeFailed, Msg: msg, Err: err} }

// Code maps an error to the process exit code: an *Error's own code, 1 for any other error.
func Code(err error) int {
	if err == nil {
		return CodeOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeFailed
}

// OneLine folds a message (a tool's output, a wrapped error) onto one line, as every failure is printed.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
