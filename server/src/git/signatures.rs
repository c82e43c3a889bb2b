//! Verified commit signatures: the trusted keys of a repository and project (OpenPGP public keys
//! and SSH `allowed_signers` lines), and the verdict on a commit's or a signed tag's signature
//! against them, checked by Debian's own `gpgv` and `ssh-keygen -Y` under a timeout.
//!
//! The verdict never looks at the commit's author line: a verified signature names the trusted
//! key's identity (the OpenPGP user id, or the `allowed_signers` principal). Keys are content-
//! addressed: [`TrustedKeys::digest`] changes whenever the key material does, so verdicts stored
//! against older keys are recognisably stale (key rotation re-evaluates them).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use git2::{Oid, Repository};
use sha2::{Digest, Sha256};

pub use app::model::{SignatureStatus, SignatureVerdict};

/// Signatures larger than this are not checked (a commit signature is a few hundred bytes).
const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// A trusted key entry that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("trusted key {entry}: {message}")]
pub struct KeyError {
    /// The file path, or `inline #N` for inline material.
    pub entry: String,
    pub message: String,
}

/// The keys one application's revisions are checked against, written once under
/// `<cache>/trust/<digest>/` as a binary OpenPGP keyring and an `allowed_signers` file.
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    /// SHA-256 (hex) of the key material: equal keys, equal digest.
    pub digest: String,
    keyring: PathBuf,
    allowed_signers: PathBuf,
    home: PathBuf,
    /// How long one `gpgv` / `ssh-keygen` run may take.
    pub timeout: Duration,
    /// Keys configured (OpenPGP blocks + SSH lines), for logs.
    pub count: usize,
    /// Whether any OpenPGP key / any SSH `allowed_signers` line is configured.
    pub has_openpgp: bool,
    pub has_ssh: bool,
}

/// Decodes every ASCII-armored `PUBLIC KEY BLOCK` in `text` to binary OpenPGP packets.
fn dearmor(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
        let body = &rest[start + "-----BEGIN PGP PUBLIC KEY BLOCK-----".len()..];
        let end = body
            .find("-----END PGP PUBLIC KEY BLOCK-----")
            .ok_or("an armored key block has no END line")?;
        let lines: Vec<&str> = body[..end].lines().map(str::trim).collect();
        // Armor headers (`Comment: …`) end at the first blank line, when there are any.
        let first_data = match lines.iter().skip(1).position(|l| l.is_empty()) {
            Some(blank) if lines[1..=blank].iter().all(|l| l.contains(": ")) => blank + 2,
            _ => 0,
        };
        let b64: String = lines[first_data..]
            .iter()
            .filter(|l| !l.is_empty() && !l.starts_with('='))
            .copied()
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("an armored key block is not base64: {e}"))?;
        if bytes.first().is_none_or(|b| b & 0x80 == 0) {
            return Err("an armored key block holds no OpenPGP packets".into());
        }
        out.extend(bytes);
        rest = &body[end..];
    }
    Ok(out)
}

/// SSH `allowed_signers` lines in `text` (comments and blank lines left out), or `None` when
/// some line is not one (`principals [options] keytype base64-key [comment]`).
fn allowed_signer_lines(text: &str) -> Option<Vec<String>> {
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let key_type = |f: &str| {
        f.starts_with("ssh-")
            || f.starts_with("ecdsa-")
            || f.starts_with("sk-ssh-")
            || f.starts_with("sk-ecdsa-")
    };
    let ok = !lines.is_empty()
        && lines.iter().all(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() >= 3 && fields.iter().skip(1).any(|f| key_type(f))
        });
    ok.then_some(lines)
}

impl TrustedKeys {
    /// Loads `entries` (each a file path, or inline armored OpenPGP key(s), or inline
    /// `allowed_signers` lines) and writes them under `cache_dir/trust/<digest>/`.
    /// Errors name the entry at fault.
    pub fn load(entries: &[String], cache_dir: &Path, timeout: Duration) -> Result<Self, KeyError> {
        let mut openpgp = Vec::new();
        let mut ssh: Vec<String> = Vec::new();
        let mut count = 0;
        for (i, entry) in entries.iter().enumerate() {
            let inline = entry.contains('\n')
                || entry.contains("-----BEGIN")
                || allowed_signer_lines(entry).is_some();
            let name = if inline {
                format!("inline #{}", i + 1)
            } else {
                entry.clone()
            };
            let err = |message: String| KeyError {
                entry: name.clone(),
                message,
            };
            let bytes = if inline {
                entry.as_bytes().to_vec()
            } else {
                std::fs::read(entry).map_err(|e| err(format!("cannot read it: {e}")))?
            };
            if !inline && bytes.first().is_some_and(|b| b & 0x80 != 0) {
                openpgp.extend(bytes); // a binary keyring (`gpg --export`)
                count += 1;
                continue;
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| err("neither a binary OpenPGP keyring nor text".into()))?;
            if text.contains("-----BEGIN PGP PUBLIC KEY BLOCK-----") {
                let packets = dearmor(&text).map_err(err)?;
                count += text.matches("-----BEGIN PGP PUBLIC KEY BLOCK-----").count();
                openpgp.extend(packets);
            } else if let Some(lines) = allowed_signer_lines(&text) {
                count += lines.len();
                ssh.extend(lines);
            } else {
                return Err(err(
                    "neither an OpenPGP public key (armored or binary) nor SSH allowed_signers lines"
                        .into(),
                ));
            }
        }
        let mut hash = Sha256::new();
        hash.update(b"openpgp\0");
        hash.update(&openpgp);
        hash.update(b"\0ssh\0");
        for line in &ssh {
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
        let digest = crate::store::hex(&hash.finalize());
        let dir = cache_dir.join("trust").join(&digest[..32]);
        let write_err = |e: std::io::Error| KeyError {
            entry: dir.display().to_string(),
            message: format!("cannot write the trusted keys: {e}"),
        };
        let home = dir.join("home");
        std::fs::create_dir_all(&home).map_err(write_err)?;
        // Only this user reads or replaces the keys Tidemark trusts.
        for d in [dir.parent().unwrap_or(&dir), dir.as_path()] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(write_err)?;
        }
        let keyring = dir.join("keyring.gpg");
        let allowed_signers = dir.join("allowed_signers");
        let mut signers = ssh.join("\n");
        signers.push('\n');
        for (path, content) in [
            (&keyring, &openpgp[..]),
            (&allowed_signers, signers.as_bytes()),
        ] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, content).map_err(write_err)?;
            std::fs::rename(&tmp, path).map_err(write_err)?;
        }
        Ok(Self {
            digest,
            keyring,
            allowed_signers,
            home,
            timeout,
            count,
            has_openpgp: !openpgp.is_empty(),
            has_ssh: !ssh.is_empty(),
        })
    }

    /// The verdict on `signature` (ASCII-armored OpenPGP or SSH) over `payload`, or why it
    /// could not be checked now (a tool missing or timed out, no scratch space): such a
    /// commit is not given a verdict and is checked again on the next fetch.
    pub fn verify(&self, signature: &[u8], payload: &[u8]) -> Result<SignatureVerdict, String> {
        let text = String::from_utf8_lossy(signature);
        if signature.len() > MAX_SIGNATURE_BYTES {
            return Ok(verdict(
                SignatureStatus::BadSignature,
                None,
                None,
                None,
                Some("the signature is larger than 64 KiB; not checked"),
            ));
        }
        if text.contains("-----BEGIN SSH SIGNATURE-----") {
            self.verify_ssh(signature, payload)
        } else if text.contains("-----BEGIN PGP SIGNATURE-----") {
            self.verify_openpgp(signature, payload)
        } else {
            Ok(verdict(
                SignatureStatus::UnknownKey,
                None,
                None,
                None,
                Some("a signature of a kind Tidemark does not check (X.509?)"),
            ))
        }
    }

    /// Whether the checker of each configured kind of key runs here (`gpgv` for OpenPGP keys,
    /// `ssh-keygen` for SSH ones, and coreutils' `timeout`). Errors name what is missing.
    pub fn check_tools(&self) -> Result<(), String> {
        let mut needed = vec![("timeout", "--version", "coreutils")];
        if self.has_openpgp {
            needed.push(("gpgv", "--version", "gpgv"));
        }
        if self.has_ssh {
            needed.push(("ssh-keygen", "-?", "openssh-client"));
        }
        for (program, arg, package) in needed {
            let runs = Command::new(program)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok();
            if !runs {
                return Err(format!(
                    "`{program}` checks commit signatures and is not on PATH (Debian package {package})"
                ));
            }
        }
        Ok(())
    }

    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&Path>,
    ) -> Result<(i32, String), String> {
        let secs = self.timeout.as_secs().max(1).to_string();
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=2", &secs, program])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match stdin {
            Some(path) => cmd.stdin(std::fs::File::open(path).map_err(|e| e.to_string())?),
            None => cmd.stdin(Stdio::null()),
        };
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let code = out.status.code().unwrap_or(-1);
        if code == 124 || code == 137 {
            return Err(format!("{program} timed out after {secs}s"));
        }
        Ok((code, String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn verify_openpgp(&self, signature: &[u8], payload: &[u8]) -> Result<SignatureVerdict, String> {
        let dir = scratch(signature, payload)?;
        let (sig, data) = (dir.path().join("sig"), dir.path().join("payload"));
        let home = dir.path().join("gnupg");
        std::fs::create_dir(&home).map_err(|e| e.to_string())?;
        let (code, status) = self.run(
            "gpgv",
            &[
                "--homedir",
                path_str(&home)?,
                "--keyring",
                path_str(&self.keyring)?,
                "--status-fd",
                "1",
                path_str(&sig)?,
                path_str(&data)?,
            ],
            None,
        )?;
        let mut good_uid = None;
        let mut valid_fpr = None;
        let mut bad = false;
        let mut unknown_key = None;
        let mut problem = None;
        for line in status.lines() {
            let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
                continue;
            };
            let fields: Vec<&str> = rest.split(' ').collect();
            match fields[0] {
                "GOODSIG" => good_uid = Some(fields[2..].join(" ")),
                // VALIDSIG <signing key fpr> … <primary key fpr>
                "VALIDSIG" => valid_fpr = fields.last().map(|f| (*f).to_owned()),
                "BADSIG" => bad = true,
                "ERRSIG" => {
                    let fpr = fields.get(7).filter(|f| f.len() >= 32).or(fields.get(1));
                    unknown_key = fpr.map(|f| (*f).to_owned());
                }
                "EXPKEYSIG" => problem = Some("signed by an expired key"),
                "REVKEYSIG" => problem = Some("signed by a revoked key"),
                "EXPSIG" => problem = Some("the signature has expired"),
                _ => {}
            }
        }
        let method = Some("openpgp");
        Ok(if bad {
            verdict(
                SignatureStatus::BadSignature,
                method,
                None,
                None,
                Some("the signature does not match the commit"),
            )
        } else if let Some(why) = problem {
            verdict(
                SignatureStatus::UnknownKey,
                method,
                None,
                valid_fpr.as_deref(),
                Some(why),
            )
        } else if let (0, Some(uid), Some(fpr)) = (code, good_uid, valid_fpr.clone()) {
            verdict(
                SignatureStatus::Verified,
                method,
                Some(&uid),
                Some(&fpr),
                None,
            )
        } else if let Some(fpr) = unknown_key {
            verdict(
                SignatureStatus::UnknownKey,
                method,
                None,
                Some(&fpr),
                Some("no trusted key matches"),
            )
        } else {
            verdict(
                SignatureStatus::BadSignature,
                method,
                None,
                valid_fpr.as_deref(),
                Some("gpgv could not check the signature"),
            )
        })
    }

    fn verify_ssh(&self, signature: &[u8], payload: &[u8]) -> Result<SignatureVerdict, String> {
        let dir = scratch(signature, payload)?;
        let (sig, data) = (dir.path().join("sig"), dir.path().join("payload"));
        let method = Some("ssh");
        let fingerprint = |out: &str| {
            out.split_whitespace()
                .find(|w| w.starts_with("SHA256:"))
                .map(str::to_owned)
        };
        // Which trusted principals hold the signature's key (no cryptography yet)…
        let (code, principals) = self.run(
            "ssh-keygen",
            &[
                "-Y",
                "find-principals",
                "-s",
                path_str(&sig)?,
                "-f",
                path_str(&self.allowed_signers)?,
            ],
            None,
        )?;
        let principals: Vec<&str> = if code == 0 {
            principals
                .lines()
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect()
        } else {
            Vec::new()
        };
        // …and is it a good signature of the commit by that key, valid for one of them now?
        for principal in &principals {
            let (code, out) = self.run(
                "ssh-keygen",
                &[
                    "-Y",
                    "verify",
                    "-f",
                    path_str(&self.allowed_signers)?,
                    "-I",
                    principal,
                    "-n",
                    "git",
                    "-s",
                    path_str(&sig)?,
                ],
                Some(&data),
            )?;
            if code == 0 {
                return Ok(verdict(
                    SignatureStatus::Verified,
                    method,
                    Some(principal),
                    fingerprint(&out).as_deref(),
                    None,
                ));
            }
        }
        // Not verified: a good signature by some other key, or no good signature at all?
        let (code, out) = self.run(
            "ssh-keygen",
            &["-Y", "check-novalidate", "-n", "git", "-s", path_str(&sig)?],
            Some(&data),
        )?;
        Ok(if code != 0 {
            verdict(
                SignatureStatus::BadSignature,
                method,
                None,
                None,
                Some("the signature does not match the commit"),
            )
        } else if principals.is_empty() {
            verdict(
                SignatureStatus::UnknownKey,
                method,
                None,
                fingerprint(&out).as_deref(),
                Some("no trusted key matches"),
            )
        } else {
            verdict(
                SignatureStatus::UnknownKey,
                method,
                None,
                fingerprint(&out).as_deref(),
                Some("the key is trusted, but not for this signature now (valid-after/valid-before?)"),
            )
        })
    }
}

fn verdict(
    status: SignatureStatus,
    method: Option<&str>,
    signer: Option<&str>,
    fingerprint: Option<&str>,
    detail: Option<&str>,
) -> SignatureVerdict {
    SignatureVerdict {
        status,
        method: method.map(str::to_owned),
        signer: signer.map(str::to_owned),
        fingerprint: fingerprint.map(str::to_owned),
        via: None,
        detail: detail.map(str::to_owned),
    }
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

/// A private directory holding `sig` and `payload`.
fn scratch(signature: &[u8], payload: &[u8]) -> Result<tempfile::TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("tidemark-sig-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    for (name, content) in [("sig", signature), ("payload", payload)] {
        let mut f = std::fs::File::create(dir.path().join(name)).map_err(|e| e.to_string())?;
        f.write_all(content).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// The verdict on commit `id`'s own signature (`gpgsig` header); `Err` when it could not be
/// checked now (see [`TrustedKeys::verify`]).
pub fn verify_commit(
    repo: &Repository,
    id: Oid,
    keys: &TrustedKeys,
) -> Result<SignatureVerdict, String> {
    match repo.extract_signature(&id, None) {
        Ok((signature, payload)) => keys.verify(&signature, &payload),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(SignatureVerdict::unsigned()),
        Err(e) => Err(e.message().to_owned()),
    }
}

/// The verdict on annotated tag object `tag`'s signature (appended to its message), or
/// `None` when `tag` is not a tag object; `Some(Err)` when it could not be checked now.
pub fn verify_tag(
    repo: &Repository,
    tag: Oid,
    keys: &TrustedKeys,
) -> Option<Result<SignatureVerdict, String>> {
    let odb = repo.odb().ok()?;
    let object = odb.read(tag).ok()?;
    if object.kind() != git2::ObjectType::Tag {
        return None;
    }
    let data = object.data();
    let text = String::from_utf8_lossy(data);
    // The signed payload is the tag object up to its last signature block that starts a line
    // (as git's `parse_signed_buffer`: a message may quote a signature).
    let start = [
        "-----BEGIN PGP SIGNATURE-----",
        "-----BEGIN SSH SIGNATURE-----",
    ]
    .iter()
    .filter_map(|marker| {
        text.match_indices(marker)
            .map(|(i, _)| i)
            .filter(|i| *i == 0 || data[i - 1] == b'\n')
            .last()
    })
    .max();
    Some(match start {
        Some(i) => keys.verify(&data[i..], &data[..i]),
        None => Ok(SignatureVerdict::unsigned()),
    })
}

/// When `revision` resolves through `refs/tags/<revision>` (no branch of that name: branches
/// win, as in [`super::Mirror::resolve`]) to an annotated tag: the tag object's id and the
/// commit it points at (peeled).
pub fn tag_object(repo: &Repository, revision: &str) -> Option<(Oid, Oid)> {
    if repo
        .find_reference(&format!("refs/heads/{revision}"))
        .is_ok()
    {
        return None;
    }
    let reference = repo.find_reference(&format!("refs/tags/{revision}")).ok()?;
    let id = reference.target()?;
    let tag = repo.find_tag(id).ok()?;
    let commit = tag.as_object().peel_to_commit().ok()?;
    Some((id, commit.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_and_dearmors_key_material() {
        let line = "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYGCqGsPda6jRvrCDxvC7g+umMuB2nWkrZ8Nz1600Xu";
        assert_eq!(allowed_signer_lines(line).map(|l| l.len()), Some(1));
        assert!(allowed_signer_lines("keys/alice.asc").is_none());
        assert!(
            allowed_signer_lines("alice@example.com namespaces=\"git\" ssh-ed25519 AAAA").is_some()
        );
        let armored = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\nmDMEZ0000BYJKwYBBAHaRw8BAQdA\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n";
        let bytes = dearmor(armored).expect("dearmor");
        assert_eq!(bytes[0], 0x98);
        assert!(dearmor("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n").is_err());
    }

    #[test]
    fn keys_are_content_addressed_and_bad_entries_named() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(5);
        let line = "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHYGCqGsPda6jRvrCDxvC7g+umMuB2nWkrZ8Nz1600Xu".to_owned();
        let a = TrustedKeys::load(std::slice::from_ref(&line), dir.path(), t).unwrap();
        let b = TrustedKeys::load(&[format!("# ops\n{line}\n")], dir.path(), t).unwrap();
        assert_eq!(a.digest, b.digest);
        let none = TrustedKeys::load(&[], dir.path(), t).unwrap();
        assert_ne!(a.digest, none.digest);
        let err = TrustedKeys::load(&["/nonexistent/keys.asc".into()], dir.path(), t).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/keys.asc"), "{err}");
        assert_eq!(
            none.verify(b"not a signature", b"x").map(|v| v.status),
            Ok(SignatureStatus::UnknownKey)
        );
    }
}
