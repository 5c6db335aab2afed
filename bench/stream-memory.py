#!/usr/bin/env python3
"""Resident memory of the gateway idle and with N concurrent SSE streams open.

Starts target/release/sse-server and target/release/host (with the streaming plugin) on
free loopback ports, reads the host's VmRSS, opens N streams through it, checks that every
stream received an event, and reads VmRSS again. Usage: bench/stream-memory.py [N]
"""
import json, os, re, resource, socket, subprocess, sys, tempfile, threading, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def start(cmd, marker):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if marker in line:
            # Keep reading its output so the process never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, line.split(marker)[1].strip()
    raise SystemExit(f"{cmd[0]} did not start")


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    origin, origin_addr = start([f"{RELEASE}/sse-server", "--addr", "127.0.0.1:0", "--interval-ms", "1000"], "listening on ")
    config = {
        "version": 3, "port": 0, "listen_ip": "127.0.0.1",
        "plugin": {"folder": RELEASE, "pattern": "krakend_server_plugin_streaming.so"},
        "extra_config": {"plugin/http-server": {
            "name": ["krakend-server-plugin-streaming"],
            "krakend-server-plugin-streaming": {
                "endpoint": "/sse/{id}", "backend_url_pattern": "/events-stream/{id}",
                "backend_host": f"http://{origin_addr}"}}},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    host, host_addr = start([f"{RELEASE}/host", "run", "-c", f.name], "Listening on ")
    ip, port = host_addr.rsplit(":", 1)
    try:
        time.sleep(1)
        idle = rss_kib(host.pid)
        streams = []
        for i in range(N):
            s = socket.create_connection((ip, int(port)))
            s.sendall(f"GET /sse/s{i} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
            streams.append(s)
        time.sleep(3)
        received = 0
        for s in streams:
            s.settimeout(5)
            if b"id: " in s.recv(65536):
                received += 1
        loaded = rss_kib(host.pid)
        print(f"streams requested: {N}, streams with events: {received}")
        print(f"host RSS idle: {idle / 1024:.1f} MiB")
        print(f"host RSS with {N} streams: {loaded / 1024:.1f} MiB "
              f"({(loaded - idle) / N:.1f} KiB per stream over idle)")
        for s in streams:
            s.close()
    finally:
        host.terminate(); origin.terminate()
        os.unlink(f.name)


main()
