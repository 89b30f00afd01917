package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"
)

// statusConfig is `handover status`.
type statusConfig struct {
	JSON bool
}

func runStatus(ctx context.Context, e Env, args []string) error {
	f := newFlags("status", e.Getenv, e.Stderr, 5*time.Second)
	var cfg statusConfig
	f.fs.BoolVar(&cfg.JSON, "json", false, "print JSON instead of text")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := f.Common.validate(); err != nil {
		return err
	}
	log := newLogger(e.Stderr, f.Common)
	md := newIMDS(e.Getenv)
	id, err := identify(ctx, log, md, f.Common.IMDSTimeout)
	if err != nil {
		return err
	}
	var clients *Clients
	ec2c := func() (EC2, error) {
		if clients == nil {
			c, err := newClients(ctx, e.Getenv, id.Region)
			if err != nil {
				return nil, err
			}
			clients = c
		}
		return clients.EC2, nil
	}
	tags, from, err := instanceTags(ctx, md, ec2c, id.InstanceID)
	if err != nil {
		return err
	}
	if err := f.applyTags(tags); err != nil {
		return err
	}
	st := struct {
		self
		Group string `json:"group"`
	}{self: self{Identity: id, Tags: tags, TagsFrom: from}, Group: f.Common.Group}

	if cfg.JSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := e.Stdout
	fmt.Fprintf(w, "instance   %s (%s)\n", id.InstanceID, id.InstanceType)
	fmt.Fprintf(w, "zone       %s (%s), region %s, account %s\n", id.AvailabilityZone, orDash(id.AvailabilityZoneID), id.Region, id.AccountID)
	group := st.Group
	if group == "" {
		group = "- (no handover:group tag; pass --group)"
	}
	fmt.Fprintf(w, "group      %s\n", group)
	fmt.Fprintf(w, "tags       (from %s)\n", from)
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s = %s\n", k, tags[k])
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
