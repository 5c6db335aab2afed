//! The logger callback the host hands each plugin, so plugin logs land in the host's output.

use abi_stable::{std_types::RStr, StableAbi};

/// Severity of a plugin log line.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// A host function that writes one log line; cheap to copy into every task of a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct Logger {
    pub log: extern "C" fn(level: LogLevel, message: RStr<'_>),
}

impl Logger {
    pub fn error(&self, message: &str) {
        (self.log)(LogLevel::Error, message.into());
    }
    pub fn warn(&self, message: &str) {
        (self.log)(LogLevel::Warn, message.into());
    }
    pub fn info(&self, message: &str) {
        (self.log)(LogLevel::Info, message.into());
    }
    pub fn debug(&self, message: &str) {
        (self.log)(LogLevel::Debug, message.into());
    }
}
