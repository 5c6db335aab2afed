#!/usr/bin/env bash
# What the end-to-end tests need besides Rust, installed when missing (`make test` runs this):
# curl, ss (a listener's backlog and queue), haproxy and systemd-socket-activate (the
# multi-gateway and socket-activation tests), headless Chromium driven by Node's playwright-core, the LLM
# clients (the OpenAI Python SDK, @microsoft/fetch-event-source), and a Kafka-protocol broker.
# Each step is skipped when its result is already there, so a cached run costs a few checks.
set -euo pipefail

missing=()
for tool in curl ss haproxy systemd-socket-activate chromium node npm python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  packages=("${missing[@]/#node/nodejs}")
  packages=("${packages[@]/#ss/iproute2}")
  packages=("${packages[@]/#systemd-socket-activate/systemd}")
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
fi

# playwright-core drives Chromium for the page tests (testkit looks in this folder).
if [ ! -d "$HOME/.cache/playwright-core/node_modules/playwright-core" ]; then
  mkdir -p "$HOME/.cache/playwright-core"
  npm install --prefix "$HOME/.cache/playwright-core" --no-audit --no-fund playwright-core@1
fi

# @microsoft/fetch-event-source, the browser SSE client for POST streams, next to
# playwright-core: the page tests serve its ES module files to Chromium from there.
if [ ! -d "$HOME/.cache/playwright-core/node_modules/@microsoft/fetch-event-source" ]; then
  npm install --prefix "$HOME/.cache/playwright-core" --no-audit --no-fund \
    @microsoft/fetch-event-source@2
fi

# The official OpenAI Python SDK, major version 3, in a venv of its own (testkit runs its
# python). The check reads the installed version without importing the package (seconds).
openai_venv="$HOME/.cache/openai-python"
if ! "$openai_venv/bin/python" -c \
    'import importlib.metadata as m, sys; sys.exit(m.version("openai").split(".")[0] != "3")' \
    2>/dev/null; then
  rm -rf "$openai_venv"
  python3 -m venv "$openai_venv"
  "$openai_venv/bin/pip" install --quiet --disable-pip-version-check 'openai>=3,<4'
fi

# The Kafka-protocol broker: tansu, built once (about 18 minutes) and cached outside the repo.
if [ ! -x "$HOME/.cache/tansu/bin/tansu" ]; then
  CARGO_TARGET_DIR="$HOME/.cache/tansu/target" \
    cargo install --locked tansu --version 0.6.0 --features libsql --root "$HOME/.cache/tansu"
  rm -rf "$HOME/.cache/tansu/target"
fi

