// Package sim owns the simulated AWS region: EC2 (instances, volumes,
// snapshots, Elastic IPs, tags, launch templates), Auto Scaling (groups and
// lifecycle hooks), one IMDS per running instance and real block devices
// backed by sparse image files.
//
// It speaks the AWS Query protocol on one loopback port, so the AWS CLI and
// aws-sdk-go-v2 clients drive it unchanged through their endpoint overrides.
// Production code never imports it: only tests, benchmarks and the
// handover-sim command do.
//
// Every transition that takes time on AWS (creating -> available,
// pending -> completed, attaching -> attached, pending -> running, ...)
// takes time here too, scaled by Options.Speed, and is driven by timers under
// one mutex. State is written to Options.StateDir/state.json after every
// change, so a restarted simulator carries on where it stopped.
package sim
