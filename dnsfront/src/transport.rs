//! The transport a query came over: one type for error messages, metrics labels and the
//! request path.
//!
//! Owns [`Transport`]. Invariant: it displays in upper case ("UDP", for people) and encodes as
//! a metrics label in lower case ("udp", for Prometheus), and the two never change.

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// UDP or TCP.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// UDP: responses limited to the client's payload size (512 without EDNS).
    Udp,
    /// TCP: length-prefixed messages of up to 65,535 bytes (RFC 7766).
    Tcp,
}

impl Transport {
    /// The metrics label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        })
    }
}

impl EncodeLabelValue for Transport {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.label(), encoder)
    }
}
