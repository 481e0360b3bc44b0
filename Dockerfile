# The SynthRAD MR -> sCT inference container (grand-challenge). See docs/container.md.
#
# BASE_IMAGE: any Debian/Ubuntu image; python3 + python3-venv are installed when the base lacks them.
#   Default: NVIDIA's CUDA 12.6 + cuDNN 9 runtime on Ubuntu 24.04 (Python 3.12). onnxruntime-gpu is pinned to 1.23.2,
#   the newest line whose PyPI wheel is built for CUDA 12 (its build info says cuda_version 12.2; 1.31.1 says 13.0 and
#   would need an NVIDIA driver >= 580). The CUDA 12 runtime and cuDNN 9 come from this base image (the wheel brings
#   only ONNX Runtime's provider libraries). CUDA 12 needs a driver >= 525 on the host (minor-version compatibility).
#   The final stage sets NVIDIA_DISABLE_REQUIRE=1: the base's NVIDIA_REQUIRE_CUDA would make the legacy NVIDIA
#   container runtime refuse a host driver of 525-534, 536-549 or 551-559 (no container at all); the engine instead logs
#   the driver and CUDA versions at start-up and, without a usable GPU, runs on the CPU with ONNX Runtime's reason.
#   Air-gapped: scripts/make_local_base.sh makes sct-base:bookworm (Debian 12, Python 3.11) without any registry;
#   build with --build-arg BASE_IMAGE=sct-base:bookworm (CPU execution only: that base has no CUDA libraries).
#
# Build: docker build --network=host -t sct-synthrad .        (or ./export.sh, which also writes the archive)
# Behind an inspecting HTTPS proxy, put the host's CA bundle at work/docker-build/ca-certificates.crt in the build
# context (export.sh does): pip in the build stage then trusts it. It is optional, and it never reaches the final
# image (only the virtual environment is copied out of the build stage).
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# --- the base plus a Python that can make virtual environments -----------------------------------------------------
FROM ${BASE_IMAGE} AS python-base
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8
RUN if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 --version

# --- build stage: the runtime requirements into /opt/venv (build-time network only) --------------------------------
FROM python-base AS build
# The globs make the CA bundle optional: requirements.txt always matches, the certificate only when present (a glob
# in the first path component too, or BuildKit fails on the missing folder).
COPY requirements.txt wor[k]/docker-build/ca-certificates.cr[t] /tmp/build/
RUN if [ -f /tmp/build/ca-certificates.crt ]; then export PIP_CERT=/tmp/build/ca-certificates.crt; fi \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: \
        -r /tmp/build/requirements.txt \
    && /opt/venv/bin/python -c "import numpy, SimpleITK, onnxruntime, tqdm; print('onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())" \
    && /opt/venv/bin/python -m pip uninstall -y -q pip setuptools

# --- final image: Python, the venv, the code and the weights; nothing is fetched at run time ------------------------
FROM python-base
ARG ALGORITHM_UID=1001
RUN groupadd --system --gid "${ALGORITHM_UID}" algorithm \
    && useradd --system --no-log-init --uid "${ALGORITHM_UID}" --gid algorithm --create-home --home-dir /home/algorithm \
        --shell /usr/sbin/nologin algorithm \
    && mkdir -p /opt/algorithm /input /output \
    && chown algorithm:algorithm /opt/algorithm /input /output
COPY --from=build --chown=algorithm:algorithm /opt/venv /opt/venv
# NVIDIA_DISABLE_REQUIRE=1: start on any host driver (see the top); where CUDA cannot run, the engine says why.
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_DISABLE_REQUIRE=1

WORKDIR /opt/algorithm
# Only what the container path imports (process.py -> pipeline -> engine, preprocessing, postprocessing) and the
# weights; .dockerignore keeps everything else (tests, training, evaluation, .venv) out of the build context.
COPY --chown=algorithm:algorithm process.py ./
COPY --chown=algorithm:algorithm pipeline/ pipeline/
COPY --chown=algorithm:algorithm modelspec/ modelspec/
COPY --chown=algorithm:algorithm engine/ engine/
COPY --chown=algorithm:algorithm preprocessing/ preprocessing/
COPY --chown=algorithm:algorithm postprocessing/ postprocessing/
COPY --chown=algorithm:algorithm model_weights/ model_weights/
USER algorithm
# Byte-code compiled at build time (the container never writes it), and the manifest checked now, not at run time.
RUN python -m compileall -q /opt/algorithm \
    && python -c "from engine.manifest import load_manifest; m = load_manifest(); print('manifest ok:', m.path)"
ENTRYPOINT ["python", "-m", "process"]
