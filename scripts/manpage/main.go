// Command manpage renders handover.1 (roff) from the CLI's own help: `handover help` for the commands and
// `handover COMMAND --help` for each command's flags, so the man page cannot drift from the binary.
//
//	go run ./scripts/manpage -version 1.2.3 -date 2026-01-31 -o dist/handover.1
//	go run ./scripts/manpage -check-env packaging/default/handover
//
// -check-env fails when the environment file does not mention HANDOVER_<FLAG> for every flag of every
// command (the packages install that file with every setting commented).
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/handover/handover/agent"
)

// cmdHelp is one command as `handover help` lists it, with its flags as its --help prints them.
type cmdHelp struct {
	name, summary string
	flags         []flagHelp
}

type flagHelp struct {
	name, arg string   // arg: the value's type as flag.PrintDefaults names it ("" for a boolean)
	usage     []string // the description, one entry per printed line
}

func main() {
	out := flag.String("o", "", "write the man page here (default: stdout)")
	version := flag.String("version", "dev", "version in the page footer")
	date := flag.String("date", "", "date in the page footer (e.g. the last commit's, for reproducible pages)")
	checkEnv := flag.String("check-env", "", "instead of a page: check this environment file names every flag")
	flag.Parse()

	cmds, intro, err := readHelp()
	if err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
	if *checkEnv != "" {
		if err := checkEnvFile(*checkEnv, cmds); err != nil {
			fmt.Fprintln(os.Stderr, "manpage:", err)
			os.Exit(1)
		}
		return
	}
	var buf bytes.Buffer
	render(&buf, cmds, intro, *version, *date)
	if *out == "" {
		os.Stdout.Write(buf.Bytes())
		return
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "manpage:", err)
		os.Exit(1)
	}
}

// run runs the CLI in process with an empty environment, so that the defaults shown are the built-in ones
// and not those of the machine building the page. Help goes to stderr.
func run(args ...string) (string, int) {
	var stdout, stderr bytes.Buffer
	env := agent.Env{Getenv: func(string) string { return "" }, Stdout: &stdout, Stderr: &stderr}
	code := agent.Main(context.Background(), args, env)
	return stderr.String() + stdout.String(), code
}

var (
	commandLine = regexp.MustCompile(`^  ([a-z][a-z-]*) +(.*)$`)
	flagLine    = regexp.MustCompile(`^  -([a-z][a-z0-9-]*)(?: (\S+))?$`)
)

// readHelp parses `handover help` (the intro lines, the command table) and each command's --help.
func readHelp() ([]cmdHelp, []string, error) {
	text, code := run("help")
	if code != 0 {
		return nil, nil, fmt.Errorf("handover help exited %d", code)
	}
	var cmds []cmdHelp
	var intro []string
	inCommands := false
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		switch {
		case line == "commands:":
			inCommands = true
		case inCommands && commandLine.MatchString(line):
			m := commandLine.FindStringSubmatch(line)
			cmds = append(cmds, cmdHelp{name: m[1], summary: m[2]})
		case line == "":
			inCommands = false
		default:
			intro = append(intro, line)
		}
	}
	if len(cmds) == 0 {
		return nil, nil, fmt.Errorf("no commands in the output of handover help")
	}
	for i := range cmds {
		text, code := run(cmds[i].name, "--help")
		if code != 0 {
			continue // a command without flags (version) refuses --help as an argument
		}
		cmds[i].flags = parseFlags(text)
	}
	return cmds, intro, nil
}

// parseFlags reads flag.PrintDefaults: "  -name type" then the description lines indented by a tab.
func parseFlags(text string) []flagHelp {
	var flags []flagHelp
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if m := flagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, flagHelp{name: m[1], arg: m[2]})
			continue
		}
		if len(flags) > 0 && strings.HasPrefix(line, "    \t") {
			f := &flags[len(flags)-1]
			f.usage = append(f.usage, strings.TrimSpace(line))
		}
	}
	return flags
}

func checkEnvFile(path string, cmds []cmdHelp) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var missing []string
	seen := map[string]bool{}
	for _, c := range cmds {
		for _, f := range c.flags {
			v := "HANDOVER_" + strings.ToUpper(strings.ReplaceAll(f.name, "-", "_"))
			if seen[v] {
				continue
			}
			seen[v] = true
			if !regexp.MustCompile(`(?m)^#?` + v + `=`).Match(b) {
				missing = append(missing, v+" (handover "+c.name+" --"+f.name+")")
			}
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%s does not mention:\n  %s", path, strings.Join(missing, "\n  "))
	}
	return nil
}

// roff escapes text for a man page: backslashes, a leading '.' or '\” (a request), and '-' (so that
// flags and commands copy as ASCII hyphens).
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func render(w io.Writer, cmds []cmdHelp, intro []string, version, date string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p(`.\" Generated by scripts/manpage from the output of handover help and handover COMMAND \-\-help. Do not edit.`)
	p(`.TH HANDOVER 1 "%s" "handover %s" "User Commands"`, date, roff(version))
	p(".SH NAME")
	summary := "keep one stateful EC2 instance's Elastic IP and data across instances and AZs"
	if len(intro) > 0 {
		summary = strings.TrimSuffix(strings.TrimPrefix(intro[0], "handover: "), ".")
	}
	p(`handover \- %s`, roff(summary))
	p(".SH SYNOPSIS")
	p(`.B handover`)
	p(`.I COMMAND`)
	p(`.RI [ flags ]`)
	p(".SH DESCRIPTION")
	p("Every flag can also be set in the environment as")
	p(`.BI HANDOVER_ FLAG`)
	p(`(\fB\-\-pre\-stop\-timeout\fR is \fBHANDOVER_PRE_STOP_TIMEOUT\fR) or as the instance tag`)
	p(`.BI handover: flag \fR.\fP`)
	p("Precedence: the command line, then the environment, then the instance tag, then the default.")
	p("An option that runs a command or names a local path (pre\\-stop, pre\\-stop\\-shell, volume, lock\\-file,")
	p("unit\\-dir, dev\\-dir, sys\\-dir, state\\-file) is never read from an instance tag: a tag for one is a warning.")
	p(".SH COMMANDS")
	for _, c := range cmds {
		p(".TP")
		p(`.B %s`, roff(c.name))
		p("%s", roff(c.summary))
	}
	for _, c := range cmds {
		if len(c.flags) == 0 {
			continue
		}
		p(`.SH OPTIONS OF HANDOVER %s`, strings.ToUpper(roff(c.name)))
		for _, f := range c.flags {
			p(".TP")
			if f.arg != "" {
				p(`.BI \-\-%s " %s"`, roff(f.name), roff(f.arg))
			} else {
				p(`.B \-\-%s`, roff(f.name))
			}
			p("%s", roff(strings.Join(f.usage, " ")))
		}
	}
	p(".SH EXIT STATUS")
	for _, l := range intro {
		if rest, ok := strings.CutPrefix(l, "exit codes: "); ok {
			p("%s", roff(rest))
		}
	}
	p(".SH FILES")
	p(".TP")
	p(`.I /etc/default/handover \fRor\fP /etc/sysconfig/handover`)
	p("environment of the systemd units (HANDOVER_<FLAG>=value), kept on upgrade")
	p(".TP")
	p(".I /usr/lib/systemd/system/handover\\-up.service")
	p("runs handover up at boot")
	p(".TP")
	p(".I /usr/lib/systemd/system/handover\\-watch.service")
	p("runs handover watch for the life of the instance")
	p(".TP")
	p(".I /usr/lib/systemd/system/handover\\-snapshot.timer")
	p("runs handover snapshot hourly (through handover\\-snapshot.service)")
	p(".SH SEE ALSO")
	p(`.BR systemctl (1),`)
	p(`.BR systemd.unit (5)`)
}
