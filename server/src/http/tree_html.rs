//! The application page's Tree tab, rendered on the server as plain HTML (nested lists with
//! `<details>`, GET forms, POST forms to a server function): it works before — and without —
//! the WASM, and costs the WASM nothing. Pure functions of the tree and the caller's rights.

use std::fmt::Write;

use crate::cluster::health::Health;
use crate::cluster::tree::{summarize, TreeNode};
use crate::engine::live::Manifest;

/// Siblings of one kind beyond this many are folded into a summary line.
pub const GROUP_AT: usize = 5;

/// What the tab shows besides the tree.
pub enum Panel {
    None,
    /// One object's live manifest beside the desired one.
    Manifest(Manifest),
    /// The last lines of a pod's container log.
    Logs {
        namespace: String,
        pod: String,
        container: String,
        containers: Vec<String>,
        text: String,
    },
    /// Why the panel could not be shown.
    Error(String),
}

/// What the caller may do (buttons are shown only then; the server checks again).
#[derive(Debug, Clone, Copy)]
pub struct Rights {
    pub act: bool,
    pub logs: bool,
}

/// Escapes text for HTML element content and quoted attribute values (`&`, `<`, `>`, `"`,
/// `'`).
pub fn esc(s: &str) -> String {
    html_escape::encode_quoted_attribute(s).into_owned()
}

fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `apiVersion|kind|namespace|name`, the `node` query value naming one object.
pub fn node_key(n: &TreeNode) -> String {
    format!("{}|{}|{}|{}", n.api_version, n.kind, n.namespace, n.name)
}

/// Age of an RFC 3339 timestamp at `now_ms`: "45s", "12m", "5h", "3d" (empty when unreadable).
pub fn age(created: &str, now_ms: i64) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return String::new();
    };
    let s = ((now_ms - t.timestamp_millis()) / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn tone(h: Health) -> (&'static str, &'static str) {
    match h {
        Health::Healthy => ("ok", "♥"),
        Health::Progressing => ("info", "◔"),
        Health::Degraded => ("bad", "✕"),
        Health::Missing => ("warn", "?"),
        Health::Unknown => ("muted", "?"),
    }
}

fn action_form(app: &str, n: &TreeNode, action: &str, label: &str, warning: &str) -> String {
    format!(
        r#"<details class="node-action"><summary>{label}</summary><form method="post" action="/_fn/resource_action" class="confirm" data-testid="action-{action}">
<input type="hidden" name="name" value="{app}"><input type="hidden" name="action" value="{action}">
<input type="hidden" name="api_version" value="{av}"><input type="hidden" name="kind" value="{kind}">
<input type="hidden" name="namespace" value="{ns}"><input type="hidden" name="object" value="{name}">
<p>{warning}</p><label>Reason <input name="reason" placeholder="optional"></label>
<button type="submit" class="danger">{label} {kind}/{name}</button></form></details>"#,
        app = esc(app),
        av = esc(&n.api_version),
        kind = esc(&n.kind),
        ns = esc(&n.namespace),
        name = esc(&n.name),
    )
}

fn node_line(out: &mut String, app: &str, n: &TreeNode, now_ms: i64, rights: Rights) {
    let (cls, icon) = tone(n.health);
    let href = format!("/applications/{}?tab=tree&node={}", q(app), q(&node_key(n)));
    let _ = write!(
        out,
        r#"<span class="node" data-kind="{kind}" data-name="{name}" data-health="{health:?}"><span class="status {cls}" title="{health:?}"><span aria-hidden="true">{icon} </span>{health:?}</span> <span class="kind">{kind}</span> <a class="mono" href="{href}">{name}</a>{status}"#,
        kind = esc(&n.kind),
        name = esc(&n.name),
        health = n.health,
        status = if n.status.is_empty() {
            String::new()
        } else {
            format!(r#" <span class="chip">{}</span>"#, esc(&n.status))
        },
    );
    let age = age(&n.created, now_ms);
    if !age.is_empty() {
        let _ = write!(
            out,
            r#" <span class="muted" title="{}">{age}</span>"#,
            esc(&n.created)
        );
    }
    if !n.message.is_empty() && n.health != Health::Healthy {
        let _ = write!(out, r#" <span class="muted">{}</span>"#, esc(&n.message));
    }
    if n.in_git {
        let diff = format!(
            "/applications/{}?tab=diff&resource={}",
            q(app),
            q(&format!("{}/{}/{}", n.kind, n.namespace, n.name))
        );
        let _ = write!(out, r#" <a class="muted" href="{diff}">diff</a>"#);
    }
    if n.kind == "Pod" && n.api_version == "v1" && rights.logs && !n.uid.is_empty() {
        let logs = format!(
            "/applications/{}?tab=tree&logs={}",
            q(app),
            q(&format!("{}/{}", n.namespace, n.name))
        );
        let _ = write!(out, r#" <a href="{logs}" data-testid="logs-link">logs</a>"#);
    }
    out.push_str("</span>");
    if rights.act && !n.uid.is_empty() {
        if n.api_version == "apps/v1"
            && matches!(n.kind.as_str(), "Deployment" | "StatefulSet" | "DaemonSet")
        {
            out.push_str(&action_form(
                app,
                n,
                "restart",
                "Restart",
                "Replaces every pod, one by one (kubectl rollout restart). The restart annotation is Tidemark's, not Git's: it is not drift.",
            ));
        }
        if n.api_version == "v1" && n.kind == "Pod" {
            out.push_str(&action_form(
                app,
                n,
                "delete",
                "Delete",
                "Deletes this pod; its controller creates a new one.",
            ));
        }
    }
}

fn nodes_html(out: &mut String, app: &str, nodes: &[TreeNode], now_ms: i64, rights: Rights) {
    out.push_str(r#"<ul class="tree">"#);
    let mut kinds: Vec<&str> = Vec::new();
    for n in nodes {
        if !kinds.contains(&n.kind.as_str()) {
            kinds.push(&n.kind);
        }
    }
    for kind in kinds {
        let of_kind: Vec<&TreeNode> = nodes.iter().filter(|n| n.kind == kind).collect();
        let grouped = of_kind.len() > GROUP_AT;
        if grouped {
            let worst = of_kind
                .iter()
                .map(|n| n.health)
                .max()
                .unwrap_or(Health::Healthy);
            let (cls, _) = tone(worst);
            let _ = write!(
                out,
                r#"<li><details class="group" data-testid="group"><summary><span class="status {cls}">{}</span></summary><ul class="tree">"#,
                esc(&summarize(kind, &of_kind))
            );
        }
        for n in of_kind {
            out.push_str("<li>");
            if n.children.is_empty() {
                node_line(out, app, n, now_ms, rights);
            } else {
                out.push_str("<details open><summary>");
                node_line(out, app, n, now_ms, rights);
                out.push_str("</summary>");
                nodes_html(out, app, &n.children, now_ms, rights);
                out.push_str("</details>");
            }
            out.push_str("</li>");
        }
        if grouped {
            out.push_str("</ul></details></li>");
        }
    }
    out.push_str("</ul>");
}

fn all_kinds(nodes: &[TreeNode], out: &mut Vec<String>) {
    for n in nodes {
        if !out.contains(&n.kind) {
            out.push(n.kind.clone());
        }
        all_kinds(&n.children, out);
    }
}

fn yaml(v: &Option<serde_json::Value>, missing: &str) -> String {
    match v {
        Some(v) => serde_saphyr::to_string(v).unwrap_or_else(|e| format!("(cannot show: {e})")),
        None => missing.to_owned(),
    }
}

/// The whole tab: filters, the tree (or why it is empty) and the panel.
#[allow(clippy::too_many_arguments)]
pub fn tab(
    app: &str,
    nodes: &[TreeNode],
    kinds_before_filter: &[TreeNode],
    kind: &str,
    health: &str,
    panel: &Panel,
    rights: Rights,
    now_ms: i64,
) -> String {
    let mut out = String::new();
    let mut kinds = Vec::new();
    all_kinds(kinds_before_filter, &mut kinds);
    kinds.sort();
    let _ = write!(
        out,
        r#"<form method="get" action="/applications/{app}" class="filters tree-filters" role="search"><input type="hidden" name="tab" value="tree"><label>Kind <select name="kind"><option value="">all</option>"#,
        app = esc(app)
    );
    for k in &kinds {
        let sel = if k == kind { " selected" } else { "" };
        let _ = write!(out, r#"<option{sel}>{}</option>"#, esc(k));
    }
    out.push_str(
        r#"</select></label> <label>Health <select name="health"><option value="">all</option>"#,
    );
    for h in ["Healthy", "Progressing", "Degraded", "Missing", "Unknown"] {
        let sel = if h.eq_ignore_ascii_case(health) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, r#"<option{sel}>{h}</option>"#);
    }
    out.push_str(r#"</select></label> <button type="submit">Filter</button></form>"#);
    match panel {
        Panel::None => {}
        Panel::Error(e) => {
            let _ = write!(out, r#"<p class="alert bad" role="alert">{}</p>"#, esc(e));
        }
        Panel::Manifest(m) => {
            let o = &m.object;
            let managed = if m.managed_fields {
                format!(
                    r#"<a href="/applications/{}?tab=tree&node={}">Hide managedFields</a>"#,
                    q(app),
                    q(&format!(
                        "{}|{}|{}|{}",
                        o.api_version, o.kind, o.namespace, o.name
                    ))
                )
            } else {
                format!(
                    r#"<a href="/applications/{}?tab=tree&node={}&managed=1">Show managedFields</a>"#,
                    q(app),
                    q(&format!(
                        "{}|{}|{}|{}",
                        o.api_version, o.kind, o.namespace, o.name
                    ))
                )
            };
            let _ = write!(
                out,
                r#"<section class="panel live-manifest" data-testid="live-manifest" aria-label="Live manifest"><h3>{kind}/{name} <span class="muted">{ns}</span></h3><p>{managed} · <a href="/applications/{app}?tab=tree">Close</a></p><div class="side-by-side"><div><h4>Live</h4><pre class="mono">{live}</pre></div><div><h4>Desired (Git)</h4><pre class="mono">{desired}</pre></div></div></section>"#,
                kind = esc(&o.kind),
                name = esc(&o.name),
                ns = esc(&o.namespace),
                app = q(app),
                live = esc(&yaml(&m.live, "(not in the cluster)")),
                desired = esc(&yaml(
                    &m.desired,
                    "(not declared in Git: created by a controller)"
                )),
            );
        }
        Panel::Logs {
            namespace,
            pod,
            container,
            containers,
            text,
        } => {
            let base = format!(
                "/api/v1/applications/{}/pods/{}/{}/logs?container={}",
                q(app),
                q(namespace),
                q(pod),
                q(container)
            );
            let _ = write!(
                out,
                r#"<section class="panel logs" data-testid="pod-logs" aria-label="Pod logs"><h3>Logs of {ns}/{pod}</h3><form method="get" action="/applications/{app_q}" class="filters"><input type="hidden" name="tab" value="tree"><input type="hidden" name="logs" value="{ns}/{pod}"><label>Container <select name="container">"#,
                ns = esc(namespace),
                pod = esc(pod),
                app_q = q(app),
            );
            for c in containers {
                let sel = if c == container { " selected" } else { "" };
                let _ = write!(out, r#"<option{sel}>{}</option>"#, esc(c));
            }
            let _ = write!(
                out,
                r#"</select></label> <button type="submit">Show</button> <a href="{dl}&amp;tail=10000&amp;download=true">Download</a> <button type="button" data-follow="{follow}" data-testid="follow">Follow</button> <a href="/applications/{app_q}?tab=tree">Close</a></form><pre class="mono log" data-testid="log-text">{text}</pre></section>"#,
                dl = esc(&base),
                follow = esc(&format!("{base}&follow=true&tail=0")),
                app_q = q(app),
                text = esc(text),
            );
        }
    }
    if nodes.is_empty() {
        out.push_str(if kinds_before_filter.is_empty() {
            r#"<section class="empty"><h2>No resources yet</h2><p>The tree appears once the application's revision is rendered; check the timeline for Git or render errors.</p></section>"#
        } else {
            r#"<p class="muted">No resource matches these filters.</p>"#
        });
        return out;
    }
    let count: usize = nodes.iter().map(TreeNode::count).sum();
    let _ = write!(
        out,
        r#"<div class="resource-tree" data-testid="resource-tree" data-count="{count}">"#
    );
    nodes_html(&mut out, app, nodes, now_ms, rights);
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: &str, name: &str, status: &str, health: Health) -> TreeNode {
        TreeNode {
            api_version: if kind == "Pod" {
                "v1".into()
            } else {
                "apps/v1".into()
            },
            kind: kind.into(),
            namespace: "shop".into(),
            name: name.into(),
            uid: format!("u-{name}"),
            health,
            message: String::new(),
            status: status.into(),
            created: "2026-12-01T00:00:00Z".into(),
            in_git: kind == "Deployment",
            children: Vec::new(),
        }
    }

    #[test]
    fn many_pods_fold_into_a_summary_and_names_are_escaped() {
        let mut rs = node("ReplicaSet", "web-1", "7/7 ready", Health::Healthy);
        for i in 0..6 {
            rs.children.push(node(
                "Pod",
                &format!("web-1-{i}"),
                "Running",
                Health::Healthy,
            ));
        }
        rs.children
            .push(node("Pod", "web-1-x", "CrashLoopBackOff", Health::Degraded));
        let mut d = node("Deployment", "web<script>", "7/7 ready", Health::Degraded);
        d.children.push(rs);
        let rights = Rights {
            act: true,
            logs: false,
        };
        let html = tab(
            "shop",
            &[d.clone()],
            &[d],
            "",
            "",
            &Panel::None,
            rights,
            1_796_086_800_000,
        );
        assert!(
            html.contains("7 Pods: 6 Running, 1 CrashLoopBackOff"),
            "{html}"
        );
        assert!(html.contains("web&lt;script&gt;") && !html.contains("web<script>"));
        assert!(html.contains(r#"data-testid="action-restart""#));
        assert!(html.contains(r#"data-testid="action-delete""#));
        assert!(
            !html.contains("logs-link"),
            "no logs link without the right"
        );
        assert!(html.contains(">1h<"), "age");
    }

    #[test]
    fn ages_read_in_the_largest_unit() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(age("2026-12-01T02:59:15Z", now), "45s");
        assert_eq!(age("2026-12-01T02:48:00Z", now), "12m");
        assert_eq!(age("2026-11-28T03:00:00Z", now), "3d");
        assert_eq!(age("garbage", now), "");
    }
}
