//! `host`: a KrakenD-style API gateway that hands claimed connections to server plugins.
//!
//! A request's way, one module per step: [`accept`] takes the connection (and its TLS
//! handshake), the [`gate`] parses each HTTP/1.1 head and has its [`route`] decided once
//! ([`http1`] runs the gate in front of hyper; [`http2`] decides each stream's head the
//! same way), then either [`protect`] (CORS, JWT, rate limits, as the decision names them)
//! and the [`handoff`] of a plugin's claim through the stable ABI ([`plugins`], with the
//! client's [`transport`]), or
//! [`respond`]: the host's admin paths (`/__health`, `/__debug/*`, without protections),
//! then [`protect`] and the KrakenD [`pipeline`] or the [`static_files`]. [`shared`] is
//! what every connection shares; [`config`] reads krakend.json. The binary (`main.rs`)
//! owns the CLI and turns errors into messages and exit codes.
//!
//! No `unsafe` but in one function: claiming the listening sockets a service manager
//! passes ([`activation`]), which takes a raw descriptor number by convention.

#![deny(unsafe_code)]

pub mod accept;
pub mod activation;
pub mod config;
pub mod connections;
pub mod gate;
pub mod handoff;
pub mod http1;
pub mod http2;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod protect;
pub mod respond;
pub mod route;
pub mod shared;
pub mod static_files;
pub mod transport;
