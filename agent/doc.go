// Package agent is what handover does: it converges one EC2 instance onto its group's Elastic IP and data
// volumes (up), hands them over when the instance goes away (down, watch, snapshot), moves the address to a
// standby (failover), and reports (status). It owns the command line, configuration, exit codes and every
// call to EC2 and Auto Scaling.
//
// It must not link the simulator (sim/) or any test fake, must not read the process environment or
// arguments directly (Main receives them), and must never format a volume it did not create blank.
package agent
