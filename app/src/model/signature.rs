//! Verified commit signatures as every layer shows them: the verdict, how the commit was signed,
//! by whom (the trusted key's identity, never the commit's author line) and the key.

use serde::{Deserialize, Serialize};

use super::SignatureStatus;

/// The verdict on one commit's signature (or on the signed tag that points at it).
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureVerdict {
    pub status: SignatureStatus,
    /// `openpgp` or `ssh`; `None` when unsigned.
    pub method: Option<String>,
    /// Who signed, for a verified signature: the OpenPGP user id (`Alice <alice@example.com>`)
    /// or the SSH `allowed_signers` principal (`alice@example.com`).
    pub signer: Option<String>,
    /// The signing key: an OpenPGP fingerprint (40 hex digits) or an SSH key fingerprint
    /// (`SHA256:…`). Known for good and unknown-key signatures alike when the tool reports it.
    pub fingerprint: Option<String>,
    /// What vouched for the revision when not the commit itself: `tag v1.2.0`.
    pub via: Option<String>,
    /// A short reason for anything but `verified` (`no trusted key for …`, `gpgv timed out`).
    pub detail: Option<String>,
}

impl SignatureVerdict {
    /// An unsigned commit.
    pub fn unsigned() -> Self {
        Self {
            status: SignatureStatus::Unsigned,
            method: None,
            signer: None,
            fingerprint: None,
            via: None,
            detail: None,
        }
    }

    /// Whether the revision may be deployed under `require_signed`.
    pub fn is_verified(&self) -> bool {
        self.status == SignatureStatus::Verified
    }

    /// The e-mail address of a verified signer (`alice@example.com` from `Alice
    /// <alice@example.com>` or from an e-mail principal), lower-cased; `None` otherwise.
    pub fn signer_email(&self) -> Option<String> {
        if !self.is_verified() {
            return None;
        }
        let signer = self.signer.as_deref()?;
        let email = match (signer.rfind('<'), signer.rfind('>')) {
            (Some(open), Some(close)) if open < close => &signer[open + 1..close],
            _ => signer,
        };
        // An allowed_signers pattern (`*@example.com`, `a@x,b@x`, `!c@x`) names nobody.
        let pattern = email.contains(['*', '?', '!', ',']);
        (email.contains('@') && !pattern).then(|| email.trim().to_lowercase())
    }

    /// The key, shortened for a badge: the last 16 hex digits of an OpenPGP fingerprint, or
    /// an SSH fingerprint's first 16 characters after `SHA256:`.
    pub fn short_key(&self) -> Option<String> {
        let key = self.fingerprint.as_deref()?;
        Some(match key.strip_prefix("SHA256:") {
            Some(ssh) => format!("SHA256:{}", ssh.get(..16).unwrap_or(ssh)),
            None => key
                .get(key.len().saturating_sub(16)..)
                .unwrap_or(key)
                .to_owned(),
        })
    }

    /// The badge's words: `verified`, `unknown key`, `bad signature`, `unsigned`.
    pub fn label(&self) -> &'static str {
        match self.status {
            SignatureStatus::Verified => "verified",
            SignatureStatus::UnknownKey => "unknown key",
            SignatureStatus::BadSignature => "bad signature",
            SignatureStatus::Unsigned => "unsigned",
        }
    }

    /// One phrase for messages: `signed by Alice <alice@example.com> (OpenPGP key
    /// 4D537D83F0F7F143)`, `signed by an unknown SSH key SHA256:46Z7…`, `bad signature`,
    /// `unsigned`.
    pub fn describe(&self) -> String {
        let method = match self.method.as_deref() {
            Some("ssh") => "SSH",
            Some("openpgp") => "OpenPGP",
            _ => "",
        };
        let key = self.short_key().unwrap_or_default();
        let via = self
            .via
            .as_deref()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        match self.status {
            SignatureStatus::Verified => format!(
                "signed by {}{via} ({method} key {key})",
                self.signer.as_deref().unwrap_or("a trusted key")
            ),
            SignatureStatus::UnknownKey if key.is_empty() => {
                format!("signed by an unknown {method} key{via}")
            }
            SignatureStatus::UnknownKey => format!("signed by an unknown {method} key {key}{via}"),
            SignatureStatus::BadSignature => format!("bad {method} signature{via}"),
            SignatureStatus::Unsigned => "unsigned".to_owned(),
        }
        .replace("  ", " ")
    }
}

/// A verdict as the pages show it, worded on the server (the browser only places strings):
/// `data` is the status name (`verified`, `unknown_key`, …), `tone` the stylesheet's, `signer`
/// the verified signer (an e-mail when there is one), `title` the full sentence with the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureBadgeView {
    pub data: String,
    pub icon: String,
    pub tone: String,
    pub label: String,
    pub signer: Option<String>,
    pub title: String,
}

impl From<&SignatureVerdict> for SignatureBadgeView {
    fn from(v: &SignatureVerdict) -> Self {
        let (icon, tone) = match v.status {
            SignatureStatus::Verified => ("✓", "ok"),
            SignatureStatus::UnknownKey => ("?", "warn"),
            SignatureStatus::BadSignature => ("✗", "bad"),
            SignatureStatus::Unsigned => ("–", "unknown"),
        };
        let mut title = v.describe();
        if let Some(d) = v.detail.as_deref() {
            title = format!("{title} — {d}");
        }
        if let Some(key) = v.fingerprint.as_deref() {
            title = format!("{title} — key {key}");
        }
        Self {
            data: v.status.as_str().to_owned(),
            icon: icon.to_owned(),
            tone: tone.to_owned(),
            label: v.label().to_owned(),
            signer: v
                .is_verified()
                .then(|| v.signer_email().or_else(|| v.signer.clone()))
                .flatten(),
            title,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(signer: &str, key: &str) -> SignatureVerdict {
        SignatureVerdict {
            status: SignatureStatus::Verified,
            method: Some("openpgp".into()),
            signer: Some(signer.into()),
            fingerprint: Some(key.into()),
            via: None,
            detail: None,
        }
    }

    #[test]
    fn signer_email_only_for_verified_signatures() {
        let v = verified(
            "Alice <Alice@Example.com>",
            "6CC616D0491519E13BFF1A2C4D537D83F0F7F143",
        );
        assert_eq!(v.signer_email().as_deref(), Some("alice@example.com"));
        assert_eq!(v.short_key().as_deref(), Some("4D537D83F0F7F143"));
        assert!(v
            .describe()
            .starts_with("signed by Alice <Alice@Example.com> (OpenPGP key 4D537D83F0F7F143)"));
        let unknown = SignatureVerdict {
            status: SignatureStatus::UnknownKey,
            ..v.clone()
        };
        assert_eq!(unknown.signer_email(), None);
        assert_eq!(verified("deploy-bot", "SHA256:x").signer_email(), None);
        assert_eq!(verified("*@example.com", "SHA256:x").signer_email(), None);
        assert_eq!(SignatureVerdict::unsigned().describe(), "unsigned");
    }
}
