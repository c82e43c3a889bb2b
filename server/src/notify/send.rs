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
    /// blocks with a context line carrying the idempotency key. Every value is mrkdwn-escaped
    /// ([`slack_escape`]): only the link this builds is a link.
    pub fn slack(&self) -> Value {
        let mut text = format!(
            "*{}* — <{}|{}> ({}): {}",
            self.trigger.title(),
            slack_escape(&self.url).replace('|', "%7C"),
            slack_escape(&self.application),
            slack_escape(&self.project),
            slack_escape(&self.text)
        );
        if let Some(groups) = self.approvers() {
            text.push_str(&format!("\nApprovers: {}", slack_escape(&groups)));
        }
        json!({
            "text": text,
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": format!("Tidemark · {} · event {}", crate::clock::rfc3339(self.occurred_at), slack_escape(&self.idempotency_key))}]}
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

    /// The e-mail, ready to send: a one-line `Subject` (control characters dropped, then
    /// encoded by lettre's typed header) and a plain-text body (not HTML: nothing in it is
    /// markup).
    pub fn mail(&self, from: &Mailbox, to: &[Mailbox]) -> Result<lettre::Message, String> {
        let mut mail = lettre::Message::builder()
            .from(from.clone())
            .subject(header_text(&format!("[Tidemark] {}", self.subject())))
            .message_id(Some(format!(
                "<{}@tidemark>",
                self.idempotency_key
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .collect::<String>()
            )))
            .header(ContentType::TEXT_PLAIN);
        for addr in to {
            mail = mail.to(addr.clone());
        }
        mail.body(plain_text(&self.mail_body()))
            .map_err(|e| format!("cannot build the e-mail: {e}"))
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
                let mail = m.mail(from, to)?;
                transport
                    .send(mail)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("SMTP: {e}"))
            }
        }
    }
}

/// Text for Slack mrkdwn: `&`, `<` and `>` as `&amp;`, `&lt;` and `&gt;` (Slack's own escaping),
/// so text from people or Git cannot form a mention (`<!channel>`, `<@U123>`), a link
/// (`<https://x|y>`) or a special command.
pub fn slack_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A header value: every control character (CR, LF, NUL, tab, DEL, C1) becomes a space, so a
/// value can never end its header line or start another.
pub fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A plain-text body: line ends as LF, control characters other than LF and tab dropped
/// (terminal escapes, bare CR, NUL).
pub fn plain_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a person or Git can put into a message, at once.
    const HOSTILE: &str = "<!channel> <!here> <@U123> <https://evil.example|Click here> &amp; \
         x\r\nBcc: evil@example.com <script>alert(1)</script>";

    fn hostile_message() -> Message {
        Message {
            idempotency_key: "k-1".into(),
            trigger: Trigger::RollbackPerformed,
            application: "x\r\nBcc: evil@example.com".into(),
            project: "<!channel>".into(),
            occurred_at: 0,
            text: format!("rolled back: {HOSTILE}"),
            url: "https://t.example/applications/x?tab=timeline#e1".into(),
            detail: json!({"approvers": ["<@U123>", "a&b"], "cause": HOSTILE}),
            attempt: 1,
        }
    }

    #[test]
    fn slack_text_cannot_mention_link_or_command() {
        let body = hostile_message().slack();
        for text in [
            body["text"].as_str().unwrap(),
            body["blocks"][0]["text"]["text"].as_str().unwrap(),
        ] {
            for formed in [
                "<!channel>",
                "<!here>",
                "<@U123>",
                "<https://evil",
                "<script",
            ] {
                assert!(!text.contains(formed), "{formed} in {text}");
            }
            assert!(
                text.contains("&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt;"),
                "{text}"
            );
            assert!(
                text.contains("&lt;https://evil.example|Click here&gt;"),
                "{text}"
            );
            // An entity typed by someone stays text, it does not become `&`.
            assert!(text.contains("&amp;amp;"), "{text}");
            assert!(text.contains("Approvers: &lt;@U123&gt;, a&amp;b"), "{text}");
            // The one link is Tidemark's own.
            assert_eq!(text.matches('<').count(), 1, "{text}");
            assert!(text.contains("<https://t.example/applications/x?tab=timeline#e1|x\r\nBcc"));
        }
    }

    #[test]
    fn slack_escape_escapes_exactly_the_three_control_characters() {
        assert_eq!(
            slack_escape("a & b < c > d *e* _f_"),
            "a &amp; b &lt; c &gt; d *e* _f_"
        );
    }

    #[test]
    fn e_mail_headers_carry_no_injected_line_and_the_body_no_control_characters() {
        let from: Mailbox = "Tidemark <t@example.com>".parse().unwrap();
        let to: Vec<Mailbox> = vec!["oncall@example.com".parse().unwrap()];
        let mut m = hostile_message();
        m.idempotency_key = "k-1>\r\nBcc: evil@example.com".into();
        m.text.push_str(" \u{1b}[31mred\u{0}");
        let raw = String::from_utf8(m.mail(&from, &to).unwrap().formatted()).unwrap();
        let (headers, body) = raw.split_once("\r\n\r\n").unwrap();
        let names: Vec<&str> = headers
            .split("\r\n")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('\t'))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.eq_ignore_ascii_case("bcc")),
            "{headers}"
        );
        assert_eq!(
            names.iter().filter(|n| **n == "Subject").count(),
            1,
            "{headers}"
        );
        assert!(
            headers.contains("Subject: [Tidemark] Rolled back: x  Bcc: evil@example.com\r\n"),
            "{headers}"
        );
        assert!(
            !body.contains('\u{1b}') && !body.contains('\u{0}'),
            "{body}"
        );
        // The reason is still there for the reader, as text.
        assert!(body.contains("Bcc: evil@example.com <script>"), "{body}");
        assert_eq!(header_text("x\r\nBcc: y\u{0}\t"), "x  Bcc: y  ");
        assert_eq!(plain_text("a\r\nb\rc\u{7}\td"), "a\nbc\td");
    }

    #[test]
    fn the_webhook_json_carries_hostile_text_exactly_and_escaped() {
        let m = hostile_message();
        let body = m.json().to_string();
        assert!(!body.contains('\r') && !body.contains('\n'), "{body}");
        let back: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(back["message"], format!("rolled back: {HOSTILE}"));
        assert_eq!(back["application"], "x\r\nBcc: evil@example.com");
        assert_eq!(back["detail"]["cause"], HOSTILE);
    }
}
