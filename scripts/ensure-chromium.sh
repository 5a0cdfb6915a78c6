#!/usr/bin/env bash
# Make sure the Chromium the browser test drives (metronome_suger_tests/test_ui, through Playwright) exists at
# /usr/bin/chromium. Playwright's own browser download is not used: this script installs Debian's `chromium`
# package when the executable is missing. Idempotent: when it is found it prints one line and exits.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "Chromium for the tests: $CHROMIUM found"
    exit 0
fi

echo "Chromium not found at $CHROMIUM: installing Debian's chromium for the browser test"

# shellcheck source=scripts/apt-lib.sh
source "$(dirname "$0")/apt-lib.sh"
require_apt "install Chromium yourself so that $CHROMIUM exists" "apt-get install chromium"

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

if [ -x "$CHROMIUM" ]; then
    echo "Chromium for the tests: installed chromium, $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo '?'))"
else
    echo "error: installed chromium but still no $CHROMIUM" >&2
    exit 1
fi
