#!/usr/bin/env bash
# The file-system steps of scripts/make_local_base.sh, on their own so that they can be tested on a fake root
# without debootstrap (test/container/test_rootfs.py). Needs root for anything that is mounted.
#
#   scripts/rootfs.sh mounts ROOT      list what is mounted under ROOT, deepest first (/proc/self/mountinfo)
#   scripts/rootfs.sh unmount ROOT     unmount everything mounted under ROOT, deepest first (lazily when busy)
#   scripts/rootfs.sh pack ROOT TAR    unmount, then pack ROOT into TAR: its own file system only, without the
#                                      contents of proc/, sys/ and dev/ (docker provides those at run time); check TAR
#   scripts/rootfs.sh check TAR        fail when TAR holds anything under proc/, sys/ or dev/
#   scripts/rootfs.sh remove DIR       unmount what is mounted under DIR, then delete DIR (never across a mount)
#
# Why: debootstrap mounts proc (and sometimes sys, dev/pts) inside its root and may leave them mounted when it
# stops. tar then read /proc into the image stream and failed, and rm could not delete the folder (issue 37).
set -euo pipefail

say() { echo "rootfs: $*" >&2; }
die() { say "error: $*"; exit 1; }

mounts_under() {
    # Mount points strictly under $1 (not $1 itself), deepest first: a child sorts after its parent, so reverse
    # order puts it before. Field 5 of mountinfo is the mount point, with space, tab, newline and backslash
    # written as octal escapes.
    local root
    root=$(realpath -e -- "$1") || return 1
    awk -v root="$root/" '
        function unescape(text,    out, i, c, code) {
            out = ""
            for (i = 1; i <= length(text); i++) {
                c = substr(text, i, 1)
                code = substr(text, i + 1, 3)
                if (c == "\\" && code ~ /^[0-7][0-7][0-7]$/) {
                    out = out sprintf("%c", substr(code, 1, 1) * 64 + substr(code, 2, 1) * 8 + substr(code, 3, 1))
                    i += 3
                } else {
                    out = out c
                }
            }
            return out
        }
        { point = unescape($5); if (index(point, root) == 1) print point }
    ' /proc/self/mountinfo | LC_ALL=C sort -r
}

unmount_under() {
    # Unmount deepest first; a mount that is busy is detached lazily (gone from the tree at once). Stacked mounts
    # on one point need one pass each, so repeat until nothing is left (or give up, saying what stays).
    local root=$1 pass point points=()
    for pass in 1 2 3 4 5 6 7 8; do
        mapfile -t points < <(mounts_under "$root")
        ((${#points[@]})) || return 0
        say "unmounting what is left mounted under $root: ${points[*]}"
        for point in "${points[@]}"; do
            umount -- "$point" 2>/dev/null || umount --lazy -- "$point" 2>/dev/null || true
        done
    done
    mapfile -t points < <(mounts_under "$root")
    ((${#points[@]} == 0)) || { say "still mounted under $root: ${points[*]}"; return 1; }
}

check() {
    # An archive made by pack: nothing under proc/, sys/ or dev/ beyond the empty directories themselves.
    local tar_file=$1 found
    found=$(tar -tf "$tar_file" | grep -E '^(\./)?(proc|sys|dev)/.' | head -n 5 || true)
    [[ -z "$found" ]] || die "$tar_file holds entries under proc/, sys/ or dev/, e.g.: $(tr '\n' ' ' <<<"$found")"
}

pack() {
    local root=$1 tar_file=$2
    [[ -d "$root" ]] || die "$root is not a folder"
    unmount_under "$root" || die "cannot unmount what is mounted under $root"
    # --one-file-system: even a mount that appeared after the unmount is not descended into; the excludes keep the
    # pseudo file systems' mount points as empty folders.
    tar --numeric-owner --one-file-system -C "$root" \
        --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' -cf "$tar_file" .
    check "$tar_file"
}

remove() {
    local dir=$1
    [[ -e "$dir" ]] || return 0
    unmount_under "$dir" || die "cannot unmount what is mounted under $dir; not deleting it"
    rm -rf --one-file-system -- "$dir"
}

case "${1:-}" in
    mounts) mounts_under "${2:?mounts ROOT}" ;;
    unmount) unmount_under "${2:?unmount ROOT}" ;;
    pack) pack "${2:?pack ROOT TAR}" "${3:?pack ROOT TAR}" ;;
    check) check "${2:?check TAR}" ;;
    remove) remove "${2:?remove DIR}" ;;
    -h | --help | help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
