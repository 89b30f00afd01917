package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/host"
	"github.com/handover/handover/internal/fail"
)

// Configuration precedence (DESIGN.md): flag > environment (HANDOVER_<FLAG>) > instance tag
// (handover:<flag>, except for the options in notFromTags) > default. A command declares its flags on a *flags, parses its args slice, and reads
// the instance tags later, when it has them, with applyTags; validate then checks the result in one place.

// flags is a command's flag set plus where each value came from.
type flags struct {
	fs     *flag.FlagSet
	getenv func(string) string
	source map[string]string // flag name -> "flag", "env HANDOVER_X" or "tag handover:x"
	stderr io.Writer
	// ignoredTags are the instance tags applyTags found for options that never come from a tag
	// (notFromTags), for start to warn about.
	ignoredTags []string

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

// intVar declares an integer option read as a decimal number, where flag.IntVar reads "010" as 8 and
// "0x10" as 16 (strconv.ParseInt with base 0): HANDOVER_KEEP=010 in an environment file means ten. The help
// names the value by the word of usage in backquotes (flag.UnquoteUsage), "value" without one.
func (f *flags) intVar(p *int, name string, value int, usage string) {
	*p = value
	f.fs.Var((*decimalInt)(p), name, usage)
}

// decimalInt is an int flag.Value that reads only decimal numbers.
type decimalInt int

func (d *decimalInt) String() string { return strconv.Itoa(int(*d)) }

func (d *decimalInt) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("want a decimal integer")
	}
	*d = decimalInt(n)
	return nil
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
	unhint := f.hintParseErrors()
	if err := f.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			unhint() // the help names each value's type from the flag package's own values
			fmt.Fprintf(f.stderr, "usage of %s (every flag can also be set as HANDOVER_<FLAG>, and as the instance tag handover:<flag> unless it runs a command or names a local path):\n", f.fs.Name())
			f.fs.SetOutput(f.stderr)
			f.fs.PrintDefaults()
			return err
		}
		return fail.Usage(err.Error() + " (see --help)")
	}
	if f.fs.NArg() > 0 {
		// A flag that may stand alone (a boolean, --on-rebalance) takes its value only after '=': say so
		// when the argument follows one.
		if i := len(args) - f.fs.NArg(); i > 0 {
			if fl := f.fs.Lookup(strings.TrimLeft(args[i-1], "-")); fl != nil && strings.HasPrefix(args[i-1], "-") {
				if b, ok := fl.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
					return fail.Usage(fmt.Sprintf("unexpected argument %q: give a value of --%s as --%s=%s (see --help)", f.fs.Arg(0), fl.Name, fl.Name, f.fs.Arg(0)))
				}
			}
		}
		return fail.Usage(fmt.Sprintf("unexpected argument %q (flags only; see --help)", f.fs.Arg(0)))
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

// notFromTags are the options that run a command as root or choose a local path, which an instance tag
// must never set: anyone allowed to tag the instance (handover's own role has ec2:CreateTags) could
// otherwise make down run any command as root (pre-stop, pre-stop-shell), or point up at another mount
// point, unit directory or device directory (volume, unit-dir, dev-dir, sys-dir: mount a filesystem
// whose files the service's user writes over /etc/profile.d, or write a unit anywhere), or make a command
// create or truncate files where it likes (lock-file, state-file). They come only from flags, the
// environment (the packaged units read /etc/default/handover or /etc/sysconfig/handover, which only root
// can write) or the unit. A tag for one of them is a warning, never an action. A new option that takes a
// path or a command belongs here (TestOptionsThatRunCommandsOrNamePathsIgnoreTags checks the known ones,
// and that every option whose value is an absolute path is here).
var notFromTags = map[string]bool{
	"pre-stop": true, "pre-stop-shell": true,
	"volume": true, "lock-file": true, "unit-dir": true, "dev-dir": true, "sys-dir": true, "state-file": true,
}

// hintParseErrors makes a bad duration or boolean say what it should be, from a flag, the environment or
// a tag alike: the flag package's own error for both is "parse error". unhint puts the flag package's
// values back.
func (f *flags) hintParseErrors() (unhint func()) {
	orig := map[*flag.Flag]flag.Value{}
	f.fs.VisitAll(func(fl *flag.Flag) {
		g, ok := fl.Value.(flag.Getter)
		if !ok {
			return
		}
		switch g.Get().(type) {
		case time.Duration:
			orig[fl], fl.Value = fl.Value, hintValue{fl.Value, "want a duration such as 90s or 5m"}
		case bool:
			orig[fl], fl.Value = fl.Value, boolHintValue{hintValue{fl.Value, "want true or false"}}
		}
	})
	return func() {
		for fl, v := range orig {
			fl.Value = v
		}
	}
}

// hintValue is a flag.Value whose Set fails with hint.
type hintValue struct {
	flag.Value
	hint string
}

func (h hintValue) Set(s string) error {
	if err := h.Value.Set(s); err != nil {
		return errors.New(h.hint)
	}
	return nil
}

// boolHintValue is a hintValue of a boolean flag, which stands alone on the command line.
type boolHintValue struct{ hintValue }

func (boolHintValue) IsBoolFlag() bool { return true }

// applyTags fills every flag still at its default from the instance tag handover:<flag>, when present.
// Tags that name no flag of this command are ignored: the same instance tags serve every command. A tag
// for an option in notFromTags is never applied; it is listed in f.ignoredTags.
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
		if notFromTags[fl.Name] {
			f.ignoredTags = append(f.ignoredTags, tagName(fl.Name))
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

// listValue is a flag.Value that may be repeated; from the environment or a tag, where it can be given only
// once, it takes a list of values in one string, split its own way (a volume spec carries commas).
type listValue interface {
	flag.Value
	setList(string) error
}

func (f *flags) setFrom(fl *flag.Flag, v string) error {
	if l, ok := fl.Value.(listValue); ok {
		return l.setList(v)
	}
	return fl.Value.Set(v)
}

// optionError is an option whose value is wrong; explain names where the value came from.
type optionError struct {
	Flag string // the flag's name, without dashes
	Msg  string
}

func (e *optionError) Error() string { return "--" + e.Flag + ": " + e.Msg }

// Unwrap makes an optionError a usage error (exit 2) even before explain names its source.
func (e *optionError) Unwrap() error { return fail.Usage(e.Error()) }

// badOption is a wrong value of option name (or a wrong combination, named by its first option).
func badOption(name, format string, args ...any) error {
	return &optionError{Flag: name, Msg: fmt.Sprintf(format, args...)}
}

// explain turns an *optionError into the usage error (exit 2) an operator can act on: it names the flag,
// the environment variable or the instance tag the value came from, with the value, and where to fix it.
// Any other error is returned as it is.
func (f *flags) explain(err error) error {
	var oe *optionError
	if !errors.As(err, &oe) {
		return err
	}
	v := ""
	if fl := f.fs.Lookup(oe.Flag); fl != nil {
		v = fl.Value.String()
	}
	switch src := f.source[oe.Flag]; {
	case strings.HasPrefix(src, "env "):
		return fail.Usage(fmt.Sprintf("environment %s=%q: %s (fix the variable, e.g. in /etc/default/handover)", envName(oe.Flag), v, oe.Msg))
	case strings.HasPrefix(src, "tag "):
		return fail.Usage(fmt.Sprintf("instance tag %s=%q: %s (fix the tag or pass --%s)", tagName(oe.Flag), v, oe.Msg, oe.Flag))
	case src == "":
		return fail.Usage(fmt.Sprintf("--%s %q (the default): %s", oe.Flag, v, oe.Msg))
	default:
		return fail.Usage(fmt.Sprintf("--%s %q: %s", oe.Flag, v, oe.Msg))
	}
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
		return badOption("log-format", "want text or json")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return badOption("log-level", "want debug, info, warn or error")
	}
	if c.IMDSTimeout <= 0 {
		return badOption("imds-timeout", "must be positive")
	}
	if c.Group != "" && !cloud.ValidGroupName(c.Group) {
		return badOption("group", "use letters, digits, '-', '_' and '.' only (it is a tag value and part of idempotency tokens)")
	}
	return nil
}

// hostOptions are the options of every command that works on this instance's volumes, declared here
// once: which volumes (--volume), the lock they share (--lock-file), and where devices appear (--dev-dir,
// --sys-dir; HANDOVER_DEV_DIR and HANDOVER_SYS_DIR, which the simulator sets, point every command at the
// same devices).
type hostOptions struct {
	Volumes        volumeSpecs
	LockFile       string
	DevDir, SysDir string
}

func (h *hostOptions) register(f *flags, lockUsage string) {
	f.fs.Var(&h.Volumes, "volume", "SLOT:DEVICE:MOUNTPOINT[:options], repeatable (default data:/dev/sdf:/data); from the environment or a tag, specs separated by spaces")
	f.fs.StringVar(&h.LockFile, "lock-file", host.DefaultLockFile, lockUsage)
	f.fs.StringVar(&h.DevDir, "dev-dir", "/dev", "device directory holding disk/by-id (the simulator points it elsewhere)")
	f.fs.StringVar(&h.SysDir, "sys-dir", "/sys", "sysfs directory holding class/block/*/device/serial")
}

func (h *hostOptions) validate() error {
	for _, o := range []struct{ name, path string }{{"lock-file", h.LockFile}, {"dev-dir", h.DevDir}, {"sys-dir", h.SysDir}} {
		if !filepath.IsAbs(o.path) {
			return badOption(o.name, "must be an absolute path")
		}
	}
	return nil
}

// machine is this instance's host layer, with calls (zero: the kernel's; tests substitute ones that hang).
// Its freeze markers go with the lock file: the lock is what tells a live freeze from a dead one.
func (h *hostOptions) machine(calls host.FSCalls) *host.Linux {
	return &host.Linux{DevDir: h.DevDir, SysDir: h.SysDir, Calls: calls, FreezeMarkers: host.FreezeMarkerDir(h.LockFile)}
}
