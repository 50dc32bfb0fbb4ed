#!/usr/bin/env bash
# What metrics cost the produce path, in one run on one machine: a release `quipu server` (one
# node, RF 1, fsync=always) with metrics on, then off (`[admin] metrics = false`), then on
# again, each from an empty data directory: RECORDS records of SIZE bytes produced as fast as
# possible (acks=all, 3 partitions) after 20,000 to warm up, then a scrape of /metrics timed and
# measured. Figures go to docs/benchmarks.md by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
records="${1:-300000}"
size="${2:-1024}"
cargo build --release -p quipu
dir="$(mktemp -d)"
server=""
stop_server() {
  if [ -n "$server" ]; then kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  server=""
}
trap 'stop_server; rm -rf "$dir"' EXIT
quipu=target/release/quipu
api=127.0.0.1:27101
admin=127.0.0.1:27201

run() {
  local label="$1" metrics="$2"
  local data="$dir/$label"
  mkdir -p "$data"
  printf '[admin]\nmetrics = %s\n' "$metrics" > "$dir/$label.toml"
  $quipu server --config "$dir/$label.toml" --data-dir "$data" --listen 127.0.0.1:27001 \
    --api-listen "$api" --kafka-listen 127.0.0.1:29092 --admin-listen "$admin" \
    > "$dir/$label.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do
    $quipu cluster --bootstrap "$api" health >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo "== $label (metrics $metrics)"
  $quipu bench produce --bootstrap "$api" --topic t --records 20000 --record-size "$size" \
    --partitions 3 --replication-factor 1 --acks all > /dev/null
  $quipu bench produce --bootstrap "$api" --topic t --records "$records" --record-size "$size" \
    --partitions 3 --replication-factor 1 --acks all
  if [ "$metrics" = true ]; then
    curl -s -o "$dir/scrape" -w 'scrape: %{time_total} s, %{size_download} bytes\n' "http://$admin/metrics"
  fi
  stop_server
  rm -rf "$data"
}

run on true
run off false
run on-again true
