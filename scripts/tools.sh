#!/usr/bin/env bash
# Installs the third-party tools the tests compare against into ./.tools/bin (idempotent):
# - amazon-ec2-metadata-mock v1.13.0, AWS's IMDS mock, the reference for metadata behaviour.
# - xfsprogs (Debian package), for the xfs filesystem tests, when missing and run as root.
# The AWS CLI and moto_server are expected on the machine (preinstalled Python tools): .ci/run checks for
# them and says what to install; outside CI the tests that need them skip with the same message.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin
if [ ! -x .tools/bin/ec2-metadata-mock ]; then
  echo "installing amazon-ec2-metadata-mock v1.13.0 into .tools/bin" >&2
  GOBIN="$PWD/.tools/bin" go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
fi

# xfsprogs for the xfs end-to-end test (--fs xfs): Debian's package, installed when missing and we are root.
if ! command -v mkfs.xfs >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing xfsprogs (apt-get)" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xfsprogs; } >/dev/null 2>&1; then
    echo "could not install xfsprogs; the xfs test fails in CI and is skipped elsewhere" >&2
  fi
fi
