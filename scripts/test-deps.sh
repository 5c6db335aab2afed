#!/usr/bin/env bash
# What the end-to-end tests need besides Rust, installed when missing (`make test` runs this):
# curl, ss (a listener's backlog), headless Chromium driven by Node's playwright-core, and a
# Kafka-protocol broker.
set -euo pipefail

missing=()
for tool in curl ss chromium node npm; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  packages=("${missing[@]/node/nodejs}")
  packages=("${packages[@]/#ss/iproute2}")
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

# playwright-core drives Chromium for the page tests (testkit looks in this folder).
if [ ! -d "$HOME/.cache/playwright-core/node_modules/playwright-core" ]; then
  mkdir -p "$HOME/.cache/playwright-core"
  npm install --prefix "$HOME/.cache/playwright-core" --no-audit --no-fund playwright-core@1
fi

# The Kafka-protocol broker: tansu, built once (about 18 minutes) and cached outside the repo.
if [ ! -x "$HOME/.cache/tansu/bin/tansu" ]; then
  CARGO_TARGET_DIR="$HOME/.cache/tansu/target" \
    cargo install --locked tansu --version 0.6.0 --features libsql --root "$HOME/.cache/tansu"
  rm -rf "$HOME/.cache/tansu/target"
fi

