#!/usr/bin/env bash
# Two builds against each other at RF 3, in alternating pairs (this VM's CPU and disk drift by
# tens of percent within minutes, more than most changes measured: only figures of runs close
# in time are compared). Each run is a fresh release `quipu dev --nodes 3` of one build: an RF 3
# topic of 3 partitions, 20,000 records to warm up, then `quipu bench produce` (1 KiB records,
# acks=all, fsync=always, 32 producer tasks) as fast as it goes for 8 s, then at RATE records/s
# for 10 s. Prints each run's figures (with the split of its latency between the producer and
# the request) and how busy the machine's CPU was meanwhile (/proc/stat), and for the run at RATE
# where the nodes spent the time (benches/produce/phases.py: each produce phase on the leaders,
# an append's round trip and a follower's handling of it, fsyncs; their p99 buckets; the disk's
# requests per fsync). Figures go to docs/benchmarks.md by hand.
#
# usage: benches/produce/rf3_pairs.sh OLD_BINARY NEW_BINARY [PAIRS] [RATE]
#   RATE: records/s, or `half`: half of that run's own as-fast-as-it-goes rate (issue 16's
#   "p99 at half of the maximum", each cluster against its own maximum).
# env: OLD_CONFIG / NEW_CONFIG: a configuration file for that side's nodes (QUIPU_CONFIG), so
#      one binary can be run against itself with two settings; OLD_DATA_ROOT / NEW_DATA_ROOT:
#      the directory under which that side's clusters keep their data (default: the system's
#      temporary directory; /dev/shm puts the logs in memory, where a sync costs nothing: a
#      control for what the disk adds); MAX_SECONDS: how long the as-fast-as-it-goes phase runs
#      (default 8; longer lets segments roll and retention purge).
set -euo pipefail
old="$1"; new="$2"; pairs="${3:-3}"; rate="${4:-50000}"
if [ "$rate" != half ] && ! [ "$rate" -gt 0 ] 2>/dev/null; then
  echo "RATE is records/s (a positive whole number) or half, not '$rate'" >&2
  exit 2
fi
export QUIPU_BOOTSTRAP=127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103
dir=""; dev=""
stop_dev() {
  if [ -n "$dev" ]; then kill -TERM "$dev" 2>/dev/null || true; wait "$dev" 2>/dev/null || true; fi
  dev=""
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
  dir=""
}
trap stop_dev EXIT
busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }
# measure LABEL BINARY ARGS...: one bench run, its summary line and the CPU busy meanwhile;
# leaves the run's records/s in `taken` (empty if none was printed). A run that fails (the bench
# exits non-zero when records went unacknowledged) is printed with its exit status, and the
# pairs go on.
measure() {
  local label="$1" quipu="$2" b0 i0 b1 i1 out; shift 2
  read -r b0 i0 < <(busy)
  out=$({ QUIPU_LOG=warn "$quipu" bench produce --topic t "$@" 2>&1 || echo "bench failed: exit $?"; } |
    grep -E 'records sent|waiting in the producer|bench failed' | tr -s '\n ' ' ') || true
  read -r b1 i1 < <(busy)
  taken=$(sed -n 's/.*s: \([0-9]*\) records\/s.*/\1/p' <<< "$out")
  echo "$label $*: $out; CPU busy $(( (b1 - b0) * 100 / ((b1 - b0) + (i1 - i0)) ))%"
}
# run LABEL BINARY [CONFIG] [DATA_ROOT]: one fresh cluster of BINARY, measured, stopped.
run() {
  local label="$1" quipu="$2" config="${3:-}" root="${4:-}" at
  dir=$(mktemp -d ${root:+-p "$root"})
  env ${config:+QUIPU_CONFIG="$config"} "$quipu" dev --nodes 3 --data-dir "$dir/d" --raft-port 27001 --api-port 27101 \
    --admin-port 27201 --kafka-port 29092 > "$dir/out" 2>&1 &
  dev=$!
  for _ in $(seq 1 150); do "$quipu" cluster health > /dev/null 2>&1 && break; sleep 0.2; done
  "$quipu" bench produce --topic t --partitions 3 --replication-factor 3 --records 20000 \
    --json > /dev/null
  measure "$label" "$quipu" --duration "${MAX_SECONDS:-8}" --concurrency 32 --records 100000000
  at="$rate"
  if [ "$rate" = half ]; then
    if ! [ "${taken:-0}" -gt 1 ] 2>/dev/null; then
      echo "$label: no rate read from the as-fast-as-it-goes run" >&2
      stop_dev
      return
    fi
    at=$((taken / 2))
  fi
  python3 "$(dirname "$0")/phases.py" save 27201,27202,27203 "$dir/phases.json" "$dir" || true
  measure "$label" "$quipu" --duration 10 --concurrency 32 --rate "$at" --records $((at * 10))
  python3 "$(dirname "$0")/phases.py" diff 27201,27202,27203 "$dir/phases.json" "$dir" || true
  stop_dev
}
for pair in $(seq 1 "$pairs"); do
  if [ $((pair % 2)) -eq 1 ]; then
    run old "$old" "${OLD_CONFIG:-}" "${OLD_DATA_ROOT:-}"
    run new "$new" "${NEW_CONFIG:-}" "${NEW_DATA_ROOT:-}"
  else
    run new "$new" "${NEW_CONFIG:-}" "${NEW_DATA_ROOT:-}"
    run old "$old" "${OLD_CONFIG:-}" "${OLD_DATA_ROOT:-}"
  fi
done
