#!/usr/bin/env bash
# The README's demo: builds handover-sim (which carries the real agent code) and plays handover's story
# against the simulated region: an Auto Scaling group of one launches an instance in us-east-1a, whose
# `handover up` makes a blank volume, a filesystem and a mount and claims the Elastic IP; `handover watch`
# runs beside the service, which writes a file; the group terminates the instance; watch sees it and
# `handover down` stops the service, unmounts, snapshots, detaches and completes the termination hook; the
# replacement in us-east-1b runs `handover up`, which restores down's snapshot there; the file and the
# Elastic IP are back. It prints a timeline.
#
#   sudo scripts/demo.sh              # AWS delays divided by 10, about 10 s
#   sudo scripts/demo.sh --speed 1    # real EC2 and EBS timings, about a minute
#
# It mounts real ext4 filesystems on loop devices, so it runs as root, and needs Go, util-linux
# (losetup, mount, blkid) and e2fsprogs (mkfs.ext4). Everything it makes lives in a temporary directory
# and is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: the demo mounts real filesystems on loop devices; run it as root: sudo $0 $*" >&2
  exit 1
fi
missing=()
for tool in go losetup mount blkid mkfs.ext4 dumpe2fs; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/demo.sh: missing ${missing[*]}: install Go (https://go.dev/dl/), util-linux and e2fsprogs" >&2
  echo "  (Debian/Ubuntu: apt-get install util-linux e2fsprogs; Fedora/Amazon Linux: dnf install util-linux e2fsprogs)" >&2
  exit 1
fi
# A loop device node may be missing in a fresh container; losetup creates them on demand when it can.
modprobe loop 2>/dev/null || true

mkdir -p bin
CGO_ENABLED=0 go build -trimpath -o bin/handover-sim ./cmd/handover-sim
exec bin/handover-sim demo "$@"
