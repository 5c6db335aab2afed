//! `www/index.html` in headless Chromium, driven by `host/tests/browser/watch-page.cjs`
//! (playwright-core, which `scripts/test-deps.sh` installs into `~/.cache/playwright-core`).

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// `$NODE_PATH`, else `~/.cache/playwright-core/node_modules`, where `scripts/test-deps.sh`
/// installs playwright-core and @microsoft/fetch-event-source.
pub(crate) fn node_path() -> std::ffi::OsString {
    std::env::var_os("NODE_PATH").unwrap_or_else(|| {
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home)
            .join(".cache/playwright-core/node_modules")
            .into()
    })
}

/// A browser tab showing the page.
pub struct PageWatcher {
    _child: Child,
    commands: ChildStdin,
    reports: Lines<BufReader<ChildStdout>>,
}

impl PageWatcher {
    /// Opens `url` in Chromium.
    pub fn open(url: &str) -> Self {
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests/browser/watch-page.cjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(url)
            .env("NODE_PATH", node_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("running node (apt-get install nodejs; .ci/run installs playwright-core)");
        let commands = child.stdin.take().unwrap();
        let reports = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            _child: child,
            commands,
            reports,
        }
    }

    /// What the page shows once it lists at least `events` events (or after 20 s):
    /// `{"state", "ids", "data", "reconnects"}`.
    pub async fn wait_for(&mut self, events: usize) -> Value {
        self.commands
            .write_all(format!("wait {events}\n").as_bytes())
            .await
            .expect("the page driver is gone");
        let line =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.reports.next_line())
                .await
                .expect("the page driver did not answer")
                .expect("reading the page driver")
                .expect("the page driver exited (see its stderr)");
        serde_json::from_str(&line).expect("a JSON report")
    }
}

/// Opens `sources` EventSources at once (`/sse/0` .. on the page's origin) from the page at
/// `url` in Chromium, waits until `enough` of them got 3 `tick` events (or 20 s), and
/// reports `{"events", "states", "protocol", "resources"}` (see
/// `host/tests/browser/many-sources.cjs`). With `pinned`, Chromium trusts that PEM
/// certificate by its public key, and nothing else it would not trust anyway.
pub async fn open_event_sources(
    url: &str,
    sources: usize,
    enough: usize,
    pinned: Option<&std::path::Path>,
) -> Value {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../host/tests/browser/many-sources.cjs");
    let mut command = Command::new("node");
    command
        .arg(script)
        .args([url, &sources.to_string(), &enough.to_string()])
        .args(pinned)
        .env("NODE_PATH", node_path())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
        .await
        .expect("the page driver did not answer")
        .expect("running node (apt-get install nodejs; .ci/run installs playwright-core)");
    assert!(output.status.success(), "the page driver failed");
    serde_json::from_slice(&output.stdout).expect("a JSON report")
}
