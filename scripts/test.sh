#!/usr/bin/env bash
# The whole test suite, as the README's test command and CI run it. It first installs (as root)
# or checks for what the tests need beyond Rust, and says in one line what is missing and how to
# get it:
#   - cargo-nextest (the test runner);
#   - Debian packages: iproute2, nftables and faketime for the fault-injection scenarios
#     (jepsen/), kcat, nodejs and npm for the Kafka listener's tests, mount and e2fsprogs for
#     the full-disk tests (a tmpfs, a loop-mounted ext4 image), prometheus (promtool and the
#     server) for the alert rules and the Grafana dashboard's queries, chromium and
#     chromium-driver for the web console's browser test;
#   - the Python Kafka clients (crates/quipu-kafka/tests/clients/requirements.txt) in a virtual
#     environment under target/kafka-clients/venv, and kafkajs under target/kafka-clients/node.
# Then it runs the workspace's tests, and the vendored openraft's own unit tests (vendor/).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(iproute2 nftables faketime kcat nodejs npm mount e2fsprogs prometheus chromium chromium-driver)
commands=(ip nft faketime kcat node npm mount mkfs.ext4 promtool chromium chromedriver)
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

# Python clients, in a virtual environment made again when the requirements change.
clients=target/kafka-clients
requirements=crates/quipu-kafka/tests/clients/requirements.txt
if ! cmp -s "$requirements" "$clients/venv/requirements.txt" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing python3-venv (Debian package the Python client tests use)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    else
      echo "python3 with venv is missing; install it with: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  echo "== installing the Python Kafka clients into $clients/venv"
  rm -rf "$clients/venv"
  python3 -m venv "$clients/venv"
  "$clients/venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$clients/venv/requirements.txt"
fi

# kafkajs, pinned, for the Node.js client test.
kafkajs=2.2.4
if [[ "$(cat "$clients/node/kafkajs.version" 2>/dev/null)" != "$kafkajs" ]]; then
  echo "== installing kafkajs $kafkajs into $clients/node"
  mkdir -p "$clients/node"
  npm install --prefix "$clients/node" --no-audit --no-fund --silent "kafkajs@$kafkajs"
  echo "$kafkajs" > "$clients/node/kafkajs.version"
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

cargo test --workspace --doc
cargo nextest run --workspace --all-features

# The vendored openraft's own unit tests, with Quipu's patches to it (vendor/README.md). It is
# not a workspace member, so it builds as a package of its own, in a target directory of its
# own, from a copy of the workspace's lock file (the versions Quipu builds it with; its
# dev-dependencies are resolved into the copy), removed afterwards.
target_dir="$(realpath -m "${CARGO_TARGET_DIR:-target}")/vendor-openraft"
cp Cargo.lock vendor/openraft/Cargo.lock
trap 'rm -f vendor/openraft/Cargo.lock' EXIT
(cd vendor/openraft && CARGO_TARGET_DIR="$target_dir" cargo test --lib -q)
