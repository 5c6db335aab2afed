//! Handovers: `scripts/socket-launcher.py` holding a gateway's socket across restarts, and
//! what the kernel says of a listening socket's queue.

use std::path::PathBuf;
use std::process::Command;

use crate::{Process, TempPath};

/// `scripts/socket-launcher.py` running gateways on one socket it holds.
pub struct Launcher {
    pub process: Process,
    /// The held socket's address, where clients connect whichever gateway serves.
    pub addr: std::net::SocketAddr,
    _config: TempPath,
}

impl Launcher {
    /// Starts the launcher on a free port with `host run -c config` and waits until the
    /// first gateway is ready.
    pub(crate) fn start(config: TempPath) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/socket-launcher.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args(["--listen", "127.0.0.1:0", "--"])
            .arg(crate::bin("host"))
            .args(["run", "-c"])
            .arg(config.path());
        let process = Process::spawn(command, "socket-launcher: http socket listening on ");
        process.wait_for_log(" is ready");
        Self {
            addr: process.addr,
            process,
            _config: config,
        }
    }

    /// The pids of the gateways the launcher started, oldest first.
    pub fn gateway_pids(&self) -> Vec<u32> {
        self.process
            .log()
            .lines()
            .filter_map(|line| line.strip_prefix("socket-launcher: started gateway pid "))
            .filter_map(|pid| pid.trim().parse().ok())
            .collect()
    }

    /// A rolling restart (SIGHUP): a new gateway on the socket, then SIGTERM to the old one.
    pub fn hand_over(&self) {
        self.process.signal("HUP");
    }

    /// Waits until gateway `pid` has exited; its exit status.
    pub fn wait_for_exit_of(&self, pid: u32) -> i32 {
        let line = format!("socket-launcher: gateway pid {pid} exited with status ");
        self.process.wait_for_log(&line);
        let log = self.process.log();
        let status = log.split(&line).nth(1).and_then(|rest| rest.lines().next());
        status
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no exit status for {pid} in:\n{log}"))
    }
}

/// A listening socket as `ss` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenQueue {
    /// Connections the kernel completed that no process has accepted yet.
    pub queued: u32,
    /// The accept backlog.
    pub backlog: u32,
}

/// The queue of the socket listening on `port`.
pub fn listen_queue(port: u16) -> ListenQueue {
    let output = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("running ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout);
    // LISTEN  Recv-Q (queued)  Send-Q (the backlog)  Local  Peer
    let column = |n: usize| text.split_whitespace().nth(n).and_then(|n| n.parse().ok());
    match (column(1), column(2)) {
        (Some(queued), Some(backlog)) => ListenQueue { queued, backlog },
        _ => panic!("no listening socket on port {port}: {text:?}"),
    }
}

impl Drop for Launcher {
    /// SIGTERM, so that the launcher stops its gateways before it exits (killed, it would
    /// leave them running, holding the socket).
    fn drop(&mut self) {
        if self.process.is_running() {
            self.process.signal("TERM");
            let _ = self.process.wait_exit(crate::STEP);
        }
    }
}
