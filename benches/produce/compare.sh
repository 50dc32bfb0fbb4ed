#!/usr/bin/env bash
# The produce path's whole comparison in one command (issue 16): on this machine, in one run,
# the storage engine alone (the raw baseline: 64 KiB batches appended and fdatasynced one at a
# time for 5 s on the cluster's disk), then, for each of PARTITIONS, a fresh release `quipu dev --nodes 1`
# with an RF 1 topic of that many busy partitions, then `quipu dev --nodes 3` with an RF 3 topic of 3
# partitions. Each topic is warmed up, driven as fast as it goes (`quipu bench produce`,
# fsync=always, acks=all, 1 KiB records, 64 KiB batches, CONCURRENCY producer tasks) for at
# most SECONDS, then at 25%, 50% and 75% of that rate for SECONDS each (the latency curve).
# Writes one JSON line per run to OUT/runs.jsonl, then OUT/results.md (a Markdown table, each
# figure beside the engine's of the same run) and OUT/results.svg (throughput and latency
# percentiles against the offered rate) with benches/produce/report.py. Each run also records
# what the disk under the data directory did meanwhile (`disk`: MiB written, write requests and
# flushes per second, from /proc/diskstats; null when the directory is not on a block device
# listed there): on a shared or virtual disk the same build's figures move with the disk's
# state, and a run's own disk figures show which state it met.
#
# usage: [QUIPU_BIN=path] benches/produce/compare.sh [OUT] [PARTITIONS] [SECONDS] [CONCURRENCY]
#   OUT          where the results go (default: target/bench-produce)
#   PARTITIONS   RF 1 topic sizes, comma-separated (default: 3,48; issue 16 also asks for
#                1,480,2000: `benches/produce/compare.sh target/bench-produce 1,3,48,480,2000`)
#   SECONDS      length of each run (default: 8)
#   CONCURRENCY  producer tasks (default: 32)
# KEYS=N gives records one of N keys in turn (`quipu bench produce --keys`): they spread over
# every partition at once by key hash, as a keyed producer's do, instead of filling one
# partition's batch after another (the default, Kafka's sticky partitioner). QUIPU_CONFIG=FILE
# starts the nodes with that configuration (say, `[log] sync_scope = "file"` to compare).
# LADDER=RATE,RATE,... adds held rates (records/s) for the topic sizes in LADDER_PARTITIONS
# (default 3,480), each on a fresh node, the sizes alternating at every rate so that this
# machine's drift falls on both alike; the report gives each size's highest rate taken whole
# (at least 97% of it) with a p99 under 50 ms: issue 16's "480 partitions at the throughput of
# 3 with a p99 under 50 ms" as sustained rates, not bursts. Each rate adds, per size, SECONDS
# and about 15 s of start and warm-up. A held run that fails records (past capacity) still
# counts: its figures are kept. LADDER_RUNS=N (default 1) runs every rate N times (the sizes
# alternating in each round): near its limit one run holds a rate or not by chance on a busy
# machine, and the report then counts a rate as held when more than half of its runs held it.
# RF3_LADDER=RATE,RATE,... adds held rates for the RF 3 topic, each on a fresh three-node cluster
# with nothing before it, for RF3_LADDER_SECONDS each (default 20: longer than a burst the disk
# may allow, which an 8 s maximum can ride on), LADDER_RUNS times: the rate RF 3 sustains, beside
# the maximum of its 8 s burst.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-target/bench-produce}"
partitions="${2:-3,48}"
seconds="${3:-8}"
concurrency="${4:-32}"
ladder="${LADDER:-}"
ladder_sizes="${LADDER_PARTITIONS:-3,480}"
ladder_runs="${LADDER_RUNS:-1}"
rf3_ladder="${RF3_LADDER:-}"
rf3_seconds="${RF3_LADDER_SECONDS:-20}"
# `positive WHAT VALUE...`: stops with one line unless every VALUE is a whole number above 0.
positive() {
  local what="$1" value
  shift
  for value in "$@"; do
    if ! [ "$value" -gt 0 ] 2>/dev/null; then
      echo "$what above 0, not '$value'" >&2
      exit 1
    fi
  done
}
positive "LADDER_RUNS is a count of runs" "$ladder_runs"
positive "LADDER holds rates in records/s" ${ladder//,/ }
positive "RF3_LADDER_SECONDS is a count of seconds" "$rf3_seconds"
positive "RF3_LADDER holds rates in records/s" ${rf3_ladder//,/ }
mkdir -p "$out"
: > "$out/runs.jsonl"
# QUIPU_BIN: another build to measure (say, the one before a change, for a before-and-after in
# one run); by default the release build of this checkout.
if [ -z "${QUIPU_BIN:-}" ]; then
  cargo build --release -p quipu
fi
quipu="${QUIPU_BIN:-target/release/quipu}"
dir="$(mktemp -d)"
dev=""
stop_dev() {
  if [ -n "$dev" ]; then
    kill -TERM "$dev" 2>/dev/null || true
    wait "$dev" 2>/dev/null || true
    dev=""
  fi
}
trap 'stop_dev; rm -rf "$dir"' EXIT

# Starts `quipu dev --nodes $1` in a fresh directory and waits until it answers.
start_dev() {
  stop_dev
  rm -rf "$dir/dev"
  "$quipu" dev --nodes "$1" --data-dir "$dir/dev" --raft-port 27001 --api-port 27101 \
    --admin-port 27201 --kafka-port 29092 > "$dir/dev.out" 2>&1 &
  dev=$!
  QUIPU_BOOTSTRAP=$(seq -s, -f '127.0.0.1:%g' 27101 $((27100 + $1)))
  export QUIPU_BOOTSTRAP
  for _ in $(seq 1 150); do
    "$quipu" cluster health > /dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "the dev cluster did not start: $(tail -5 "$dir/dev.out")" >&2
  exit 1
}

# The block device under the data directory, as /proc/diskstats names it (empty if none is).
disk_name() {
  local source
  source=$(df --output=source "$dir" 2> /dev/null | tail -1)
  source="${source##*/}"
  if [ -n "$source" ] && awk -v d="$source" '$3 == d { found = 1 } END { exit !found }' \
    /proc/diskstats 2> /dev/null; then
    echo "$source"
  fi
}
disk="$(disk_name)"

# The clock (seconds) and that device's sectors written, write requests and flush requests
# completed (/proc/diskstats fields 7, 5 and 16 after the name); only the clock without one.
disk_counters() {
  local now
  now=$(date +%s.%N)
  if [ -z "$disk" ]; then
    echo "$now"
    return
  fi
  awk -v d="$disk" -v now="$now" '$3 == d { print now, $10, $8, ($19 == "" ? 0 : $19) }' \
    /proc/diskstats
}

# One run: `record LABEL KEY=VALUE... -- BENCH-ARGS...` appends the bench's JSON object with
# the label and the keys to runs.jsonl.
record() {
  local label="$1"
  shift
  local extra=()
  while [ "$1" != "--" ]; do
    extra+=("$1")
    shift
  done
  shift
  local json before after
  before=$(disk_counters)
  # A run with records that failed exits non-zero but still prints its figures.
  json=$("$quipu" bench produce --json --concurrency "$concurrency" --keys "${KEYS:-0}" "$@") ||
    true
  after=$(disk_counters)
  if [ -z "$json" ]; then
    echo "$label: the run printed no figures" >&2
    return 1
  fi
  python3 - "$label" "$json" "$before" "$after" "${extra[@]}" >> "$out/runs.jsonl" <<'PY'
import json, sys
run = json.loads(sys.argv[2])
run["label"] = sys.argv[1]
# Device counters at the start and the end: seconds, sectors written, write requests, flushes.
before, after = (list(map(float, c.split())) for c in sys.argv[3:5])
run["disk"] = None
if len(before) == 4 and len(after) == 4 and after[0] > before[0]:
    seconds = after[0] - before[0]
    run["disk"] = {
        "write_mib_per_second": (after[1] - before[1]) * 512 / 2**20 / seconds,
        "writes_per_second": (after[2] - before[2]) / seconds,
        "flushes_per_second": (after[3] - before[3]) / seconds,
    }
for pair in sys.argv[5:]:
    key, value = pair.split("=", 1)
    run[key] = json.loads(value)
print(json.dumps(run))
PY
  tail -1 "$out/runs.jsonl"
}

# A topic: warm-up (20,000 records), the maximum, then the rate sweep.
sweep() {
  local nodes="$1" rf="$2" count="$3"
  local topic="t$count" label="RF $rf, $count partitions"
  "$quipu" bench produce --topic "$topic" --partitions "$count" --replication-factor "$rf" \
    --records 20000 --json > /dev/null
  local max
  max=$(record "$label" nodes="$nodes" partitions="$count" offered=0 -- \
    --topic "$topic" --records 100000000 --duration "$seconds" |
    python3 -c 'import json,sys; print(int(json.loads(sys.stdin.read())["records_per_second"]))')
  for percent in 25 50 75; do
    local rate=$((max * percent / 100))
    record "$label" nodes="$nodes" partitions="$count" offered="$rate" -- \
      --topic "$topic" --records $((rate * seconds)) --duration "$seconds" --rate "$rate" \
      > /dev/null
  done
}

start_dev 1
# The engine alone on the same disk, in this run.
record "storage engine alone" nodes=1 partitions=0 offered=0 -- --topic baseline \
  --partitions 1 --replication-factor 1 --records 20000 --storage-baseline "$dir/baseline" \
  > /dev/null
for count in ${partitions//,/ }; do
  # Each size on a node of its own: none measured beside another's idle partitions (and a
  # node holds at most partitions_per_node_max replicas).
  start_dev 1
  sweep 1 1 "$count"
done
# One held rate on a fresh cluster of NODES nodes (the replication factor too), with nothing
# before it but the warm-up: `held NODES PARTITIONS RATE ROUND SECONDS`.
held() {
  local nodes="$1" count="$2" rate="$3" round="$4" secs="$5"
  start_dev "$nodes"
  "$quipu" bench produce --topic "t$count" --partitions "$count" --replication-factor "$nodes" \
    --records 20000 --json > /dev/null
  record "RF $nodes, $count partitions, held rates" nodes="$nodes" partitions="$count" \
    offered="$rate" ladder=true round="$round" -- --topic "t$count" \
    --records $((rate * secs)) --duration "$secs" --rate "$rate" > /dev/null
}
for rate in ${ladder//,/ }; do
  for round in $(seq 1 "$ladder_runs"); do
    for count in ${ladder_sizes//,/ }; do
      held 1 "$count" "$rate" "$round" "$seconds"
    done
  done
done
start_dev 3
sweep 3 3 3
for rate in ${rf3_ladder//,/ }; do
  for round in $(seq 1 "$ladder_runs"); do
    held 3 3 "$rate" "$round" "$rf3_seconds"
  done
done
stop_dev
python3 benches/produce/report.py "$out/runs.jsonl" "$out/results.md" "$out/results.svg"
echo "results: $out/results.md, $out/results.svg"
