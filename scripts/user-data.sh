#!/bin/bash
# handover user data: the EC2 user data of an instance whose AMI has the handover package installed
# (dpkg -i handover_*.deb or rpm -i handover-*.rpm while baking it; README "Install from a package").
# The templates under packaging/cloudformation/ carry this file as it is (scripts/cfn-policy copies it in).
#
# The package's units do the work, and this script only makes sure they do it at this boot:
#   handover-up.service      oneshot: Elastic IP, data volumes, filesystems, mounts, the launch hook
#   handover-watch.service   for the life of the instance: hands the data over on termination or Spot
#   handover-snapshot.timer  the periodic snapshot (handover-snapshot.service)
# The package enables them, so they start at boot anyway; this enables them again (an AMI baked in a
# chroot, where the package could not) and starts them, waiting for up. Starting a oneshot that is
# running already waits for that run; one that has finished at this boot (RemainAfterExit) returns at
# once: up never runs twice at the same time (and if it did, the instance lock makes the runs take turns).
#
# Configuration is not here: handover reads it from the instance's tags in metadata (handover:group,
# handover:launch-hook, handover:terminate-hook, handover:volume, ...: the launch template sets them),
# and from /etc/default/handover (deb) or /etc/sysconfig/handover (rpm) baked into the AMI.
#
# cloud-init writes this script's output to /var/log/cloud-init-output.log; every failure is one line
# there that says what to fix, and a non-zero exit (cloud-init reports the user data failed).
set -euo pipefail

bin=/usr/bin/handover
units=(handover-up.service handover-watch.service handover-snapshot.timer)

say() { echo "handover user data: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# Without the binary nothing holds the launch hook, so the group abandons this instance once the hook's
# heartbeat timeout has run out and launches another from the same launch template: fix the AMI.
[ -x "$bin" ] || die "$bin is missing: install the handover package into the AMI (dpkg -i handover_*.deb or rpm -i handover-*.rpm); nothing was started"
if ! out=$("$bin" version 2>&1); then
  die "$bin does not run ($(echo "$out" | head -n 1)): an arm64 package on an x86_64 instance type, or the reverse?"
fi
say "$out"

[ -d /run/systemd/system ] || die "systemd is not running (no /run/systemd/system): the handover units need it"
for u in "${units[@]}"; do
  systemctl cat "$u" >/dev/null 2>&1 || die "the unit $u is missing: install the handover package, which carries the units (a bare binary is not enough: nothing would run handover watch)"
done

systemctl enable "${units[@]}"
status=0
systemctl start handover-up.service || status=$?
# watch and the timer start even when up failed, as the units themselves do (Wants=, not Requires=): up
# abandons the launch hook then, the group terminates the instance, and watch must hand over whatever up
# had taken by then.
systemctl start handover-watch.service handover-snapshot.timer
if [ "$status" -ne 0 ]; then
  die "handover up failed (systemctl start handover-up.service exited $status): journalctl -u handover-up.service says why"
fi
say "handover up done; handover-watch.service and handover-snapshot.timer are running"
