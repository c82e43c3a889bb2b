//! Secret data at rest: the `data` and `stringData` values of `kind: Secret` objects in stored
//! renders are sealed with XChaCha20-Poly1305 before the snapshot is written, and opened only on
//! the way to the cluster (sync, rollback and the compare with live that decides them).
//!
//! Each value becomes an envelope string `tidemark:enc:v1:<key id>:<base64(nonce ‖ ciphertext)>`;
//! the object's shape (names, keys, metadata) stays readable, so revision diffs still name the
//! changed keys. The nonce is derived from the value (HMAC-SHA256 under a key of its own, SIV
//! style): the same value under the same key seals to the same envelope, so an unchanged Secret
//! reads unchanged in a diff and sealing is idempotent; what leaks is only that equality, which
//! the diff shows anyway.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use hmac::Mac;
use serde_json::Value;

use crate::config::SecretsSettings;

/// Logged (WARN) at start when no key is configured.
pub const NO_KEY_WARNING: &str = "Secret data from Git is stored UNENCRYPTED in the database: no encryption key is configured. Set [secrets] key_file (or TIDEMARK__SECRETS__KEY) to a 32-byte base64 key, e.g. from `openssl rand -base64 32`";

/// What every sealed value starts with.
pub const ENVELOPE_PREFIX: &str = "tidemark:enc:v1:";
/// Bytes of a key (and of the base64-decoded `key` / `key_file` setting).
pub const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

/// Why Secret data could not be sealed or opened, or the keys not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A key setting is missing, unreadable or malformed (start-up stops).
    #[error("invalid configuration at `secrets.{setting}`: {message}")]
    Config { setting: String, message: String },
    /// The snapshot was sealed with a key id that is not configured.
    #[error("stored render {digest} holds Secret data encrypted with key `{key_id}`, which is not configured: add it under [secrets] previous_key_files (or TIDEMARK__SECRETS__PREVIOUS_KEYS__<ID>)")]
    UnknownKey { digest: String, key_id: String },
    /// The snapshot holds sealed values but no key is configured at all.
    #[error("stored render {digest} holds encrypted Secret data but no key is configured: set [secrets] key_file or TIDEMARK__SECRETS__KEY")]
    NoKey { digest: String },
    /// Authentication failed: the key with that id is not the one that sealed the value, or the
    /// stored value was altered.
    #[error("cannot decrypt the Secret data of stored render {digest} with key `{key_id}`: wrong key, or the stored data was altered")]
    Decrypt { digest: String, key_id: String },
    /// The snapshot is not a JSON array of objects, or a value in a sealed snapshot is not an
    /// envelope.
    #[error("stored render {digest} is unreadable: {reason}")]
    Corrupt { digest: String, reason: String },
}

/// One key: the AEAD under a derived encryption key, and the derived key for nonces.
struct Key {
    cipher: XChaCha20Poly1305,
    nonce_key: [u8; 32],
}

/// The configured keys: one active (seals new writes), older ones (open what they sealed).
/// `Debug` shows ids only.
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC takes keys of any length: `new_from_slice` cannot fail here.
    if let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        for p in parts {
            mac.update(p);
        }
        out.copy_from_slice(&mac.finalize().into_bytes());
    }
    out
}

impl Key {
    fn new(master: &[u8; KEY_BYTES]) -> Result<Self, String> {
        let enc = hmac_sha256(master, &[b"tidemark secrets v1: encryption key"]);
        let nonce_key = hmac_sha256(master, &[b"tidemark secrets v1: nonce key"]);
        let cipher = XChaCha20Poly1305::new_from_slice(&enc).map_err(|e| e.to_string())?;
        Ok(Self { cipher, nonce_key })
    }
}

/// Key ids go into envelopes between `:` separators and into settings names.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A key from its base64 text (surrounding whitespace ignored): exactly 32 bytes.
pub fn parse_key(setting: &str, text: &str) -> Result<[u8; KEY_BYTES], SecretsError> {
    let bad = |message: String| SecretsError::Config {
        setting: setting.to_owned(),
        message,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| bad("not standard base64 (make one with `openssl rand -base64 32`)".into()))?;
    <[u8; KEY_BYTES]>::try_from(bytes.as_slice()).map_err(|_| {
        bad(format!(
            "a key is {KEY_BYTES} bytes, this one is {} (make one with `openssl rand -base64 32`)",
            bytes.len()
        ))
    })
}

fn read_key_file(setting: &str, path: &std::path::Path) -> Result<[u8; KEY_BYTES], SecretsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SecretsError::Config {
        setting: setting.to_owned(),
        message: format!("cannot read {}: {e}", path.display()),
    })?;
    parse_key(setting, &text)
}

/// Whether a canonical object is a core-group Secret.
fn is_secret(o: &Value) -> bool {
    o["kind"].as_str() == Some("Secret")
        && o["apiVersion"].as_str().is_some_and(|v| !v.contains('/'))
}

/// Calls `f` on every `data` / `stringData` value of every Secret in `objects`.
fn each_secret_value(
    objects: &mut [Value],
    mut f: impl FnMut(&mut Value) -> Result<(), SecretsError>,
) -> Result<(), SecretsError> {
    for o in objects.iter_mut().filter(|o| is_secret(o)) {
        for field in ["data", "stringData"] {
            if let Some(Value::Object(map)) = o.get_mut(field) {
                for v in map.values_mut() {
                    f(v)?;
                }
            }
        }
    }
    Ok(())
}

fn parse_objects(digest: &str, content: &str) -> Result<Vec<Value>, SecretsError> {
    serde_json::from_str(content).map_err(|_| SecretsError::Corrupt {
        digest: digest.to_owned(),
        reason: "not a JSON array of objects".into(),
    })
}

fn to_json(objects: &[Value]) -> String {
    Value::Array(objects.to_vec()).to_string()
}

impl Keyring {
    /// The keys the settings name; `None` when no active key is configured (then Secret data is
    /// stored in plaintext). Errors name the setting: a key that is set but unusable stops
    /// start-up rather than silently storing plaintext.
    pub fn from_settings(s: &SecretsSettings) -> Result<Option<Self>, SecretsError> {
        let active = match (&s.key, &s.key_file) {
            (Some(_), Some(_)) => {
                return Err(SecretsError::Config {
                    setting: "key".into(),
                    message: "set key or key_file, not both".into(),
                })
            }
            (Some(k), None) => parse_key("key", k.expose())?,
            (None, Some(path)) => read_key_file("key_file", path)?,
            (None, None) => {
                if !s.previous_keys.is_empty() || !s.previous_key_files.is_empty() {
                    return Err(SecretsError::Config {
                        setting: "key".into(),
                        message: "previous keys are set but no active key (key or key_file)".into(),
                    });
                }
                return Ok(None);
            }
        };
        let mut older = Vec::new();
        for (id, k) in &s.previous_keys {
            older.push((
                id.clone(),
                parse_key(&format!("previous_keys.{id}"), k.expose())?,
            ));
        }
        for (id, path) in &s.previous_key_files {
            older.push((
                id.clone(),
                read_key_file(&format!("previous_key_files.{id}"), path)?,
            ));
        }
        Self::new(&s.key_id, &active, &older).map(Some)
    }

    /// A keyring from raw keys: `active` seals, `older` only open. Ids must be distinct and made
    /// of letters, digits, `-`, `_` and `.`.
    pub fn new(
        active_id: &str,
        active: &[u8; KEY_BYTES],
        older: &[(String, [u8; KEY_BYTES])],
    ) -> Result<Self, SecretsError> {
        let mut keys = BTreeMap::new();
        for (setting, id, key) in std::iter::once(("key_id", active_id, active)).chain(
            older
                .iter()
                .map(|(id, key)| ("previous_keys", id.as_str(), key)),
        ) {
            let bad = |message: String| SecretsError::Config {
                setting: setting.to_owned(),
                message,
            };
            if !valid_id(id) {
                return Err(bad(format!(
                    "`{id}` is not a key id (letters, digits, `-`, `_`, `.`)"
                )));
            }
            if keys.contains_key(id) {
                return Err(bad(format!("key id `{id}` is configured twice")));
            }
            keys.insert(id.to_owned(), Key::new(key).map_err(bad)?);
        }
        Ok(Self {
            active: active_id.to_owned(),
            keys,
        })
    }

    /// The id new writes are sealed with.
    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Seals one value (any JSON: its text is encrypted) with the active key.
    fn seal_value(&self, v: &Value) -> Result<String, SecretsError> {
        let key = self
            .keys
            .get(&self.active)
            .ok_or_else(|| SecretsError::UnknownKey {
                digest: String::new(),
                key_id: self.active.clone(),
            })?;
        let plain = v.to_string();
        let aad = format!("{ENVELOPE_PREFIX}{}", self.active);
        let derived = hmac_sha256(&key.nonce_key, &[aad.as_bytes(), &[0], plain.as_bytes()]);
        let mut nonce = [0u8; NONCE_BYTES];
        nonce.copy_from_slice(&derived[..NONCE_BYTES]);
        let sealed = key
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Corrupt {
                digest: String::new(),
                reason: "a Secret value is too long to encrypt".into(),
            })?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!(
            "{aad}:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens one envelope (`digest` names the snapshot in errors).
    fn open_value(&self, digest: &str, v: &Value) -> Result<Value, SecretsError> {
        let corrupt = |reason: &str| SecretsError::Corrupt {
            digest: digest.to_owned(),
            reason: reason.to_owned(),
        };
        let (key_id, body) = v
            .as_str()
            .and_then(|s| s.strip_prefix(ENVELOPE_PREFIX))
            .and_then(|s| s.split_once(':'))
            .ok_or_else(|| corrupt("a Secret value of an encrypted render is not encrypted"))?;
        let key = self
            .keys
            .get(key_id)
            .ok_or_else(|| SecretsError::UnknownKey {
                digest: digest.to_owned(),
                key_id: key_id.to_owned(),
            })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| corrupt("an encrypted Secret value is not base64"))?;
        if bytes.len() < NONCE_BYTES {
            return Err(corrupt("an encrypted Secret value is truncated"));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let mut n = [0u8; NONCE_BYTES];
        n.copy_from_slice(nonce);
        let aad = format!("{ENVELOPE_PREFIX}{key_id}");
        let plain = key
            .cipher
            .decrypt(
                &XNonce::from(n),
                Payload {
                    msg: sealed,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Decrypt {
                digest: digest.to_owned(),
                key_id: key_id.to_owned(),
            })?;
        serde_json::from_slice(&plain)
            .map_err(|_| corrupt("a decrypted Secret value is not the JSON that was sealed"))
    }

    /// A render's canonical JSON with every Secret `data`/`stringData` value sealed by the
    /// active key (everything else unchanged). `digest` names the render in errors.
    pub fn seal(&self, digest: &str, content: &str) -> Result<String, SecretsError> {
        let mut objects = parse_objects(digest, content)?;
        each_secret_value(&mut objects, |v| {
            *v = Value::String(self.seal_value(v).map_err(|e| match e {
                SecretsError::Corrupt { reason, .. } => SecretsError::Corrupt {
                    digest: digest.to_owned(),
                    reason,
                },
                other => other,
            })?);
            Ok(())
        })?;
        Ok(to_json(&objects))
    }
}

/// A stored render as it is to be applied: sealed Secret values opened. `key_id` is the row's
/// (`None`: written without a key, returned as it is). Fails, naming the render and the key,
/// when the key is missing or wrong; nothing is returned half-decrypted.
pub fn open(
    keyring: Option<&Keyring>,
    digest: &str,
    content: &str,
    key_id: Option<&str>,
) -> Result<String, SecretsError> {
    if key_id.is_none() {
        return Ok(content.to_owned());
    }
    let keyring = keyring.ok_or_else(|| SecretsError::NoKey {
        digest: digest.to_owned(),
    })?;
    let mut objects = parse_objects(digest, content)?;
    each_secret_value(&mut objects, |v| {
        *v = keyring.open_value(digest, v)?;
        Ok(())
    })?;
    Ok(to_json(&objects))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: [u8; 32] = [7; 32];
    const B: [u8; 32] = [9; 32];

    fn render() -> String {
        json!([
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
             "data": {"password": "aHVudGVyMg=="}, "stringData": {"token": "hunter2", "port": 5432}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"mode": "hunter2"}},
            {"apiVersion": "example.com/v1", "kind": "Secret", "metadata": {"name": "crd"}, "data": {"x": "y"}}
        ])
        .to_string()
    }

    #[test]
    fn sealing_hides_only_secret_values_and_opening_restores_them() {
        let ring = Keyring::new("k1", &A, &[]).unwrap();
        let sealed = ring.seal("d1", &render()).unwrap();
        // Only the ConfigMap's "hunter2" is left in clear.
        assert_eq!(sealed.matches("hunter2").count(), 1);
        assert!(!sealed.contains("aHVudGVyMg=="));
        assert!(!sealed.contains("5432"));
        let objects: Vec<Value> = serde_json::from_str(&sealed).unwrap();
        // Shape stays readable; a ConfigMap and a non-core "Secret" kind are left alone.
        assert!(objects[0]["stringData"]["token"]
            .as_str()
            .unwrap()
            .starts_with("tidemark:enc:v1:k1:"));
        assert_eq!(objects[1]["data"]["mode"], "hunter2");
        assert_eq!(objects[2]["data"]["x"], "y");
        let opened = open(Some(&ring), "d1", &sealed, Some("k1")).unwrap();
        let want: Vec<Value> = serde_json::from_str(&render()).unwrap();
        let got: Vec<Value> = serde_json::from_str(&opened).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn sealing_is_deterministic_per_key_so_diffs_see_real_changes_only() {
        let ring = Keyring::new("k1", &A, &[]).unwrap();
        assert_eq!(
            ring.seal("d", &render()).unwrap(),
            ring.seal("d", &render()).unwrap()
        );
        let other = render().replace("hunter2\"", "hunter3\"");
        assert_ne!(
            ring.seal("d", &render()).unwrap(),
            ring.seal("d", &other).unwrap()
        );
    }

    #[test]
    fn a_rotated_keyring_opens_old_values_and_seals_with_the_new_key() {
        let old = Keyring::new("k1", &A, &[]).unwrap();
        let sealed_old = old.seal("d", &render()).unwrap();
        let rotated = Keyring::new("k2", &B, &[("k1".into(), A)]).unwrap();
        assert_eq!(
            open(Some(&rotated), "d", &sealed_old, Some("k1")).unwrap(),
            open(Some(&old), "d", &sealed_old, Some("k1")).unwrap()
        );
        let sealed_new = rotated.seal("d", &render()).unwrap();
        assert!(sealed_new.contains("tidemark:enc:v1:k2:"));
        assert!(!sealed_new.contains("tidemark:enc:v1:k1:"));
    }

    #[test]
    fn a_missing_or_wrong_key_is_a_clear_error() {
        let sealed = Keyring::new("k1", &A, &[])
            .unwrap()
            .seal("d9", &render())
            .unwrap();
        let err = open(None, "d9", &sealed, Some("k1"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no key is configured") && err.contains("d9"),
            "{err}"
        );
        let other_id = Keyring::new("k2", &B, &[]).unwrap();
        let err = open(Some(&other_id), "d9", &sealed, Some("k1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key `k1`, which is not configured"), "{err}");
        let wrong = Keyring::new("k1", &B, &[]).unwrap();
        let err = open(Some(&wrong), "d9", &sealed, Some("k1"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong key"), "{err}");
        // A value altered in the database fails authentication too.
        let objects: Vec<Value> = serde_json::from_str(&sealed).unwrap();
        let env = objects[0]["stringData"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let flipped = format!("{}A{}", &env[..env.len() - 6], &env[env.len() - 5..]);
        let tampered = sealed.replace(&env, &flipped);
        assert!(open(
            Some(&Keyring::new("k1", &A, &[]).unwrap()),
            "d9",
            &tampered,
            Some("k1")
        )
        .is_err());
    }

    #[test]
    fn plaintext_rows_are_read_as_they_are() {
        let ring = Keyring::new("k1", &A, &[]).unwrap();
        assert_eq!(open(Some(&ring), "d", &render(), None).unwrap(), render());
        assert_eq!(open(None, "d", &render(), None).unwrap(), render());
    }

    #[test]
    fn an_envelope_coming_from_git_is_sealed_again_not_trusted() {
        // A manifest quoting another render's envelope gets that text back, never its plaintext.
        let ring = Keyring::new("k1", &A, &[]).unwrap();
        let stolen = ring.seal_value(&json!("hunter2")).unwrap();
        let content = json!([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"},
            "stringData": {"v": stolen}}])
        .to_string();
        let opened = open(
            Some(&ring),
            "d",
            &ring.seal("d", &content).unwrap(),
            Some("k1"),
        )
        .unwrap();
        assert!(opened.contains(&stolen) && !opened.contains("\"hunter2\""));
    }

    #[test]
    fn settings_reject_bad_keys_and_name_the_setting() {
        let mut s = SecretsSettings::default();
        assert!(Keyring::from_settings(&s).unwrap().is_none());
        s.key = Some(crate::config::Secret::new("c2hvcnQ="));
        let err = Keyring::from_settings(&s).unwrap_err().to_string();
        assert!(
            err.contains("secrets.key") && err.contains("32 bytes"),
            "{err}"
        );
        s.key = Some(crate::config::Secret::new(
            base64::engine::general_purpose::STANDARD.encode(A),
        ));
        s.key_id = "bad:id".into();
        assert!(Keyring::from_settings(&s).is_err());
        s.key_id = "k2".into();
        s.previous_keys.insert(
            "k1".into(),
            crate::config::Secret::new(base64::engine::general_purpose::STANDARD.encode(B)),
        );
        let ring = Keyring::from_settings(&s).unwrap().unwrap();
        assert_eq!(ring.active_id(), "k2");
        assert!(!format!("{ring:?}").contains("7, 7"));
    }
}
