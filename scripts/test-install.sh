#!/usr/bin/env bash
# Tests scripts/install.sh in throwaway DESTDIRs: files, modes, owners,
# PREFIX, the archive layout, idempotence, secrets never printed, uninstall.
#
#   scripts/test-install.sh        # uses STS_BIN, else target/debug/spotify-token-swap
#
# Prints one line per check and ends with "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NAME=spotify-token-swap
bin=${STS_BIN:-target/debug/$NAME}
if [ ! -x "$bin" ]; then
    cargo build --locked --quiet --bin "$NAME"
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0 failed=0
ok() {
    passed=$((passed + 1))
    printf 'ok    %s\n' "$1"
}
fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
}
check() { # check DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then ok "$what"; else fail "$what"; fi
}
mode_is() { [ "$(stat -c %a "$1" 2>/dev/null)" = "$2" ]; }
owner_is_root() { [ "$(id -u)" != 0 ] || [ "$(stat -c %u:%g "$1")" = 0:0 ]; }
absent() { [ ! -e "$1" ]; }
not_in() { ! grep -qF -- "$2" "$1"; } # not_in FILE TEXT
fails() { ! "$@" >/dev/null 2>&1; }
# path, mode, owner and content hash of every file under $1
snapshot() { (cd "$1" && find . -printf '%p %m %u:%g\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum); }

install_into() { # install_into DESTDIR [PREFIX] -- ARGS...
    local dest=$1 prefix=$2
    shift 2
    DESTDIR=$dest PREFIX=$prefix scripts/install.sh "$@" >"$work/out" 2>&1
}

# --- a first install -------------------------------------------------------
root=$work/root
check "install exits 0" install_into "$root" /usr/local --bin "$bin"
etc=$root/etc/$NAME
check "binary installed, 0755" mode_is "$root/usr/local/bin/$NAME" 755
check "binary is the given one" cmp -s "$bin" "$root/usr/local/bin/$NAME"
check "binary owned by root" owner_is_root "$root/usr/local/bin/$NAME"
for unit in systemd/$NAME.service systemd/$NAME.socket; do
    u=$root/etc/systemd/system/$(basename "$unit")
    check "$(basename "$unit") installed, 0644" mode_is "$u" 644
    check "$(basename "$unit") unchanged for the default PREFIX" cmp -s "$unit" "$u"
done
check "config folder 0750" mode_is "$etc" 750
check "env installed from env.example, 0640" mode_is "$etc/env" 640
check "env has env.example's content" cmp -s systemd/env.example "$etc/env"
check "client-secret 0600" mode_is "$etc/client-secret" 600
check "client-secret owned by root" owner_is_root "$etc/client-secret"
check "client-secret created empty" test ! -s "$etc/client-secret"
check "encryption-secret 0600" mode_is "$etc/encryption-secret" 600
check "encryption-secret owned by root" owner_is_root "$etc/encryption-secret"
secret=$(tr -d '\n' <"$etc/encryption-secret")
check "encryption-secret generated: 43 base64url characters" \
    grep -Eq '^[A-Za-z0-9_-]{43}$' <<<"$secret"
check "install output does not show the secret" not_in "$work/out" "$secret"
check "the binary accepts the generated secret" \
    env -i PATH="$PATH" SPOTIFY_CLIENT_ID=id SPOTIFY_CLIENT_SECRET=client-secret-for-test \
    SPOTIFY_REDIRECT_URI=myapp://cb ENCRYPTION_SECRET_FILE="$etc/encryption-secret" \
    "$bin" check-config >/dev/null 2>&1

# --- idempotence: a second run changes nothing, keeps edited settings -------
before=$(snapshot "$root")
check "second install exits 0" install_into "$root" /usr/local --bin "$bin"
check "second install leaves every file, mode and owner as it was" test "$before" = "$(snapshot "$root")"
echo "SPOTIFY_CLIENT_ID=edited" >>"$etc/env"
echo "the-real-client-secret" >"$etc/client-secret"
edited=$(snapshot "$root")
check "install over edited settings exits 0" install_into "$root" /usr/local --bin "$bin"
check "edited env and secrets are kept" test "$edited" = "$(snapshot "$root")"
check "a kept secret is not printed either" not_in "$work/out" the-real-client-secret

# --- PREFIX: binary elsewhere, ExecStart follows ------------------------------
opt=$work/opt
check "install with PREFIX=/opt/sts exits 0" install_into "$opt" /opt/sts --bin "$bin"
check "binary in PREFIX/bin" mode_is "$opt/opt/sts/bin/$NAME" 755
check "no binary in /usr/local" absent "$opt/usr/local/bin/$NAME"
check "unit's ExecStart follows PREFIX" \
    grep -qx "ExecStart=/opt/sts/bin/$NAME" "$opt/etc/systemd/system/$NAME.service"
check "relative PREFIX refused" fails env DESTDIR="$work/rel" PREFIX=usr scripts/install.sh --bin "$bin"
if [ "$(id -u)" != 0 ]; then
    check "installing into the system without root or DESTDIR is refused" \
        fails env -u DESTDIR scripts/install.sh --bin "$bin"
fi

# --- the archive layout: install.sh, systemd/ and the binary side by side -----
bundle=$work/bundle
mkdir -p "$bundle"
cp scripts/install.sh "$bundle/"
cp -r systemd "$bundle/"
cp "$bin" "$bundle/$NAME"
check "install from an unpacked archive, no --bin" \
    env DESTDIR="$work/from-bundle" "$bundle/install.sh" >/dev/null
check "archive install put the binary in place" cmp -s "$bin" "$work/from-bundle/usr/local/bin/$NAME"

# --- uninstall ----------------------------------------------------------------
dropin=$root/etc/systemd/system/$NAME.service.d/override.conf
mkdir -p "$(dirname "$dropin")"
printf '[Service]\nEnvironment=LOG_LEVEL=debug\n' >"$dropin"
check "uninstall exits 0" install_into "$root" /usr/local --uninstall
check "uninstall kept the operator's drop-in" test -s "$dropin"
check "uninstall removed the binary" absent "$root/usr/local/bin/$NAME"
check "uninstall removed the service unit" absent "$root/etc/systemd/system/$NAME.service"
check "uninstall removed the socket unit" absent "$root/etc/systemd/system/$NAME.socket"
check "uninstall kept the settings and secrets" test "$(tr -d '\n' <"$etc/encryption-secret")" = "$secret"
check "uninstall output does not show the secret" not_in "$work/out" "$secret"
check "second uninstall exits 0" install_into "$root" /usr/local --uninstall
check "uninstall --purge exits 0" install_into "$root" /usr/local --uninstall --purge
check "purge removed the config folder" absent "$etc"
check "purge removed the drop-in" absent "$dropin"
check "nothing but empty folders left" test -z "$(find "$root" -not -type d)"

printf '\n%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
