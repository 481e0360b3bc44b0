#!/usr/bin/env bash
# CI step: the container, end to end, on a machine with no engine and no registry (docs/container.md).
#   1. install docker.io + debootstrap when missing, start a private engine in a fresh folder
#   2. make the registry-free base (debootstrap + docker import)
#   3. build the image on it and export the archive that would be uploaded (./export.sh)
#   4. delete the image, `docker load` the archive and run the container test on it with the template's fixed flags
#   5. stop the engine and delete its folder (also on failure)
# Needs root. Measured on the 2-core CI machines: see docs/container.md.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=sct-synthrad:ci
started=$(date +%s)
step_started=$started
step() {
    local now
    now=$(date +%s)
    echo "CI container: $1 ($((now - step_started)) s; $((now - started)) s in all)"
    step_started=$now
}

work=$(mktemp -d "${TMPDIR:-/var/tmp}/sct-ci-container.XXXXXX")
export SCT_DOCKER_ROOT="$work/engine"
finish() {
    local status=$?
    scripts/docker_engine.sh purge || status=1
    scripts/rootfs.sh remove "$work" || status=1  # unmounts anything left under it first (never rm across a mount)
    echo "CI container: $([[ $status == 0 ]] && echo passed || echo FAILED) in $(($(date +%s) - started)) s"
    exit "$status"
}
trap finish EXIT

scripts/docker_engine.sh start
step "engine ready"
scripts/make_local_base.sh
step "local base made"
./export.sh --local-base --image "$IMAGE" --output "$work/sct-synthrad.tar.gz"
step "image built and exported"
docker image rm "$IMAGE" >/dev/null
test/container/run_test.sh --archive "$work/sct-synthrad.tar.gz"
step "container test passed on the loaded archive"
docker image rm "$IMAGE" >/dev/null
