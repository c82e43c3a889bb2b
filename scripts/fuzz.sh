#!/usr/bin/env bash
# Runs the fuzz targets of tools/fuzz for SECONDS each (default 60), all at once at the lowest
# CPU priority, seeded from tools/fuzz/seeds; prints each target's executions, coverage and any
# crash file. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest_reader webhook_payload diff git_tree)
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
nice -n 19 cargo fuzz build --fuzz-dir tools/fuzz -s none
logs="tools/fuzz/artifacts/logs"
mkdir -p "$logs"
for t in "${targets[@]}"; do
  mkdir -p "tools/fuzz/corpus/$t" "tools/fuzz/artifacts/$t"
  nice -n 19 cargo fuzz run --fuzz-dir tools/fuzz -s none "$t" "tools/fuzz/corpus/$t" "tools/fuzz/seeds/$t" \
    -- -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    >"$logs/$t.log" 2>&1 &
done
status=0
wait || status=$?
for t in "${targets[@]}"; do
  runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$logs/$t.log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 || true)
  crashes=$(ls "tools/fuzz/artifacts/$t" 2>/dev/null | grep -E '^(crash|timeout|oom|leak)-' || true)
  echo "fuzz $t: ${runs:-no summary (see $logs/$t.log)}, ${cov:-cov ?}, crashes: ${crashes:-none}"
done
exit "$status"
