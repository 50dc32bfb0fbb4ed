#!/usr/bin/env bash
# TLS against plaintext for reads, in pairs: two release `quipu dev --nodes 3` clusters run side
# by side, one plaintext and one with `--tls`, both pinned to CPU 0 (`taskset`), the benchmark
# clients to CPU 1. Each holds the same topic (CONSUME_RECORDS records of SIZE bytes, 3
# partitions, RF 3). Then PASSES rounds, each reading the whole topic from both clusters over gRPC
# (`quipu bench consume`) and over the Kafka listener (`quipu bench kafka-consume`), one right
# after the other, the order alternating from round to round. This VM's disk and CPU drift by
# tens of percent within minutes (docs/benchmarks.md), far more than the cost being measured;
# comparing the two reads of one round, a few seconds apart, cancels most of that drift. Only one
# cluster reads at a time; the other sits idle.
#
# Prints each round's MiB/s, how busy CPU 0 (the servers' core) was, and two ratios TLS /
# plaintext: of throughput, and of MiB read per second of the servers' CPU (what TLS costs a
# node, whichever side bounds the read: on this machine the client's decryption on CPU 1 can be
# the bound, which a client on another machine would not be). Then the median of each ratio per
# path. Figures go to docs/benchmarks.md by hand.
#
# usage: benches/tls/consume_paired.sh [CONSUME_RECORDS] [SIZE] [PASSES]
set -euo pipefail
cd "$(dirname "$0")/../.."
consume_records="${1:-1000000}"
size="${2:-1024}"
passes="${3:-10}"
cargo build --release -p quipu
dir="$(mktemp -d)"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$dir"' EXIT
quipu=target/release/quipu

# start LABEL RAFT API ADMIN KAFKA [--tls]: a cluster in the background, on the given base ports.
start() {
  local label="$1" raft="$2" api="$3" admin="$4" kafka="$5"; shift 5
  taskset -c 0 $quipu dev --nodes 3 --data-dir "$dir/$label" --raft-port "$raft" --api-port "$api" \
    --admin-port "$admin" --kafka-port "$kafka" "$@" > "$dir/$label.out" 2>&1 &
  pids+=($!)
}
start plain 27001 27101 27201 29092
start tls 37001 37101 37201 39092 --tls
plain_grpc=(--bootstrap 127.0.0.1:27101,127.0.0.1:27102,127.0.0.1:27103)
plain_kafka=(--kafka-bootstrap 127.0.0.1:29092)
tls_grpc=(--bootstrap 127.0.0.1:37101,127.0.0.1:37102,127.0.0.1:37103)
tls_kafka=(--kafka-bootstrap 127.0.0.1:39092)
for _ in $(seq 1 100); do
  [ -f "$dir/tls/tls/ca.pem" ] && break
  sleep 0.2
done
ca=(--tls-ca "$dir/tls/tls/ca.pem")
# fill CONNECTION...: waits for the cluster, then produces the topic into it.
fill() {
  for _ in $(seq 1 150); do
    $quipu cluster "$@" health >/dev/null 2>&1 && break
    sleep 0.2
  done
  taskset -c 1 $quipu bench produce "$@" --topic c --records "$consume_records" \
    --record-size "$size" --partitions 3 --acks all > /dev/null
}
fill "${plain_grpc[@]}"
fill "${tls_grpc[@]}" "${ca[@]}"

# The busy and idle jiffies of CPU 0 so far.
cpu0() { awk '/^cpu0 /{print $2+$3+$4+$7+$8, $5+$6}' /proc/stat; }

# read KIND(grpc|kafka) WHICH(plain|tls): "MiB/s busy" of one read of the whole topic: MiB/s of
# values, and the fraction of CPU 0 busy meanwhile.
read_mib() {
  local kind="$1" which="$2" out b0 i0 b1 i1
  read -r b0 i0 < <(cpu0)
  if [ "$kind" = grpc ]; then
    if [ "$which" = tls ]; then
      out=$(taskset -c 1 $quipu bench consume "${tls_grpc[@]}" "${ca[@]}" --topic c)
    else
      out=$(taskset -c 1 $quipu bench consume "${plain_grpc[@]}" --topic c)
    fi
  else
    if [ "$which" = tls ]; then
      out=$(taskset -c 1 $quipu bench kafka-consume "${tls_kafka[@]}" "${ca[@]}" --topic c)
    else
      out=$(taskset -c 1 $quipu bench kafka-consume "${plain_kafka[@]}" --topic c)
    fi
  fi
  read -r b1 i1 < <(cpu0)
  # "... records/s, 1234.56 MiB/s of values"
  echo "$(echo "$out" | sed -n 's/.*, \([0-9.]*\) MiB\/s of values.*/\1/p') \
    $(python3 -c "print(f'{($b1 - $b0) / max(1, $b1 - $b0 + $i1 - $i0):.3f}')")"
}

# One warm-up read of each, so that every pass reads from the page cache.
for kind in grpc kafka; do read_mib "$kind" plain > /dev/null; read_mib "$kind" tls > /dev/null; done

echo "round path plain_MiB/s plain_cpu0 tls_MiB/s tls_cpu0 tls/plain per_cpu0_second"
declare -A ratios efficiencies
for round in $(seq 1 "$passes"); do
  for kind in grpc kafka; do
    if [ $((round % 2)) -eq 1 ]; then
      plain=$(read_mib "$kind" plain); tls=$(read_mib "$kind" tls)
    else
      tls=$(read_mib "$kind" tls); plain=$(read_mib "$kind" plain)
    fi
    read -r plain_mib plain_cpu <<< "$plain"
    read -r tls_mib tls_cpu <<< "$tls"
    ratio=$(python3 -c "print(f'{$tls_mib / $plain_mib:.3f}')")
    efficiency=$(python3 -c "print(f'{($tls_mib / $tls_cpu) / ($plain_mib / $plain_cpu):.3f}')")
    echo "$round $kind $plain_mib $plain_cpu $tls_mib $tls_cpu $ratio $efficiency"
    ratios[$kind]+="$ratio "
    efficiencies[$kind]+="$efficiency "
  done
done
median() { printf '%s\n' $1 | sort -n | python3 -c "import sys; v=[float(l) for l in sys.stdin]; n=len(v); print(f'{(v[n//2] if n % 2 else (v[n//2-1]+v[n//2])/2):.3f}')"; }
for kind in grpc kafka; do
  echo "median tls/plain, $kind: throughput $(median "${ratios[$kind]}"), MiB per second of the servers' CPU $(median "${efficiencies[$kind]}")"
done
