#!/usr/bin/env bash
# The whole test suite, as the README's test command and CI run it. It first installs (as root)
# or checks for what the tests need beyond Rust, and says in one line what is missing and how to
# get it:
#   - cargo-nextest (the test runner);
#   - Debian packages: iproute2, nftables and faketime for the fault-injection scenarios
#     (jepsen/), kcat for the Kafka listener's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables faketime kcat)
commands=(ip nft faketime kcat)
missing=()
for i in "${!commands[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${missing[*]} (Debian packages the tests use)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing Debian packages the tests need: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cargo test --workspace --doc
cargo nextest run --workspace --all-features
