#!/usr/bin/env bash
# Install Debian's chromium for the browser tests (report, emails) when it is missing.
# Idempotent; needs root (CI runs as root); without it the browser tests skip, saying why.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "install-chromium: $(chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
if [[ "$(id -u)" != "0" ]]; then
    echo "install-chromium: not root; run 'sudo apt-get install chromium' for the browser tests" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
echo "install-chromium: $(chromium --version 2>/dev/null | head -n 1)"
