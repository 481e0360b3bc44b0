#!/usr/bin/env bash
# Make the container's base image locally, without any image registry: debootstrap a minimal Debian with python3 and
# python3-venv, then `docker import` it. A supported path for air-gapped sites (hospitals, these build machines):
# only a Debian package mirror is needed (a local mirror or proxy works the same), never Docker Hub.
#
#   scripts/make_local_base.sh [--name IMAGE] [--suite SUITE] [--mirror URL] [--force]
#
#   --name    image to create (default: sct-base:bookworm)
#   --suite   Debian suite (default: bookworm: Python 3.11, which the pinned requirements support)
#   --mirror  Debian mirror (default: the first Debian mirror in this machine's apt sources, else deb.debian.org)
#   --force   rebuild even when the image already exists
#
# Needs root, debootstrap and a running docker engine (scripts/docker_engine.sh start provides both). What debootstrap
# leaves mounted under its root is unmounted before packing and before the clean-up (scripts/rootfs.sh).
# Then: docker build --network=host --build-arg BASE_IMAGE=sct-base:bookworm -t sct-synthrad .  (or ./export.sh --local-base)
set -euo pipefail

NAME=sct-base:bookworm
SUITE=bookworm
MIRROR=""
FORCE=0

say() { echo "make_local_base: $*" >&2; }
die() { say "error: $*"; exit 1; }

while (($#)); do
    case "$1" in
        --name) NAME=${2:?--name needs a value}; shift 2 ;;
        --suite) SUITE=${2:?--suite needs a value}; shift 2 ;;
        --mirror) MIRROR=${2:?--mirror needs a value}; shift 2 ;;
        --force) FORCE=1; shift ;;
        -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

apt_mirror() {
    # The Debian archive URI this machine's apt uses (deb822 .sources files and the classic sources.list),
    # skipping the security archive, which debootstrap cannot bootstrap from.
    local files=() uri
    shopt -s nullglob
    files=(/etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list)
    shopt -u nullglob
    ((${#files[@]})) || return 1
    uri=$(awk '
        /^[[:space:]]*#/ {next}
        /^URIs:/ {for (i = 2; i <= NF; i++) print $i; next}
        /^deb[[:space:]]/ {for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) {print $i; break}}
    ' "${files[@]}" 2>/dev/null | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1)
    [[ -n "$uri" ]] && echo "$uri"
}

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is missing (apt-get install debootstrap, or scripts/docker_engine.sh start)"
docker version >/dev/null 2>&1 || die "no docker engine answers (scripts/docker_engine.sh start)"

if ((!FORCE)) && docker image inspect "$NAME" >/dev/null 2>&1; then
    say "$NAME already exists (use --force to rebuild)"
    exit 0
fi

if [[ -z "$MIRROR" ]]; then
    MIRROR=$(apt_mirror || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# The file-system steps (unmount, pack, check, remove) live in scripts/rootfs.sh, where they are tested.
ROOTFS="$(cd "$(dirname "$0")" && pwd)/rootfs.sh"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/sct-base.XXXXXX")
cleanup() { "$ROOTFS" remove "$work"; }  # unmounts whatever debootstrap left under it, then deletes it
trap cleanup EXIT
rootfs="$work/rootfs"

started=$(date +%s)
say "debootstrap $SUITE (minbase + python3, python3-venv) from $MIRROR"
if ! debootstrap --variant=minbase --include=python3,python3-venv "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    [[ -f "$rootfs/debootstrap/debootstrap.log" ]] && tail -n 20 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (mirror $MIRROR)"
fi
# What the image does not need: the package cache and lists (the Dockerfile runs apt-get update when it must).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/debootstrap

# debootstrap may leave proc (and sys, dev/pts) mounted inside the root: unmount it all first, pack the root's own
# file system only, and check that the archive holds nothing under proc/, sys/ or dev/ before importing it.
say "pack $rootfs (unmounted, one file system) and check it"
"$ROOTFS" pack "$rootfs" "$work/rootfs.tar"
say "docker import -> $NAME"
docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=python3,python3-venv $SUITE $MIRROR" \
    "$work/rootfs.tar" "$NAME" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$NAME")
say "made $NAME ($((size / 1024 / 1024)) MiB, python $(docker run --rm --network=none "$NAME" python3 -c 'import platform; print(platform.python_version())')) in $(($(date +%s) - started)) s"
