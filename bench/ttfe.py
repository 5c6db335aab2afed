#!/usr/bin/env python3
"""Time to first event of an LLM-style stream, direct and through the gateway, one run.

A `POST /v1/chat/completions` (stream: true) to `sse-server`'s OpenAI mock, then the time
until the first `data:` event has arrived, for REQUESTS requests one after another on new
connections, against the mock directly and through the gateway's chat route (host and the
streaming plugin from target/release, `make build`). Prints p50 and p99 of each, and what the
gateway adds. The mock sends its first chunk at once, so this is the gateway's own cost:
accepting the request, reading its body, dialling the origin and relaying the first event.

  python3 bench/ttfe.py [REQUESTS]   (default 200)
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release")
BODY = json.dumps({"model": "mock-1", "stream": True,
                   "messages": [{"role": "user", "content": "the quick brown fox"}]}).encode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def first_event_seconds(port):
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nX-Mock-Interval-Ms: 0\r\nConnection: close\r\n\r\n" % len(BODY)) + BODY
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request)
        seen = b""
        while b"data: " not in seen or not seen.split(b"data: ", 1)[1].count(b"\n\n"):
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"closed before the first event: {seen[:200]!r}")
            seen += chunk
        return time.perf_counter() - started


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def main():
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    origin_port, gateway_port = free_port(), free_port()
    origin = subprocess.Popen([os.path.join(RELEASE, "sse-server"), "--addr", f"127.0.0.1:{origin_port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = {"version": 3, "port": gateway_port, "listen_ip": "127.0.0.1", "endpoints": [],
              "plugin": {"folder": RELEASE, "pattern": "krakend_server_plugin_streaming.so"},
              "extra_config": {"telemetry/logging": {"level": "WARNING"}, "plugin/http-server": {
                  "name": ["krakend-server-plugin-streaming"],
                  "krakend-server-plugin-streaming": {
                      "endpoint": "/v1/chat/completions", "methods": ["POST"],
                      "backend_url_pattern": "/v1/chat/completions",
                      "backend_host": f"http://127.0.0.1:{origin_port}",
                      "forward_headers": ["X-Mock-Interval-Ms"]}}}}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(config, file)
    gateway = subprocess.Popen([os.path.join(RELEASE, "host"), "run", "-c", file.name],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(origin_port)
        wait_listening(gateway_port)
        results = {}
        for name, port in [("direct", origin_port), ("gateway", gateway_port)]:
            first_event_seconds(port)  # warm up
            results[name] = [first_event_seconds(port) for _ in range(requests)]
        print(f"time to first event, {requests} POST streams each (ms)")
        print(f"{'target':<8} {'p50':>8} {'p99':>8}")
        for name, values in results.items():
            print(f"{name:<8} {percentile(values, 0.5) * 1e3:>8.3f} {percentile(values, 0.99) * 1e3:>8.3f}")
        added = [percentile(results["gateway"], p) - percentile(results["direct"], p) for p in (0.5, 0.99)]
        print(f"{'added':<8} {added[0] * 1e3:>8.3f} {added[1] * 1e3:>8.3f}")
    finally:
        gateway.terminate()
        origin.terminate()
        os.unlink(file.name)


if __name__ == "__main__":
    main()
