//! Listening sockets passed by a service manager, and readiness told back to it: systemd's
//! conventions (`sd_listen_fds`, `sd_notify`), which `scripts/socket-launcher.py` speaks too.
//!
//! A manager that holds the listening sockets and passes them to every gateway process it
//! starts makes a restart lose nothing: the new process accepts from the very accept queue
//! the old one stops taking from, and since both hold the same socket (one open file
//! description, several descriptors), the old process closing its descriptor leaves the
//! queue, and the connections waiting in it, to the new one. Binding a port instead, the
//! last close of a listener resets every connection still in its queue.
//!
//! The protocol: `LISTEN_PID` is the process the sockets are for, `LISTEN_FDS` how many
//! there are (descriptors 3, 4, ...), `LISTEN_FDNAMES` optionally names them, colon
//! separated. The gateway takes the one named `http` (else the first not named `metrics`)
//! as its main listener and the one named `metrics` for `telemetry/metrics`. Readiness:
//! `READY=1` and `STOPPING=1` sent as datagrams to the Unix socket `NOTIFY_SOCKET` names.
//!
//! [`take`] must run first in `main`, while the process has one thread and has opened
//! nothing: it reads and unsets the variables (so that nothing the gateway starts inherits
//! them) and claims the descriptors, the one place the host needs `unsafe`.

use std::ffi::OsString;
use std::fmt;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};

use socket2::{Domain, Protocol, Socket, Type};

/// The first passed descriptor (`SD_LISTEN_FDS_START`): 0, 1 and 2 are the standard streams.
const FIRST_FD: RawFd = 3;
/// What the gateway can serve: a main listener and a metrics listener.
const MAX_SOCKETS: usize = 2;

/// A socket the environment passes that the gateway cannot serve, or a malformed variable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActivationError {
    #[error("LISTEN_FDS={0:?} is not a count of descriptors")]
    BadCount(String),
    #[error(
        "LISTEN_FDS passes {0} sockets; the gateway serves at most two (named http and metrics)"
    )]
    TooMany(usize),
    #[error("LISTEN_FDNAMES names {names} descriptors but LISTEN_FDS passes {fds}")]
    NameCount { names: usize, fds: usize },
    #[error("LISTEN_FDNAMES names two descriptors {0:?}")]
    Duplicate(String),
    #[error(
        "LISTEN_FDS passes {0} and another socket not named metrics: name the main one http \
         (LISTEN_FDNAMES, systemd's FileDescriptorName=)"
    )]
    Unexpected(Passed),
    #[error("LISTEN_FDS passes only a metrics socket, none for the gateway to serve")]
    NoMain,
    #[error("{0} is not open")]
    NotOpen(Passed),
    #[error("{0} is not a listening TCP socket: it is {1}")]
    NotAListener(Passed, String),
    #[error("{0}: {1}")]
    Inspect(Passed, String),
}

/// One descriptor of `LISTEN_FDS`, as error messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub fd: RawFd,
    pub name: Option<String>,
}

impl fmt::Display for Passed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "LISTEN_FDS descriptor {} ({name:?})", self.fd),
            None => write!(f, "LISTEN_FDS descriptor {}", self.fd),
        }
    }
}

/// What the environment passed: nothing, sockets meant for another process, or ours.
#[derive(Debug)]
pub enum Activation {
    None,
    /// `LISTEN_FDS` is set for another process (inherited by mistake): ignored, as
    /// `sd_listen_fds` ignores it. The value of `LISTEN_PID`, for the log.
    NotOurs(String),
    Sockets(Sockets),
}

/// The passed listeners, listening, non-blocking and closed on exec.
#[derive(Debug)]
pub struct Sockets {
    pub http: TcpListener,
    pub metrics: Option<TcpListener>,
}

/// Which passed descriptor serves what, decided from the variables alone.
#[derive(Debug, PartialEq, Eq)]
struct Roles {
    http: Passed,
    metrics: Option<Passed>,
}

/// Reads, unsets and acts on `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, and reads
/// and unsets `NOTIFY_SOCKET`. Call it first in `main`: see the module's header.
pub fn take() -> (Result<Activation, ActivationError>, Notifier) {
    let var = |name| {
        let value = std::env::var_os(name);
        // Single-threaded here (see the header), so no other thread reads the environment.
        std::env::remove_var(name);
        value
    };
    let (pid, fds, names) = (var("LISTEN_PID"), var("LISTEN_FDS"), var("LISTEN_FDNAMES"));
    let notifier = Notifier(var("NOTIFY_SOCKET"));
    let activation = match roles(std::process::id(), pid, fds, names) {
        Ok(Planned::Sockets(roles)) => adopt_all(roles).map(Activation::Sockets),
        Ok(Planned::None) => Ok(Activation::None),
        Ok(Planned::NotOurs(pid)) => Ok(Activation::NotOurs(pid)),
        Err(e) => Err(e),
    };
    (activation, notifier)
}

#[derive(Debug, PartialEq, Eq)]
enum Planned {
    None,
    NotOurs(String),
    Sockets(Roles),
}

/// The roles the variables give the descriptors of process `pid`.
fn roles(
    pid: u32,
    listen_pid: Option<OsString>,
    listen_fds: Option<OsString>,
    names: Option<OsString>,
) -> Result<Planned, ActivationError> {
    let Some(listen_fds) = listen_fds else {
        return Ok(Planned::None);
    };
    let listen_pid = listen_pid.map(|p| p.to_string_lossy().into_owned());
    if listen_pid.as_deref().map(str::trim) != Some(pid.to_string().as_str()) {
        return Ok(Planned::NotOurs(listen_pid.unwrap_or_default()));
    }
    let count_text = listen_fds.to_string_lossy();
    let count: usize = count_text
        .trim()
        .parse()
        .map_err(|_| ActivationError::BadCount(count_text.clone().into_owned()))?;
    if count > MAX_SOCKETS {
        return Err(ActivationError::TooMany(count));
    }
    if count == 0 {
        return Ok(Planned::None);
    }
    let names: Vec<Option<String>> = match names {
        None => vec![None; count],
        Some(names) => {
            let names: Vec<_> = names
                .to_string_lossy()
                .split(':')
                .map(|n| Some(n.to_owned()))
                .collect();
            if names.len() != count {
                return Err(ActivationError::NameCount {
                    names: names.len(),
                    fds: count,
                });
            }
            names
        }
    };
    let mut passed: Vec<Passed> = (FIRST_FD..)
        .zip(names)
        .map(|(fd, name)| Passed { fd, name })
        .collect();
    let mut take_named = |wanted: &str| -> Result<Option<Passed>, ActivationError> {
        let mut found = passed
            .iter()
            .enumerate()
            .filter(|(_, p)| p.name.as_deref() == Some(wanted))
            .map(|(i, _)| i);
        match (found.next(), found.next()) {
            (Some(_), Some(_)) => Err(ActivationError::Duplicate(wanted.into())),
            (Some(i), None) => Ok(Some(passed.remove(i))),
            _ => Ok(None),
        }
    };
    let metrics = take_named("metrics")?;
    let http = take_named("http")?;
    // Unnamed (or named otherwise, as systemd names a socket unit's descriptors after the
    // unit): the first is the main listener.
    let http = match http {
        Some(http) => http,
        None if passed.is_empty() => return Err(ActivationError::NoMain),
        None => passed.remove(0),
    };
    // A socket left over would queue connections that nobody ever accepts.
    if let Some(extra) = passed.into_iter().next() {
        return Err(ActivationError::Unexpected(extra));
    }
    Ok(Planned::Sockets(Roles { http, metrics }))
}

fn adopt_all(roles: Roles) -> Result<Sockets, ActivationError> {
    Ok(Sockets {
        http: listener(roles.http)?,
        metrics: roles.metrics.map(listener).transpose()?,
    })
}

/// The listener behind `passed`, once it is known to be one.
fn listener(passed: Passed) -> Result<TcpListener, ActivationError> {
    // Before claiming the descriptor: it must be open, and a socket.
    let what = std::fs::read_link(format!("/proc/self/fd/{}", passed.fd))
        .map_err(|_| ActivationError::NotOpen(passed.clone()))?;
    if !what.to_string_lossy().starts_with("socket:") {
        let what = format!("{}", what.display());
        return Err(ActivationError::NotAListener(passed, what));
    }
    tcp_listener(adopt(passed.fd), &passed)
}

/// Takes ownership of a passed descriptor.
#[allow(unsafe_code)]
fn adopt(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` is one of the descriptors LISTEN_FDS passes to this very process
    // (LISTEN_PID is ours) for it to own; `listener` just saw it open, as a socket, which
    // needs no cleanup but `close`; and nothing else in the process owns it: `take` runs
    // first in `main`, single-threaded, before anything opens or closes a descriptor, and
    // claims each passed descriptor once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `fd` as a listener if it is a listening TCP socket, made non-blocking (for tokio; the
/// flag belongs to the shared file description, which the manager does not read) and
/// closed on exec (the flag belongs to this descriptor).
fn tcp_listener(fd: OwnedFd, passed: &Passed) -> Result<TcpListener, ActivationError> {
    let socket = Socket::from(fd);
    let inspect = |e: std::io::Error| ActivationError::Inspect(passed.clone(), e.to_string());
    let domain = socket.domain().map_err(inspect)?;
    let kind = socket.r#type().map_err(inspect)?;
    let tcp = (domain == Domain::IPV4 || domain == Domain::IPV6)
        && kind == Type::STREAM
        && socket.protocol().map_err(inspect)? == Some(Protocol::TCP);
    let listening = socket.is_listener().map_err(inspect)?;
    if !(tcp && listening) {
        let what = match (domain, kind) {
            (Domain::UNIX, _) => "a Unix socket",
            (_, Type::DGRAM) => "a UDP socket",
            _ if tcp => "a TCP socket that is not listening",
            _ => "a socket of another kind",
        };
        return Err(ActivationError::NotAListener(passed.clone(), what.into()));
    }
    socket.set_cloexec(true).map_err(inspect)?;
    socket.set_nonblocking(true).map_err(inspect)?;
    Ok(socket.into())
}

/// Tells the service manager how the gateway is doing (`sd_notify`), when `NOTIFY_SOCKET`
/// asked for it: `READY=1` once it serves, so a restart sends SIGTERM to the old process
/// only then, and `STOPPING=1` when it drains.
#[derive(Debug)]
pub struct Notifier(Option<OsString>);

impl Notifier {
    /// Sends `state` (`READY=1`); a failure is logged and changes nothing else.
    pub fn notify(&self, state: &str) {
        let Some(socket) = &self.0 else {
            return;
        };
        if let Err(e) = send(socket, state) {
            tracing::warn!(
                "[SERVICE: HTTP Server] telling the service manager {state} through NOTIFY_SOCKET={}: {e}",
                socket.to_string_lossy()
            );
        }
    }
}

fn send(socket: &OsString, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    // `@name` is a name in the abstract namespace, as systemd writes it.
    let address = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::from_abstract_name(name)?,
        None => UnixAddr::from_pathname(std::path::Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &address)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(pid: &str, fds: &str, names: Option<&str>) -> Result<Planned, ActivationError> {
        roles(
            42,
            Some(pid.into()),
            Some(fds.into()),
            names.map(Into::into),
        )
    }

    fn fd(fd: RawFd, name: Option<&str>) -> Passed {
        Passed {
            fd,
            name: name.map(Into::into),
        }
    }

    #[test]
    fn without_names_the_first_socket_is_the_main_one() {
        let expected = Roles {
            http: fd(3, None),
            metrics: None,
        };
        assert_eq!(plan("42", "1", None), Ok(Planned::Sockets(expected)));
        assert_eq!(
            roles(42, None, None, None),
            Ok(Planned::None),
            "no LISTEN_FDS"
        );
        assert_eq!(plan("42", "0", None), Ok(Planned::None));
        assert!(matches!(
            plan("42", "2", None),
            Err(ActivationError::Unexpected(p)) if p == fd(4, None)
        ));
    }

    #[test]
    fn names_tell_the_main_socket_from_the_metrics_one_in_any_order() {
        let expected = Roles {
            http: fd(4, Some("http")),
            metrics: Some(fd(3, Some("metrics"))),
        };
        assert_eq!(
            plan("42", "2", Some("metrics:http")),
            Ok(Planned::Sockets(expected))
        );
        // A socket unit's own name (systemd's default) serves as the main one.
        let expected = Roles {
            http: fd(3, Some("gateway.socket")),
            metrics: Some(fd(4, Some("metrics"))),
        };
        assert_eq!(
            plan("42", "2", Some("gateway.socket:metrics")),
            Ok(Planned::Sockets(expected))
        );
    }

    #[test]
    fn sockets_for_another_process_are_ignored() {
        assert_eq!(plan("7", "1", None), Ok(Planned::NotOurs("7".into())));
        assert_eq!(
            roles(42, None, Some("1".into()), None),
            Ok(Planned::NotOurs(String::new())),
            "LISTEN_FDS without LISTEN_PID"
        );
    }

    #[test]
    fn what_the_gateway_cannot_serve_is_refused_before_any_descriptor_is_touched() {
        let cases = [
            (plan("42", "x", None), "LISTEN_FDS=\"x\" is not a count of descriptors"),
            (plan("42", "3", None), "LISTEN_FDS passes 3 sockets; the gateway serves at most two (named http and metrics)"),
            (plan("42", "2", Some("http")), "LISTEN_FDNAMES names 1 descriptors but LISTEN_FDS passes 2"),
            (plan("42", "2", Some("http:http")), "LISTEN_FDNAMES names two descriptors \"http\""),
            (plan("42", "1", Some("metrics")), "LISTEN_FDS passes only a metrics socket, none for the gateway to serve"),
            (plan("42", "2", Some("http:admin")), "LISTEN_FDS passes LISTEN_FDS descriptor 4 (\"admin\") and another socket not named metrics"),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err().to_string();
            assert!(error.starts_with(expected), "{error}\n  want: {expected}");
        }
    }

    fn check(fd: impl Into<OwnedFd>) -> Result<TcpListener, ActivationError> {
        tcp_listener(fd.into(), &Passed { fd: 3, name: None })
    }

    #[test]
    fn only_a_listening_tcp_socket_is_served() {
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listening.local_addr().unwrap();
        let listener = check(listening).unwrap();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let flags = rustix::io::fcntl_getfd(&listener).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert!(Socket::from(OwnedFd::from(listener)).nonblocking().unwrap());

        let what = |result: Result<TcpListener, ActivationError>| match result {
            Err(ActivationError::NotAListener(_, what)) => what,
            other => panic!("{other:?}"),
        };
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(what(check(udp)), "a UDP socket");
        let bound = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        bound
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        assert_eq!(
            what(check(OwnedFd::from(bound))),
            "a TCP socket that is not listening"
        );
        let dir = std::env::temp_dir().join(format!("activation-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let unix = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        assert_eq!(what(check(unix)), "a Unix socket");
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn readiness_reaches_the_notify_socket_by_path_and_by_abstract_name() {
        let path = std::env::temp_dir().join(format!("notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let manager = UnixDatagram::bind(&path).unwrap();
        Notifier(Some(path.clone().into())).notify("READY=1");
        let mut buf = [0u8; 64];
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("gateway-notify-{}", std::process::id());
        let manager =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
        Notifier(Some(format!("@{name}").into())).notify("STOPPING=1");
        let n = manager.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
