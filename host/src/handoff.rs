//! The handoff: a head whose route is a plugin's claim passes the protections of its twin
//! endpoint, then goes to the plugin with the client's transport (the socket itself, or a
//! bridged stream), the headers the protections add, the token's remaining life and the
//! connection's slot in the count.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use abi::{ClientTransport, ConnectionSlot, HijackRequest, HttpVersion, RequestHead};

use crate::protect::{Answer, Pass, RequestInfo, Verdict};
use crate::route::Claim;
use crate::shared::Shared;

/// The protections for a claimed head. A refusal is logged and counted here; the caller
/// writes the answer on its protocol.
pub fn protect(
    shared: &Shared,
    claim: &Claim,
    head: &RequestHead,
    peer: SocketAddr,
) -> Result<Pass, Answer> {
    let info = RequestInfo {
        method: &head.method,
        peer: peer.ip(),
        headers: head,
    };
    match shared.protections.check(&info, claim.twin) {
        Verdict::Pass(pass) => Ok(pass),
        Verdict::Answer(answer) => {
            let template = shared.router.template_of_claim(claim);
            tracing::info!(
                "{} {} from {peer}: answered {} before the handoff to {template}",
                head.method,
                head.path,
                answer.status.as_u16()
            );
            let status = answer.status.as_u16();
            shared
                .metrics
                .record(template, &head.method, status, Duration::ZERO);
            Err(answer)
        }
    }
}

/// What the handoff carries besides the decision and the head.
pub struct Client {
    pub transport: ClientTransport,
    pub version: HttpVersion,
    /// Bytes the host read past the head (HTTP/1.1 over a socket; a bridged transport
    /// gives its own through its reads).
    pub read_ahead: Vec<u8>,
    pub peer: SocketAddr,
    /// The connection's place in the count (an HTTP/2 stream's own).
    pub slot: ConnectionSlot,
    /// When the request's clock started: its body is due by this plus `read_timeout`.
    pub started: Instant,
}

/// Gives the claimed request to its plugin.
pub fn hand_over(shared: &Shared, claim: Claim, head: RequestHead, pass: Pass, client: Client) {
    let plugin = claim.plugin;
    let name = shared.plugins.name(plugin);
    let what = match client.version {
        HttpVersion::Http11 => "connection",
        HttpVersion::Http2 => "HTTP/2 stream",
    };
    tracing::info!(
        "[PLUGIN: {name}] {} {} from {}: {what} handed over",
        head.method,
        head.path,
        client.peer
    );
    let request = HijackRequest {
        client: client.transport,
        http_version: client.version,
        route: claim.route,
        head,
        read_ahead: client.read_ahead.into(),
        response_headers: pass
            .headers
            .into_iter()
            .map(|(name, value)| abi::Header {
                name: name.into(),
                value: value.into_bytes().into(),
            })
            .collect(),
        token_expires_in_ms: pass
            .token
            .map(|token| {
                let left = token.valid_for(SystemTime::now());
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
            })
            .into(),
        slot: client.slot,
        max_body_bytes: shared.max_body_bytes,
        // What is left of `read_timeout` for the body the plugin reads itself.
        body_deadline_in_ms: shared
            .limits
            .read_timeout
            .map(|limit| {
                let left = (client.started + limit).saturating_duration_since(Instant::now());
                u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
            })
            .into(),
    };
    if let Err(e) = shared.plugins.hijack(plugin, request) {
        tracing::error!("[PLUGIN: {name}] hijack failed: {e}");
    }
}
