#!/usr/bin/env bash
# Install Debian's chromium for the browser test of the labs (tests/browser), only if /usr/bin/chromium
# is missing. Run by `make test` before pytest; safe to run again (does nothing once chromium is there).
#
# Root installs with apt-get; a non-root user with password-less sudo uses `sudo -n`; anyone else (or an
# apt-get that fails, e.g. offline) gets no chromium. This script never fails `make test`: it writes why
# chromium is missing to build/chromium-install.txt, and the browser test skips with that reason (shown in
# pytest's skip summary). Playwright never downloads a browser: it drives /usr/bin/chromium.
set -u
cd "$(dirname "$0")/.."
STATUS=build/chromium-install.txt
LOG=build/chromium-install.log
CHROMIUM=${SAMOYEDS_LAB_CHROMIUM:-/usr/bin/chromium}  # the browser test reads the same variable
mkdir -p build

if [ -x "$CHROMIUM" ]; then
    rm -f "$STATUS"
    exit 0
fi

skip() {  # record why, warn (visible in CI logs), and succeed
    echo "$1" > "$STATUS"
    echo "install_chromium.sh: chromium NOT installed, the browser test will be skipped: $1" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 ||
    skip "apt-get not found (not a Debian/Ubuntu system); install chromium so that $CHROMIUM exists"
if [ "$(id -u)" = 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    skip "not root and no password-less sudo: run 'sudo apt-get install -y chromium' once, then 'make test'"
fi

echo "install_chromium.sh: installing Debian's chromium with apt-get (once; log in $LOG)" >&2
install() {
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >>"$LOG" 2>&1
}
: > "$LOG"
# a fresh container has no package lists: update and retry when the first attempt fails
if ! install; then
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG" 2>&1
    install || skip "apt-get install chromium failed ($(tail -n 1 "$LOG")); full log in $LOG"
fi
[ -x "$CHROMIUM" ] || skip "apt-get installed a chromium package but $CHROMIUM does not exist (see $LOG)"
rm -f "$STATUS"
echo "install_chromium.sh: $("$CHROMIUM" --version 2>/dev/null | head -n 1)" >&2
