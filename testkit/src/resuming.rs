//! The `client` binary as a test's EventSource: it reconnects after a drop, waits the
//! stream's `retry:` and sends `Last-Event-ID`, as a browser does. Its events (`--json`)
//! and its notices (stderr) are collected as they come.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct ResumingClient {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    notices: Arc<Mutex<String>>,
}

impl ResumingClient {
    /// `client --json url`.
    pub fn follow(url: &str) -> Self {
        let mut child = Command::new(crate::bin("client"))
            .args(["--json", url])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the client");
        let events = Arc::new(Mutex::new(Vec::new()));
        let notices = Arc::new(Mutex::new(String::new()));
        let (stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).expect("a JSON event from the client");
                sink.lock().unwrap().push(event);
            }
        });
        let sink = notices.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            child,
            events,
            notices,
        }
    }

    /// The events received so far, `{"id", "event", "data"}` each.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// How many times the client has connected and got an event stream.
    pub fn connects(&self) -> usize {
        self.notices
            .lock()
            .unwrap()
            .matches("connected to ")
            .count()
    }

    /// Waits until at least `count` events arrived; panics with the client's notices after
    /// [`crate::STEP`].
    pub fn wait_for_events(&self, count: usize) {
        let deadline = Instant::now() + crate::STEP;
        while self.events.lock().unwrap().len() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} events; the client said:\n{}",
                self.events.lock().unwrap().len(),
                self.notices.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ResumingClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
