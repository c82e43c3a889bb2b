//! The three kinds of target and what each receives.

use std::path::Path;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde_json::{json, Value};

use super::Trigger;
use crate::config::{NotificationTarget, TargetKind};

/// A target's settings could not be completed (a missing variable or unreadable file).
#[derive(Debug, thiserror::Error)]
#[error("notification target `{target}`: {message}")]
pub struct TargetError {
    pub target: String,
    pub message: String,
}

/// One notification, the same for every target and every attempt (but `attempt`).
#[derive(Debug, Clone)]
pub struct Message {
    pub idempotency_key: String,
    pub trigger: Trigger,
    pub application: String,
    pub project: String,
    pub occurred_at: i64,
    /// The timeline entry's message (already Secret-free).
    pub text: String,
    /// The application's timeline, at this entry.
    pub url: String,
    /// Identifiers and states only (see [`super::safe_detail`]).
    pub detail: Value,
    pub attempt: i64,
}

impl Message {
    /// The generic webhook's JSON body (identical across attempts).
    pub fn json(&self) -> Value {
        json!({
            "idempotency_key": self.idempotency_key,
            "trigger": self.trigger.as_str(),
            "title": self.trigger.title(),
            "application": self.application,
            "project": self.project,
            "occurred_at": crate::clock::rfc3339(self.occurred_at),
            "message": self.text,
            "url": self.url,
            "detail": self.detail,
        })
    }

    /// "Sync failed: guestbook".
    pub fn subject(&self) -> String {
        format!("{}: {}", self.trigger.title(), self.application)
    }

    /// Slack (and Mattermost/Rocket.Chat) incoming-webhook body: `text` for every client, and
    /// blocks with a context line carrying the idempotency key.
    pub fn slack(&self) -> Value {
        let mut text = format!(
            "*{}* — <{}|{}> ({}): {}",
            self.trigger.title(),
            self.url,
            self.application,
            self.project,
            self.text
        );
        if let Some(groups) = self.approvers() {
            text.push_str(&format!("\nApprovers: {groups}"));
        }
        json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("Tidemark · {} · event {}", crate::clock::rfc3339(self.occurred_at), self.idempotency_key)}]}
            ]
        })
    }

    /// The approver groups an approval request names ("platform, security"), if any.
    fn approvers(&self) -> Option<String> {
        let groups: Vec<&str> = self.detail["approvers"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (!groups.is_empty()).then(|| groups.join(", "))
    }

    /// The e-mail's plain-text body.
    pub fn mail_body(&self) -> String {
        let mut body = format!(
            "{}\n\nApplication: {} (project {})\nWhen: {}\nTimeline: {}\n",
            self.text,
            self.application,
            self.project,
            crate::clock::rfc3339(self.occurred_at),
            self.url
        );
        if let Some(map) = self.detail.as_object().filter(|m| !m.is_empty()) {
            body.push('\n');
            for (k, v) in map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| i.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                body.push_str(&format!("{k}: {v}\n"));
            }
        }
        body.push_str(&format!("\n-- \nTidemark event {}\n", self.idempotency_key));
        body
    }
}

/// A configured target with its secrets resolved.
pub enum Target {
    Webhook {
        url: String,
        secret: Option<String>,
        http: reqwest::Client,
    },
    Slack {
        url: String,
        http: reqwest::Client,
    },
    Email {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
}

fn read_secret(
    target: &str,
    what: &str,
    env_name: Option<&String>,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, TargetError> {
    let err = |message: String| TargetError {
        target: target.to_owned(),
        message,
    };
    if let Some(var) = env_name {
        return env(var)
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| err(format!("the {what} variable {var} is not set")));
    }
    if let Some(path) = file {
        return std::fs::read_to_string(path)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|e| {
                err(format!(
                    "cannot read the {what} file {}: {e}",
                    path.display()
                ))
            });
    }
    Ok(None)
}

impl Target {
    pub fn build(
        t: &NotificationTarget,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, TargetError> {
        let err = |message: String| TargetError {
            target: t.name.clone(),
            message,
        };
        let http = || {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent(concat!("Tidemark/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| err(format!("cannot build an HTTP client: {e}")))
        };
        let url = || -> Result<String, TargetError> {
            match &t.url {
                Some(url) => Ok(url.clone()),
                None => read_secret(
                    &t.name,
                    "URL",
                    t.url_env.as_ref(),
                    t.url_file.as_deref(),
                    env,
                )?
                .ok_or_else(|| err("no URL".into())),
            }
        };
        Ok(match t.kind {
            TargetKind::Webhook => Target::Webhook {
                url: url()?,
                secret: read_secret(
                    &t.name,
                    "HMAC secret",
                    t.secret_env.as_ref(),
                    t.secret_file.as_deref(),
                    env,
                )?,
                http: http()?,
            },
            TargetKind::Slack => Target::Slack {
                url: url()?,
                http: http()?,
            },
            TargetKind::Email => {
                let host = t.smtp_host.clone().unwrap_or_default();
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
                    .port(t.smtp_port.unwrap_or(587))
                    .timeout(Some(Duration::from_secs(10)));
                if t.starttls {
                    let mut tls = TlsParameters::builder(host.clone());
                    if let Some(ca) = &t.ca_file {
                        let pem = std::fs::read(ca).map_err(|e| {
                            err(format!("cannot read the CA file {}: {e}", ca.display()))
                        })?;
                        let cert = Certificate::from_pem(&pem).map_err(|e| {
                            err(format!(
                                "the CA file {} is not a PEM certificate: {e}",
                                ca.display()
                            ))
                        })?;
                        tls = tls.add_root_certificate(cert);
                    }
                    let tls = tls
                        .build_native()
                        .map_err(|e| err(format!("cannot set up TLS: {e}")))?;
                    builder = builder.tls(Tls::Required(tls));
                }
                if let Some(user) = &t.username {
                    let password = read_secret(
                        &t.name,
                        "SMTP password",
                        t.password_env.as_ref(),
                        t.password_file.as_deref(),
                        env,
                    )?
                    .unwrap_or_default();
                    builder = builder.credentials(Credentials::new(user.clone(), password));
                }
                let mailbox = |a: &str| {
                    a.parse::<Mailbox>()
                        .map_err(|e| err(format!("`{a}` is not an e-mail address: {e}")))
                };
                Target::Email {
                    transport: Box::new(builder.build()),
                    from: mailbox(t.from.as_deref().unwrap_or_default())?,
                    to: t.to.iter().map(|a| mailbox(a)).collect::<Result<_, _>>()?,
                }
            }
        })
    }

    /// One attempt. The error is a one-line reason for the deliveries page (no URL: Slack's
    /// carry their credential in the path).
    pub async fn send(&self, m: &Message) -> Result<(), String> {
        match self {
            Target::Webhook { url, secret, http } => {
                let body = m.json().to_string();
                let mut req = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-tidemark-event", m.trigger.as_str())
                    .header("x-tidemark-idempotency-key", &m.idempotency_key)
                    .header("x-tidemark-attempt", m.attempt.to_string());
                if let Some(secret) = secret {
                    req = req.header(
                        "x-tidemark-signature",
                        format!("sha256={}", sign(secret, &body)),
                    );
                }
                answer(req.body(body).send().await).await
            }
            Target::Slack { url, http } => {
                answer(http.post(url).json(&m.slack()).send().await).await
            }
            Target::Email {
                transport,
                from,
                to,
            } => {
                let mut mail = lettre::Message::builder()
                    .from(from.clone())
                    .subject(format!("[Tidemark] {}", m.subject()))
                    .message_id(Some(format!("<{}@tidemark>", m.idempotency_key)))
                    .header(ContentType::TEXT_PLAIN);
                for addr in to {
                    mail = mail.to(addr.clone());
                }
                let mail = mail
                    .body(m.mail_body())
                    .map_err(|e| format!("cannot build the e-mail: {e}"))?;
                transport
                    .send(mail)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("SMTP: {e}"))
            }
        }
    }
}

/// `hex(HMAC-SHA256(secret, body))`, what `X-Tidemark-Signature` carries after `sha256=`.
pub fn sign(secret: &str, body: &str) -> String {
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body.as_bytes());
            crate::store::hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    let response = sent.map_err(|e| {
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        // The innermost cause ("Connection refused (os error 111)"), never the URL: a Slack
        // URL carries its credential in the path.
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        let cause = cause.to_string();
        if cause.contains("://") {
            kind.to_owned()
        } else {
            format!("{kind}: {cause}")
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let body: String = body.chars().take(200).collect();
    Err(format!("HTTP {}: {}", status.as_u16(), body.trim()))
}
