package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"time"
)

// config is the function's configuration, from its environment variables (the same HANDOVER_<FLAG> names
// as `handover failover`). It is read once, at cold start, and checked in one place.
type config struct {
	Group         string        // HANDOVER_GROUP: act only for this group ("" = the failed instance's group)
	SwapRoles     bool          // HANDOVER_SWAP_ROLES, default true
	WaitStatusOK  bool          // HANDOVER_WAIT_STATUS_OK, default false
	StartTimeout  time.Duration // HANDOVER_START_TIMEOUT, default 5m
	StatusTimeout time.Duration // HANDOVER_STATUS_TIMEOUT, default 10m
	MaxEventAge   time.Duration // HANDOVER_MAX_EVENT_AGE, default 30m; 0 accepts events of any age
	DryRun        bool          // HANDOVER_DRY_RUN: log the plan, change nothing
	LogLevel      slog.Level    // HANDOVER_LOG_LEVEL, default info
}

// loadConfig reads the configuration. SwapRoles defaults to true, unlike the CLI's --swap-roles: after an
// unattended failover the instance that serves must be the one whose failure the next event reports, and
// the old primary, once repaired, the standby it goes back to.
//
// MaxEventAge guards against a late redelivery (EventBridge and Lambda's asynchronous invocation retry for
// hours) of an alarm that has long been dealt with. Keep it above the function's timeout times three:
// Lambda retries a failed asynchronous invocation twice.
// https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html
func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		Group:         getenv("HANDOVER_GROUP"),
		SwapRoles:     true,
		StartTimeout:  5 * time.Minute,
		StatusTimeout: 10 * time.Minute,
		MaxEventAge:   30 * time.Minute,
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{{"HANDOVER_SWAP_ROLES", &c.SwapRoles}, {"HANDOVER_WAIT_STATUS_OK", &c.WaitStatusOK}, {"HANDOVER_DRY_RUN", &c.DryRun}} {
		if v := getenv(b.name); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return config{}, fmt.Errorf("environment %s=%q: want true or false", b.name, v)
			}
			*b.dst = x
		}
	}
	for _, d := range []struct {
		name      string
		dst       *time.Duration
		zeroValid bool
	}{{"HANDOVER_START_TIMEOUT", &c.StartTimeout, false}, {"HANDOVER_STATUS_TIMEOUT", &c.StatusTimeout, false}, {"HANDOVER_MAX_EVENT_AGE", &c.MaxEventAge, true}} {
		if v := getenv(d.name); v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x < 0 || (x == 0 && !d.zeroValid) {
				return config{}, fmt.Errorf("environment %s=%q: want a positive duration such as 5m", d.name, v)
			}
			*d.dst = x
		}
	}
	if v := getenv("HANDOVER_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return config{}, fmt.Errorf("environment HANDOVER_LOG_LEVEL=%q: want debug, info, warn or error", v)
		}
	}
	return c, nil
}
