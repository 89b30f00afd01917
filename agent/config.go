package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/handover/handover/internal/fail"
)

// Configuration precedence (DESIGN.md): flag > environment (HANDOVER_<FLAG>) > instance tag
// (handover:<flag>) > default. A command declares its flags on a *flags, parses its args slice, and reads
// the instance tags later, when it has them, with applyTags; validate then checks the result in one place.

// flags is a command's flag set plus where each value came from.
type flags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	source map[string]string // flag name -> "flag", "env HANDOVER_X" or "tag handover:x"
	stderr io.Writer

	Common common
}

// common are the options every command has.
type common struct {
	LogFormat   string
	LogLevel    string
	IMDSTimeout time.Duration
	Group       string
	DryRun      bool
}

// newFlags starts a command's flag set with the common options. imdsTimeout is the command's default bound
// on reaching IMDS: long for boot commands (the network may not be up yet), short for interactive ones.
func newFlags(name string, getenv func(string) string, stderr io.Writer, imdsTimeout time.Duration) *flags {
	f := &flags{fs: flag.NewFlagSet("handover "+name, flag.ContinueOnError), getenv: getenv, source: map[string]string{}}
	// Parse errors become one line from Main; only --help prints the flag list.
	f.fs.SetOutput(io.Discard)
	f.fs.Usage = func() {}
	f.stderr = stderr
	f.fs.StringVar(&f.Common.LogFormat, "log-format", "text", "log format: text or json")
	f.fs.StringVar(&f.Common.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.fs.DurationVar(&f.Common.IMDSTimeout, "imds-timeout", imdsTimeout, "how long to wait for instance metadata before giving up (exit 3)")
	f.fs.StringVar(&f.Common.Group, "group", "", "handover group name (default: the instance's handover:group tag)")
	return f
}

// dryRun adds --dry-run, for commands that change anything.
func (f *flags) dryRun() {
	f.fs.BoolVar(&f.Common.DryRun, "dry-run", false, "print what would be done and change nothing")
}

// envName is the environment variable for a flag: --imds-timeout -> HANDOVER_IMDS_TIMEOUT.
func envName(flagName string) string {
	return "HANDOVER_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// tagName is the instance tag for a flag: --launch-hook -> handover:launch-hook.
func tagName(flagName string) string { return "handover:" + flagName }

// parse parses args, then fills every flag not given on the command line from its environment variable.
// A flag that takes several values (a flag.Value with a multi marker) reads its variable as a
// comma-separated list.
func (f *flags) parse(args []string) error {
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(f.stderr, "usage of %s (every flag can also be set as HANDOVER_<FLAG> or the instance tag handover:<flag>):\n", f.fs.Name())
			f.fs.SetOutput(f.stderr)
			f.fs.PrintDefaults()
			return err
		}
		return fail.Usage(err.Error() + " (see --help)")
	}
	if f.fs.NArg() > 0 {
		return fail.Usage(fmt.Sprintf("%s: unexpected argument %q (flags only; see --help)", f.fs.Name(), f.fs.Arg(0)))
	}
	f.fs.Visit(func(fl *flag.Flag) { f.source[fl.Name] = "flag" })
	var err error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || f.source[fl.Name] != "" {
			return
		}
		name := envName(fl.Name)
		v := f.getenv(name)
		if v == "" {
			return
		}
		if e := f.setFrom(fl, v); e != nil {
			err = fail.Usage(fmt.Sprintf("environment %s=%q: %v (fix the variable, e.g. in /etc/default/handover)", name, v, e))
			return
		}
		f.source[fl.Name] = "env " + name
	})
	return err
}

// applyTags fills every flag still at its default from the instance tag handover:<flag>, when present.
// Tags that name no flag of this command are ignored: the same instance tags serve every command.
func (f *flags) applyTags(tags map[string]string) error {
	var err error
	f.fs.VisitAll(func(fl *flag.Flag) {
		if err != nil || f.source[fl.Name] != "" {
			return
		}
		v, ok := tags[tagName(fl.Name)]
		if !ok || v == "" {
			return
		}
		if e := f.setFrom(fl, v); e != nil {
			err = fail.Usage(fmt.Sprintf("instance tag %s=%q: %v (fix the tag or pass --%s)", tagName(fl.Name), v, e, fl.Name))
			return
		}
		f.source[fl.Name] = "tag " + tagName(fl.Name)
	})
	return err
}

// multiValue marks a flag.Value that may be repeated; from the environment or a tag it takes a
// comma-separated list.
type multiValue interface {
	flag.Value
	multi()
}

func (f *flags) setFrom(fl *flag.Flag, v string) error {
	if _, ok := fl.Value.(multiValue); ok {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				if err := fl.Value.Set(part); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return fl.Value.Set(v)
}

// isSet reports whether a flag got a value from the command line, the environment or a tag.
func (f *flags) isSet(name string) bool { return f.source[name] != "" }

// sources lists where each non-default value came from, for the debug log.
func (f *flags) sources() []string {
	var out []string
	for k, v := range f.source {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// validateCommon checks the options every command has.
func (c common) validate() error {
	switch c.LogFormat {
	case "text", "json":
	default:
		return fail.Usage(fmt.Sprintf("--log-format %q: want text or json", c.LogFormat))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return fail.Usage(fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.IMDSTimeout <= 0 {
		return fail.Usage(fmt.Sprintf("--imds-timeout %s: must be positive", c.IMDSTimeout))
	}
	if c.Group != "" && !validGroupName(c.Group) {
		return fail.Usage(fmt.Sprintf("--group %q: use letters, digits, '-', '_' and '.' only (it is a tag value and part of idempotency tokens)", c.Group))
	}
	return nil
}

func validGroupName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
		default:
			return false
		}
	}
	return true
}
