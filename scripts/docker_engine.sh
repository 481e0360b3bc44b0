#!/usr/bin/env bash
# A private Docker engine for machines that have the docker client but no engine (see docs/container.md).
#
#   scripts/docker_engine.sh start   install docker.io + debootstrap if missing, start dockerd, wait until it answers
#   scripts/docker_engine.sh stop    stop the dockerd this script started, unmount its leftovers
#   scripts/docker_engine.sh status  say whether an engine answers and whether this script started it
#   scripts/docker_engine.sh purge   stop, then delete the engine's folder (its images and build cache)
#
# Environment:
#   SCT_DOCKER_ROOT  the engine's own folder: data root, exec root, pid file and log (default /var/lib/sct-docker)
#   SCT_DOCKER_STORAGE  storage driver (default overlay2; vfs works everywhere but is 10-20x slower)
#
# dockerd runs without the kernel features these machines lack: no iptables, no bridge network (builds and runs
# use --network=host or --network=none). When an engine already answers on the default socket (one this script did
# not start), `start` uses it and `stop` leaves it alone. Needs root.
set -euo pipefail

ROOT=${SCT_DOCKER_ROOT:-/var/lib/sct-docker}
STORAGE=${SCT_DOCKER_STORAGE:-overlay2}
SOCKET=/var/run/docker.sock
PIDFILE="$ROOT/dockerd.pid"
LOG="$ROOT/dockerd.log"
READY_TIMEOUT_S=60

say() { echo "docker_engine: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
}

engine_answers() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

our_pid() {
    # The pid of the dockerd this script started, when it still runs; nothing otherwise.
    [[ -f "$PIDFILE" ]] || return 1
    local pid
    pid=$(<"$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dockerd .*--data-root=$ROOT/data" || return 1
    echo "$pid"
}

install_missing() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    # The docker client may come from elsewhere (this machine has one in /usr/local/bin); docker.io brings its own.
    command -v docker >/dev/null 2>&1 || [[ " ${missing[*]} " == *" docker.io "* ]] || missing+=(docker.io)
    if ((${#missing[@]})); then
        say "installing ${missing[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

unmount_leftovers() {
    # Mounts left under the engine's folder (an nsfs under exec/netns after a vfs engine, overlays after a crash).
    local mounts
    mounts=$(awk -v root="$ROOT/" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r)
    if [[ -n "$mounts" ]]; then
        while IFS= read -r mount_point; do
            umount "$mount_point" 2>/dev/null || umount -l "$mount_point" || say "warning: cannot unmount $mount_point"
        done <<<"$mounts"
    fi
}

start() {
    [[ $(id -u) -eq 0 ]] || die "needs root (it installs packages and starts dockerd)"
    install_missing
    if pid=$(our_pid); then
        say "already running (pid $pid, $ROOT)"
        return 0
    fi
    if engine_answers; then
        say "an engine not started by this script already answers; using it (stop will leave it alone)"
        return 0
    fi
    mkdir -p "$ROOT/data" "$ROOT/exec"
    unmount_leftovers
    rm -f "$SOCKET" "$PIDFILE"
    say "starting dockerd ($STORAGE, data in $ROOT/data, log $LOG)"
    # setsid: the engine outlives this script and is not killed with the caller's process group.
    setsid dockerd \
        --storage-driver="$STORAGE" \
        --iptables=false --ip6tables=false --bridge=none \
        --data-root="$ROOT/data" --exec-root="$ROOT/exec" \
        --pidfile="$PIDFILE" --host="unix://$SOCKET" \
        >"$LOG" 2>&1 </dev/null &
    local launched=$! waited=0
    until engine_answers; do
        if ! kill -0 "$launched" 2>/dev/null; then
            tail -n 20 "$LOG" >&2 || true
            die "dockerd exited during start-up (log: $LOG)"
        fi
        ((waited++ < READY_TIMEOUT_S * 2)) || { tail -n 20 "$LOG" >&2; die "dockerd not ready after ${READY_TIMEOUT_S} s (log: $LOG)"; }
        sleep 0.5
    done
    # dockerd writes the pid file itself; keep the launched pid if it has not yet.
    [[ -s "$PIDFILE" ]] || echo "$launched" >"$PIDFILE"
    say "ready: server $(docker version --format '{{.Server.Version}}') (pid $(<"$PIDFILE"))"
}

stop() {
    local pid
    if ! pid=$(our_pid); then
        say "no engine started by this script is running ($ROOT)"
        [[ -d "$ROOT" ]] && unmount_leftovers
        return 0
    fi
    say "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    local waited=0
    while kill -0 "$pid" 2>/dev/null; do
        if ((waited++ >= 60)); then
            say "dockerd did not stop in 30 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    unmount_leftovers
    rm -f "$PIDFILE"
    say "stopped"
}

status() {
    if pid=$(our_pid); then
        say "running: pid $pid, folder $ROOT"
    elif engine_answers; then
        say "an engine answers, not started by this script"
    else
        say "no engine answers"
        return 1
    fi
}

purge() {
    stop
    [[ "$ROOT" != / && -n "$ROOT" ]] || die "refusing to delete '$ROOT'"
    if [[ -d "$ROOT" ]]; then
        unmount_leftovers
        rm -rf --one-file-system "$ROOT"
        say "deleted $ROOT"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    purge) purge ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
