//! Debian's haproxy in front of several gateways, as a real load balancer: its own process
//! with a config the test writes (`scripts/test-deps.sh` installs it).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{unused_port, TempDir};

pub struct Haproxy {
    pub addr: SocketAddr,
    child: Child,
    _dir: TempDir,
}

/// haproxy balancing HTTP over `servers`, round robin, the way a stream through it needs:
/// no waiting to fill packets (`http-no-delay`), a client leaving closes its server
/// connection at once (`abortonclose`), inactivity timeouts of an hour (a stream may be
/// silent for a while), health checks on `/__health` every 200 ms, and a connection to a
/// server that refuses it retried on another (`redispatch`): an EventSource that gets 503
/// when it reconnects gives up for good.
pub fn haproxy(servers: &[SocketAddr]) -> Haproxy {
    let dir = TempDir::new("haproxy");
    let addr: SocketAddr = format!("127.0.0.1:{}", unused_port()).parse().unwrap();
    let mut config = format!(
        "global
  maxconn 1000
  nbthread 1
defaults
  mode http
  option http-no-delay
  option abortonclose
  option redispatch
  retries 3
  timeout connect 1s
  timeout http-request 10s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
frontend gateways
  bind {addr}
  default_backend gateways
backend gateways
  balance roundrobin
  option httpchk GET /__health
  default-server inter 200ms fall 1 rise 1
"
    );
    for (i, server) in servers.iter().enumerate() {
        config.push_str(&format!("  server gateway{i} {server} check\n"));
    }
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, config).expect("writing haproxy.cfg");
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&file)
        .stdout(Stdio::null())
        .spawn()
        .expect("starting haproxy (apt-get install haproxy; scripts/test-deps.sh does)");
    let deadline = Instant::now() + crate::STEP;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "haproxy never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Haproxy {
        addr,
        child,
        _dir: dir,
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
