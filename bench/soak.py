#!/usr/bin/env python3
"""The soak: SOAK_STREAMS streams for SOAK_MINUTES through the gateway to `sse-server`, with
faults in the middle, and a verdict.

The load is `sse-load --reconnect`: one event per second on each stream, each its own origin
stream, numbered from 1 and resumed by Last-Event-ID; every stream's ids are checked across
reconnections. A round of faults is a crowd of SOAK_STALLED clients on fast streams (an
event every 2 ms) that never read, the origin killed (SIGKILL) and restarted on the same port
5 s and 20 s later (the second time while the crowd is stalled), and the crowd closed once
the gateway has dropped it all (client_write_timeout).

  warm-up   once every stream is connected, a round of faults: the memory the gateway keeps
            at its high-water mark (its buffer pool, the allocator's arenas) is then in the
            baseline, and what the verdict measures is growth per round, a leak
  steady    steady state begins: the gateway's RSS and descriptors are sampled
  40%       a round of faults
  95%       steady state ends: RSS and descriptors sampled again
  100%      the load ends and reports

It fails (exit 1) if the RSS at the end of steady state is more than 5% over its start, if
any event was lost (an id gap, or a stream silent in the last 5 s) or doubled (an id
repeated or going back), or if not every stream connected. Knobs: SOAK_STREAMS (4000),
SOAK_MINUTES (6, at least 2: a round takes about 40 s), SOAK_STALLED (300).
`make soak` runs it; it needs `make build`.
"""
import json, os, resource, signal, socket, subprocess, sys, tempfile, time

from run import free_port, rss_kib, start_gateway, wait_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
STREAMS = int(os.environ.get("SOAK_STREAMS", "4000"))
MINUTES = float(os.environ.get("SOAK_MINUTES", "6"))
STALLED = int(os.environ.get("SOAK_STALLED", "300"))
MAX_RSS_GROWTH = 0.05
# The origin's retry: (also the gateway's first wait before resuming an upstream, and the
# load tool's before a reconnection).
RETRY_MS = 500


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def http_get(port, path):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def route_stats(metrics_port):
    stats = json.loads(http_get(metrics_port, "/__stats"))
    routes = stats["plugins"]["krakend-server-plugin-streaming"]["routes"]
    return next(r for r in routes if r["endpoint"] == "/{kind}/{id}")


class Origin:
    """`sse-server` on a fixed port, killed and restarted in place."""

    def __init__(self, port):
        self.port, self.proc = port, None

    def start(self):
        self.proc = subprocess.Popen(
            [f"{RELEASE}/sse-server", "--addr", f"127.0.0.1:{self.port}", "--retry-ms", str(RETRY_MS)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def kill_and_restart(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.start()


def stalled_crowd(port, count):
    """Clients of fast streams (an event every 2 ms) that send their request and never read."""
    crowd = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /events-stream/stalled{i}?interval_ms=2 HTTP/1.1\r\nHost: soak\r\n"
                  f"Accept: text/event-stream\r\n\r\n".encode())
        crowd.append(s)
    return crowd


def sample(pid, label):
    rss, fds = rss_kib([pid]), descriptors(pid)
    print(f"  {time.strftime('%H:%M:%S')} {label}: gateway RSS {rss / 1024:.1f} MiB, {fds} descriptors",
          file=sys.stderr, flush=True)
    return rss, fds


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    seconds = MINUTES * 60
    tmp = tempfile.mkdtemp(prefix="sse-soak-")
    origin = Origin(free_port())
    origin.start()
    # The benchmark's gateway: its route /{kind}/{id} takes /events-stream/... to the origin.
    procs, target = start_gateway(origin.port, tmp)
    gateway, port = procs[0], target.port
    print(f"soak: {STREAMS} streams for {MINUTES:g} min through the gateway (pid {gateway.pid}), "
          f"{STALLED} stalled clients and 2 origin kills in the warm-up and in steady state",
          file=sys.stderr, flush=True)
    started = time.time()
    load = subprocess.Popen(
        [f"{RELEASE}/sse-load", f"http://127.0.0.1:{port}/events-stream/soak?interval_ms=1000",
         "-c", str(STREAMS), "-d", str(seconds), "--reconnect", "--expect-every", "5",
         "--json"],
        stdout=subprocess.PIPE, text=True)

    def until(moment):
        time.sleep(max(0.0, moment - time.time()))

    def at(fraction, not_before=0.0):
        until(max(started + fraction * seconds, not_before))

    def fault_round(label, give_up):
        """The crowd, the origin killed 5 s and 20 s later (the second time while the crowd
        is stalled), and the crowd closed once the gateway has dropped it all."""
        dropped_before = route_stats(target.metrics_port)["drops"]["client_stalled"]
        crowd.extend(stalled_crowd(port, STALLED))
        crowd_at = time.time()
        sample(gateway.pid, f"{label}: {STALLED} stalled clients connected")
        for delay in (5, 20):
            until(crowd_at + delay)
            origin.kill_and_restart()
            sample(gateway.pid, f"{label}: origin killed and restarted")
        while route_stats(target.metrics_port)["drops"]["client_stalled"] < dropped_before + STALLED \
                and time.time() < give_up:
            time.sleep(1)
        dropped = route_stats(target.metrics_port)["drops"]["client_stalled"] - dropped_before
        sample(gateway.pid, f"{label}: {dropped} of {STALLED} stalled clients dropped by the gateway")
        for s in crowd:
            s.close()
        crowd.clear()
        return dropped

    crowd = []
    try:
        while route_stats(target.metrics_port)["active"] < STREAMS and time.time() < started + 0.1 * seconds:
            time.sleep(0.5)
        before_warmup = sample(gateway.pid, f"{route_stats(target.metrics_port)['active']} streams connected")
        fault_round("warm-up", started + 0.45 * seconds)
        until(time.time() + 5)
        steady_start = sample(gateway.pid, "steady state begins")
        at(0.40, time.time())
        stalled_drops = fault_round("steady state", started + 0.90 * seconds)
        at(0.95)
        steady_end = sample(gateway.pid, "steady state ends")
        out, _ = load.communicate(timeout=seconds + 120)
        report = json.loads(out)
        stats = route_stats(target.metrics_port)
    finally:
        for s in crowd:
            s.close()
        for proc in (load, gateway, origin.proc):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)

    growth = steady_end[0] / steady_start[0] - 1
    lost = report["id_gaps"] + report["silent_streams"]
    doubled = report["id_duplicates"] + report["id_backwards"]
    print(f"""
soak: {STREAMS} streams x {MINUTES:g} min; in the warm-up and in steady state, {STALLED} stalled clients and 2 origin kills
  gateway RSS        {before_warmup[0] / 1024:.1f} MiB before the warm-up, {steady_start[0] / 1024:.1f} MiB at the start of steady state, {steady_end[0] / 1024:.1f} MiB at its end ({growth:+.1%}; limit +{MAX_RSS_GROWTH:.0%})
  descriptors        {steady_start[1]} at the start, {steady_end[1]} at the end
  streams            {report['connections_ok']} connected, {report['connections_failed']} failed connects, {report['premature_disconnects']} disconnects, {report['reconnects']} reconnects
  events             {report['events']:,} ({report['events_per_sec']:,.0f}/s)
  lost               {report['id_gaps']} id gaps, {report['silent_streams']} streams silent in the last 5 s
  doubled            {report['id_duplicates']} duplicates, {report['id_backwards']} ids going back
  stalled clients    {stalled_drops} of {STALLED} dropped by the gateway in steady state
  gateway            {stats['reconnects']} upstream resumes, drops {stats['drops']}""")
    failures = []
    if growth > MAX_RSS_GROWTH:
        failures.append(f"RSS grew {growth:.1%} over steady state")
    if lost:
        failures.append("events were lost")
    if doubled:
        failures.append("events were doubled")
    if report["connections_ok"] < STREAMS:
        failures.append(f"only {report['connections_ok']} of {STREAMS} streams connected")
    print("\nFAIL: " + "; ".join(failures) if failures else "\nPASS")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
