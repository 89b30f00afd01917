#!/bin/sh
# postinstall of the handover deb and rpm: make systemd see the units and enable them, so that the next
# boot runs handover up, then watch and the snapshot timer. Nothing is started now: up would take the
# group's Elastic IP and volumes from whatever holds them, which is for a boot to decide, not for an install.
# Runs on install and on upgrade (deb: configure; rpm: %post 1 or 2). To keep a unit off for good, mask it
# (systemctl mask handover-snapshot.timer): enable leaves a masked unit alone.
# In a chroot or a container without systemd there is no manager to tell: nothing is done, and the image
# enables the units itself (systemctl enable works offline).
set -e

units="handover-up.service handover-watch.service handover-snapshot.timer"

case "$1" in
  configure | 1 | 2) ;;
  *) exit 0 ;; # deb abort-upgrade, abort-remove...: nothing was undone, nothing to redo
esac

# systemd is running exactly when /run/systemd/system exists (sd_booted(3)).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload || true
  # shellcheck disable=SC2086 # one word per unit
  systemctl enable $units || echo "handover: could not enable $units; enable them yourself" >&2
fi
exit 0
