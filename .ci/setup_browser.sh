#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the web page's browser test (tests/test_web.py),
# which drives `python -m llava.serve.web` with headless Chromium through selenium (the dev extra).
# Idempotent: installs only what is missing.
# Exits 0 even where it cannot install, so that lint and the other tests still run; under CI=true the
# browser test then fails, naming what is missing (tests/tiers.py), and this script's last line says so.
set -u
source "$(dirname "$0")/apt_install.sh"

log() { echo "setup_browser: $*"; }

on_path() { command -v "$1" >/dev/null 2>&1; }

PACKAGES=()
on_path chromium || PACKAGES+=(chromium)
on_path chromedriver || PACKAGES+=(chromium-driver)
if (( ${#PACKAGES[@]} > 0 )); then
    apt_install setup_browser "${PACKAGES[@]}"
fi

# The last line: what the test will find (tests/web_helpers.py looks for both on PATH, chromium also as
# chromium-browser, its name on some systems).
missing=()
on_path chromium || on_path chromium-browser || missing+=(chromium)
on_path chromedriver || missing+=(chromedriver)
if (( ${#missing[@]} == 0 )); then
    log "ready: $(chromium --version 2>/dev/null || echo 'chromium, version unknown'), $(chromedriver --version 2>/dev/null || echo 'chromedriver')"
else
    log "NOT READY: ${missing[*]} missing: the browser test (tests/test_web.py) will FAIL under CI=true"
fi
exit 0
