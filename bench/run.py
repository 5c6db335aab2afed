#!/usr/bin/env python3
"""The project's benchmark: the same SSE scenarios against the origin directly, the floor (a
byte-copying TCP proxy: the cost of the extra hop itself), the gateway (host + streaming
plugin), nginx with `proxy_buffering off` and haproxy with `option http-no-delay`, in one run,
as one table.

  S1 latency     200 streams x 20 events/s x 100 B for 15 s: p50, p99
  S2 throughput  1 stream as fast as possible, 100 B events, 10 s: events/s
  S3 scale       5,000 mostly idle streams (1 event / 5 s): resident memory over idle and
                 failures; then 9,000 streams; then how long the target takes to
                 close its origin streams after the clients leave
  S4 broadcast   2,000 streams of one origin broadcast at 10 events/s: p50, p99
  S5 fan-out     10,000 clients of one stream at 10 events/s for 15 s: p50, p99, memory per
                 client. The origin's broadcast serves direct clients and the proxies' (one
                 upstream each); the gateway's fan-out route takes it once and fans it out
  S6 scale-out   100,000 fan-out clients of one stream at 1 event/s, across as many gateway
                 processes sharing one port (reuse_port) and load processes (each from a
                 loopback address of its own) as the descriptor limit needs: delivery p50,
                 p99, memory per client, connect failures; and where the time goes: CPU per
                 delivery on each side, the CPU-bound floor of the last delivery, the kernel's
                 listen-queue and SYN counters. The gateway alone, last, on an origin of its
                 own

Then the TLS and HTTP/2 rows (bench/tls.py, its own table): S1 and S3 over HTTP/1.1 on TLS
and over HTTP/2 on TLS against nginx, haproxy and the gateway (skipped, saying so, while the
gateway has no TLS).

S3 runs first, target by target, each on a target no load has touched yet (direct first, so
the origin is fresh too). Then every target must pass each event through byte for byte, and
each later scenario runs against every target back to back, the order rotating one step per
scenario so that no target always goes first or last. Before each load the origin has closed
every stream of the one before. Below the scenarios, what each target adds over direct to S1's
p50 and p99 and to S2's time per event, with its ratio to what the floor adds.

Needs: target/release binaries (`make build`), python3, nginx and haproxy (installed with
apt-get when missing). Raises RLIMIT_NOFILE to the hard limit: 10,000 proxied streams hold
20,000 descriptors, so the floor and haproxy run one process per core sharing the port
(SO_REUSEPORT), as nginx runs one worker per core. `make bench` runs it; results also go to
bench/results/. Quick mode for a smoke run: BENCH_SCALE=0.1 shortens durations and connection
counts. `--only s6` runs S6 alone (`BENCH_SCALE=0.2`: 20,000 clients), `--only s5` S5 alone (each
proxy on a fresh process, as in the full run; with BENCH_TARGETS, a subset).

Before/after in one run: BENCH_GATEWAY_BEFORE=<dir> adds a column "gateway-before", the host
binary and the plugin's .so found in <dir> (another build, e.g. main's) run with the same
config, started and measured like every other target. BENCH_TARGETS=floor,gateway (names
from floor, gateway, nginx, haproxy; direct always runs, and the floor too, the "over direct"
rows' base) runs a subset.
"""
import argparse, json, math, os, re, resource, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
BEFORE = os.environ.get("BENCH_GATEWAY_BEFORE")
CHOSEN = os.environ.get("BENCH_TARGETS")
WORKERS = os.cpu_count() or 1


def scaled(n, least=1):
    return max(least, int(n * SCALE))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drain(proc):
    threading.Thread(target=proc.stdout.read, daemon=True).start()


def start(cmd, marker, earlier=None):
    """Starts `cmd` and returns it with what follows `marker` in its log (and, with
    `earlier`, what followed that marker in a line before)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = None
    for line in proc.stdout:
        if earlier and earlier in line:
            seen = line.split(earlier)[1].strip()
        elif marker in line:
            drain(proc)
            value = line.split(marker)[1].strip()
            return (proc, value, seen) if earlier else (proc, value)
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


def wait_listening(proc, port, log, timeout=10):
    """Until `proc` holds a socket listening on `port`: with SO_REUSEPORT several processes
    share the port, so a connection that succeeds does not say this one is up."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            with open(log) as f:
                raise SystemExit(f"{proc.args[0]} exited:\n{f.read()}")
        with open("/proc/net/tcp") as f:
            inodes = {fields[9] for fields in (line.split() for line in list(f)[1:])
                      if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port}
        try:
            held = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")}
        except OSError:
            held = set()
        if any(f"socket:[{inode}]" in held for inode in inodes):
            return
        time.sleep(0.05)
    raise SystemExit(f"{proc.args[0]} (pid {proc.pid}) does not listen on {port}")


def ensure_installed(command, package):
    if shutil.which(command):
        return
    print(f"installing {package} from Debian's packages", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, stdout=subprocess.DEVNULL)


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    return total


def origin_open_streams(origin_port):
    with socket.create_connection(("127.0.0.1", origin_port)) as s:
        s.sendall(b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    body = data.split(b"\r\n\r\n", 1)[1]
    return json.loads(body[body.index(b"{"):body.rindex(b"}") + 1])["open_streams"]


def wait_origin_idle(origin_port, timeout=60):
    """Seconds until the origin has no stream open (what the last target left behind)."""
    started = time.time()
    while origin_open_streams(origin_port) > 0:
        if time.time() - started > timeout:
            print(f"warning: the origin still has streams open after {timeout} s", file=sys.stderr)
            break
        time.sleep(0.005)
    return time.time() - started


def load(url, connections, seconds, pids=(), transport=()):
    """sse-load's report; `transport` are its TLS and HTTP/2 flags (--cacert, --http2)."""
    cmd = [f"{RELEASE}/sse-load", url, "-c", str(connections), "-d", str(seconds), "--json", *transport]
    for pid in pids:
        cmd += ["--pid", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def failures(report, connections, what):
    """Streams that failed to open or never got their head before the deadline (sse-load
    counts neither as connected), ended early, or skipped or repeated ids; which of them
    goes to stderr."""
    refused, unanswered = report["connections_failed"], connections - report["connections_ok"] - report["connections_failed"]
    cut, gaps = report["premature_disconnects"], report["id_gaps"]
    doubled = report["id_duplicates"] + report["id_backwards"]
    if refused or unanswered or cut or gaps or doubled:
        first = f" (the first failed to open with: {report['first_error']})" if report.get("first_error") else ""
        print(f"  {what}: {refused} failed to open{first}, {unanswered} got no answer before the end, "
              f"{cut} ended early, {gaps} ids skipped, {doubled} ids repeated or going back",
              file=sys.stderr)
    return refused + unanswered + cut + gaps + doubled


class Target:
    def __init__(self, name, port, pids, fanout_path="/broadcast/s5", metrics_port=None,
                 scheme="http"):
        self.name, self.port, self.pids, self.fanout_path = name, port, pids, fanout_path
        # The gateway's metrics listener, where its /__stats is served.
        self.metrics_port = metrics_port
        self.scheme = scheme

    def url(self, path):
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


class Certs:
    """scripts/dev-cert.sh's files in `folder`: a CA and the server certificate it signs
    (for 127.0.0.1), for the TLS rows (bench/tls.py)."""
    def __init__(self, folder):
        subprocess.run([os.path.join(ROOT, "scripts", "dev-cert.sh"), folder], check=True)
        self.ca, self.cert, self.key, self.bundle = (
            os.path.join(folder, f) for f in ("ca.pem", "server.pem", "server-key.pem", "server-bundle.pem"))


def start_floor(origin_port, _tmp):
    """One floor-proxy per core on one port; the first picks it."""
    cmd = [f"{RELEASE}/floor-proxy", "--to", f"127.0.0.1:{origin_port}", "--listen"]
    first, addr = start(cmd + ["127.0.0.1:0"], "Listening on ")
    procs = [first] + [start(cmd + [addr], "Listening on ")[0] for _ in range(WORKERS - 1)]
    return procs, Target("floor", int(addr.rsplit(":", 1)[1]), [p.pid for p in procs])


def start_gateway(origin_port, tmp, build=RELEASE, name="gateway", certs=None, wrapper=()):
    """The host and the plugin from `build`, a directory holding both. With `certs`, the port
    speaks TLS only (root `tls`; ALPN h2 and http/1.1). `wrapper` goes before the command (a
    profiler: bench/per_event.py)."""
    config = {
        "version": 3, "port": 0, "listen_ip": "127.0.0.1",
        "plugin": {"folder": build, "pattern": "krakend_server_plugin_streaming.so"},
        "extra_config": {"plugin/http-server": {
            "name": ["krakend-server-plugin-streaming"],
            "krakend-server-plugin-streaming": {
                "backend_host": f"http://127.0.0.1:{origin_port}", "max_streams": 20000,
                "routes": [
                    {"endpoint": "/{kind}/{id}", "backend_url_pattern": "/{kind}/{id}"},
                    {"endpoint": "/fanout/{id}", "backend_url_pattern": "/broadcast/{id}",
                     "fanout": True}]}},
            "telemetry/metrics": {"listen_address": "127.0.0.1:0"}},
    }
    if certs:
        config["tls"] = {"public_key": certs.cert, "private_key": certs.key}
    path = os.path.join(tmp, f"{name}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    proc, addr, metrics = start([*wrapper, f"{build}/host", "run", "-c", path],
                                "[SERVICE: HTTP Server] Listening on ",
                                earlier="[SERVICE: Metrics] Listening on ")
    port = lambda address: int(address.rsplit(":", 1)[1])
    return [proc], Target(name, port(addr), [proc.pid], "/fanout/s5", port(metrics),
                          "https" if certs else "http")


def start_gateway_before(origin_port, tmp):
    return start_gateway(origin_port, tmp, os.path.abspath(BEFORE), "gateway-before")


def chosen_targets():
    """The start functions of the targets this run measures (see BENCH_TARGETS)."""
    starts = {"floor": start_floor, "gateway": start_gateway, "nginx": start_nginx,
              "haproxy": start_haproxy}
    names = CHOSEN.split(",") if CHOSEN else list(starts)
    if unknown := [n for n in names if n not in starts]:
        raise SystemExit(f"BENCH_TARGETS: unknown target {unknown}; known: {', '.join(starts)}")
    chosen = [starts[n] for n in starts if n == "floor" or n in names]
    if BEFORE:
        chosen.insert(chosen.index(start_gateway) + 1 if start_gateway in chosen else 1,
                      start_gateway_before)
    return chosen


def start_nginx(origin_port, tmp, certs=None):
    """With `certs`, `ssl http2`: TLS only, ALPN h2 and http/1.1."""
    ensure_installed("nginx", "nginx-light")
    port = free_port()
    listen = (f"{port} ssl http2;\n    ssl_certificate {certs.cert};\n    ssl_certificate_key {certs.key}"
              if certs else f"{port}")
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
    listen 127.0.0.1:{listen};
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
    return [proc], Target("nginx", port, [proc.pid] + [int(w) for w in workers],
                          scheme="https" if certs else "http")


def start_haproxy(origin_port, tmp, certs=None):
    """With `certs`, TLS only with ALPN h2 and http/1.1 (HTTP/1.1 to the origin either way).
    One haproxy per core, one thread each, on one port (haproxy binds with SO_REUSEPORT):
    one process may hold RLIMIT_NOFILE descriptors, and 10,000 clients proxied each to its own
    upstream take 20,000. maxconn is what fits that limit (haproxy refuses to start with more);
    it counts client connections, each with its server connection beside it."""
    ensure_installed("haproxy", "haproxy")
    port = free_port()
    maxconn = (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100) // 2
    bind = f"{port} ssl crt {certs.bundle} alpn h2,http/1.1" if certs else f"{port}"
    conf = os.path.join(tmp, "haproxy.cfg")
    # http-no-delay: no waiting to merge small writes into fuller packets. abortonclose (the
    # default from haproxy 3.3): a client that leaves closes its upstream at once, as in nginx
    # and the gateway; without it haproxy takes a client's FIN for a half-close and notices
    # only when a write fails, up to two S3 events (10 s) later. The timeouts are inactivity
    # timeouts, an hour each, longer than the whole run: an S3 stream is silent for 5 s
    # between events. haproxy forwards a response as it arrives (nothing here asks it to wait
    # for a body) and compresses nothing unless told to.
    with open(conf, "w") as f:
        f.write(f"""
global
  maxconn {maxconn}
  nbthread 1
defaults
  mode http
  option http-no-delay
  option abortonclose
  timeout connect 5s
  timeout http-request 10s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend sse
  bind 127.0.0.1:{bind}
  maxconn {maxconn}
  default_backend origin
backend origin
  server origin 127.0.0.1:{origin_port}
""")
    procs = []
    for worker in range(WORKERS):
        log = os.path.join(tmp, f"haproxy-{worker}.log")
        with open(log, "w") as out:
            procs.append(subprocess.Popen(["haproxy", "-db", "-f", conf], stdout=out, stderr=subprocess.STDOUT))
        wait_listening(procs[-1], port, log)
    return procs, Target("haproxy", port, [p.pid for p in procs], scheme="https" if certs else "http")


def stamped_event(event_id, stamp, size):
    """What sse::stamp::write_stamped_event writes."""
    head = f"id: {event_id}\ndata: t={stamp} ".encode()
    return head + b"x" * max(0, size - len(head) - 2) + b"\n\n"


def dechunk(data):
    """The payload of the whole chunks at the start of `data`, a chunked body."""
    body, at = bytearray(), 0
    while (eol := data.find(b"\r\n", at)) >= 0:
        size = int(data[at:eol].split(b";")[0], 16)
        if size == 0 or len(data) < eol + 2 + size + 2:
            break
        body += data[eol + 2:eol + 2 + size]
        at = eol + 2 + size + 2
    return bytes(body)


def passes_events_unchanged(target, count=2000, size=100):
    """The first `count` events of a flat-out stream read through `target`: None when they are
    byte for byte what the origin wrote (only the stamps differ from one run to another), else
    what is wrong. sse-load sees only ids and stamps; this sees every byte. The stream is
    endless, as in the scenarios: one that ends is resumed by the gateway, and the bench origin
    ignores Last-Event-ID."""
    request = f"GET /bench/fidelity?rate=0&size={size} HTTP/1.1\r\nHost: x\r\n\r\n"
    data, head, body = b"", b"", b""
    try:
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as s:
            s.sendall(request.encode())
            while len(body) < count * size and (chunk := s.recv(65536)):
                data += chunk
                head, _, rest = data.partition(b"\r\n\r\n")
                chunked = b"\r\ntransfer-encoding: chunked" in head.lower()
                body = dechunk(rest) if chunked else rest
    except (OSError, ValueError) as error:
        return f"reading the stream: {error}"
    if not head.startswith(b"HTTP/1.1 200"):
        return f"answered {head.splitlines()[0] if head else b'nothing'!r}"
    body = body[:count * size]
    stamps = re.findall(rb"^data: t=(\d+) ", body, re.M)
    expected = b"".join(stamped_event(i + 1, int(stamp), size) for i, stamp in enumerate(stamps))
    if len(stamps) != count or body != expected:
        at = next((i for i, (a, b) in enumerate(zip(body, expected)) if a != b), min(len(body), len(expected)))
        return (f"{len(stamps)} events of {count}, {len(body)} bytes of {count * size}; first "
                f"difference at byte {at}: {body[at:at + 40]!r} for {expected[at:at + 40]!r}")
    return None


def s3_scale(target, origin_port):
    # S3 first, against the freshly started target: its idle memory is the baseline for
    # both sizes, so allocator memory kept from an earlier scenario cannot hide a cost.
    r = {}
    time.sleep(1)
    idle = rss_kib(target.pids)
    for n in (scaled(5000), scaled(9000)):
        s3 = load(target.url("/bench/s3?rate=0.2&size=100"), n, scaled(10, 3), target.pids)
        peak = sum(p["kib"] for p in s3["max_rss_kib"])
        r[f"S3 {n} streams: RSS over idle (MiB)"] = (peak - idle) / 1024
        r[f"S3 {n} streams: KiB per stream"] = (peak - idle) / n
        r[f"S3 {n} streams: failures"] = failures(s3, n, f"{target.name} S3 {n}")
        r[f"S3 {n} streams: origin streams closed after (ms)"] = wait_origin_idle(origin_port) * 1000
    return r


def latency(label, target, path, n, seconds):
    """A latency scenario's rows: p50, p99 and failures of `n` streams for `seconds`."""
    report = load(target.url(path), n, seconds)
    return {f"{label} p50 (us)": report["latency_us"]["p50"], f"{label} p99 (us)": report["latency_us"]["p99"],
            f"{label} failures": failures(report, n, f"{target.name} {label}")}


def s1_latency(target):
    return latency("S1", target, "/bench/s1?rate=20&size=100", scaled(200), scaled(15, 2))


def s2_throughput(target):
    s2 = load(target.url("/bench/s2?rate=0&size=100"), 1, scaled(10, 2))
    return {"S2 events/s": s2["events_per_sec"]}


def s4_broadcast(target):
    return latency("S4", target, "/broadcast/s4", scaled(2000), scaled(15, 3))


def s5_fanout(target):
    n = scaled(10000)
    before = rss_kib(target.pids)
    s5 = load(target.url(target.fanout_path), n, scaled(15, 3), target.pids)
    peak = sum(p["kib"] for p in s5["max_rss_kib"])
    return {"S5 fan-out p50 (us)": s5["latency_us"]["p50"], "S5 fan-out p99 (us)": s5["latency_us"]["p99"],
            f"S5 {n} clients: KiB per client": (peak - before) / n, "S5 failures": failures(s5, n, f"{target.name} S5")}


def on_fresh_process(start_target, origin_port, tmp, scenario):
    """`scenario` against a process of the target started for it alone (in a folder of its
    own) and stopped after: S5's memory per client is then over a fresh process's idle RSS,
    as S6's is. Over a warmed one it is not a client's cost: the allocator keeps what earlier
    loads held and hands it out again (10,000 clients three times on one gateway process
    cost 4.68, then 0.08, then 0.05 KiB each)."""
    folder = tempfile.mkdtemp(prefix=f"{scenario.__name__}-", dir=tmp)
    procs, target = start_target(origin_port, folder)
    try:
        time.sleep(1)  # as S6: settled after its start
        return scenario(target)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def add_overheads(results):
    """What each target adds to direct on the issue's targets (S1 p50, p99; S2 time per
    event); the table shows each as a ratio to the floor's."""
    direct = results["direct"]
    for r in results.values():
        for quantile in ("p50", "p99"):
            r[f"S1 {quantile} over direct (us)"] = r[f"S1 {quantile} (us)"] - direct[f"S1 {quantile} (us)"]
        r["S2 ns per event over direct"] = ns_per_event(r) - ns_per_event(direct)


def ns_per_event(r):
    return 1e9 / r["S2 events/s"] if r["S2 events/s"] else float("inf")


def table(results, baseline="direct"):
    """Each target's value of each row, and its ratio to `baseline`'s (the floor's on the
    'over direct' rows)."""
    names = list(results)
    rows = list(results[names[0]])
    out = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        cells = []
        over_direct = "over direct" in row
        base_name = "floor" if over_direct else baseline
        base = results[base_name][row]
        for name in names:
            value = results[name][row]
            cell = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
            absolute = any(word in row for word in ("failures", "closed after"))
            if name not in (baseline, base_name) and not absolute:
                if base > 0:
                    cell += f" ({value / base:.2f}x{' floor' if over_direct else ''})"
                elif over_direct:
                    cell += " (n/a: floor <= direct)"
            cells.append(cell)
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# S6: clients of one process, at most: the hard descriptor limit less what a process needs
# besides its clients (the upstream, the log, the runtime's own, the plugin library).
S6_SPARE_DESCRIPTORS = 1000
# The kernel spreads connections across a port's sockets by a hash, not evenly: room for a
# process to get this much more than its share.
S6_SPREAD_MARGIN = 1.05


def ephemeral_ports():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = map(int, f.read().split())
    return high - low + 1


def mem_available_kib():
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:"))


def merged_quantile(histograms, quantile):
    """The quantile of several sse-load histograms (`[[ns, count], ...]`), in µs."""
    counts = {}
    for histogram in histograms:
        for value, count in histogram:
            counts[value] = counts.get(value, 0) + count
    total = sum(counts.values())
    if total == 0:
        return float("nan")
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= quantile * total:
            return value / 1000
    return max(counts) / 1000


def start_s6_gateways(origin_port, tmp, count, per_process):
    """`count` gateway processes on one port (reuse_port), each taking `per_process` clients,
    and each one's metrics port."""
    port = free_port()
    config = {
        "version": 3, "port": port, "listen_ip": "127.0.0.1", "reuse_port": True,
        "max_connections": per_process,
        "plugin": {"folder": RELEASE, "pattern": "krakend_server_plugin_streaming.so"},
        "extra_config": {"plugin/http-server": {
            "name": ["krakend-server-plugin-streaming"],
            "krakend-server-plugin-streaming": {
                "backend_host": f"http://127.0.0.1:{origin_port}", "max_streams": per_process,
                "routes": [{"endpoint": "/fanout/{id}", "backend_url_pattern": "/broadcast/{id}",
                            "fanout": True}]}},
            "telemetry/metrics": {"listen_address": "127.0.0.1:0"}},
    }
    path = os.path.join(tmp, "s6-krakend.json")
    with open(path, "w") as f:
        json.dump(config, f)
    procs, metrics = [], []
    for i in range(count):
        log = os.path.join(tmp, f"s6-gateway-{i}.log")
        with open(log, "w") as out:
            procs.append(subprocess.Popen([f"{RELEASE}/host", "run", "-c", path], stdout=out,
                                          stderr=subprocess.STDOUT))
        wait_listening(procs[-1], port, log)
        with open(log) as f:
            metrics.append(int(re.search(r"\[SERVICE: Metrics\] Listening on \S+:(\d+)", f.read())[1]))
    return procs, port, metrics


def sample_descriptors(pids, stop, peaks):
    """Each process's peak count of open descriptors, until `stop` is set."""
    while not stop.is_set():
        for pid in pids:
            try:
                count = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                continue
            peaks[pid] = max(peaks.get(pid, 0), count)
        stop.wait(0.5)


def silent_closes(metrics_ports):
    """The gateways' connections closed silent (no byte within read_header_timeout)."""
    total = 0
    for port in metrics_ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        total += int(re.search(r"^krakend_connections_silent_closed_total (\d+)$", text, re.M)[1])
    return total


# sse-load's line (--after-connect) once every stream of it has been tried.
TRIED = re.compile(r"^sse-load: every stream tried after [\d.]+ s: (\d+) open, (\d+) failed$")


def watch_tried(stderr, tried, all_tried, loads):
    """Passes a load process's stderr on; its TRIED line adds its open streams to `tried`
    and, from the last of `loads` processes, sets `all_tried`."""
    for line in stderr:
        if match := TRIED.match(line.strip()):
            tried.append(int(match[1]))
            if len(tried) == loads:
                all_tried.set()
        else:
            sys.stderr.write(line)
    # Ended (its stderr closed): one that never got its clients in must not keep the others
    # waiting for the start of their timed part.
    all_tried.set()


def over_connected(value, connected, clients):
    """A row computed over the clients that connected: says so when some did not."""
    if connected == clients or isinstance(value, str):
        return value
    return f"{value:,.1f} (over the {connected:,} connected)"


# The kernel's TCP counters S6 reports, from the loads' start to their end (system-wide:
# another program's traffic counts too): a full accept queue drops the SYN (ListenOverflows,
# ListenDrops) and the client sends it again 1 s, 3 s, 7 s... later (TCPSynRetrans) until
# tcp_syn_retries gives up; a full SYN queue drops it or answers with a cookie;
# AttemptFails are connects refused or reset. (Not EstabResets: the loads' exit, closing
# sockets with events unread, resets thousands.)
TCP_COUNTERS = ("ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent",
                "TCPSynRetrans", "AttemptFails")


def tcp_counters():
    """`TCP_COUNTERS` now, from /proc/net/netstat (TcpExt) and /proc/net/snmp (Tcp)."""
    values = {}
    for path in ("/proc/net/netstat", "/proc/net/snmp"):
        with open(path) as f:
            lines = f.read().splitlines()
        for names, numbers in zip(lines[::2], lines[1::2]):
            values.update(zip(names.split()[1:], map(int, numbers.split()[1:])))
    return {name: values.get(name, 0) for name in TCP_COUNTERS}


def cpu_seconds(pids):
    """User plus system CPU time of `pids` (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def sample_cpu(pids, start, seconds, out):
    """CPU time of `pids` over `seconds` from when `start` is set, into `out` (seconds of
    CPU, seconds of wall clock): once every client is connected, every second costs one
    delivery per client, so CPU / (clients x wall) is the CPU cost of one delivery."""
    start.wait()
    try:
        before, since = cpu_seconds(pids), time.time()
        time.sleep(seconds)
        out.append((cpu_seconds(pids) - before, time.time() - since))
    except OSError:  # a process ended first: no figure
        pass


def s6_scale_out(tmp):
    """S6's rows, or SystemExit when the machine cannot hold the run."""
    clients = scaled(100000)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    per_process = hard - S6_SPARE_DESCRIPTORS
    gateways = math.ceil(clients * S6_SPREAD_MARGIN / per_process)
    loads = math.ceil(clients / per_process)
    per_load = math.ceil(clients / loads)
    # Each load process connects from its own address, with that address's ephemeral ports.
    if per_load > ephemeral_ports():
        raise SystemExit(f"S6: {per_load:,} connections per load process, but only "
                         f"{ephemeral_ports():,} ephemeral ports (net.ipv4.ip_local_port_range)")
    # Gateway (~1.1 KiB), load tool (~2 KiB) and two sockets' kernel memory (~4 KiB each).
    needed_kib = clients * 12
    if mem_available_kib() < needed_kib:
        raise SystemExit(f"S6: about {needed_kib // 1024:,} MiB needed, "
                         f"{mem_available_kib() // 1024:,} MiB available")
    load_average = os.getloadavg()[0]
    print(f"S6: {clients:,} clients, {gateways} gateway and {loads} load processes "
          f"({per_process:,} descriptors each for clients; hard limit {hard:,}), "
          f"{ephemeral_ports():,} ephemeral ports per source address, load average {load_average:.2f}",
          file=sys.stderr)
    origin_port = free_port()
    origin = subprocess.Popen([f"{RELEASE}/sse-server", "--addr", f"127.0.0.1:{origin_port}",
                               "--broadcast-rate", "1"], stdout=subprocess.PIPE, text=True)
    drain(origin)
    processes = [origin]
    stop = threading.Event()
    try:
        wait_port(origin_port)
        procs, port, metrics_ports = start_s6_gateways(origin_port, tmp, gateways, per_process)
        processes += procs
        pids = [p.pid for p in procs]
        time.sleep(1)
        idle = rss_kib(pids)
        descriptors = {}
        # Set once every load process has tried each of its streams: then the gateways
        # hold every client that connected (`tried`: each process's open ones).
        connected, tried = threading.Event(), []
        counters_before = tcp_counters()
        started = time.time()
        threading.Thread(target=sample_descriptors, args=(pids, stop, descriptors), daemon=True).start()
        # Connecting 100,000 clients takes a while on 2 cores: each load process times
        # (and runs for `seconds`) from when its clients are all in (--after-connect);
        # events before are counted and checked, not timed.
        seconds = scaled(30, 10)
        runs = []
        for i in range(loads):
            n = min(per_load, clients - i * per_load)
            cmd = [f"{RELEASE}/sse-load", f"http://127.0.0.1:{port}/fanout/s6", "-c", str(n),
                   "-d", str(seconds), "--after-connect", "--start-on-stdin",
                   "--source", f"127.0.0.{2 + i}",
                   "--json", "--histogram"]
            if i == 0:
                for pid in pids:
                    cmd += ["--pid", str(pid)]
            runs.append((n, subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)))
            threading.Thread(target=watch_tried, args=(runs[-1][1].stderr, tried, connected, loads),
                             daemon=True).start()
        # CPU per delivery, each side, over the steady state: from a few seconds after the
        # gateways hold every client, for most of the timed part.
        cpu = {"gateways": [], "loads": []}
        window = max(3, seconds - 8)
        settled, connect_time = threading.Event(), []
        def start_timing():
            # Once every load process is in, all start their timed part together (a line on
            # stdin), so none ends while another still connects.
            connected.wait()
            connect_time.append(time.time() - started)
            for _, run in runs:
                try:
                    run.stdin.write("\n")
                    run.stdin.close()
                except BrokenPipeError:  # it has ended: its exit status says why
                    pass
            time.sleep(2)
            settled.set()
        threading.Thread(target=start_timing, daemon=True).start()
        for side, side_pids in (("gateways", pids), ("loads", [run.pid for _, run in runs])):
            threading.Thread(target=sample_cpu, args=(side_pids, settled, window, cpu[side]), daemon=True).start()
        reports = []
        for n, run in runs:
            out = run.stdout.read()  # (its stderr is watch_tried's)
            run.wait()
            if run.returncode != 0:
                raise SystemExit(f"S6: sse-load failed ({run.returncode})")
            reports.append((n, json.loads(out)))
        counters = {k: v - counters_before[k] for k, v in tcp_counters().items()}
        silent = silent_closes(metrics_ports)
    finally:
        stop.set()
        for proc in reversed(processes):
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=30)
    histograms = [r["latency_histogram_ns"] for _, r in reports]
    peak = sum(p["kib"] for p in reports[0][1]["max_rss_kib"])
    per_gateway = sorted(descriptors.values())
    # The rows from "until the gateways held every client" on are over the clients that
    # connected (their count said when it is not all).
    held = sum(tried) if len(tried) == loads else clients
    per_delivery = {side: (used[0][0] / (held * used[0][1]) * 1e6 if used else "n/a")
                    for side, used in cpu.items()}
    floor = ("n/a" if "n/a" in per_delivery.values() else
             held * (per_delivery["gateways"] + per_delivery["loads"]) / WORKERS / 1000)
    head_ms = [r["head_written_after_dial_ms"] for _, r in reports]
    late_ms = reports[0][1]["heads_written_late"]["after_ms"]
    return {
        "S6 clients": clients,
        "S6 gateway processes": gateways,
        "S6 load processes": loads,
        "S6 peak descriptors per gateway process (min-max)":
            f"{per_gateway[0]:,}-{per_gateway[-1]:,}" if per_gateway else "n/a",
        "S6 delivery p50 (us)": merged_quantile(histograms, 0.5),
        "S6 delivery p99 (us)": merged_quantile(histograms, 0.99),
        "S6 events timed": sum(c for h in histograms for _, c in h),
        "S6 KiB per client": (peak - idle) / clients,
        "S6 failures (connects, cuts, gaps, repeats)": sum(failures(r, n, f"S6 load {i}") for i, (n, r) in enumerate(reports)),
        "S6 load average at start": load_average,
        # Why connects fail: a connection silent for read_header_timeout (10 s) after its
        # accept is closed unanswered, so each side's lateness is shown.
        "S6 connections the gateways closed silent at read_header_timeout": silent,
        "S6 request head written after the dial's start, worst load process's p99 (ms)":
            max(h["p99"] for h in head_ms),
        "S6 request head written after the dial's start, max (ms)": max(h["max"] for h in head_ms),
        f"S6 request heads written over {late_ms / 1000:g} s after the dial's start":
            sum(r["heads_written_late"]["count"] for _, r in reports),
        "S6 seconds until the gateways held every client":
            over_connected(connect_time[0], held, clients) if connect_time else "n/a",
        # Where the time goes: one event costs clients x (both sides' CPU per delivery), and
        # the cores cannot deliver it to the last client sooner than that over their number.
        "S6 CPU per delivery, gateways (us)": over_connected(per_delivery["gateways"], held, clients),
        "S6 CPU per delivery, load processes (us)": over_connected(per_delivery["loads"], held, clients),
        "S6 CPU-bound floor of the last delivery (ms)": over_connected(floor, held, clients),
        **{f"S6 TCP {name} (system-wide)": value for name, value in counters.items()},
    }


def s6_table(rows):
    out = ["| S6 scale-out | gateway |", "|---|---|"]
    for row, value in rows.items():
        cell = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        out.append(f"| {row.removeprefix('S6 ')} | {cell} |")
    return "\n".join(out)


def main():
    parser = argparse.ArgumentParser(description="The SSE benchmark (see the header).")
    parser.add_argument("--only", choices=["s5", "s6"], help="run one scenario alone")
    only = parser.parse_args().only
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if only == "s6":
        return report({}, None, [], s6=run_s6())
    if hard < max(19000, 20000 // WORKERS + 200):
        print(f"warning: RLIMIT_NOFILE hard limit is {hard}; S3's 9,000 streams take ~19,000 in "
              f"the gateway, S5's 10,000 clients {20000 // WORKERS:,} in each floor or haproxy "
              "process", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="sse-bench-")
    origin_port = free_port()
    origin = subprocess.Popen([f"{RELEASE}/sse-server", "--addr", f"127.0.0.1:{origin_port}",
                               "--broadcast-rate", "10"], stdout=subprocess.PIPE, text=True)
    drain(origin)
    wait_port(origin_port)
    processes = [origin]
    results = {}
    try:
        targets = [Target("direct", origin_port, [origin.pid])]
        starts = {}  # each proxy's start function, by its target's name
        for start_target in chosen_targets():
            procs, target = start_target(origin_port, tmp)
            processes += procs
            targets.append(target)
            starts[target.name] = start_target
        results = {target.name: {} for target in targets}
        if only == "s5":  # alone: every target fresh, as in the full run
            run_scenario(s5_fanout, targets, starts, origin_port, tmp, results)
            return report(results, None, [], s6=None)
        for target in targets:
            print(f"S3 against {target.name}", file=sys.stderr)
            results[target.name].update(s3_scale(target, origin_port))
        for target in targets:
            if wrong := passes_events_unchanged(target):
                raise SystemExit(f"{target.name} does not pass events unchanged: {wrong}")
        for step, scenario in enumerate((s1_latency, s2_throughput, s4_broadcast, s5_fanout), 1):
            order = targets[step % len(targets):] + targets[:step % len(targets)]
            run_scenario(scenario, order, starts, origin_port, tmp, results)
        add_overheads(results)
        import tls  # its rows reuse this file's targets and load
        try:
            tls_results, tls_skipped = tls.measure(origin_port, tmp, Certs(os.path.join(tmp, "certs")))
        except SystemExit as error:  # a peer that cannot serve TLS costs its rows, not the table
            tls_results, tls_skipped = {}, [f"TLS rows not run: {error}"]
    finally:
        for proc in reversed(processes):
            proc.terminate()
        for proc in processes:
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    # Last and alone: it takes every core and most descriptors the machine has.
    report(results, tls_results, tls_skipped, s6=run_s6())


def run_scenario(scenario, order, starts, origin_port, tmp, results):
    """`scenario` against each target of `order` in turn, into `results`; S5 against a fresh
    process of each proxy (`starts`: their start functions), see `on_fresh_process`."""
    print(f"{scenario.__name__} against {', '.join(t.name for t in order)}", file=sys.stderr)
    for target in order:
        wait_origin_idle(origin_port)
        if scenario is s5_fanout and target.name in starts:
            results[target.name].update(on_fresh_process(starts[target.name], origin_port, tmp, scenario))
        else:
            results[target.name].update(scenario(target))


def run_s6():
    print("S6 against the gateway", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="sse-bench-s6-")
    try:
        return s6_scale_out(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(results, tls_results, tls_skipped, s6):
    machine = f"{os.cpu_count()} cores, {os.uname().release}, {time.strftime('%Y-%m-%d %H:%M')}"
    if results:
        print(f"\nSSE benchmark (scale {SCALE}; {machine}); (ratio to direct; on the 'over direct' "
              "rows, ratio to the floor's)\n")
        print(table(results))
    if tls_results is not None:
        import tls  # its rows reuse this file's targets and load
        tls.report(tls_results, tls_skipped)
    if s6 is not None:
        print(f"\nS6 (scale {SCALE}; {machine})\n")
        print(s6_table(s6))
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", time.strftime("%Y%m%d-%H%M%S") + ".json"), "w") as f:
        json.dump({"machine": machine, "scale": SCALE, "results": results, "tls": tls_results,
                   "tls_skipped": tls_skipped, "s6": s6}, f, indent=1)


if __name__ == "__main__":
    main()
