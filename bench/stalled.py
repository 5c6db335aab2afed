#!/usr/bin/env python3
"""What a client that stops reading costs the gateway, and what is left once it is dropped.

  python3 bench/stalled.py [--clients 500] [--route relay|fanout]

Starts `sse-server` and the gateway (streaming plugin, `client_write_timeout` 20s), opens
N streams that send their request and never read, each from an origin stream of 200
events/s x 1000 B (a relay route), or all on one such stream (a fan-out route), and
measures, once their buffers are full (the gateway's send queues stop growing) and again
after they were dropped:

  - the gateway's resident memory (VmRSS) over what it was before the clients came;
  - the kernel memory of the gateway's client sockets, from `ss -tmn` (skmem `w`: the
    bytes queued to send, as the kernel charges them, headers and bookkeeping included)
    and of its upstream sockets (skmem `r`: received, not yet read);
  - how many of the gateway's sockets are left in FIN-WAIT-1 after the drop, and what the
    gateway's client sockets still hold then.

Needs the release binaries (`make build`) and `ss` (iproute2). Not part of `make test`.
"""
import argparse, json, os, re, resource, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
TIMEOUT_S = 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, marker):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc
    raise SystemExit(f"{cmd[0]} did not start")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def skmem(filter_expr, state="established"):
    """Sockets matching an `ss` filter: (count, sum of skmem w, sum of skmem r)."""
    out = subprocess.run(["ss", "-tmnH", "state", state, filter_expr],
                         capture_output=True, text=True, check=True).stdout
    found = [re.search(r"skmem:\(r(\d+),.*,w(\d+),", line) for line in out.splitlines()]
    found = [m for m in found if m]
    return len(found), sum(int(m.group(2)) for m in found), sum(int(m.group(1)) for m in found)


def active_streams(port):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /__stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    stats = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    return stats["plugins"]["krakend-server-plugin-streaming"]["active"]


def fin_wait_1(port):
    out = subprocess.run(["ss", "-tnH", "state", "fin-wait-1", f"sport = :{port}"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--clients", type=int, default=500)
    args.add_argument("--route", choices=["relay", "fanout"], default="relay")
    args = args.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    origin_port, gateway_port = free_port(), free_port()
    origin = start([os.path.join(RELEASE, "sse-server"), "--addr", f"127.0.0.1:{origin_port}"],
                   "listening on ")
    route = {"endpoint": "/b/{id}", "backend_url_pattern": "/bench/{id}",
             "backend_host": f"http://127.0.0.1:{origin_port}",
             "client_write_timeout": f"{TIMEOUT_S}s", "max_streams": 20000}
    if args.route == "fanout":
        route.update({"fanout": True, "client_queue": 1_000_000, "replay": 1_000_000,
                      "replay_age": "2s"})
    config = {"version": 3, "port": gateway_port, "listen_ip": "127.0.0.1",
              "plugin": {"folder": RELEASE, "pattern": "krakend_server_plugin_streaming.so"},
              "extra_config": {"plugin/http-server": {
                  "name": ["krakend-server-plugin-streaming"],
                  "krakend-server-plugin-streaming": route}},
              "endpoints": []}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(config, f)
    gateway = start([os.path.join(RELEASE, "host"), "run", "-c", f.name], "Listening on ")
    try:
        time.sleep(0.5)
        rss0 = rss_kib(gateway.pid)
        clients = []
        for i in range(args.clients):
            s = socket.create_connection(("127.0.0.1", gateway_port))
            stream = "shared" if args.route == "fanout" else f"s{i}"
            s.sendall(f"GET /b/{stream}?rate=200&size=1000 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            clients.append(s)
        # Buffers full: the send queues stop growing (well before client_write_timeout).
        queued, before = 0, -1
        while queued > before * 1.01 or queued == 0:
            time.sleep(1)
            before, queued = queued, skmem(f"sport = :{gateway_port}")[1]
        rss1 = rss_kib(gateway.pid)
        n, sent_q, _ = skmem(f"sport = :{gateway_port}")
        un, _, recv_q = skmem(f"dport = :{origin_port}")
        print(f"{args.clients} stalled clients on a {args.route} route, "
              f"client_send_buffer 65536 (the default):")
        print(f"  gateway RSS: {rss0} KiB before, {rss1} KiB with them: "
              f"{(rss1 - rss0) / args.clients:.1f} KiB per client")
        print(f"  client sockets: {n}, send queues {sent_q / 1024:.0f} KiB in all: "
              f"{sent_q / max(n, 1) / 1024:.1f} KiB per client")
        print(f"  gateway's upstream sockets: {un}, receive queues {recv_q / 1024:.0f} KiB in all: "
              f"{recv_q / max(un, 1) / 1024:.1f} KiB each")
        deadline = time.time() + 4 * TIMEOUT_S
        while (active := active_streams(gateway_port)) > 0 and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        rss2 = rss_kib(gateway.pid)
        held = sum(skmem(f"sport = :{gateway_port}", state)[1]
                   for state in ["established", "fin-wait-1", "fin-wait-2", "close-wait"])
        print(f"  after the drop ({active} streams left): RSS {rss2} KiB; "
              f"gateway sockets in FIN-WAIT-1: {fin_wait_1(gateway_port)}, "
              f"their send queues {held / 1024:.0f} KiB")
        for s in clients:
            s.close()
    finally:
        gateway.kill()
        origin.kill()
        os.unlink(f.name)


if __name__ == "__main__":
    sys.exit(main())
