#!/usr/bin/env python3
"""Holds the gateway's listening sockets and runs gateway processes on them, by systemd's
socket-activation convention, so that a restart is a handover that refuses or resets no
connection: what systemd does with a socket unit, for machines without it.

  scripts/socket-launcher.py --listen 127.0.0.1:8080 [--metrics 127.0.0.1:8090] \\
      -- target/release/host run -c krakend.json

The launcher binds the sockets once and starts the gateway with them as descriptors 3 (and
4), LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES (http, metrics) and NOTIFY_SOCKET. Then:

  SIGHUP           a rolling restart: start a new gateway on the same sockets; once it says
                   READY=1 it accepts from the same queue, and the old one gets SIGTERM: it
                   stops accepting, ends its streams and exits. A new gateway that exits or
                   is not ready within --ready-timeout is stopped, and the old one serves on.
  SIGTERM, SIGINT  SIGTERM to the gateways, and exit with the status of the current one.

The sockets never close while the launcher runs, so connections that arrive while no
gateway accepts (between two, or while one starts) wait in the accept queue, not refused.
One line per step on stdout, `socket-launcher: ...`; the gateways write to the same stdout.
"""
import argparse, os, selectors, signal, socket, sys, tempfile, time


def say(line):
    # One write, so that a gateway's log line, on the same stdout, never lands inside it.
    os.write(sys.stdout.fileno(), f"socket-launcher: {line}\n".encode())


def bind(address, backlog):
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(backlog)
    return sock


def somaxconn():
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 4096


class Gateway:
    """One gateway process and the datagram socket it tells its readiness on."""

    def __init__(self, command, sockets, folder, number):
        self.notify_path = os.path.join(folder, f"notify-{number}")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.ready = False
        self.pid = os.fork()
        if self.pid == 0:
            self._exec(command, sockets)
        say(f"started gateway pid {self.pid}")

    def _exec(self, command, sockets):
        """In the child: the sockets at 3, 4, ... (dup2 clears close-on-exec on the copy),
        the variables, and the gateway in place of this process, which keeps its pid."""
        try:
            # Out of the way first, so that no dup2 below overwrites a socket not yet placed.
            high = [os.dup(s.fileno()) for s in sockets]
            for place, fd in enumerate(high, 3):
                os.dup2(fd, place, inheritable=True)
            env = dict(os.environ, LISTEN_FDS=str(len(sockets)), LISTEN_PID=str(os.getpid()),
                       LISTEN_FDNAMES=":".join(name for name, _ in SOCKET_NAMES[:len(sockets)]),
                       NOTIFY_SOCKET=self.notify_path)
            os.execvpe(command[0], command, env)
        except BaseException as error:
            print(f"socket-launcher: cannot start {command[0]}: {error}", file=sys.stderr, flush=True)
        finally:
            os._exit(127)

    def read_notifications(self):
        while True:
            try:
                message = self.notify.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if b"READY=1" in message.split(b"\n") and not self.ready:
                self.ready = True
                say(f"gateway pid {self.pid} is ready")

    def close(self):
        self.notify.close()
        try:
            os.unlink(self.notify_path)
        except OSError:
            pass


SOCKET_NAMES = [("http", "--listen"), ("metrics", "--metrics")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="the main listener, HOST:PORT")
    parser.add_argument("--metrics", help="the telemetry/metrics listener, HOST:PORT")
    parser.add_argument("--backlog", type=int, default=somaxconn(),
                        help="accept backlog (default: net.core.somaxconn)")
    parser.add_argument("--ready-timeout", type=float, default=60.0,
                        help="seconds a new gateway has to say READY=1 (default 60)")
    parser.add_argument("command", nargs="+", help="the gateway: host run -c FILE")
    args = parser.parse_args()

    sockets = [bind(args.listen, args.backlog)]
    if args.metrics:
        sockets.append(bind(args.metrics, args.backlog))
    for (name, _), sock in zip(SOCKET_NAMES, sockets):
        host, port = sock.getsockname()[:2]
        say(f"{name} socket listening on {host}:{port}")

    folder = tempfile.mkdtemp(prefix="socket-launcher-")
    selector = selectors.DefaultSelector()
    wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wakeup_write)
    for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(number, lambda *_: None)
    selector.register(wakeup_read, selectors.EVENT_READ, "signal")

    generation = 0
    def start():
        nonlocal generation
        generation += 1
        gateway = Gateway(args.command, sockets, folder, generation)
        selector.register(gateway.notify, selectors.EVENT_READ, gateway)
        return gateway

    def forget(gateway):
        selector.unregister(gateway.notify)
        gateway.close()

    current = start()
    successor = None            # a new gateway, until it is ready
    successor_deadline = None
    old = []                    # gateways told to stop, until they exit
    stopping = False
    status = 0
    while True:
        timeout = None if successor is None else max(0.0, successor_deadline - time.monotonic())
        for key, _ in selector.select(timeout):
            if key.data == "signal":
                for number in os.read(wakeup_read, 512):
                    if number in (signal.SIGTERM, signal.SIGINT) and not stopping:
                        stopping = True
                        say("stopping")
                        for gateway in [current, successor] + old:
                            if gateway is not None:
                                os.kill(gateway.pid, signal.SIGTERM)
                    elif number == signal.SIGHUP and not stopping:
                        if successor is None:
                            successor = start()
                            successor_deadline = time.monotonic() + args.ready_timeout
                        else:
                            say("a restart is already under way")
            else:
                key.data.read_notifications()

        # Children that exited.
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(wait_status)
            say(f"gateway pid {pid} exited with status {code}")
            if current is not None and pid == current.pid:
                forget(current)
                current, status = None, code
            elif successor is not None and pid == successor.pid:
                forget(successor)
                successor, status = None, code
                if not stopping:
                    say("the new gateway exited before it was ready; the old one serves on")
            else:
                for gateway in [g for g in old if g.pid == pid]:
                    forget(gateway)
                    old.remove(gateway)

        if successor is not None and not successor.ready and time.monotonic() >= successor_deadline:
            say(f"gateway pid {successor.pid} was not ready within {args.ready_timeout} s; "
                "stopping it, the old one serves on")
            os.kill(successor.pid, signal.SIGTERM)
            old.append(successor)
            successor = None
        if successor is not None and successor.ready:
            # The new one accepts from the queue now: the old one may stop taking from it.
            if current is not None:
                say(f"stopping gateway pid {current.pid}")
                os.kill(current.pid, signal.SIGTERM)
                old.append(current)
            current, successor = successor, None
        if current is None and successor is None and not old:
            if not stopping:
                say("the gateway exited; stopping")
            break
    os.rmdir(folder)
    sys.exit(status)


if __name__ == "__main__":
    main()
