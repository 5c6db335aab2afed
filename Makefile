# The gateway, its streaming plugin, the demo origin and the client.
# Everything builds in release: the tests run the same binaries users run.

CARGO ?= cargo
RELEASE := target/release
# The fuzz crate is its own workspace (`cargo test --workspace` does not reach it): its
# library tests and lints run on stable from fuzz/, built into the repository's target/.
FUZZ_CARGO := cd fuzz && $(CARGO)
FUZZ_TARGET_DIR := --target-dir ../target

.PHONY: build build-host build-plugin run test test-deps bench soak fuzz lint clean

build:
	$(CARGO) build --release --workspace

build-host:
	$(CARGO) build --release -p host

# Cargo does not build a cdylib for integration tests, so the plugin is built here.
build-plugin:
	$(CARGO) build --release -p krakend-server-plugin-streaming

# The demo: the SSE origin on :9081, the gateway on :8080 with krakend.json (its chat
# route sends $LLM_API_KEY upstream: the mock's own key unless one is set), and a second
# gateway on :8443 over https with examples/krakend-tls.json and a development certificate
# (scripts/dev-cert.sh writes it into target/dev-tls once; trust target/dev-tls/ca.pem).
DEV_TLS := target/dev-tls

run: build
	@scripts/dev-cert.sh $(DEV_TLS)
	@$(RELEASE)/sse-server & origin=$$!; \
	$(RELEASE)/host run -c examples/krakend-tls.json & https=$$!; \
	trap 'kill $$origin $$https 2>/dev/null' EXIT INT TERM; \
	LLM_API_KEY="$${LLM_API_KEY:-mock-key}" $(RELEASE)/host run -dc krakend.json

# Every test: unit tests and the end-to-end tests that start the real binaries, then the
# fuzz crate's library tests (its reference models). 10,000
# concurrent streams hold about 20,000 descriptors in one process: the limit goes to the top.
test: test-deps build
	ulimit -n "$$(ulimit -Hn)" && $(CARGO) test --release --workspace
	$(FUZZ_CARGO) test --release --lib $(FUZZ_TARGET_DIR)

# Installs what the end-to-end tests talk to, when missing: curl, Chromium, Node with
# playwright-core and @microsoft/fetch-event-source, the OpenAI Python SDK in a venv, and the
# tansu Kafka broker (cached in ~/.cache; tansu takes about 18 minutes once).
test-deps:
	scripts/test-deps.sh

# The benchmark against the origin directly, the floor proxy, the gateway, nginx and haproxy
# (not part of `make test`).
bench: build
	python3 bench/run.py

# The soak (not part of `make test`): SOAK_STREAMS streams for SOAK_MINUTES through the
# gateway with origin kills and a stalled-client crowd; fails on RSS growth, a lost or a
# doubled event (see bench/soak.py).
soak: build
	python3 bench/soak.py

# Every fuzz target for FUZZ_SECONDS each (not part of `make test`; needs the nightly
# toolchain, and installs cargo-fuzz when missing): see fuzz/run.sh.
fuzz:
	fuzz/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(FUZZ_CARGO) fmt -- --check
	$(FUZZ_CARGO) clippy --release --all-targets $(FUZZ_TARGET_DIR) -- -D warnings

clean:
	$(CARGO) clean
