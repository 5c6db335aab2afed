#!/usr/bin/env python3
"""The benchmark's TLS and HTTP/2 rows (issue 14): S1 latency and S3 memory per stream, over
HTTP/1.1 on TLS and over HTTP/2 on TLS (ALPN h2, 100 streams per connection as a browser puts
an origin's EventSources on one), against nginx (`ssl http2`), haproxy (`ssl alpn h2,http/1.1`)
and the gateway (root `tls`), each speaking HTTP/1.1 to the same cleartext origin as the
plain rows. The origin speaks no TLS, so there is no direct column; ratios are to nginx's.

  TLS S1 / h2 S1   200 streams x 20 events/s x 100 B for 15 s: p50, p99, failures
  TLS S3 / h2 S3   5,000 mostly idle streams (1 event / 5 s): KiB per stream over the
                   target's idle RSS, failures. Each on a freshly started target, so memory
                   an earlier load left in the allocator hides nothing

Certificates: scripts/dev-cert.sh (openssl, EC P-256) into the run's temp folder; sse-load
trusts the CA with --cacert. A gateway whose config is refused, or whose port does not answer
a TLS handshake (a build from before the frontend TLS landed ignores the root `tls` key), is
skipped with a line that says so, so the script works before and after.

`make bench` runs these rows after the plain ones (bench/run.py); `python3 bench/tls.py` runs
them alone, with their own origin. BENCH_SCALE and BENCH_TARGETS apply as in run.py.
"""
import json, os, resource, shutil, socket, ssl, subprocess, sys, tempfile, time

from run import (CHOSEN, RELEASE, ROOT, SCALE, Certs, drain, failures, free_port, load, rss_kib, scaled, start_gateway,
                 start_haproxy, start_nginx, table, wait_origin_idle, wait_port)

# A browser puts every EventSource of an origin on one connection; 100 is RFC 9113's smallest
# recommended max_concurrent_streams, haproxy's default limit and the gateway's.
STREAMS_PER_CONNECTION = 100
TARGETS = (("nginx", start_nginx), ("haproxy", start_haproxy), ("gateway", start_gateway))


class Skip(Exception):
    """A target that cannot serve the TLS rows, and why."""


def transports(certs):
    """(row prefix, sse-load's flags) for HTTP/1.1 over TLS and HTTP/2 over TLS."""
    trust = ["--cacert", certs.ca]
    return (("TLS", trust),
            ("h2", trust + ["--http2", "--streams-per-conn", str(STREAMS_PER_CONNECTION)]))


def speaks_tls(target, certs):
    """None when the target's port completes a verified TLS handshake, else why not."""
    context = ssl.create_default_context(cafile=certs.ca)
    try:
        with socket.create_connection(("127.0.0.1", target.port), timeout=5) as tcp:
            with context.wrap_socket(tcp, server_hostname="127.0.0.1"):
                return None
    except (OSError, ssl.SSLError) as error:
        return str(error)


def started(name, start_target, origin_port, tmp, certs):
    """A fresh TLS target (its own folder for its files); Skip for a gateway without TLS (a
    peer without it is a broken bench)."""
    folder = os.path.join(tmp, f"tls-{name}-{time.monotonic_ns()}")
    os.makedirs(folder)
    try:
        procs, target = start_target(origin_port, folder, certs=certs)
    except SystemExit as error:
        if name != "gateway":
            raise
        raise Skip(f"gateway has no TLS yet: its config was refused ({error})")
    if why := speaks_tls(target, certs):
        stop(procs)
        if name != "gateway":
            raise SystemExit(f"{name} does not speak TLS with the bench's certificate: {why}")
        raise Skip(f"gateway has no TLS yet: its port answered no TLS handshake ({why})")
    return procs, target


def stop(procs):
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=10)


def s3(prefix, flags, target, origin_port):
    n = scaled(5000)
    time.sleep(1)
    idle = rss_kib(target.pids)
    report = load(target.url("/bench/s3?rate=0.2&size=100"), n, scaled(10, 3), target.pids, flags)
    peak = sum(p["kib"] for p in report["max_rss_kib"])
    rows = {f"{prefix} S3 {n} streams: KiB per stream": (peak - idle) / n,
            f"{prefix} S3 {n} streams: failures": failures(report, n, f"{target.name} {prefix} S3")}
    wait_origin_idle(origin_port)
    return rows


def s1(prefix, flags, target):
    n = scaled(200)
    report = load(target.url("/bench/s1?rate=20&size=100"), n, scaled(15, 2), (), flags)
    return {f"{prefix} S1 p50 (us)": report["latency_us"]["p50"],
            f"{prefix} S1 p99 (us)": report["latency_us"]["p99"],
            f"{prefix} S1 failures": failures(report, n, f"{target.name} {prefix} S1")}, report


def measure(origin_port, tmp, certs):
    """{target: {row: value}} for every target that speaks TLS, and a line per skipped one."""
    results, skipped = {}, []
    for name, start_target in TARGETS:
        if CHOSEN and name not in CHOSEN.split(","):
            continue
        rows = {}
        try:
            for prefix, flags in transports(certs):
                print(f"{prefix} S3 against {name}", file=sys.stderr)
                procs, target = started(name, start_target, origin_port, tmp, certs)
                try:
                    rows.update(s3(prefix, flags, target, origin_port))
                finally:
                    stop(procs)
            procs, target = started(name, start_target, origin_port, tmp, certs)
            try:
                for prefix, flags in transports(certs):
                    print(f"{prefix} S1 against {name}", file=sys.stderr)
                    wait_origin_idle(origin_port)
                    row, report = s1(prefix, flags, target)
                    rows.update(row)
                    if report["first_error"]:
                        print(f"  {name} {prefix} S1: first error: {report['first_error']}", file=sys.stderr)
            finally:
                stop(procs)
        except Skip as why:
            skipped.append(f"{name}: skipped: {why}")
            print(skipped[-1], file=sys.stderr)
            continue
        results[name] = rows
    return results, skipped


def report(results, skipped):
    print("\nTLS and HTTP/2 (HTTP/1.1 to the origin; ratio to nginx)\n")
    if results:
        print(table(results, "nginx" if "nginx" in results else next(iter(results))))
    for line in skipped:
        print(line)


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="sse-bench-tls-")
    origin_port = free_port()
    origin = subprocess.Popen([f"{RELEASE}/sse-server", "--addr", f"127.0.0.1:{origin_port}"],
                              stdout=subprocess.PIPE, text=True)
    drain(origin)
    try:
        wait_port(origin_port)
        results, skipped = measure(origin_port, tmp, Certs(os.path.join(tmp, "certs")))
    finally:
        origin.terminate()
        origin.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, skipped)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", time.strftime("%Y%m%d-%H%M%S") + "-tls.json"), "w") as f:
        json.dump({"scale": SCALE, "tls": results, "tls_skipped": skipped}, f, indent=1)


if __name__ == "__main__":
    main()
