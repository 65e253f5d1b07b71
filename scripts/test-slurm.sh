#!/usr/bin/env bash
# make test-slurm: the tiny sweep on a real one-node Slurm on localhost against the same sweep run
# locally, and a scancel'd job completed by `crossfeed slurm --resume` (crates/cli/tests/slurm.rs).
# Installs Debian's slurm-wlm and munge where missing; stops every daemon it started.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi
CARGO=${CARGO:-cargo}
# Build before the cluster starts, so its daemons do not sit through a compile.
$CARGO test -p crossfeed-cli --test slurm --no-run
dir=$(mktemp -d /tmp/crossfeed-slurm.XXXXXX)
trap 'bash scripts/slurm-local.sh stop "$dir"; rm -rf "$dir"' EXIT
bash scripts/slurm-local.sh start "$dir"
export SLURM_CONF=$dir/slurm.conf
$CARGO test -p crossfeed-cli --test slurm -- --ignored --test-threads=1 --nocapture
