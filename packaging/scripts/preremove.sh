#!/bin/sh
# preremove of the handover deb and rpm: on removal only (deb: remove; rpm: %preun 0), disable the units and
# stop the snapshot timer, whose service would find no binary. On upgrade (deb: upgrade; rpm: %preun 1)
# nothing is done: the units stay enabled and keep running.
# Never stopped: handover-up.service (the data's service Requires= it, and stopping it would stop that
# service) and handover-watch.service (stopping it cancels a hand-over in progress); they run until the
# next shutdown. Never touched: the data, its mounts and the mount units up wrote under /etc/systemd/system,
# the environment file (a configuration file: dpkg -P removes it) and /var/lib/handover.
set -e

units="handover-up.service handover-watch.service handover-snapshot.timer"

case "$1" in
  remove | 0) ;;
  *) exit 0 ;;
esac

if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  # shellcheck disable=SC2086 # one word per unit
  systemctl disable $units || true
  systemctl stop handover-snapshot.timer || true
fi
exit 0
