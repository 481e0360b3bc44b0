#!/usr/bin/env bash
# Build the container image and write the archive that is uploaded to grand-challenge:
#   docker save <image> | gzip -c > <name>.tar.gz
#
#   ./export.sh [--image NAME[:TAG]] [--base IMAGE | --local-base] [--output FILE] [--ca-bundle FILE] [--no-save]
#
#   --image       image tag to build (default: $IMAGE or sct-synthrad:latest)
#   --base        base image (default: $BASE_IMAGE or the Dockerfile's default, NVIDIA's CUDA 12.6 + cuDNN 9 runtime)
#   --local-base  use the registry-free base made by scripts/make_local_base.sh (sct-base:bookworm; made if missing)
#   --output      archive to write (default: <image name without registry path and tag>.tar.gz in this folder)
#   --ca-bundle   CA bundle for pip inside the build, for HTTPS through an inspecting proxy
#                 (default: $PIP_CERT, $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE when one is set; none otherwise)
#   --no-save     build only, write no archive
#   --dry-run     print what would run (docker build, save, the model tarball), change nothing
#   --model-tarball [FILE]  only write the model tarball (manifest + the files it names) to FILE (default
#                 model.tar.gz) and print its size; no docker needed. Upload it as the algorithm's model:
#                 grand-challenge extracts it to /opt/ml/model/, whose manifest then replaces the baked-in one.
#
# Needs a running docker engine (on machines without one: scripts/docker_engine.sh start).
set -euo pipefail
cd "$(dirname "$0")"

IMAGE=${IMAGE:-sct-synthrad:latest}
BASE=${BASE_IMAGE:-}
LOCAL_BASE=sct-base:bookworm
OUTPUT=""
CA_BUNDLE=""
SAVE=1
DRY_RUN=0
TARBALL=""
CA_IN_CONTEXT=work/docker-build/ca-certificates.crt

say() { echo "export: $*" >&2; }
die() { say "error: $*"; exit 1; }
# run CMD...: run it, or with --dry-run only say it
run() { if ((DRY_RUN)); then say "would run: $(printf '%q ' "$@")"; else "$@"; fi; }

while (($#)); do
    case "$1" in
        --image) IMAGE=${2:?--image needs a value}; shift 2 ;;
        --base) BASE=${2:?--base needs a value}; shift 2 ;;
        --local-base) BASE=$LOCAL_BASE; shift ;;
        --output) OUTPUT=${2:?--output needs a value}; shift 2 ;;
        --ca-bundle) CA_BUNDLE=${2:?--ca-bundle needs a value}; shift 2 ;;
        --no-save) SAVE=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        --model-tarball)
            TARBALL=model.tar.gz
            if [[ $# -gt 1 && "$2" != --* ]]; then TARBALL=$2; shift; fi
            shift ;;
        -h | --help) awk 'NR == 1 {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

if [[ -n "$TARBALL" ]]; then
    ((DRY_RUN)) || exec python3 scripts/model_tarball.py --manifest model_weights/manifest.json --out "$TARBALL"
    run python3 scripts/model_tarball.py --manifest model_weights/manifest.json --out "$TARBALL"
    exit 0
fi

if ! docker version >/dev/null 2>&1; then
    ((DRY_RUN)) || die "no docker engine answers (on these machines: scripts/docker_engine.sh start)"
    say "no docker engine answers: a real run would stop here (scripts/docker_engine.sh start)"
fi

if [[ "$BASE" == "$LOCAL_BASE" ]] && ! docker image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
    run scripts/make_local_base.sh --name "$LOCAL_BASE"
fi

if [[ -z "$CA_BUNDLE" ]]; then
    for candidate in "${PIP_CERT:-}" "${REQUESTS_CA_BUNDLE:-}" "${SSL_CERT_FILE:-}"; do
        if [[ -n "$candidate" && -r "$candidate" ]]; then CA_BUNDLE=$candidate; break; fi
    done
fi
partial=""
cleanup() {
    rm -f "$CA_IN_CONTEXT"
    rmdir work/docker-build work 2>/dev/null || true
    [[ -z "$partial" ]] || rm -f "$partial"
}
trap cleanup EXIT
if [[ -n "$CA_BUNDLE" ]]; then
    [[ -r "$CA_BUNDLE" ]] || die "$CA_BUNDLE: CA bundle not readable"
    run mkdir -p "$(dirname "$CA_IN_CONTEXT")"
    run cp "$CA_BUNDLE" "$CA_IN_CONTEXT"
    ((DRY_RUN)) || say "pip in the build stage trusts $CA_BUNDLE (build stage only, not in the image)"
fi

build_args=(--network=host -t "$IMAGE")
[[ -n "$BASE" ]] && build_args+=(--build-arg "BASE_IMAGE=$BASE")
((DRY_RUN)) || say "docker build ${build_args[*]} ."
started=$(date +%s)
run docker build "${build_args[@]}" .
if ! ((DRY_RUN)); then
    size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
    say "built $IMAGE on ${BASE:-the default base} in $(($(date +%s) - started)) s: $((size / 1024 / 1024)) MiB"
fi

if ((SAVE)); then
    if [[ -z "$OUTPUT" ]]; then
        name=${IMAGE##*/}
        OUTPUT="${name%%:*}.tar.gz"
    fi
    started=$(date +%s)
    compress=(gzip -c)
    command -v pigz >/dev/null 2>&1 && compress=(pigz -c)  # same gzip format, all cores
    if ((DRY_RUN)); then
        say "would run: docker save $IMAGE | ${compress[*]} > $OUTPUT.partial, then mv it to $OUTPUT"
        exit 0
    fi
    partial="$OUTPUT.partial"
    docker save "$IMAGE" | "${compress[@]}" >"$partial"
    mv "$partial" "$OUTPUT"
    say "wrote $OUTPUT in $(($(date +%s) - started)) s"
    echo "$(du -h "$OUTPUT" | cut -f1) $OUTPUT ($(stat -c %s "$OUTPUT") bytes)"
fi
