#!/usr/bin/env bash
# The AWS CLI peer of `handover up`: the user data a careful engineer writes with the AWS CLI for the same
# job, and the baseline BENCHMARKS.md measures handover against. It brings the group's data volume to this
# instance and takes the group's Elastic IP:
#
#   1. identity from IMDSv2 (curl, a session token), the group from the instance tag handover:group;
#   2. the newest volume of the group's slot: in this AZ and available -> attach it (same-AZ reattach);
#      otherwise the newest *completed* snapshot of that very volume -> create-volume here (client token,
#      tags at creation, one generation up); no volume and no snapshot at all -> a blank volume (first boot);
#   3. wait for the volume to be available: `aws ec2 wait volume-available` (--wait waiter, the default) or
#      its own loop of describe-volumes every second (--wait poll);
#   4. attach-volume; wait for the NVMe device link /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol...
#      (a local check every 0.1 s, no API call); mkfs only on a volume it created blank; mount;
#   5. the Elastic IP tagged handover:group, associated last (the service is reachable only once its data
#      is mounted), with --allow-reassociation (the old instance may still hold it).
#
# It uses handover's tags, so both run against the same world. It runs unchanged against the simulator:
# the CLI honours AWS_ENDPOINT_URL_EC2, curl goes to AWS_EC2_METADATA_SERVICE_ENDPOINT, the device appears
# under DEV_DIR (HANDOVER_DEV_DIR, which `handover-sim env` exports).
#
# What it does not do that handover does (BENCHMARKS.md, "The AWS CLI peer"):
#   - no fence: two replacements racing (an ASG retry, two AZs) can both restore and both mount a
#     generation, and --allow-reassociation lets the last one silently take the address from the first;
#     handover claims the address by compare-and-swap and re-checks it before every irreversible step;
#   - no wait for a final snapshot that is still pending, no snapshot of an orphaned volume (a dead
#     instance's detached volume with no final snapshot): it restores only a completed snapshot of the newest
#     volume, and fails otherwise;
#   - does not wait for a leaving instance to detach the volume in this AZ, detach a stopped holder's, or
#     force a stuck one; a newest volume attached anywhere is an error;
#   - no lifecycle hook (heartbeats, CONTINUE/ABANDON), no Auto Scaling policy checks, no lock against a
#     concurrent run, no mount unit for reboots, no filesystem grow, no superseded tags, no handing the
#     address back when it fails half-way, no bound on the whole run beyond the waiters' own;
#   - mkfs safety is `blkid` only (handover also requires the volume to be one it created blank and to read
#     as zeros).
#
# Usage: awscli-user-data.sh [--wait waiter|poll]
# Environment: MOUNT_POINT (/data), DEVICE (/dev/sdf), SLOT (data), SIZE_GIB (10, blank volumes only),
# DEV_DIR (/dev), AWS_EC2_METADATA_SERVICE_ENDPOINT (http://169.254.169.254).
set -euo pipefail

wait_mode=waiter
if [ "${1:-}" = "--wait" ]; then wait_mode=${2:-}; fi
case "$wait_mode" in waiter|poll) ;; *) echo "usage: $0 [--wait waiter|poll]" >&2; exit 2 ;; esac

imds=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}
imds=${imds%/}
dev_dir=${DEV_DIR:-${HANDOVER_DEV_DIR:-/dev}}
mount_point=${MOUNT_POINT:-/data}
device=${DEVICE:-/dev/sdf}
slot=${SLOT:-data}
size_gib=${SIZE_GIB:-10}
export AWS_PAGER=""

log() { printf '%s %s\n' "$(date -u +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

# IMDSv2: a session token first; the network may not be up yet at boot, so curl retries.
token=$(curl -sf --retry 10 --retry-connrefused --retry-delay 1 -X PUT "$imds/latest/api/token" \
  -H "X-aws-ec2-metadata-token-ttl-seconds: 300") || die "no IMDSv2 token from $imds"
md() { curl -sf -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/$1"; }
instance_id=$(md instance-id)
az=$(md placement/availability-zone)
export AWS_DEFAULT_REGION
AWS_DEFAULT_REGION=$(md placement/region)
group=$(md tags/instance/handover:group) || die "instance $instance_id has no handover:group tag in metadata"
log "instance $instance_id in $az, group $group"

tag_filters=(Name=tag:handover:group,Values="$group" Name=tag:handover:volume,Values="$slot")

# The newest volume of the slot, wherever it is (the newest one holds the newest data).
newest_line=$(aws ec2 describe-volumes --filters "${tag_filters[@]}" \
  --query 'sort_by(Volumes,&CreateTime)[-1].[VolumeId,AvailabilityZone,State,Tags[?Key==`handover:generation`]|[0].Value,Attachments[0].InstanceId]' \
  --output text)
read -r newest newest_az newest_state newest_gen newest_att <<<"$newest_line"
newest=${newest:-None}
[[ ${newest_gen:-} =~ ^[0-9]+$ ]] || newest_gen=0
created_blank=false
if [ "$newest" != "None" ] && [ "$newest_az" = "$az" ] && [ "$newest_state" = "available" ]; then
  vol=$newest
  log "reattaching $vol (available in $az)"
elif [ "$newest" != "None" ] && [ "$newest_att" = "$instance_id" ]; then
  vol=$newest
  log "$vol is attached here already"
else
  gen=1
  if [ "$newest" != "None" ]; then
    [ "$newest_state" = "available" ] || die "the newest volume $newest is $newest_state in $newest_az (attached to ${newest_att}): refusing to restore an older snapshot"
    gen=$((newest_gen + 1))
    # The newest completed snapshot of that very volume: anything older would silently lose writes.
    snap=$(aws ec2 describe-snapshots --owner-ids self --filters "${tag_filters[@]}" Name=volume-id,Values="$newest" Name=status,Values=completed \
      --query 'sort_by(Snapshots,&StartTime)[-1].SnapshotId' --output text)
    [ "$snap" != "None" ] || die "the newest volume $newest (in $newest_az) has no completed snapshot: snapshot it, or run in $newest_az"
    source=(--snapshot-id "$snap")
    log "restoring $snap (of $newest in $newest_az) into $az"
  else
    source=(--size "$size_gib")
    created_blank=true
    log "no volume and no snapshot: first boot, creating a blank volume"
  fi
  # The client token makes a rerun after a crash get the same volume back instead of a second one.
  vol=$(aws ec2 create-volume --availability-zone "$az" "${source[@]}" --volume-type gp3 \
    --client-token "$group-$slot-$gen-$instance_id" \
    --tag-specifications "ResourceType=volume,Tags=[{Key=handover:group,Value=$group},{Key=handover:volume,Value=$slot},{Key=handover:generation,Value=$gen}]" \
    --query VolumeId --output text)
  log "created $vol, waiting for it to be available ($wait_mode)"
  if [ "$wait_mode" = waiter ]; then
    aws ec2 wait volume-available --volume-ids "$vol"   # every 15 s, at most 40 times
  else
    for ((i = 0; ; i++)); do
      state=$(aws ec2 describe-volumes --volume-ids "$vol" --query 'Volumes[0].State' --output text)
      [ "$state" = available ] && break
      [ "$state" = creating ] || die "$vol is $state"
      ((i < 600)) || die "$vol still $state after 10 minutes"
      sleep 1
    done
  fi
fi

if [ "$newest_att" != "$instance_id" ] || [ "$vol" != "$newest" ]; then
  aws ec2 attach-volume --volume-id "$vol" --instance-id "$instance_id" --device "$device" >/dev/null
fi
link="$dev_dir/disk/by-id/nvme-Amazon_Elastic_Block_Store_${vol/-/}"
for ((i = 0; ; i++)); do
  [ -e "$link" ] && break
  ((i < 6000)) || die "no device $link after 10 minutes"
  sleep 0.1
done
dev=$(readlink -f "$link")
log "attached $vol as $dev"

if [ "$created_blank" = true ] && [ -z "$(blkid -p -o value -s TYPE "$dev" || true)" ]; then
  mkfs.ext4 -q "$dev"
fi
mkdir -p "$mount_point"
mountpoint -q "$mount_point" || mount "$dev" "$mount_point"
log "mounted $dev at $mount_point"

alloc=$(aws ec2 describe-addresses --filters Name=tag:handover:group,Values="$group" --query 'Addresses[0].AllocationId' --output text)
[ "$alloc" != "None" ] || die "no Elastic IP tagged handover:group=$group"
aws ec2 associate-address --allocation-id "$alloc" --instance-id "$instance_id" --allow-reassociation >/dev/null
log "associated $alloc; done"
