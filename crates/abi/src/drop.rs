//! Drop reasons, numbered as Cilium's datapath and Hubble's `DropReason` enum number them, so
//! Hubble tooling reads Plexus's drops. This is the one list: names for the CLI, metrics and
//! the API are derived from it.

/// Why the datapath dropped a packet.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DropReason {
    /// A packet that could not be parsed.
    InvalidPacket = 134,
    /// Conntrack could not read the L4 header.
    CtTruncatedOrInvalidHeader = 135,
    /// An L3 protocol the datapath does not handle.
    UnsupportedL3Protocol = 139,
    /// Rewriting the packet failed.
    ErrorWritingToPacket = 141,
    /// No local endpoint for a destination that must be local.
    NoMatchingLocalContainer = 152,
    /// Fixing the L3 checksum failed.
    L3ChecksumError = 153,
    /// An IP fragment that cannot be handled.
    FragmentationNotSupported = 157,
    /// A source address not owned by the sending endpoint.
    InvalidSourceIp = 132,
    /// No policy rule allows the packet.
    PolicyDenied = 133,
    /// A service frontend with no backend.
    ServiceBackendNotFound = 158,
    /// An explicit deny rule matched.
    PolicyDeny = 181,
}

impl DropReason {
    /// Every reason, for tables and tests.
    pub const ALL: [DropReason; 11] = [
        DropReason::InvalidSourceIp,
        DropReason::PolicyDenied,
        DropReason::InvalidPacket,
        DropReason::CtTruncatedOrInvalidHeader,
        DropReason::UnsupportedL3Protocol,
        DropReason::ErrorWritingToPacket,
        DropReason::NoMatchingLocalContainer,
        DropReason::L3ChecksumError,
        DropReason::FragmentationNotSupported,
        DropReason::ServiceBackendNotFound,
        DropReason::PolicyDeny,
    ];

    /// The reason for a code, if known.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|r| *r as u8 == code)
    }

    /// Human name, as Cilium's monitor prints it.
    pub const fn description(self) -> &'static str {
        match self {
            DropReason::InvalidSourceIp => "Invalid source ip",
            DropReason::PolicyDenied => "Policy denied",
            DropReason::InvalidPacket => "Invalid packet",
            DropReason::CtTruncatedOrInvalidHeader => "CT: Truncated or invalid header",
            DropReason::UnsupportedL3Protocol => "Unsupported L3 protocol",
            DropReason::ErrorWritingToPacket => "Error writing to packet",
            DropReason::NoMatchingLocalContainer => "No matching local container found",
            DropReason::L3ChecksumError => "Error while correcting L3 checksum",
            DropReason::FragmentationNotSupported => "IP fragmentation not supported",
            DropReason::ServiceBackendNotFound => "Service backend not found",
            DropReason::PolicyDeny => "Policy denied by denylist",
        }
    }

    /// Hubble's `DropReason` enum name.
    pub const fn hubble_name(self) -> &'static str {
        match self {
            DropReason::InvalidSourceIp => "INVALID_SOURCE_IP",
            DropReason::PolicyDenied => "POLICY_DENIED",
            DropReason::InvalidPacket => "INVALID_PACKET_DROPPED",
            DropReason::CtTruncatedOrInvalidHeader => "CT_TRUNCATED_OR_INVALID_HEADER",
            DropReason::UnsupportedL3Protocol => "UNSUPPORTED_L3_PROTOCOL",
            DropReason::ErrorWritingToPacket => "ERROR_WRITING_TO_PACKET",
            DropReason::NoMatchingLocalContainer => "NO_MATCHING_LOCAL_CONTAINER_FOUND",
            DropReason::L3ChecksumError => "ERROR_WHILE_CORRECTING_L3_CHECKSUM",
            DropReason::FragmentationNotSupported => "IP_FRAGMENTATION_NOT_SUPPORTED",
            DropReason::ServiceBackendNotFound => "SERVICE_BACKEND_NOT_FOUND",
            DropReason::PolicyDeny => "POLICY_DENY",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_hubble() {
        assert_eq!(DropReason::PolicyDenied as u8, 133);
        assert_eq!(DropReason::PolicyDeny as u8, 181);
        assert_eq!(DropReason::ServiceBackendNotFound as u8, 158);
        for r in DropReason::ALL {
            assert_eq!(DropReason::from_code(r as u8), Some(r));
        }
        assert_eq!(DropReason::from_code(1), None);
    }
}
