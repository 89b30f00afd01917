package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/handover/handover/cloud"
	"github.com/handover/handover/imds"
	"github.com/handover/handover/internal/fail"
	"github.com/handover/handover/internal/logkey"
	"github.com/handover/handover/internal/wait"
)

// Every command starts the same way (start): parse the args, check flags and environment before anything
// waits on the network (a typo fails at once, exit 2), build the logger, read who and where this instance
// is from metadata, build the AWS clients, read the instance's tags, apply them to every option still at its
// default, check again, and make sure the group is known. Precedence is flag > HANDOVER_* environment >
// instance tag handover:<flag> > default for every option of every command (DESIGN.md), because every
// option goes through this one path; a bad value is reported with the source it came from.

// startSpec is what one command asks of the start-up.
type startSpec struct {
	name        string
	imdsTimeout time.Duration // default --imds-timeout: long for boot commands (the network may not be up yet)
	dryRun      bool          // the command changes things, so it takes --dry-run
	declare     func(*flags)  // the command's own flags
	validate    func() error  // the command's own checks, on flags and environment, then again with the tags
	// groupTagWait is how long a missing group tag is read again (up at boot: Auto Scaling tags an
	// instance as it launches it and metadata can lag the tags by a few seconds).
	// https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-tagging.html
	groupTagWait  time.Duration
	optionalGroup bool          // status runs without a group and says so
	noInstance    bool          // failover runs anywhere with credentials: no metadata, region from the environment
	offline       bool          // iam-policy: flags and environment only; no metadata, no AWS clients
	newClients    clientFactory // nil: cloud.NewClients; tests wrap it
}

// clientFactory builds the AWS clients; tests substitute one that wraps them.
type clientFactory func(ctx context.Context, getenv func(string) string, region string) (*cloud.Clients, error)

// started is what a command starts from.
type started struct {
	flags    *flags
	log      *slog.Logger
	md       *imds.Client // nil with noInstance
	id       imds.Identity
	tags     map[string]string
	tagsFrom string // "imds" or "ec2:DescribeTags"
	clients  *cloud.Clients
	group    string
	dryRun   bool
}

// start runs the start-up pipeline for one command.
func start(ctx context.Context, e Env, args []string, spec startSpec) (*started, error) {
	f := newFlags(spec.name, e.Getenv, e.Stderr, spec.imdsTimeout)
	if spec.dryRun {
		f.dryRun()
	}
	if spec.declare != nil {
		spec.declare(f)
	}
	if err := f.parse(args); err != nil {
		return nil, err
	}
	if err := f.check(spec.validate); err != nil {
		return nil, err
	}
	if spec.offline {
		return &started{flags: f, log: newLogger(e.Stderr, f.Common), dryRun: f.Common.DryRun}, nil
	}
	newC := spec.newClients
	if newC == nil {
		newC = cloud.NewClients
	}
	st := &started{flags: f, log: newLogger(e.Stderr, f.Common), dryRun: f.Common.DryRun}
	if spec.noInstance {
		region := cloud.FirstNonEmpty(e.Getenv("AWS_REGION"), e.Getenv("AWS_DEFAULT_REGION"))
		c, err := newC(ctx, e.Getenv, region)
		if err != nil {
			return nil, err
		}
		st.clients, st.group = c, f.Common.Group
		st.log.Debug("configuration", logkey.Sources, strings.Join(f.sources(), " "))
		return st, nil
	}
	st.md = newIMDS(e.Getenv)
	id, err := identify(ctx, st.log, st.md, f.Common.IMDSTimeout)
	if err != nil {
		return nil, err
	}
	st.id = id
	if st.clients, err = newC(ctx, e.Getenv, id.Region); err != nil {
		return nil, err
	}
	if err := st.readTags(ctx, spec.groupTagWait); err != nil {
		return nil, err
	}
	if err := f.applyTags(st.tags); err != nil {
		return nil, err
	}
	warnIgnoredTags(st.log, f.ignoredTags)
	if err := f.check(spec.validate); err != nil {
		return nil, err
	}
	st.group = f.Common.Group
	if st.group == "" && !spec.optionalGroup {
		return nil, preconditionNoGroup(id.InstanceID, st.tagsFrom)
	}
	st.log.Debug("configuration", logkey.Sources, strings.Join(f.sources(), " "))
	return st, nil
}

// readTags reads the instance's tags, again for at most wait while the group tag is missing and no group
// was given otherwise.
func (st *started) readTags(ctx context.Context, bound time.Duration) error {
	ec2c := func() (cloud.EC2, error) { return st.clients.EC2, nil }
	// The read has its own bound on an unanswering IMDS (--imds-timeout); the group tag's bound only
	// decides how long a missing tag is read again.
	outer := ctx
	read := func(context.Context) (bool, string, error) {
		t, src, err := instanceTags(outer, st.log, st.md, ec2c, st.id.InstanceID, st.flags.Common.IMDSTimeout)
		if err != nil {
			return false, "", err
		}
		st.tags, st.tagsFrom = t, src
		return st.flags.isSet("group") || t[cloud.TagGroup] != "", "no " + cloud.TagGroup + " tag yet", nil
	}
	if bound <= 0 {
		_, _, err := read(ctx)
		return err
	}
	err := cloud.Poll(ctx, st.log, wait.Spec{What: "instance tag " + cloud.TagGroup, Bound: bound, Step: "identity"}, read)
	if errors.Is(err, wait.ErrTimeout) {
		return nil // start says what is missing
	}
	return err
}

// warnIgnoredTags says, for each instance tag that tried to set an option that runs a command or names a
// local path (notFromTags), that it was not applied and where the option goes instead.
func warnIgnoredTags(log *slog.Logger, tags []string) {
	for _, tag := range tags {
		env := envName(strings.TrimPrefix(tag, "handover:"))
		log.Warn("instance tag ignored: an option that runs a command or names a local path is never read from a tag (anyone who may tag the instance could set it); set "+env+" in /etc/default/handover (/etc/sysconfig/handover on rpm systems) or pass the flag",
			logkey.Step, "identity", "tag", tag)
	}
}

func preconditionNoGroup(instanceID, from string) error {
	return fail.Precondition(fmt.Sprintf("instance %s has no %s tag (read from %s) and no --group was given: tag the group's instances (a group tag with PropagateAtLaunch) or pass --group",
		instanceID, cloud.TagGroup, from), nil)
}

// check runs the common checks and the command's own, naming the source of a bad value.
func (f *flags) check(validate func() error) error {
	if err := f.Common.validate(); err != nil {
		return f.explain(err)
	}
	if validate != nil {
		if err := validate(); err != nil {
			return f.explain(err)
		}
	}
	return nil
}
