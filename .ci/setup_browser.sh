#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the web page's browser test (tests/test_web.py),
# which drives `python -m llava.serve.web` with headless Chromium through selenium. Idempotent: installs
# only what is missing.
# Never fails the CI: where packages cannot be installed (no apt, not root, no network) it says why and
# exits 0, and the browser test then skips with its reason.
set -u

log() { echo "setup_browser: $*"; }

on_path() { command -v "$1" >/dev/null 2>&1; }

PACKAGES=()
on_path chromium || PACKAGES+=(chromium)
on_path chromedriver || PACKAGES+=(chromium-driver)
if (( ${#PACKAGES[@]} == 0 )); then
    log "chromium and chromedriver already installed ($(chromium --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
if ! on_path apt-get; then
    log "apt-get not available; not installing ${PACKAGES[*]} (the browser test will skip)"
    exit 0
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    if on_path sudo && sudo -n true >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        log "not root and no password-less sudo; not installing ${PACKAGES[*]} (the browser test will skip)"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
log "installing ${PACKAGES[*]} with apt-get"
if ! "${SUDO[@]}" apt-get update -qq; then
    log "apt-get update failed; not installing ${PACKAGES[*]} (the browser test will skip)"
    exit 0
fi
if ! "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; then
    log "apt-get install ${PACKAGES[*]} failed; the browser test will skip"
    exit 0
fi
if on_path chromium && on_path chromedriver; then
    log "installed: $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null)"
else
    log "apt-get finished but chromium or chromedriver is still missing; the browser test will skip"
fi
exit 0
