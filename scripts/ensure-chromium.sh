#!/usr/bin/env bash
# Make sure Debian's Chromium (and CJK fonts for Chinese pages) is installed for browser tests.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "noto sans cjk"; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "Chromium is missing: run 'sudo apt-get install chromium fonts-noto-cjk' (browser tests need it)" >&2
  exit 1
fi
echo "installing chromium and fonts-noto-cjk from Debian…" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
