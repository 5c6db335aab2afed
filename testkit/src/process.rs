//! The real binaries, started as child processes and killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::TempPath;

/// `target/release`, where `make test` put the binaries and the plugin.
pub fn release_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("release")
}

/// A binary or library in the release dir; panics with the fix when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = release_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make build` (cargo build --release --workspace) first",
        path.display()
    );
    path
}

/// A running child process; its stdout is collected in `log`.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Spawns `command` and waits for a stdout line containing `marker` followed by an address.
    pub fn spawn(mut command: Command, marker: &'static str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning a test binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split(marker)
                    .nth(1)
                    .and_then(|rest| rest.trim().parse::<SocketAddr>().ok())
                {
                    let _ = addr_tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = addr_rx.recv_timeout(crate::STEP).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "the process never printed {marker:?}; output:\n{}",
                log.lock().unwrap()
            )
        });
        Self { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id, for `/proc/<pid>` and `prlimit --pid`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `text`; panics with the log after [`crate::STEP`].
    pub fn wait_for_log(&self, text: &str) {
        self.wait_for_log_count(text, 1);
    }

    /// Waits until `text` appears at least `count` times in the log (log lines may land a
    /// moment after the traffic that caused them); returns how often it appears then.
    pub fn wait_for_log_count(&self, text: &str, count: usize) -> usize {
        let deadline = Instant::now() + crate::STEP;
        loop {
            let seen = self.log().matches(text).count();
            if seen >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} appeared {seen} of {count} times in:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends the signal `name` (`TERM`, `INT`, ...) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The demo origin, `sse-server`.
pub fn origin() -> OriginBuilder {
    OriginBuilder {
        args: Vec::new(),
        addr: "127.0.0.1:0".into(),
    }
}

pub struct OriginBuilder {
    args: Vec<String>,
    addr: String,
}

impl OriginBuilder {
    pub fn count(mut self, n: u64) -> Self {
        self.args.extend(["--count".into(), n.to_string()]);
        self
    }

    /// Listens on this port instead of a free one (to restart an origin in place).
    pub fn port(mut self, port: u16) -> Self {
        self.addr = format!("127.0.0.1:{port}");
        self
    }

    /// Answers the mock endpoints with `status` (`--fail-status`).
    pub fn fail_status(mut self, status: u16) -> Self {
        self.args
            .extend(["--fail-status".into(), status.to_string()]);
        self
    }

    /// Only the first `n` mock requests fail (`--fail-count`).
    pub fn fail_count(mut self, n: u64) -> Self {
        self.args.extend(["--fail-count".into(), n.to_string()]);
        self
    }

    pub fn interval_ms(mut self, ms: u64) -> Self {
        self.args.extend(["--interval-ms".into(), ms.to_string()]);
        self
    }

    /// The `retry:` each stream starts with (`--retry-ms`): how long clients wait to resume.
    pub fn retry_ms(mut self, ms: u64) -> Self {
        self.args.extend(["--retry-ms".into(), ms.to_string()]);
        self
    }

    pub fn run(self) -> Process {
        let mut command = Command::new(bin("sse-server"));
        command.args(["--addr", &self.addr]).args(&self.args);
        Process::spawn(command, "listening on ")
    }
}

/// The gateway, `host run`, with a config built from the calls below.
pub fn gateway() -> GatewayBuilder {
    GatewayBuilder {
        debug: false,
        config: json!({"version": 3, "port": 0, "listen_ip": "127.0.0.1", "endpoints": []}),
        plugin_pattern: "krakend_server_plugin_streaming.so".into(),
        env: Vec::new(),
    }
}

pub struct GatewayBuilder {
    config: Value,
    plugin_pattern: String,
    debug: bool,
    /// Environment variables the host runs with (for `${env:NAME}` in a config).
    env: Vec<(String, String)>,
}

/// A running gateway and the config file it was started from.
pub struct Gateway {
    pub process: Process,
    pub addr: SocketAddr,
    /// The `telemetry/metrics` listener (`/metrics`, `/__stats`).
    metrics_addr: SocketAddr,
    config: TempPath,
    debug: bool,
    env: Vec<(String, String)>,
}

/// The line a gateway logs when its metrics listener is bound; the address follows.
const METRICS_LISTENING: &str = "[SERVICE: Metrics] Listening on ";

/// The metrics listener's address, from the gateway's log.
fn metrics_address(process: &Process) -> SocketAddr {
    process.wait_for_log(METRICS_LISTENING);
    let log = process.log();
    log.split(METRICS_LISTENING)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|address| address.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {METRICS_LISTENING:?} line in:\n{log}"))
}

impl Gateway {
    fn new(process: Process, config: TempPath, debug: bool, env: Vec<(String, String)>) -> Self {
        Self {
            addr: process.addr,
            metrics_addr: metrics_address(&process),
            process,
            config,
            debug,
            env,
        }
    }

    /// A second gateway process with the same config on the same port (which the config's
    /// `reuse_port` lets both bind).
    pub fn another_on_the_same_port(&self) -> Process {
        let process = start_host(&self.config, self.debug, Some(self.addr.port()), &self.env);
        assert_eq!(process.addr, self.addr);
        process
    }

    /// The plugins' counters from `/__stats`, on the metrics listener.
    pub async fn stats(&self) -> Value {
        crate::get_json(self.metrics_addr, "/__stats").await
    }

    /// Where the metrics listener (`telemetry/metrics`) listens; testkit gives every
    /// gateway one.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The Prometheus text at `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = crate::RawClient::exchange(
            self.metrics_addr(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        String::from_utf8_lossy(crate::body_of(&response)).into_owned()
    }

    /// The streaming plugin's counters for its route `endpoint`.
    pub async fn route_stats(&self, endpoint: &str) -> Value {
        let stats = self.stats().await;
        let routes = stats["plugins"]["krakend-server-plugin-streaming"]["routes"].clone();
        routes
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["endpoint"] == endpoint))
            .cloned()
            .unwrap_or_else(|| panic!("no route {endpoint} in {stats}"))
    }
}

impl GatewayBuilder {
    /// The streaming plugin with the PoC's three keys.
    pub fn streaming(self, endpoint: &str, backend_url_pattern: &str, backend_host: &str) -> Self {
        self.plugin_block(
            "krakend-server-plugin-streaming",
            json!({"endpoint": endpoint, "backend_url_pattern": backend_url_pattern, "backend_host": backend_host}),
        )
    }

    /// Injects the plugin `name` with `block` as its config.
    pub fn plugin_block(mut self, name: &str, block: Value) -> Self {
        let server = &mut self.config["extra_config"]["plugin/http-server"];
        if server.is_null() {
            *server = json!({"name": []});
        }
        server["name"].as_array_mut().unwrap().push(json!(name));
        server[name] = block;
        self
    }

    /// Sets `key` in the config block of the plugin injected last.
    pub fn plugin_key(mut self, key: &str, value: Value) -> Self {
        let server = &mut self.config["extra_config"]["plugin/http-server"];
        let name = server["name"]
            .as_array()
            .and_then(|names| names.last())
            .and_then(Value::as_str)
            .expect("a plugin injected before plugin_key")
            .to_owned();
        server[name.as_str()][key] = value;
        self
    }

    /// Which files of the release dir the plugin loader picks up.
    pub fn plugin_pattern(mut self, pattern: &str) -> Self {
        self.plugin_pattern = pattern.into();
        self
    }

    /// Adds a normal endpoint (a KrakenD `endpoints[]` entry).
    pub fn endpoint(mut self, endpoint: Value) -> Self {
        self.config["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(endpoint);
        self
    }

    /// Sets a root key.
    pub fn root(mut self, key: &str, value: Value) -> Self {
        self.config[key] = value;
        self
    }

    /// Runs the host with the environment variable `name` set to `value`.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs `host run -d`.
    pub fn debug(mut self) -> Self {
        self.debug = true;
        self
    }

    /// Sets a namespace of the root `extra_config` (such as `security/cors`).
    pub fn root_extra(mut self, namespace: &str, value: Value) -> Self {
        self.config["extra_config"][namespace] = value;
        self
    }

    /// The config file, with the release dir as the plugin folder and a metrics listener
    /// (`/__stats` is served there, and tests read it) unless the test set one.
    fn write_config(&mut self) -> (TempPath, bool) {
        self.config["plugin"] = json!({"folder": release_dir(), "pattern": self.plugin_pattern});
        let metrics = &mut self.config["extra_config"]["telemetry/metrics"];
        if metrics.is_null() {
            *metrics = json!({"listen_address": "127.0.0.1:0"});
        }
        (
            TempPath::write("krakend", &self.config.to_string()),
            self.debug,
        )
    }

    /// The config file `run` would start the gateway with.
    pub fn config_file(mut self) -> TempPath {
        self.write_config().0
    }

    pub fn run(mut self) -> Gateway {
        let (config, debug) = self.write_config();
        let process = start_host(&config, debug, None, &self.env);
        Gateway::new(process, config, debug, self.env)
    }

    /// Runs the gateway on `socket`, passed as a service manager passes it (see
    /// [`activated_host`]) rather than bound from the config's `port`.
    pub fn run_on_socket(mut self, socket: std::net::TcpListener) -> Gateway {
        let (config, debug) = self.write_config();
        let mut command = activated_host(&config, std::os::fd::OwnedFd::from(socket));
        command.envs(self.env.iter().map(|(n, v)| (n, v)));
        let process = Process::spawn(command, GATEWAY_LISTENING);
        Gateway::new(process, config, debug, self.env)
    }

    /// Runs the gateway under `scripts/socket-launcher.py`, which holds its socket on a free
    /// port and hands it from one gateway process to the next.
    pub fn launch(self) -> crate::Launcher {
        crate::Launcher::start(self.config_file())
    }

    /// Runs `host check -c` on the config: whether it passed, and what it printed.
    pub fn check(mut self) -> (bool, String) {
        let (config, _) = self.write_config();
        let output = Command::new(bin("host"))
            .envs(self.env.iter().map(|(n, v)| (n, v)))
            .arg("check")
            .arg("-c")
            .arg(config.path())
            .output()
            .expect("running host check");
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), printed)
    }

    /// Runs `host run -c` on a config the host must refuse, and returns what it logged
    /// before it exited; fails the test if it exits 0 or is still running after [`crate::STEP`].
    pub fn run_refused(mut self) -> String {
        let (config, debug) = self.write_config();
        let mut command = Command::new(bin("host"));
        command.envs(self.env.iter().map(|(n, v)| (n, v)));
        command.arg("run").arg("-c").arg(config.path());
        if debug {
            command.arg("-d");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running host run");
        let deadline = Instant::now() + crate::STEP;
        while matches!(child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("reading the host's output");
                panic!(
                    "the host served instead of refusing the config:\n{}",
                    String::from_utf8_lossy(&output.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = child.wait_with_output().expect("reading the host's output");
        let printed = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "the host exited 0:\n{printed}");
        printed
    }
}

/// What the gateway prints, followed by its address, once it listens.
const GATEWAY_LISTENING: &str = "[SERVICE: HTTP Server] Listening on ";

/// `host run -c config` (with `-d`, and `-p port` when given).
fn start_host(
    config: &TempPath,
    debug: bool,
    port: Option<u16>,
    env: &[(String, String)],
) -> Process {
    let mut command = Command::new(bin("host"));
    command.envs(env.iter().map(|(n, v)| (n, v)));
    command.arg("run").arg("-c").arg(config.path());
    if debug {
        command.arg("-d");
    }
    if let Some(port) = port {
        command.arg("-p").arg(port.to_string());
    }
    Process::spawn(command, GATEWAY_LISTENING)
}

/// `host run -c config` as a service manager starts it: `descriptor` as descriptor 3,
/// `LISTEN_FDS=1` and `LISTEN_PID` the gateway's own pid. `sh` gets the descriptor as its
/// stdin, moves it to 3 and `exec`s the gateway, which keeps sh's pid (`$$`): all in safe
/// code, without a `pre_exec` hook.
pub fn activated_host(config: &TempPath, descriptor: impl Into<Stdio>) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$; exec "$@""#)
        .arg("sh")
        .arg(bin("host"))
        .arg("run")
        .arg("-c")
        .arg(config.path())
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_FDNAMES")
        .stdin(descriptor);
    command
}

impl Gateway {
    /// Sends SIGTERM and checks the drain: each of `clients` gets `final_event` last, at an
    /// event boundary, and the gateway then exits 0.
    pub async fn drain_ending_with(&mut self, clients: Vec<crate::RawClient>, final_event: &str) {
        self.process.signal("TERM");
        for client in clients {
            let response = client.read_to_end().await;
            let body = String::from_utf8_lossy(crate::body_of(&response)).into_owned();
            let before = body
                .strip_suffix(final_event)
                .unwrap_or_else(|| panic!("no final event at the end: {body:?}"));
            assert!(before.ends_with("\n\n"), "cut inside an event: {body:?}");
        }
        let status = self.process.wait_exit(Duration::from_secs(5));
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
    }

    /// Kills the gateway (no drain: as a crash would) and starts it again, with the same
    /// config, on the same port.
    pub fn restart(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
        self.process = start_host(&self.config, self.debug, Some(self.addr.port()), &self.env);
        assert_eq!(self.process.addr, self.addr);
        self.metrics_addr = metrics_address(&self.process);
    }
}
