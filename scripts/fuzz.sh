#!/usr/bin/env bash
# A bounded run of every fuzz target in fuzz/ (cargo fuzz, which needs the nightly toolchain):
# SECONDS per target, 20 by default. CI runs it after the test suite. A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the run; turn it into a regression test in the crate it hits.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzzing skipped: no nightly toolchain here (cargo fuzz needs it; the proptest harnesses over arbitrary bytes still ran in the test suite)"
  exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
cd fuzz
cargo +nightly fuzz build -O
for target in $(cargo +nightly fuzz list); do
  echo "== fuzz $target for ${seconds} s"
  cargo +nightly fuzz run -O "$target" -- -max_total_time="$seconds" -rss_limit_mb=4096 2>&1 \
    | grep -E '^Done|ERROR|SUMMARY|panicked|artifact' || true
  if compgen -G "artifacts/$target/*" >/dev/null; then
    echo "fuzz target $target found a crash: see fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
