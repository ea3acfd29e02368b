#!/usr/bin/env bash
# Render a tierbench HTML report in headless Chromium and save a full-page screenshot, to look at what users see.
#   scripts/render_report.sh results/<run>/report/report.html [OUT.png]
set -euo pipefail
html=$(realpath "${1:?usage: $0 REPORT.html [OUT.png]}")
out=$(realpath -m "${2:-${html%.html}.png}")
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$chrome" ] || { echo "no chromium found (apt-get install chromium)"; exit 1; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size=1200,${HEIGHT:-4200} --screenshot="$out" "file://$html" >/dev/null 2>&1
echo "$out"
