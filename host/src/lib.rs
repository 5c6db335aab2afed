//! `host`: a KrakenD-style API gateway that hands claimed connections to server plugins.
//!
//! Each connection passes through the [`gate`], which parses request heads, has the
//! [`route`] decided once per head, and either feeds them to hyper for the KrakenD
//! [`pipeline`] or stops at a head a plugin claims and hands the raw socket over through
//! the stable ABI ([`plugins`]). Both ways pass [`protect`] first (CORS, JWT, rate limits)
//! with the protections the decision names. [`config`] reads krakend.json.
//! The binary (`main.rs`) owns the CLI and turns errors into messages and exit codes.
//!
//! No `unsafe` but in one function: claiming the listening sockets a service manager
//! passes ([`activation`]), which takes a raw descriptor number by convention.

#![deny(unsafe_code)]

pub mod activation;
pub mod config;
pub mod connections;
pub mod gate;
pub mod listener;
pub mod metrics;
pub mod pipeline;
pub mod plugins;
pub mod protect;
pub mod route;
pub mod server;
pub mod static_files;
