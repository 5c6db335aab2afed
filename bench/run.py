#!/usr/bin/env python3
"""The project's benchmark: the same SSE scenarios against the origin directly, the gateway
(host + streaming plugin) and nginx with `proxy_buffering off`, in one run, as one table.

  S1 latency     200 streams x 20 events/s x 100 B for 15 s: p50, p99
  S2 throughput  1 stream as fast as possible, 100 B events, 10 s: events/s
  S3 scale       5,000 mostly idle streams (1 event / 5 s): resident memory over idle and
                 connect failures; then 9,000 streams; then how long the target takes to
                 close its origin streams after the clients leave
  S4 broadcast   2,000 streams of one origin broadcast at 10 events/s: p50, p99
  S5 fan-out     10,000 clients of one stream at 10 events/s for 15 s: p50, p99, memory per
                 client. The origin's broadcast serves direct clients and nginx's (one
                 upstream each); the gateway's fan-out route takes it once and fans it out

Needs: target/release binaries (`make build`), python3, and nginx (installed with apt-get
when missing). Raises RLIMIT_NOFILE to the hard limit: 9,000 proxied streams hold 18,000
descriptors in the proxy. `make bench` runs it; results also go to bench/results/.
Quick mode for a smoke run: BENCH_SCALE=0.1 shortens durations and connection counts.
"""
import json, os, resource, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
SCALE = float(os.environ.get("BENCH_SCALE", "1"))


def scaled(n, least=1):
    return max(least, int(n * SCALE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(proc):
    threading.Thread(target=proc.stdout.read, daemon=True).start()


def start(cmd, marker):
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            drain(proc)
            return proc, line.split(marker)[1].strip()
    raise SystemExit(f"{cmd[0]} did not start")


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return total


def origin_open_streams(origin_url):
    with socket.create_connection(origin_url) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    body = data.split(b"\r\n\r\n", 1)[1]
    return json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])["open_streams"]


def load(url, connections, seconds, pids=()):
    cmd = [f"{RELEASE}/sse-load", url, "-c", str(connections), "-d", str(seconds), "--json"]
    for pid in pids:
        cmd += ["--pid", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


class Target:
    def __init__(self, name, port, pids, fanout_path="/broadcast/s5"):
        self.name, self.port, self.pids, self.fanout_path = name, port, pids, fanout_path

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"


def start_gateway(origin_port, tmp):
    config = {
        "version": 3, "port": 0, "listen_ip": "127.0.0.1",
        "plugin": {"folder": RELEASE, "pattern": "krakend_server_plugin_streaming.so"},
        "extra_config": {"plugin/http-server": {
            "name": ["krakend-server-plugin-streaming"],
            "krakend-server-plugin-streaming": {
                "backend_host": f"http://127.0.0.1:{origin_port}", "max_streams": 20000,
                "routes": [
                    {"endpoint": "/{kind}/{id}", "backend_url_pattern": "/{kind}/{id}"},
                    {"endpoint": "/fanout/{id}", "backend_url_pattern": "/broadcast/{id}",
                     "fanout": True}]}}},
    }
    path = os.path.join(tmp, "krakend.json")
    with open(path, "w") as f:
        json.dump(config, f)
    proc, addr = start([f"{RELEASE}/host", "run", "-c", path], "Listening on ")
    return proc, Target("gateway", int(addr.rsplit(":", 1)[1]), [proc.pid], "/fanout/s5")


def start_nginx(origin_port, tmp):
    if not shutil.which("nginx"):
        print("installing nginx from Debian's packages", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       stdout=subprocess.DEVNULL)
    port = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes auto;
worker_rlimit_nofile 20000;
error_log {tmp}/nginx-error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 1h;
    }}
  }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", tmp, "-c", conf, "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return proc, Target("nginx", port, [proc.pid] + [int(w) for w in workers])


def scenarios(target, origin_port):
    r = {}
    # S3 first, against the freshly started target: its idle memory is the baseline for
    # both sizes, so allocator memory kept from an earlier scenario cannot hide a cost.
    time.sleep(1)
    idle = rss_kib(target.pids)
    for n in (scaled(5000), scaled(9000)):
        s3 = load(target.url("/bench/s3?rate=0.2&size=100"), n, scaled(10, 3), target.pids)
        peak = sum(p["kib"] for p in s3["max_rss_kib"])
        r[f"S3 {n} streams: RSS over idle (MiB)"] = (peak - idle) / 1024
        r[f"S3 {n} streams: KiB per stream"] = (peak - idle) / n
        r[f"S3 {n} streams: connect failures"] = s3["connections_failed"]
        started = time.time()
        while origin_open_streams(("127.0.0.1", origin_port)) > 0 and time.time() - started < 60:
            time.sleep(0.005)
        r[f"S3 {n} streams: origin streams closed after (ms)"] = (time.time() - started) * 1000
    s1 = load(target.url("/bench/s1?rate=20&size=100"), scaled(200), scaled(15, 2))
    r["S1 p50 (us)"], r["S1 p99 (us)"] = s1["latency_us"]["p50"], s1["latency_us"]["p99"]
    r["S1 failures"] = s1["connections_failed"] + s1["premature_disconnects"] + s1["id_gaps"]
    s2 = load(target.url("/bench/s2?rate=0&size=100"), 1, scaled(10, 2))
    r["S2 events/s"] = s2["events_per_sec"]
    s4 = load(target.url("/broadcast/s4"), scaled(2000), scaled(15, 3))
    r["S4 p50 (us)"], r["S4 p99 (us)"] = s4["latency_us"]["p50"], s4["latency_us"]["p99"]
    r["S4 id gaps"] = s4["id_gaps"]
    n = scaled(10000)
    before = rss_kib(target.pids)
    s5 = load(target.url(target.fanout_path), n, scaled(15, 3), target.pids)
    r["S5 fan-out p50 (us)"], r["S5 fan-out p99 (us)"] = s5["latency_us"]["p50"], s5["latency_us"]["p99"]
    peak = sum(p["kib"] for p in s5["max_rss_kib"])
    r[f"S5 {n} clients: KiB per client"] = (peak - before) / n
    r["S5 failures"] = s5["connections_failed"] + s5["premature_disconnects"] + s5["id_gaps"]
    return r


def table(results):
    names = list(results)
    rows = list(results[names[0]])
    out = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        cells = []
        direct = results["direct"][row]
        for name in names:
            value = results[name][row]
            cell = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            absolute = any(word in row for word in ("failures", "gaps", "closed after"))
            if name != "direct" and isinstance(direct, (int, float)) and direct and not absolute:
                cell += f" ({value / direct:.2f}x)"
            cells.append(cell)
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < 19000:
        print(f"warning: RLIMIT_NOFILE hard limit is {hard}; S3 at 9,000 streams needs ~19,000", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="sse-bench-")
    origin_port = free_port()
    origin = subprocess.Popen([f"{RELEASE}/sse-server", "--addr", f"127.0.0.1:{origin_port}",
                               "--broadcast-rate", "10"], stdout=subprocess.PIPE, text=True)
    drain(origin)
    wait_port(origin_port)
    processes = [origin]
    results = {}
    try:
        gateway, gateway_target = start_gateway(origin_port, tmp)
        processes.append(gateway)
        nginx, nginx_target = start_nginx(origin_port, tmp)
        processes.append(nginx)
        for target in (Target("direct", origin_port, [origin.pid]), gateway_target, nginx_target):
            print(f"running the scenarios against {target.name}", file=sys.stderr)
            results[target.name] = scenarios(target, origin_port)
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    machine = f"{os.cpu_count()} cores, {os.uname().release}, {time.strftime('%Y-%m-%d %H:%M')}"
    print(f"\nSSE benchmark (scale {SCALE}; {machine}); (ratio to direct)\n")
    print(table(results))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", time.strftime("%Y%m%d-%H%M%S") + ".json"), "w") as f:
        json.dump({"machine": machine, "scale": SCALE, "results": results}, f, indent=1)


main()
