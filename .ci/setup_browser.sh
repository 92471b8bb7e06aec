#!/usr/bin/env bash
# Installs Debian's chromium and chromium-driver for the web page's browser test (tests/test_web.py),
# which drives `python -m llava.serve.web` with headless Chromium through selenium. Idempotent: installs
# only what is missing. Never fails the CI: where the packages cannot be installed it says why and exits
# 0, and the browser test then skips with its reason.
set -u
source "$(dirname "$0")/apt_install.sh"

on_path() { command -v "$1" >/dev/null 2>&1; }

PACKAGES=()
on_path chromium || PACKAGES+=(chromium)
on_path chromedriver || PACKAGES+=(chromium-driver)
if (( ${#PACKAGES[@]} == 0 )); then
    echo "setup_browser: chromium and chromedriver already installed ($(chromium --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi
apt_install setup_browser "the browser test" "${PACKAGES[@]}" || exit 0
if on_path chromium && on_path chromedriver; then
    echo "setup_browser: installed $(chromium --version 2>/dev/null), $(chromedriver --version 2>/dev/null)"
else
    echo "setup_browser: apt-get finished but chromium or chromedriver is still missing; the browser test will skip"
fi
exit 0
