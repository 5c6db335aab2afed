#!/usr/bin/env python3
"""The gateway's cost per event on the pass-through path (the relay route, HTTP/1.1, plain
TCP), as counts that do not depend on how busy the machine is: what bench/run.py's S2
measures in wall-clock time (one stream flat out, 100 B events), here in instructions and
syscalls. It is how notes on where the time goes are made, and how a change is judged on a
shared machine.

  python3 bench/per_event.py callgrind [--events N] [--build DIR] [--out DIR]
      The host (with the plugin's .so) under valgrind's callgrind. One stream of N/10 events,
      then one of N; counters are dumped after each (callgrind_control), so their difference
      over the 0.9 N events between them is the cost of an event, without start-up or a
      stream's set-up. Prints instructions per event and keeps both dumps in DIR
      (callgrind_annotate DIR/callgrind.out.<pid>.2 shows where they go).
  python3 bench/per_event.py strace [--events N] [--build DIR]
      The same two streams with `strace -c -f` attached around each: syscalls per event, by
      syscall.
  python3 bench/per_event.py perf [--seconds S] [--build DIR]
      At full speed, S2 itself (sse-load, one stream, 100 B, flat out) with `perf stat`
      counting the gateway's syscalls (tracepoints, next to no overhead) and context
      switches: per event. Also its CPU time per event (noisy on a busy machine).

The fixed-count streams are read by this script (it counts blank lines and closes after N
events); the origin is sse-server's bench route with count=N, so exactly N events cross.
Under callgrind the gateway is some 50 times slower than the origin, so every read finds a
full socket: counts per event are those of a hot upstream, as in S2.
"""
import argparse, os, re, signal, socket, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's own start-up of origin and gateway)

def read_events(port, n, rate=0):
    """Opens a stream of exactly `n` events (`rate` a second, 0: flat out) through the
    target and reads them all."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        path = f"/bench/p{n}?rate={rate}&size=100&count={n}"
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        seen, last = 0, b""
        while seen < n:
            chunk = s.recv(1 << 16)
            if not chunk:
                raise SystemExit(f"the stream ended after {seen} of {n} events")
            # Events end in a blank line ("\n\n"); the head's "\r\n\r\n" holds none.
            seen += chunk.count(b"\n\n") + (last == b"\n" and chunk[:1] == b"\n")
            last = chunk[-1:]


def settle(origin_port):
    """Until the origin has closed the stream and the gateway has had time to end its own."""
    run.wait_origin_idle(origin_port)
    time.sleep(2)


def start_target(args, origin_port, tmp, wrapper=()):
    """The gateway (host and plugin from --build), or with --floor one floor-proxy: what
    the extra hop itself costs."""
    if args.floor:
        cmd = [*wrapper, f"{run.RELEASE}/floor-proxy", "--to", f"127.0.0.1:{origin_port}",
               "--listen", "127.0.0.1:0"]
        proc, addr = run.start(cmd, "Listening on ")
        return proc, int(addr.rsplit(":", 1)[1])
    procs, gateway = run.start_gateway(origin_port, tmp, args.build, wrapper=wrapper)
    return procs[0], gateway.port


def callgrind(args, origin_port, tmp):
    out = os.path.abspath(args.out or tempfile.mkdtemp(prefix="callgrind-"))
    os.makedirs(out, exist_ok=True)
    wrapper = ["valgrind", "--tool=callgrind", "--compress-strings=no",
               f"--callgrind-out-file={out}/callgrind.out.%p"]
    proc, port = start_target(args, origin_port, tmp, wrapper)
    pid = proc.pid
    try:
        read_events(port, 2000, args.rate)  # warm: the pool's buffers, the runtime's wheels
        settle(origin_port)
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        totals = []
        for n in (args.events // 10, args.events):
            read_events(port, n, args.rate)
            settle(origin_port)
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
            dumps = sorted(f for f in os.listdir(out) if f.startswith(f"callgrind.out.{pid}."))
            totals.append(dump_total(os.path.join(out, dumps[-1])))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    per_event = (totals[1] - totals[0]) / (args.events - args.events // 10)
    print(f"instructions per event: {per_event:,.0f} "
          f"(streams of {args.events // 10:,} and {args.events:,} events: {totals[0]:,} and {totals[1]:,})")
    print(f"dumps in {out}: callgrind_annotate {out}/callgrind.out.{pid}.2")


def dump_total(path):
    # Each dump is the cost since the one before (callgrind_control -d zeroes the counters).
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def strace(args, origin_port, tmp):
    proc, port = start_target(args, origin_port, tmp)
    pid = proc.pid
    counts = []
    try:
        read_events(port, 2000, args.rate)
        settle(origin_port)
        for n in (args.events // 10, args.events):
            log = os.path.join(tmp, f"strace-{n}")
            tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", log],
                                      stderr=subprocess.PIPE, text=True)
            # "Process N attached with T threads" once it traces them all.
            while "attached" not in tracer.stderr.readline():
                pass
            read_events(port, n, args.rate)
            settle(origin_port)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=30)
            counts.append(strace_calls(log))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    events = args.events - args.events // 10
    names = sorted(set(counts[0]) | set(counts[1]), key=lambda k: -counts[1].get(k, 0))
    total = sum(counts[1].values()) - sum(counts[0].values())
    print(f"syscalls per event: {total / events:.4f}")
    for name in names:
        calls = counts[1].get(name, 0) - counts[0].get(name, 0)
        if calls:
            print(f"  {name:16} {calls / events:.4f}  ({calls:,} over {events:,} events)")


def strace_calls(log):
    calls = {}
    with open(log) as f:
        for line in f:
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
                calls[fields[-1]] = int(fields[3])
    return calls


SYSCALLS = ["recvfrom", "read", "writev", "write", "sendto", "epoll_wait", "epoll_pwait",
            "futex", "clock_nanosleep"]


def perf(args, origin_port, tmp):
    proc, port = start_target(args, origin_port, tmp)
    pid = proc.pid
    url = lambda path: f"http://127.0.0.1:{port}{path}"
    events = ["raw_syscalls:sys_enter", "context-switches",
              *(f"syscalls:sys_enter_{name}" for name in SYSCALLS)]
    try:
        run.load(url("/bench/warm?rate=0&size=100"), 1, 1)
        run.wait_origin_idle(origin_port)
        log = os.path.join(tmp, "perf")
        counter = subprocess.Popen(["perf", "stat", "-x", ",", "-o", log, "-e", ",".join(events),
                                    "-p", str(pid)])
        time.sleep(0.5)  # perf attaches
        cpu = cpu_ns(pid)
        report = run.load(url("/bench/s2?rate=0&size=100"), 1, args.seconds)
        cpu = cpu_ns(pid) - cpu
        run.wait_origin_idle(origin_port)
        counter.send_signal(signal.SIGINT)
        counter.wait(timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    n = report["events"]
    print(f"{n:,.0f} events at {report['events_per_sec']:,.0f}/s; gateway CPU {cpu / n:.0f} ns per event "
          "(user + system, noisy)")
    with open(log) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) > 2 and fields[0].replace(".", "").isdigit():
                print(f"  {fields[2]:36} {int(float(fields[0])) / n:.4f} per event")


def cpu_ns(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tool", choices=["callgrind", "strace", "perf"])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=0,
                        help="callgrind, strace: events a second (0: flat out, as S2; 1000: "
                             "one event a read, the cost of a wake-up as in S1)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--floor", action="store_true", help="profile floor-proxy instead")
    parser.add_argument("--build", default=run.RELEASE, help="folder of host and the plugin's .so")
    parser.add_argument("--out", help="callgrind: where the dumps go")
    args = parser.parse_args()
    args.build = os.path.abspath(args.build)
    tmp = tempfile.mkdtemp(prefix="sse-profile-")
    origin_port = run.free_port()
    origin = subprocess.Popen([f"{run.RELEASE}/sse-server", "--addr", f"127.0.0.1:{origin_port}"],
                              stdout=subprocess.DEVNULL)
    try:
        run.wait_port(origin_port)
        {"callgrind": callgrind, "strace": strace, "perf": perf}[args.tool](args, origin_port, tmp)
    finally:
        origin.terminate()
        origin.wait(timeout=10)


if __name__ == "__main__":
    main()
