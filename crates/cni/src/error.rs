//! CNI errors with the spec's well-known codes.

use serde_json::json;

/// A CNI error result: `{"cniVersion", "code", "msg", "details"}`.
#[derive(Debug, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    /// The spec's code.
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer details.
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: &str, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }
    /// Code 1: incompatible CNI version.
    pub fn incompatible_version(d: impl Into<String>) -> Self {
        Self::new(1, "Incompatible CNI version", d)
    }
    /// Code 4: invalid necessary environment variables.
    pub fn invalid_env(d: impl Into<String>) -> Self {
        Self::new(4, "Invalid necessary environment variables", d)
    }
    /// Code 6: failed to decode content.
    pub fn decoding(d: impl Into<String>) -> Self {
        Self::new(6, "Failed to decode content", d)
    }
    /// Code 7: invalid network config.
    pub fn invalid_config(d: impl Into<String>) -> Self {
        Self::new(7, "Invalid network config", d)
    }
    /// Code 11: try again later (the agent is not reachable now).
    pub fn try_again(d: impl Into<String>) -> Self {
        Self::new(11, "Try again later", d)
    }
    /// Code 50: the plugin is not available (STATUS).
    pub fn not_available(d: impl Into<String>) -> Self {
        Self::new(50, "The plugin is not available", d)
    }
    /// Code 100: Plexus-specific failure (agent refused, netlink failed, ...).
    pub fn plugin(msg: &str, d: impl Into<String>) -> Self {
        Self::new(100, msg, d)
    }

    /// The error as the spec's JSON.
    pub fn to_json(&self) -> String {
        json!({"cniVersion": "1.1.0", "code": self.code, "msg": self.msg, "details": self.details})
            .to_string()
    }
}

impl From<plexus_api::ClientError> for CniError {
    fn from(e: plexus_api::ClientError) -> Self {
        match e {
            plexus_api::ClientError::Unreachable { .. } => CniError::try_again(e.to_string()),
            other => CniError::plugin("Plexus agent error", other.to_string()),
        }
    }
}

impl From<plexus_netdev::NetdevError> for CniError {
    fn from(e: plexus_netdev::NetdevError) -> Self {
        CniError::plugin("Configuring the pod network failed", e.to_string())
    }
}
