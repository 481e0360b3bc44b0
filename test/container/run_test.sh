#!/usr/bin/env bash
# The container test: run the image on the sample case exactly as the grand-challenge template's local test does
# (its fixed flags), then check the output; run it again on a malformed input and check that it fails cleanly.
#
#   test/container/run_test.sh [--image NAME] [--archive FILE] [--rebuild] [--base IMAGE | --local-base]
#                              [--gpus auto|yes|no] [--require-cuda] [--keep]
#
#   --image         image to test (default: $IMAGE or sct-synthrad:latest); built with ./export.sh when missing
#   --archive       `docker load` this exported archive first and test the image it holds (the upload path)
#   --rebuild       build the image even when it exists
#   --base / --local-base   passed to ./export.sh when building
#   --gpus          add --gpus all: auto (when a GPU and the NVIDIA container runtime are present), yes, no
#   --require-cuda  fail unless ONNX Runtime's CUDA provider really loads inside the container
#   --keep          keep the temporary folder with the outputs and logs
#
# Checks (exit status 1 when any fails): results.json equals expected_results.json; one sCT named like the MR,
# again with the weights as a model tarball mounted read-only at /opt/ml/model (the image's own weights unused);
# compressed, on the MR's grid (size, spacing, origin, direction), within TOLERANCE_HU (1 HU) of expected_sct.mha;
# ONNX Runtime runs a tiny model inside the image under the same flags; a truncated MR makes the container exit
# non-zero with an error naming the file and no output image. Regenerate the expectations with make_expected.py.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
IMAGE=${IMAGE:-sct-synthrad:latest}
ARCHIVE=""
REBUILD=0
BUILD_ARGS=()
GPUS=auto
REQUIRE_CUDA=0
KEEP=0
TOLERANCE_HU=1
RUN_TIMEOUT_S=900

say() { echo "container test: $*" >&2; }
die() { say "error: $*"; exit 1; }

while (($#)); do
    case "$1" in
        --image) IMAGE=${2:?--image needs a value}; shift 2 ;;
        --archive) ARCHIVE=${2:?--archive needs a value}; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        --base) BUILD_ARGS+=(--base "${2:?--base needs a value}"); shift 2 ;;
        --local-base) BUILD_ARGS+=(--local-base); shift ;;
        --gpus) GPUS=${2:?--gpus needs auto, yes or no}; shift 2 ;;
        --require-cuda) REQUIRE_CUDA=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
[[ "$GPUS" =~ ^(auto|yes|no)$ ]] || die "--gpus takes auto, yes or no"

docker version >/dev/null 2>&1 || die "no docker engine answers (on these machines: scripts/docker_engine.sh start)"
for f in input/region.json expected_results.json expected_sct.mha smoke.onnx check_output.py; do
    [[ -e "$HERE/$f" ]] || die "$HERE/$f is missing (make it with test/container/make_expected.py)"
done
shopt -s nullglob
mr_files=("$HERE"/input/images/mri/*)
shopt -u nullglob
((${#mr_files[@]} == 1)) || die "$HERE/input/images/mri must hold exactly one MR"
MR_NAME=$(basename "${mr_files[0]}")

# --- the image: loaded from an archive, built, or already there ----------------------------------------------------
if [[ -n "$ARCHIVE" ]]; then
    [[ -r "$ARCHIVE" ]] || die "$ARCHIVE: archive not readable"
    say "docker load -i $ARCHIVE"
    loaded=$(docker load -i "$ARCHIVE")
    echo "$loaded" >&2
    IMAGE=$(sed -n 's/^Loaded image: //p' <<<"$loaded" | head -n 1)
    [[ -n "$IMAGE" ]] || die "$ARCHIVE: docker load named no image"
elif ((REBUILD)) || ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    "$REPO/export.sh" --no-save --image "$IMAGE" "${BUILD_ARGS[@]}"
fi

# The weights in the image must be the ones the expectations were made with, or every comparison is meaningless.
expected_weights=$(<"$HERE/expected_weights.sha256")
image_weights=$(docker run --rm --network=none --entrypoint sh "$IMAGE" -c \
    'cd /opt/algorithm/model_weights && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d" " -f1')
[[ "$image_weights" == "$expected_weights" ]] || die "the image's model_weights/ ($image_weights) are not the ones \
the expectations were made with ($expected_weights): rebuild the image, or rerun test/container/make_expected.py"

# --- the template's fixed flags --------------------------------------------------------------------------------------
RUN_FLAGS=(--rm --memory=4g --memory-swap=4g --network=none --cap-drop=ALL --security-opt=no-new-privileges
    --shm-size=128m --pids-limit=256)
use_gpus=0
if [[ "$GPUS" == yes ]]; then
    use_gpus=1
elif [[ "$GPUS" == auto ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    if docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia \
        || command -v nvidia-container-runtime-hook >/dev/null 2>&1 || command -v nvidia-container-cli >/dev/null 2>&1; then
        use_gpus=1
    else
        say "a GPU is present but no NVIDIA container runtime: running on the CPU"
    fi
fi
((use_gpus)) && RUN_FLAGS+=(--gpus all)
say "image $IMAGE; docker run ${RUN_FLAGS[*]}"

# --- scratch: a temporary folder, docker volumes for /output (as the template does), cleaned up on exit -------------
work=$(mktemp -d "${TMPDIR:-/tmp}/sct-container-test.XXXXXX")
volumes=()
containers=()
cleanup() {
    local status=$?
    for c in "${containers[@]}"; do docker rm -f "$c" >/dev/null 2>&1 || true; done
    for v in "${volumes[@]}"; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
    if ((KEEP)); then say "kept $work"; else rm -rf "$work"; fi
    exit "$status"
}
trap cleanup EXIT
tag=$(basename "$work" | tr -c 'a-zA-Z0-9\n' '-' | tr '[:upper:]' '[:lower:]')

RUN_STATUS=0
EXTRA_MOUNTS=()
run_case() {
    # run_case NAME INPUT_DIR: runs the image on INPUT_DIR (read-only) with a fresh output volume, copies /output to
    # $work/NAME/output and the log to $work/NAME/log; sets RUN_STATUS to the container's exit status.
    local name=$1 input=$2 volume="$tag-$1" started
    volumes+=("$volume")
    containers+=("$tag-$name-run" "$tag-$name-copy")
    docker volume create "$volume" >/dev/null
    mkdir -p "$work/$name"
    started=$(date +%s)
    RUN_STATUS=0
    timeout "$RUN_TIMEOUT_S" docker run "${RUN_FLAGS[@]}" --name "$tag-$name-run" \
        -v "$input:/input:ro" -v "$volume:/output/" "${EXTRA_MOUNTS[@]}" "$IMAGE" >"$work/$name/log" 2>&1 || RUN_STATUS=$?
    say "$name: exit status $RUN_STATUS after $(($(date +%s) - started)) s"
    docker create --name "$tag-$name-copy" -v "$volume:/output" --entrypoint true "$IMAGE" >/dev/null
    docker cp "$tag-$name-copy:/output/." "$work/$name/output" >/dev/null 2>&1 \
        || die "cannot copy /output out of the $name run's volume"
    docker rm -f "$tag-$name-copy" >/dev/null
}

# The checks run with the host's Python when it has SimpleITK and numpy, else inside the image (no host packages);
# CHECK_IN_IMAGE=1 forces the latter.
PYTHON=""
[[ "${CHECK_IN_IMAGE:-0}" == 1 ]] || for candidate in "${PYTHON_FOR_CHECKS:-}" "$REPO/.venv/bin/python" python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c 'import SimpleITK, numpy' >/dev/null 2>&1; then PYTHON=$candidate; break; fi
done
check() {
    # check ARGS...: check_output.py with paths under $HERE and $work, on the host or in the image.
    if [[ -n "$PYTHON" ]]; then
        "$PYTHON" "$HERE/check_output.py" "$@"
    else
        local mapped=() a in_image_expected=/expected in_image_work=/work
        for a in "$@"; do a=${a//"$HERE"/$in_image_expected}; mapped+=("${a//"$work"/$in_image_work}"); done
        docker run --rm --network=none --user "$(id -u):$(id -g)" -v "$HERE:/expected:ro" -v "$work:/work:ro" \
            --entrypoint python "$IMAGE" /expected/check_output.py "${mapped[@]}"
    fi
}

failures=0
fail() { say "FAILED: $*"; failures=$((failures + 1)); }

# --- 1. the sample case ------------------------------------------------------------------------------------------------
run_case sample "$HERE/input"
[[ "$RUN_STATUS" == 0 ]] || { fail "the sample case: exit status $RUN_STATUS (expected 0)"; cat "$work/sample/log" >&2; }
check ok --input "$HERE/input" --output "$work/sample/output" --expected-results "$HERE/expected_results.json" \
    --expected-sct "$HERE/expected_sct.mha" --tolerance-hu "$TOLERANCE_HU" || fail "the sample case's output"

# --- 1b. the same case with the weights as a model tarball mounted read-only at /opt/ml/model (grand-challenge) ----
mkdir -p "$work/model"
python3 "$REPO/scripts/model_tarball.py" --manifest "$REPO/model_weights/manifest.json" --out "$work/model.tar.gz" >&2
tar -xzf "$work/model.tar.gz" -C "$work/model"
chmod -R a+rX "$work/model"
EXTRA_MOUNTS=(-v "$work/model:/opt/ml/model:ro")
run_case tarball "$HERE/input"
EXTRA_MOUNTS=()
[[ "$RUN_STATUS" == 0 ]] || { fail "the model tarball run: exit status $RUN_STATUS (expected 0)"; cat "$work/tarball/log" >&2; }
grep -q "models from the model tarball /opt/ml/model" "$work/tarball/log" \
    || fail "the model tarball run did not use /opt/ml/model"
check ok --input "$HERE/input" --output "$work/tarball/output" --expected-results "$HERE/expected_results.json" \
    --expected-sct "$HERE/expected_sct.mha" --tolerance-hu "$TOLERANCE_HU" || fail "the model tarball run's output"

# --- 2. ONNX Runtime inside the image, under the same flags ------------------------------------------------------------
smoke_log="$work/smoke.log"
if docker run "${RUN_FLAGS[@]}" -v "$HERE/smoke.onnx:/check/smoke.onnx:ro" --entrypoint python "$IMAGE" -c '
import logging
import numpy as np
from engine.runtime import create_session, session_device
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
session = create_session("/check/smoke.onnx", "auto")
x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
(y,) = session.run(None, {session.get_inputs()[0].name: x})
assert np.allclose(y, 2.0 * x + 1.0), "wrong output"
print("onnxruntime device:", session_device(session))
' >"$smoke_log" 2>&1; then
    device=$(sed -n 's/^onnxruntime device: //p' "$smoke_log")
    say "PASS: ONNX Runtime runs a model in the image (device: $device)"
    say "$(grep -m 1 'GPU environment' "$smoke_log" || echo 'no GPU environment line logged')"
    if ((use_gpus)) && [[ "$device" != cuda ]]; then
        say "warning: --gpus all was given but ONNX Runtime ran on the CPU (the image has CUDA 12 + cuDNN 9; the host" \
            "needs an NVIDIA driver >= 525): $(grep -E 'GPU environment|ONNX Runtime says' "$smoke_log" | tr '\n' ' ')"
        ((REQUIRE_CUDA)) && fail "--require-cuda: the CUDA provider did not load"
    elif ((REQUIRE_CUDA)) && [[ "$device" != cuda ]]; then
        fail "--require-cuda: no GPU given to the container"
    fi
else
    cat "$smoke_log" >&2
    fail "ONNX Runtime smoke test in the image"
fi

# --- 3. a malformed input: the MR truncated to half its size --------------------------------------------------------------
cp -r "$HERE/input" "$work/bad-input"
mr_bad="$work/bad-input/images/mri/$MR_NAME"
truncate -s $(($(stat -c %s "$mr_bad") / 2)) "$mr_bad"
chmod -R a+rX "$work/bad-input"
run_case malformed "$work/bad-input"
if [[ "$RUN_STATUS" == 0 ]]; then
    fail "the malformed input: exit status 0 (expected non-zero)"
else
    say "PASS: the malformed input exits with status $RUN_STATUS"
fi
say "malformed input, the container's error: $(grep -m 1 ERROR "$work/malformed/log" || echo none)"
check failed --input "$work/bad-input" --output "$work/malformed/output" --mr-name "$MR_NAME" \
    --log "$work/malformed/log" || fail "the malformed input's output"

if ((failures)); then
    say "$failures part(s) failed (logs: $work; rerun with --keep to keep them)"
    exit 1
fi
say "all checks passed ($IMAGE, $([[ $use_gpus == 1 ]] && echo "--gpus all" || echo CPU))"
