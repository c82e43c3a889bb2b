//! Status vocabularies shared by the database, the REST API and the UI: one enum each, with the
//! names stored in the database and sent on the wire (unchanged from when they were strings).

use serde::{Deserialize, Serialize};

macro_rules! vocabulary {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name stored in the database and sent on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        /// Compares with a stored or sent name (`status == "pending"`).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            /// Parses a stored or sent name; the error lists the known ones.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} `{other}` (expected one of {})",
                        $what,
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

vocabulary! {
    /// Where a sync request stands.
    RequestStatus, "sync request status" {
        /// Waiting for approvals.
        Pending => "pending",
        /// Approved by enough people; waits for "sync now" unless it synced on approval.
        Approved => "approved",
        /// Someone rejected it, with a reason.
        Rejected => "rejected",
        /// The target moved (a new request replaced it) or the application is in sync again.
        Superseded => "superseded",
        /// Its sync ran and succeeded.
        Synced => "synced",
        /// Its sync ran and failed, or the target moved after approval.
        Failed => "failed",
    }
}

impl RequestStatus {
    /// Still open: someone may approve or run it.
    pub fn is_open(self) -> bool {
        matches!(self, RequestStatus::Pending | RequestStatus::Approved)
    }
}

vocabulary! {
    /// How a sync ended (exactly one terminal state per sync).
    SyncStatus, "sync status" {
        /// Written ahead, applying now.
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The process running it stopped (a crash or a killed replica).
        Interrupted => "interrupted",
    }
}

vocabulary! {
    /// The verdict on a commit's (or a signed tag's) signature against the trusted keys of its
    /// application's repository and project. Never derived from the commit's author line.
    SignatureStatus, "signature status" {
        /// A good signature by a trusted key (the signer is the key's identity).
        Verified => "verified",
        /// Signed, but by a key that is not trusted (or the signature could not be checked).
        UnknownKey => "unknown_key",
        /// The signature does not match the signed content (tampered, or a wrong key claims it).
        BadSignature => "bad_signature",
        /// No signature at all.
        Unsigned => "unsigned",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text() {
        for s in RequestStatus::ALL {
            assert_eq!(s.as_str().parse::<RequestStatus>(), Ok(*s));
        }
        for s in SignatureStatus::ALL {
            assert_eq!(s.as_str().parse::<SignatureStatus>(), Ok(*s));
        }
        for s in SyncStatus::ALL {
            assert_eq!(s.as_str().parse::<SyncStatus>(), Ok(*s));
        }
        assert!("done"
            .parse::<RequestStatus>()
            .is_err_and(|e| e.contains("pending, approved")));
    }
}
