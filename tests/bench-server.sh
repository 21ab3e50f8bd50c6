#!/usr/bin/env bash
# chute serve's peak RSS under load: `make bench-server` (also run by `make bench`).
#
# Runs the ignored tests hostile_conn::bench_server_peak_rss (tests/hostile_conn.rs)
# and ui::bench_page_rss (tests/ui.rs), which start the real `chute serve` on
# loopback and read its VmHWM from /proc:
#   - with 2,000 idle connections open against the default caps (256 connections,
#     64 per address: the rest are closed or refused), and with caps raised to
#     2048 so that the server holds all 2,000 (one thread of 128 KiB stack each);
#   - while 64 admitted nodes sink 1 MiB each at once;
#   - with its management page, status and metrics loaded 8 times each (each
#     gathered afresh) over 10 admitted nodes of 1,000 snapshots each.
# Prints a markdown table. Settings: CARGO (default cargo).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CARGO=${CARGO:-cargo}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
(cd "$ROOT" && "$CARGO" test --release --quiet --test tests -- --ignored --nocapture \
    hostile_conn::bench_server_peak_rss ui::bench_page_rss) >"$out" 2>&1 || {
    cat "$out" >&2
    echo "bench-server: the bench failed" >&2
    exit 1
}
echo
echo "## chute serve under load (peak RSS, VmHWM)"
echo
echo "| case | server peak RSS MiB |"
echo "| --- | ---: |"
awk '$1 == "SERVER_RSS" { extra = ""; for (i = 4; i <= NF; i++) extra = extra " " $i;
    printf "| %s%s | %.1f |\n", $2, extra, $3 / 1024 }' "$out"
