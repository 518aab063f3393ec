//! The load-balancing error: which object, which field inside it, and what is wrong.

use thiserror::Error;

/// Why [`desired()`](crate::desired()) could not compute the load-balancing state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LbError {
    /// An input object is not valid; nothing is computed, so nothing in force changes.
    #[error("{kind} {object}: {field}: {reason}")]
    Invalid {
        /// The object's kind: `Service`, `EndpointSlice` or `CiliumLoadBalancerIPPool`.
        kind: &'static str,
        /// The object's name, `namespace/name` for namespaced kinds.
        object: String,
        /// The path of the offending field, e.g. `spec.ports[1].port`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Every numeric id of a kind is in use.
    #[error("no {what} id left: all {max} ids are in use")]
    IdsExhausted {
        /// `service` or `backend`.
        what: &'static str,
        /// The largest id.
        max: u32,
    },
}

impl LbError {
    /// An invalid field of a Service.
    pub(crate) fn service(
        object: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::invalid("Service", object, field, reason)
    }

    /// An invalid field of an EndpointSlice.
    pub(crate) fn slice(object: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::invalid("EndpointSlice", object, field, reason)
    }

    /// An invalid field of a LoadBalancer address pool.
    pub(crate) fn pool(object: &str, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::invalid("CiliumLoadBalancerIPPool", object, field, reason)
    }

    fn invalid(
        kind: &'static str,
        object: &str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            kind,
            object: object.to_owned(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}
