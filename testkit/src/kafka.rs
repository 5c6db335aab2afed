//! A real Kafka-protocol broker for the tests: `tansu` with SQLite storage in a temp
//! folder, on a loopback port; messages produced with rdkafka.
//!
//! The binary is `$TANSU`, else `~/.cache/tansu/bin/tansu` (where `.ci/run` installs it),
//! else `tansu` on the PATH.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::unused_port;

fn tansu() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return path.into();
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/tansu/bin/tansu"))
        .filter(|path| path.exists());
    cached.unwrap_or_else(|| "tansu".into())
}

pub struct Broker {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    producer: FutureProducer,
}

/// Starts a broker with an empty store.
pub fn broker() -> Broker {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tansu-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("creating the broker's folder");
    let port = unused_port();
    let producer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{port}"))
        .set("message.timeout.ms", "10000")
        .create()
        .expect("a Kafka producer");
    let mut broker = Broker {
        port,
        dir,
        child: None,
        producer,
    };
    broker.start();
    broker
}

impl Broker {
    /// `kafka://127.0.0.1:port`, for `backend_host`.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    fn listener(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts) the broker on its port, with its store as it was left.
    pub fn start(&mut self) {
        let child = Command::new(tansu())
            .current_dir(&self.dir)
            .args(["broker", "--listener-url", &self.listener()])
            .args(["--advertised-listener-url", &self.listener()])
            // A relative path: tansu takes what follows `sqlite://` as a file name.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {} ({e}): .ci/run installs it", tansu().display())
            });
        self.child = Some(child);
        let deadline = Instant::now() + crate::STEP;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "the broker never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu())
            .args(["topic", "create", "--broker", &self.listener()])
            .args(["--partitions", &partitions.to_string(), name])
            .status()
            .expect("running tansu topic create");
        assert!(status.success(), "tansu topic create {name} failed");
    }

    /// Produces one message to `partition` and waits for the broker's acknowledgement.
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        value: &str,
        headers: &[(&str, &str)],
    ) {
        let mut owned = OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(Header {
                key: name,
                value: Some(*value),
            });
        }
        let record = FutureRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(value)
            .headers(owned);
        self.producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap_or_else(|(e, _)| panic!("producing to {topic}: {e}"));
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
