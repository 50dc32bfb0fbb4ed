#!/usr/bin/env bash
# Cluster membership figures, in one run on one machine (release build, fsync=always, servers on
# 127.0.0.1, data in a temporary directory): each run starts its own cluster of `quipu server`
# processes, the first node alone and the others with --join.
#
#  1. move: four nodes; partition 0 of topic `big` (RF 3) filled with SIZE_MIB MiB of 1 KiB
#     records, then moved off one of its replicas onto the node that holds none
#     (`quipu topic move`), timed until `quipu topic describe` shows it done; meanwhile
#     `quipu bench produce` writes to another topic at RATE records/s for LOAD_SECS s. Once with
#     no throttle, once with cluster.move_bytes_per_sec = THROTTLE_MIB MiB/s; and the same
#     produce load with no move at all, for the baseline latency.
#  2. replace: five nodes, topic `spread` (10 partitions, RF 3, FILL_MIB MiB in all); node 5
#     SIGKILLed and removed with --force, timed until every partition has three replicas again.
#
# One line per measurement; figures go to docs/benchmarks.md by hand.
#
# usage: benches/membership/move.sh [SIZE_MIB] [THROTTLE_MIB] [RATE] [LOAD_SECS] [FILL_MIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib="${1:-1024}"
throttle_mib="${2:-50}"
rate="${3:-5000}"
load_secs="${4:-15}"
fill_mib="${5:-200}"
cargo build --release -p quipu
q=target/release/quipu
dir="$(mktemp -d)"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT

# start RUN ID [THROTTLE_BYTES]: node ID of cluster RUN, joining node 1 unless it is node 1.
start() {
  local run=$1 id=$2 throttle=${3:-0}
  local home="$dir/$run/n$id"
  mkdir -p "$home"
  printf '[cluster]\nmove_bytes_per_sec = %s\n' "$throttle" > "$home/quipu.toml"
  local join=()
  [ "$id" != 1 ] && join=(--join "127.0.0.1:27001")
  "$q" server --config "$home/quipu.toml" --node-id "$id" --data-dir "$home/data" \
    --listen "127.0.0.1:$((27000 + id))" --api-listen "127.0.0.1:$((27100 + id))" \
    --kafka-listen "127.0.0.1:$((29090 + id))" --admin-listen "127.0.0.1:$((29190 + id))" "${join[@]}" > "$home/node.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q "quipu server ready" "$home/node.log" && return; sleep 0.1; done
  echo "node $id did not start: $(tail -1 "$home/node.log")" >&2
  exit 1
}

# cluster RUN NODES [THROTTLE_BYTES]
cluster() {
  for id in $(seq 1 "$2"); do start "$1" "$id" "${3:-0}"; done
  QUIPU_BOOTSTRAP=$(seq -s, -f '127.0.0.1:%g' 27101 $((27100 + $2)))
  export QUIPU_BOOTSTRAP
  for _ in $(seq 1 300); do
    [ "$("$q" node list | grep -c ' active ')" = "$2" ] && return
    sleep 0.1
  done
  echo "the cluster did not form" >&2
  exit 1
}

settled() { ! "$q" topic describe "$1" | grep -q "moving to"; }
now() { date +%s.%N; }

# move RUN THROTTLE_BYTES LOAD(yes|no|only)
move_run() {
  local run=$1 throttle=$2 load=$3
  cluster "$run" 4 "$throttle"
  "$q" topic create big --partitions 1 --replication-factor 3 > /dev/null
  "$q" topic create load --partitions 3 --replication-factor 3 > /dev/null
  if [ "$load" != only ]; then
    "$q" bench produce --topic big --records $((size_mib * 1024)) --record-size 1024 \
      --concurrency 8 --json > "$dir/$run.fill.json"
  fi
  local replicas from to target
  replicas=$("$q" topic describe big | awk '$1 == "0" { print $3 }')
  to=$(seq 1 4 | grep -v -x -F -f <(tr , '\n' <<< "$replicas") | head -1)
  from=$(cut -d, -f3 <<< "$replicas")
  target=$(sed "s/\b$from\b/$to/" <<< "$replicas")
  # Warm-up: the load topic's leaders elected and its connections open.
  "$q" bench produce --topic load --records 2000 --json > /dev/null
  "$q" bench produce --topic load --records $((rate * load_secs)) --rate "$rate" \
    --duration "$load_secs" --json > "$dir/$run.load.json" &
  local bench=$!
  sleep 2
  if [ "$load" != only ]; then
    local t0 t1
    t0=$(now)
    "$q" topic move big --partition 0 --replicas "$target" > /dev/null
    until settled big; do sleep 0.2; done
    t1=$(now)
    echo "move run=$run size_mib=$size_mib throttle_bytes_per_sec=$throttle from=$replicas to=$target seconds=$(echo "$t1 - $t0" | bc)"
  fi
  wait "$bench"
  echo "produce-during run=$run move=$load $(cat "$dir/$run.load.json")"
  stop_all
}

move_run baseline 0 only
move_run unthrottled 0 yes
move_run throttled $((throttle_mib * 1024 * 1024)) yes

# Replace: five nodes, node 5 killed for good and removed with --force.
cluster replace 5
"$q" topic create spread --partitions 10 --replication-factor 3 > /dev/null
"$q" bench produce --topic spread --records $((fill_mib * 1024)) --record-size 1024 \
  --concurrency 8 --json > /dev/null
held=$("$q" node list | awk '$1 == "5" { print $7 }')
kill -KILL "${pids[4]}"
t0=$(now)
"$q" node remove 5 --force > /dev/null
until settled spread; do sleep 0.2; done
t1=$(now)
echo "replace nodes=5 fill_mib=$fill_mib partitions_on_removed_node=$held seconds=$(echo "$t1 - $t0" | bc)"
