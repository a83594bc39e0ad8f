#!/usr/bin/env bash
# Install spotify-token-swap as a systemd service (or remove it again).
#
#   sudo scripts/install.sh [--bin PATH]         install or upgrade
#   sudo scripts/install.sh --uninstall [--purge]
#
# Installs
#   $PREFIX/bin/spotify-token-swap                    0755  the binary
#   /etc/systemd/system/spotify-token-swap.{service,socket}  0644  the units
#   /etc/spotify-token-swap/env                       0640  settings, from
#                                      systemd/env.example; never overwritten
#   /etc/spotify-token-swap/client-secret             0600  empty: put the
#                                      Spotify app's client secret here
#   /etc/spotify-token-swap/encryption-secret         0600  a new random
#                                      secret (`spotify-token-swap generate-secret`)
# all under $DESTDIR (default: none) and owned by root. Files that hold
# settings or secrets are only created when absent, so running it again — to
# upgrade the binary and units — keeps them; no secret is ever printed.
# `--uninstall` stops and removes the binary and the units but keeps
# /etc/spotify-token-swap (settings, secrets) and drop-ins in
# /etc/systemd/system/spotify-token-swap.*.d; `--purge` removes those too.
#
# The binary is --bin PATH, else ./spotify-token-swap beside this script (the
# layout of the archives scripts/cross-build makes), else target/release/.
#
# Environment: DESTDIR (staging root, e.g. for packaging; no systemctl calls
# then), PREFIX (default /usr/local; the unit's ExecStart follows it).
set -euo pipefail

readonly NAME=spotify-token-swap
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
# Where the units' ExecStart expects the binary (the shipped unit says this).
readonly UNIT_BIN_DEFAULT=/usr/local/bin/$NAME

log() { printf '%s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

mode=install purge=0 bin=""
while (($#)); do
    case "$1" in
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        --bin)
            (($# >= 2)) || usage 2
            bin=$2
            shift
            ;;
        --bin=*) bin=${1#--bin=} ;;
        -h | --help) usage 0 ;;
        *) printf 'install.sh: unknown argument: %s\n' "$1" >&2 && usage 2 ;;
    esac
    shift
done
((purge == 0)) || [ "$mode" = uninstall ] || die "--purge goes with --uninstall"
case "$PREFIX" in
    *[!A-Za-z0-9/._+-]*) die "PREFIX may hold only letters, digits and / . _ + - (got: $PREFIX)" ;;
    /*) ;;
    *) die "PREFIX must be an absolute path (got: $PREFIX)" ;;
esac
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR%/}

here=$(cd "$(dirname "$0")" && pwd)
if [ -d "$here/systemd" ]; then
    units_src=$here/systemd # an unpacked cross-build archive
elif [ -d "$here/../systemd" ]; then
    units_src=$(cd "$here/../systemd" && pwd) # the source tree
else
    die "cannot find the systemd/ folder next to $here"
fi

bin_dest=$DESTDIR$PREFIX/bin/$NAME
unit_dir=$DESTDIR/etc/systemd/system
conf_dir=$DESTDIR/etc/$NAME
units=()
for unit in "$units_src/$NAME".service "$units_src/$NAME".socket; do
    [ -f "$unit" ] && units+=("$(basename "$unit")")
done
((${#units[@]})) || die "no $NAME.service in $units_src"

# systemctl only for the live system, and only where systemd runs.
live_systemd() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
as_root() { [ "$(id -u)" = 0 ]; }
if [ -z "$DESTDIR" ] && ! as_root; then
    die "installing into the system needs root (sudo), or set DESTDIR"
fi

# Installs file $1 as $2 with mode $3, owner root where we can, replacing the
# target in one rename (safe while the old binary is running).
put() {
    local src=$1 dest=$2 mode=$3 tmp
    tmp=$(dirname "$dest")/.$(basename "$dest").new.$$
    install -m "$mode" "$src" "$tmp"
    if as_root; then chown root:root "$tmp"; fi
    mv -f "$tmp" "$dest"
}

# Creates secret file $1 (0600, root) unless it exists; $2 = generate or empty.
new_secret() {
    local dest=$1 how=$2 tmp
    if [ -e "$dest" ]; then
        log "kept      $dest"
        return
    fi
    tmp=$(dirname "$dest")/.$(basename "$dest").new.$$
    (
        umask 077
        : >"$tmp"
        if [ "$how" = generate ]; then
            # SECURITY: the secret goes straight into a 0600 file, never to
            # the terminal. The binary makes it; where it cannot run here
            # (another architecture, staged with DESTDIR), the same format —
            # 32 random bytes, base64url — comes from the kernel's generator.
            if ! "$bin_src" generate-secret >"$tmp" 2>/dev/null; then
                head -c 32 /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '=' >"$tmp"
                printf '\n' >>"$tmp"
            fi
        fi
    )
    if as_root; then chown root:root "$tmp"; fi
    chmod 0600 "$tmp"
    mv -f "$tmp" "$dest"
    if [ "$how" = generate ]; then
        log "generated $dest"
    else
        log "created   $dest (empty: put the secret in it)"
    fi
}

do_install() {
    if [ -z "$bin" ]; then
        if [ -f "$here/$NAME" ]; then
            bin=$here/$NAME
        elif [ -f "$here/../target/release/$NAME" ]; then
            bin=$here/../target/release/$NAME
        else
            die "no binary: pass --bin PATH (e.g. target/dist/<target>/$NAME)"
        fi
    fi
    [ -f "$bin" ] || die "no such binary: $bin"
    bin_src=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
    if ! "$bin_src" --version >/dev/null 2>&1; then
        # Staging for another machine is fine; installing a binary that
        # cannot run into this system is a mistake worth stopping for.
        [ -n "$DESTDIR" ] || die "$bin_src does not run here (built for another architecture?)"
        log "note: $bin_src does not run on this machine; installing it anyway (DESTDIR is set)"
    fi

    install -d -m 0755 "$DESTDIR$PREFIX/bin" "$unit_dir"
    install -d -m 0750 "$conf_dir"
    if as_root; then chown root:root "$conf_dir"; fi

    put "$bin_src" "$bin_dest" 0755
    log "installed $bin_dest"

    local unit tmp_unit
    tmp_unit=$(mktemp)
    for unit in "${units[@]}"; do
        # The shipped unit runs /usr/local/bin/...; follow PREFIX.
        sed "s|$UNIT_BIN_DEFAULT\\b|$PREFIX/bin/$NAME|g" "$units_src/$unit" >"$tmp_unit"
        put "$tmp_unit" "$unit_dir/$unit" 0644
        log "installed $unit_dir/$unit"
    done
    rm -f "$tmp_unit"

    if [ -e "$conf_dir/env" ]; then
        log "kept      $conf_dir/env"
    else
        put "$units_src/env.example" "$conf_dir/env" 0640
        log "installed $conf_dir/env (edit SPOTIFY_CLIENT_ID and SPOTIFY_REDIRECT_URI)"
    fi
    new_secret "$conf_dir/client-secret" empty
    new_secret "$conf_dir/encryption-secret" generate

    if live_systemd; then
        systemctl daemon-reload
        if systemctl is-active --quiet "$NAME.service"; then
            log "$NAME.service is running the old binary: systemctl restart $NAME"
        else
            log "next: edit $conf_dir/env and $conf_dir/client-secret, then"
            log "      systemctl enable --now $NAME"
        fi
    fi
}

do_uninstall() {
    local unit path i
    if live_systemd; then
        # The socket first, or it would start the service again.
        for ((i = ${#units[@]} - 1; i >= 0; i--)); do
            systemctl disable --now "${units[i]}" >/dev/null 2>&1 || true
        done
        systemctl reset-failed "${units[@]}" >/dev/null 2>&1 || true
    fi
    for path in "$bin_dest" "${units[@]/#/$unit_dir/}"; do
        if [ -e "$path" ] || [ -L "$path" ]; then
            rm -f "$path"
            log "removed   $path"
        fi
    done
    if live_systemd; then systemctl daemon-reload; fi
    # Settings: the config folder and drop-ins (`systemctl edit`).
    local settings=("$conf_dir")
    for unit in "${units[@]}"; do
        [ -d "$unit_dir/$unit.d" ] && settings+=("$unit_dir/$unit.d")
    done
    for path in "${settings[@]}"; do
        [ -d "$path" ] || continue
        if ((purge)); then
            rm -rf "$path"
            log "removed   $path"
        else
            log "kept      $path (settings; --uninstall --purge removes it)"
        fi
    done
}

"do_$mode"
