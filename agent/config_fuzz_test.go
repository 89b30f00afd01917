package agent

import (
	"flag"
	"io"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/handover/handover/internal/fail"
)

// FuzzOptionSources fuzzes every option of every command (agent/config.go: flag > HANDOVER_* environment >
// handover:* instance tag) with one value given through each of the three sources, as start does it:
// parse, apply the tags, run the checks. Properties:
//   - a refused value is a usage error (exit 2) whose line names where the value came from, so the
//     operator knows what to fix;
//   - the environment and a tag accept exactly the same values and settle on the same option value, and so
//     does a flag, for options given once (a volume list is one spec per flag, several per variable);
//   - an accepted value, rendered as the command shows it (status, the man page, the packaged environment
//     file) and given again, settles on the same value and is accepted again;
//   - an integer is the decimal number written: flag's own integers read "010" as 8 and "0x10" as 16.
//
// The command and option are picked by index (mod the number of each), so the corpus stays valid when an
// option is added. Run with `go test -run '^$' -fuzz '^FuzzOptionSources$' -fuzztime 60s ./agent/`.
func FuzzOptionSources(f *testing.F) {
	names, options := fuzzCommandOptions()
	for i, name := range names {
		for j, opt := range options[name] {
			if s, ok := optionSamples[opt]; ok {
				f.Add(uint8(i), uint8(j), s.value)
			}
		}
	}
	f.Fuzz(func(t *testing.T, cmdIdx, optIdx uint8, value string) {
		name := names[int(cmdIdx)%len(names)]
		opt := options[name][int(optIdx)%len(options[name])]
		needs := optionSamples[opt].needs
		results := map[string]optionOutcome{}
		for _, src := range []string{"flag", "env", "tag"} {
			if value == "" && src != "flag" {
				continue // an empty variable or tag is unset, not a value
			}
			results[src] = settleOption(name, opt, src, value, needs)
		}
		for src, r := range results {
			if r.err == nil {
				continue
			}
			if code := ExitCode(r.err); code != fail.CodeUsage {
				t.Fatalf("%s --%s from %s = %q: exit %d, want %d (%v)", name, opt, src, value, code, fail.CodeUsage, r.err)
			}
			if want := sourceMention(src, opt); !strings.Contains(r.err.Error(), want) {
				t.Fatalf("%s --%s from %s = %q: the error does not name %s: %v", name, opt, src, value, want, r.err)
			}
		}
		env, tag, fl := results["env"], results["tag"], results["flag"]
		if value != "" && tag.applied {
			if (env.err == nil) != (tag.err == nil) || env.value != tag.value {
				t.Fatalf("%s --%s = %q: environment gives %q (%v), the tag %q (%v)", name, opt, value, env.value, env.err, tag.value, tag.err)
			}
		}
		if value != "" && !fl.list && ((fl.err == nil) != (env.err == nil) || fl.value != env.value) {
			t.Fatalf("%s --%s = %q: the flag gives %q (%v), the environment %q (%v)", name, opt, value, fl.value, fl.err, env.value, env.err)
		}
		for src, r := range results {
			if r.err != nil || !r.set {
				continue
			}
			if r.isInt {
				if n, err := strconv.Atoi(value); err != nil || strconv.Itoa(n) != r.value {
					t.Fatalf("%s --%s from %s = %q: accepted as the integer %s", name, opt, src, value, r.value)
				}
			}
			if r.value == "" {
				continue // a list that became empty again: nothing to render
			}
			again := settleOption(name, opt, "env", r.value, needs)
			if again.err != nil || again.value != r.value {
				t.Fatalf("%s --%s from %s = %q settles on %q, which given again settles on %q (%v)", name, opt, src, value, r.value, again.value, again.err)
			}
		}
	})
}

// optionOutcome is where one value of one option ended up.
type optionOutcome struct {
	err     error
	value   string // the option's value after the checks (its String)
	set     bool   // the option got its value from the source (not left at its default)
	applied bool   // for a tag: the tag was read as the option's value at all
	list    bool   // a flag that takes one item per flag and a list from the environment or a tag
	isInt   bool
}

// settleOption declares command name's options, gives option opt the value from src (with the options it
// needs given as flags), and runs the command's checks as start does.
func settleOption(name, opt, src, value string, needs map[string]string) optionOutcome {
	declare, validate := commandOptions()[name]()
	env := map[string]string{}
	f := newFlags(name, mapEnv(env), io.Discard, time.Minute)
	f.dryRun()
	declare(f)
	fl := f.fs.Lookup(opt)
	_, list := fl.Value.(listValue)
	_, isBool := fl.Value.(interface{ IsBoolFlag() bool })
	_, intErr := strconv.Atoi(fl.DefValue)
	out := optionOutcome{list: list, isInt: intErr == nil && !isBool}
	var args []string
	for k, v := range needs {
		args = append(args, "--"+k+"="+v)
	}
	tags := map[string]string{}
	switch src {
	case "flag":
		args = append(args, "--"+opt+"="+value)
	case "env":
		env[envName(opt)] = value
	case "tag":
		tags[tagName(opt)] = value
	}
	err := f.parse(args)
	if err == nil {
		err = f.applyTags(tags)
	}
	if err == nil {
		err = f.check(validate)
	}
	out.err = err
	out.set = f.isSet(opt)
	out.applied = src != "tag" || f.source[opt] == "tag "+tagName(opt) || err != nil
	out.value = fl.Value.String()
	return out
}

// sourceMention is what a refusal must name for the operator to find the value.
func sourceMention(src, opt string) string {
	switch src {
	case "env":
		return envName(opt)
	case "tag":
		return tagName(opt)
	}
	return "-" + opt
}

// fuzzCommandOptions lists the commands that take options and, for each, its options, both sorted.
func fuzzCommandOptions() ([]string, map[string][]string) {
	opts := commandOptions()
	names := make([]string, 0, len(opts))
	out := map[string][]string{}
	for name, open := range opts {
		names = append(names, name)
		declare, _ := open()
		f := newFlags(name, mapEnv(nil), io.Discard, time.Minute)
		f.dryRun()
		declare(f)
		f.fs.VisitAll(func(fl *flag.Flag) { out[name] = append(out[name], fl.Name) })
		sort.Strings(out[name])
	}
	sort.Strings(names)
	return names, out
}
