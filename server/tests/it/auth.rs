//! Identity and access end to end: local sign-in and sessions, throttling across restarts, API
//! tokens, the RBAC matrix, the CSRF guard, and OpenID Connect against a real provider process
//! (oauth2-mock-server from npm, spoiling tokens on request for the negative suite).

use app::model::Role;
use reqwest::Client;
use serde_json::{json, Value};
use server::auth::policy::{self, Action};
use server::config::{OidcSettings, RoleBinding, Settings};

use crate::helpers::{bearer_client, catalog, TestDb, TestServer, ADMIN_PASSWORD};

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn browser() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Direct SQL on a test's SQLite database (what the store deliberately does not offer).
async fn sql(server: &TestServer) -> sqlx::SqlitePool {
    sqlx::SqlitePool::connect(&server.db_url).await.unwrap()
}

/// (actor_id, auth_method, outcome) of every audit row of `action`, in sequence order.
async fn audit_rows(server: &TestServer, action: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT actor_id, auth_method, outcome FROM audit_log WHERE action = ? ORDER BY seq",
    )
    .bind(action)
    .fetch_all(&sql(server).await)
    .await
    .unwrap()
}

async fn session_ids(server: &TestServer) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM sessions ORDER BY id")
        .fetch_all(&sql(server).await)
        .await
        .unwrap()
}

async fn local_user(server: &TestServer, name: &str, password: &str) {
    let hash = server::auth::local::hash_password(password).await.unwrap();
    server
        .store
        .upsert_local_user(name, name, &hash, server::clock::now())
        .await
        .unwrap();
}

#[tokio::test]
async fn people_sign_in_with_the_local_form_get_a_hardened_session_and_sign_out() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;

    // Anonymous: pages send people to the sign-in page, APIs answer 401.
    let page = server
        .anonymous
        .get(format!("{}/applications?q=web", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(location(&page), "/login?next=%2Fapplications%3Fq%3Dweb");
    let api = server
        .anonymous
        .get(format!("{}/api/v1/applications", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["www-authenticate"], "Bearer");
    let login = server
        .anonymous
        .get(format!("{}/login", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let html = login.text().await.unwrap();
    assert!(
        html.contains("Sign in to Tidemark") && html.contains(r#"name="password""#),
        "{html}"
    );
    assert!(
        !html.contains("Sign in with"),
        "no SSO button without [auth.oidc]"
    );

    // Sign in: a new session cookie, HttpOnly and SameSite=Lax, then the page the person wanted.
    let client = browser();
    let resp = client
        .post(format!("{}/auth/login", server.base))
        .header("origin", &server.base)
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", "/approvals"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/approvals");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("tidemark_session="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains("Secure"),
        "plain http public URL: no Secure flag"
    );
    let html = client
        .get(format!("{}/applications", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains(r#"id="whoami""#) && html.contains("Administrator"),
        "{html}"
    );
    assert!(html.contains(">admin</span>"), "role badge: {html}");

    // An open redirect is not possible through `next`.
    let evil = browser()
        .post(format!("{}/auth/login", server.base))
        .header("origin", &server.base)
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("next", "//evil.example/x"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&evil), "/applications");

    // Sign out needs this site's Origin, ends the session and is audited.
    let foreign = client
        .post(format!("{}/auth/logout", server.base))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        client
            .get(format!("{}/applications", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let out = client
        .post(format!("{}/auth/logout", server.base))
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(
        (out.status().as_u16(), location(&out)),
        (303, "/login?signed_out=1".into())
    );
    assert_eq!(
        client
            .get(format!("{}/applications", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        303
    );
    let signed_out = client
        .get(format!("{}/login?signed_out=1", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(signed_out.contains("You are signed out."));

    let sign_ins = audit_rows(&server, "sign_in").await;
    assert_eq!(sign_ins.len(), 2, "{sign_ins:?}");
    assert!(sign_ins
        .iter()
        .all(|(actor, method, outcome)| actor == "local:admin"
            && method == "local"
            && outcome == "success"));
    assert_eq!(audit_rows(&server, "sign_out").await.len(), 1);
}

#[tokio::test]
async fn sessions_end_after_the_idle_and_absolute_timeouts() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    settings.auth.session_absolute_minutes = 1;
    let server = TestServer::start(settings).await;
    let client = server.browser_signed_in("admin", ADMIN_PASSWORD).await;
    assert_eq!(
        client
            .get(format!("{}/approvals", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Age the stored sign-in by two minutes: past the absolute timeout.
    sqlx::query(
        "UPDATE sessions SET data = json_set(data, '$.signed_in.login_at',
             json_extract(data, '$.signed_in.login_at') - 120000)",
    )
    .execute(&sql(&server).await)
    .await
    .unwrap();
    let resp = client
        .get(format!("{}/approvals", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "an expired session is signed out");
}

#[tokio::test]
async fn failed_sign_ins_are_throttled_per_user_and_per_address_across_restarts() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    settings.auth.max_failures_per_user = 3;
    settings.auth.max_failures_per_ip = 6;
    let try_sign_in = |base: String, user: &'static str, password: &'static str| async move {
        let resp = browser()
            .post(format!("{base}/auth/login"))
            .header("origin", &base)
            .form(&[("username", user), ("password", password)])
            .send()
            .await
            .unwrap();
        location(&resp)
    };
    {
        let server = TestServer::start(settings.clone()).await;
        for _ in 0..3 {
            let to = try_sign_in(server.base.clone(), "admin", "guess").await;
            assert_eq!(to, "/login?error=bad_credentials");
        }
        // The right password no longer helps while the account is locked.
        let to = try_sign_in(server.base.clone(), "admin", ADMIN_PASSWORD).await;
        assert!(to.starts_with("/login?error=throttled&retry="), "{to}");
        let page = browser()
            .get(format!("{}{to}", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("Too many failed sign-ins"), "{page}");
        let failures = audit_rows(&server, "sign_in").await;
        assert_eq!(failures.iter().filter(|r| r.2 == "failure").count(), 4);
    }
    // A restart (new process state, same database) does not reset the count.
    let server = TestServer::start(settings).await;
    let to = try_sign_in(server.base.clone(), "admin", ADMIN_PASSWORD).await;
    assert!(to.starts_with("/login?error=throttled"), "{to}");
    // Other names from the same address: three more failures reach the per-address limit of 6
    // (3 so far), then even an unknown user is refused without a password check.
    local_user(&server, "erin", "erin-password-1").await;
    for _ in 0..3 {
        assert_eq!(
            try_sign_in(server.base.clone(), "mallory", "x").await,
            "/login?error=bad_credentials"
        );
    }
    let to = try_sign_in(server.base.clone(), "erin", "erin-password-1").await;
    assert!(
        to.starts_with("/login?error=throttled"),
        "per-address limit: {to}"
    );
}

#[tokio::test]
async fn api_tokens_authenticate_until_revoked_and_bad_tokens_are_refused() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;
    let token = server.token(Role::Viewer, None).await;
    assert!(token.starts_with("tdm_") && token.len() > 40);
    let url = format!("{}/api/v1/applications", server.base);
    assert_eq!(
        bearer_client(&token)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for bad in ["tdm_nope", "not-a-token", ""] {
        let resp = bearer_client(bad).get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{bad}");
    }
    let names: Vec<String> = server
        .store
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names.len(), 2, "the test server's admin token and this one");
    for name in &names {
        server::auth::tokens::revoke(
            &server.store,
            &server::store::Actor::system(),
            name,
            server::clock::now(),
        )
        .await
        .unwrap();
    }
    assert_eq!(
        bearer_client(&token)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(server.client.get(&url).send().await.unwrap().status(), 401);
    // Only a hash is stored.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(&sql(&server).await)
        .await
        .unwrap();
    assert!(stored
        .iter()
        .all(|h| h.len() == 64 && !token.contains(h.as_str()) && !h.contains(&token[4..])));
}

/// Every role × every mutating route × every entry point (API token, browser session), plus
/// pages and server functions for a person without a role.
#[tokio::test]
async fn the_rbac_matrix_holds_for_every_role_action_and_entry_point() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    settings.auth.bindings = vec![
        RoleBinding {
            group: None,
            user: Some("vera".into()),
            role: Role::Viewer,
            project: None,
        },
        RoleBinding {
            group: None,
            user: Some("dan".into()),
            role: Role::Deployer,
            project: None,
        },
        RoleBinding {
            group: None,
            user: Some("ada".into()),
            role: Role::Admin,
            project: None,
        },
        RoleBinding {
            group: None,
            user: Some("pete".into()),
            role: Role::Deployer,
            project: Some("other".into()),
        },
    ];
    let server = TestServer::start(settings).await;
    for name in ["vera", "dan", "ada", "pete", "nora"] {
        local_user(&server, name, &format!("{name}-password")).await;
    }
    let body_for = |pattern: &str| -> Value {
        match pattern {
            "/api/v1/applications" => {
                json!({"name": "matrix-new", "repository": "examples", "path": "apps/x",
                                              "cluster": "sandbox", "namespace": "x"})
            }
            "/api/v1/applications/{name}" => {
                json!({"name": "guestbook", "repository": "examples", "path": "apps/guestbook",
                                                     "cluster": "sandbox", "namespace": "guestbook"})
            }
            "/api/v1/applications/{name}/rollback" => {
                json!({"revision": "0000000", "reason": "matrix"})
            }
            "/api/v1/applications/{name}/resources/actions" => {
                json!({"action": "restart", "apiVersion": "apps/v1", "kind": "Deployment",
                       "namespace": "guestbook", "name": "web"})
            }
            _ => json!({"dry_run": true}),
        }
    };
    let routes: Vec<(&str, &str, Action)> = policy::mutating_routes()
        .filter(|(_, p, _)| p.starts_with("/api/v1/applications"))
        .collect();
    assert_eq!(routes.len(), 7, "{routes:?}");

    let mut checked = 0;
    for (role, user) in [
        (None, "nora"),
        (Some(Role::Viewer), "vera"),
        (Some(Role::Deployer), "dan"),
        (Some(Role::Admin), "ada"),
    ] {
        let mut entry_points = vec![(
            "session",
            server
                .browser_signed_in(user, &format!("{user}-password"))
                .await,
        )];
        if let Some(role) = role {
            entry_points.push(("token", bearer_client(&server.token(role, None).await)));
        }
        for (entry, client) in &entry_points {
            for (method, pattern, action) in &routes {
                let path = pattern.replace("{name}", "guestbook");
                let resp = client
                    .request(method.parse().unwrap(), format!("{}{path}", server.base))
                    .header("origin", &server.base)
                    .json(&body_for(pattern))
                    .send()
                    .await
                    .unwrap();
                let allowed = role.is_some_and(|r| r >= action.role());
                let status = resp.status();
                let text = resp.text().await.unwrap();
                if allowed {
                    assert!(
                        status != 401 && status != 403,
                        "{user} {entry} {method} {path}: {status} {text}"
                    );
                } else {
                    assert_eq!(status, 403, "{user} {entry} {method} {path}: {text}");
                    assert!(
                        text.contains(&format!("needs the {} role", action.role().as_str())),
                        "{text}"
                    );
                }
                checked += 1;
            }
        }
        if role.is_none() {
            // Signed in without a role: the 403 page says what is needed; server fns refuse too.
            let (_, client) = &entry_points[0];
            let page = client
                .get(format!("{}/applications", server.base))
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 403);
            let html = page.text().await.unwrap();
            assert!(
                html.contains("needs the viewer role") && html.contains("nora"),
                "{html}"
            );
            let f = client
                .post(format!("{}/_fn/application_page", server.base))
                .header("origin", &server.base)
                .header("content-type", "application/x-www-form-urlencoded")
                .send()
                .await
                .unwrap();
            assert_eq!(f.status(), 403);
        }
    }
    assert_eq!(checked, 7 * 7);
    // Denied requests changed nothing and were recorded.
    let apps = server.store.list_applications().await.unwrap();
    assert!(
        apps.iter().any(|a| a.name == "matrix-new"),
        "admins created it"
    );
    let denials = audit_rows(&server, "access_denied").await;
    assert_eq!(denials.len(), 7 + 2 * 7 + 2 * 2 + 2, "{denials:?}");

    // A deployer bound to another project may look but not act on this one.
    let pete = server.browser_signed_in("pete", "pete-password").await;
    let resp = pete
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("in project demo"));
    assert_eq!(
        pete.get(format!("{}/api/v1/applications", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let scoped = bearer_client(&server.token(Role::Deployer, Some("demo")).await);
    let resp = scoped
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
}

/// A cross-site POST with the session cookie to every mutating route: 403, nothing changed.
#[tokio::test]
async fn cross_site_requests_carrying_the_session_cookie_are_refused() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    let server = TestServer::start(settings).await;
    let client = server.browser_signed_in("admin", ADMIN_PASSWORD).await;
    // What a refused request could have caused: anything but the Git poller's own entries
    // (its first fetch of the unreachable example repository lands at any moment).
    let caused = || async {
        server
            .store
            .timeline("guestbook", 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|(kind, _)| !kind.starts_with("git_"))
            .count()
    };
    let before = caused().await;
    let mut routes: Vec<(String, String)> = policy::mutating_routes()
        .map(|(m, p, _)| (m.to_owned(), p.replace("{name}", "guestbook")))
        .collect();
    routes.push(("POST".into(), "/auth/logout".into()));
    routes.push(("POST".into(), "/_fn/application_page".into()));
    routes.push(("POST".into(), "/_fn/approve".into()));
    routes.push(("POST".into(), "/_fn/rollback".into()));
    for (method, path) in &routes {
        for origin in [Some("http://evil.example"), Some("null"), None] {
            let mut req = client
                .request(method.parse().unwrap(), format!("{}{path}", server.base))
                .json(&json!({"name": "csrf-app", "repository": "examples", "path": "apps/x", "cluster": "sandbox", "namespace": "x"}));
            if let Some(o) = origin {
                req = req.header("origin", o);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 403, "{method} {path} from {origin:?}");
            assert!(resp
                .text()
                .await
                .unwrap()
                .contains("cross-site request refused"));
        }
        // Sec-Fetch-Site: same-site (a sibling subdomain) is not same-origin either.
        let resp = client
            .request(method.parse().unwrap(), format!("{}{path}", server.base))
            .header("sec-fetch-site", "same-site")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{method} {path} same-site");
    }
    assert_eq!(caused().await, before);
    assert!(!server
        .store
        .list_applications()
        .await
        .unwrap()
        .iter()
        .any(|a| a.name == "csrf-app"));
    // Still signed in (logout was refused too), and a same-origin request passes.
    assert_eq!(
        client
            .get(format!("{}/applications", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ok = client
        .post(format!(
            "{}/api/v1/applications/guestbook/refresh",
            server.base
        ))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
}

// ---- OpenID Connect -----------------------------------------------------------------------

/// The npm provider process; exits when its stdin closes (dropped with the test).
struct MockIdp {
    issuer: String,
    control: String,
    _child: tokio::process::Child,
}

impl MockIdp {
    async fn start() -> Self {
        use tokio::io::AsyncBufReadExt;
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../end2end/support/mock-idp.mjs"
        );
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed (make test runs scripts/setup.sh)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("mock IdP did not start")
            .unwrap()
            .expect("mock IdP printed nothing (are end2end/node_modules installed?)");
        let v: Value = serde_json::from_str(&line).unwrap();
        Self {
            issuer: v["issuer"].as_str().unwrap().to_owned(),
            control: v["control"].as_str().unwrap().to_owned(),
            _child: child,
        }
    }

    async fn mode(&self, mode: &str, claims: Value) {
        let resp = Client::new()
            .post(format!("{}/mode", self.control))
            .json(&json!({"mode": mode, "claims": claims}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn oidc_settings(db: &TestDb, idp: &MockIdp) -> Settings {
    let mut settings = db.settings();
    let port = free_port();
    settings.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
    settings.server.public_url = Some(format!("http://127.0.0.1:{port}"));
    settings.auth.oidc = Some(OidcSettings {
        issuer_url: idp.issuer.clone(),
        client_id: "tidemark".into(),
        client_secret: Some(server::config::Secret::new("tidemark-secret")),
        client_secret_file: None,
        scopes: vec!["openid".into(), "profile".into(), "email".into()],
        groups_claim: "groups".into(),
        username_claim: "preferred_username".into(),
        display_name: "Mock IdP".into(),
        allowed_algs: vec!["RS256".into()],
    });
    settings.auth.bindings = vec![RoleBinding {
        group: Some("platform".into()),
        user: None,
        role: Role::Deployer,
        project: None,
    }];
    settings
}

/// Starts a sign-in in `client`; returns the provider's redirect back to Tidemark (not yet
/// followed).
async fn authorize(server: &TestServer, client: &Client) -> String {
    let start = client
        .get(format!("{}/auth/oidc/start?next=/approvals", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303, "{:?}", start.text().await);
    let authorize_url = location(&start);
    let url = url::Url::parse(&authorize_url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22 && q["code_challenge"].len() == 43);
    assert_eq!(q["client_id"], "tidemark");
    let back = client.get(&authorize_url).send().await.unwrap();
    assert_eq!(back.status(), 302);
    location(&back)
}

async fn whoami(server: &TestServer, client: &Client) -> Option<app::model::Viewer> {
    let resp = client
        .post(format!("{}/_fn/whoami", server.base))
        .header("origin", &server.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn single_sign_on_validates_the_id_token_and_maps_groups_to_roles() {
    let idp = MockIdp::start().await;
    let db = TestDb::sqlite();
    let server = TestServer::start(oidc_settings(&db, &idp)).await;
    idp.mode("ok", json!({"preferred_username": "grace", "name": "Grace Hopper", "email": "grace@example.com", "groups": ["platform", "devs"]})).await;

    let login = server
        .anonymous
        .get(format!("{}/login", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains("Sign in with Mock IdP"), "{login}");

    let client = browser();
    // A session exists before sign-in (the pending login); its id must change at sign-in.
    let callback = authorize(&server, &client).await;
    let before = session_ids(&server).await;
    assert_eq!(before.len(), 1);
    let done = client.get(&callback).send().await.unwrap();
    assert_eq!(
        (done.status().as_u16(), location(&done)),
        (303, "/approvals".into())
    );
    let after = session_ids(&server).await;
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "session id cycled at sign-in");

    let me = whoami(&server, &client).await.expect("signed in");
    assert_eq!(
        (
            me.username.as_str(),
            me.display_name.as_str(),
            me.method.as_str()
        ),
        ("grace", "Grace Hopper", "oidc")
    );
    assert_eq!(me.role, Some(Role::Deployer), "from the platform group");
    let sign_ins = audit_rows(&server, "sign_in").await;
    assert_eq!(sign_ins.last().unwrap().0, "oidc:johndoe");

    // Replaying the callback (reused state) signs nobody in.
    let fresh = browser();
    let replay = fresh.get(&callback).send().await.unwrap();
    assert_eq!(location(&replay), "/login?error=stale");
    assert!(whoami(&server, &fresh).await.is_none());

    // Sign-out goes through the provider's end-session endpoint.
    let out = client
        .post(format!("{}/auth/logout", server.base))
        .header("origin", &server.base)
        .send()
        .await
        .unwrap();
    let to = location(&out);
    assert!(
        to.starts_with(&idp.issuer)
            && to.contains("id_token_hint=")
            && to.contains("post_logout_redirect_uri="),
        "{to}"
    );
    assert!(whoami(&server, &client).await.is_none());
}

#[tokio::test]
async fn spoiled_id_tokens_and_forged_callbacks_sign_nobody_in() {
    let idp = MockIdp::start().await;
    let db = TestDb::sqlite();
    let server = TestServer::start(oidc_settings(&db, &idp)).await;

    for mode in [
        "wrong_aud",
        "extra_aud",
        "wrong_azp",
        "wrong_iss",
        "expired",
        "future_iat",
        "alg_none",
        "bad_signature",
        "nonce",
        "no_id_token",
    ] {
        idp.mode(mode, json!({"groups": ["platform"]})).await;
        let client = browser();
        let callback = authorize(&server, &client).await;
        let resp = client.get(&callback).send().await.unwrap();
        assert_eq!(location(&resp), "/login?error=token", "{mode}");
        assert!(whoami(&server, &client).await.is_none(), "{mode}");
        let page = client
            .get(format!("{}/login?error=token", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("failed validation"), "{mode}: {page}");
    }
    idp.mode("ok", json!({"groups": ["platform"]})).await;

    // Missing state, a state from nowhere, and a provider error.
    let client = browser();
    let callback = authorize(&server, &client).await;
    let url = url::Url::parse(&callback).unwrap();
    let code = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let no_state = client
        .get(format!("{}/auth/oidc/callback?code={code}", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&no_state), "/login?error=state");
    assert!(whoami(&server, &client).await.is_none());
    let nothing_pending = browser()
        .get(format!(
            "{}/auth/oidc/callback?code={code}&state=x",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(location(&nothing_pending), "/login?error=stale");

    // A code issued to another browser's sign-in, delivered with this browser's state: the
    // PKCE verifier (and nonce) do not match, so the provider or the verifier refuses it.
    let victim = browser();
    let victim_callback = authorize(&server, &victim).await;
    let attacker = browser();
    let attacker_callback = authorize(&server, &attacker).await;
    let attacker_code = url::Url::parse(&attacker_callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let victim_state = url::Url::parse(&victim_callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let swapped = victim
        .get(format!(
            "{}/auth/oidc/callback?code={attacker_code}&state={victim_state}",
            server.base
        ))
        .send()
        .await
        .unwrap();
    let to = location(&swapped);
    assert!(
        to == "/login?error=exchange" || to == "/login?error=token",
        "{to}"
    );
    assert!(whoami(&server, &victim).await.is_none());

    let failures = audit_rows(&server, "sign_in").await;
    assert!(failures.iter().all(|r| r.2 == "failure"), "{failures:?}");
    assert_eq!(failures.len(), 10 + 3);
}

// ---- throttling under concurrency, stream and session revocation ---------------------------

/// One form sign-in from a fresh browser; the redirect's target.
async fn sign_in_once(base: String, user: String, password: String) -> String {
    let resp = browser()
        .post(format!("{base}/auth/login"))
        .header("origin", &base)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap();
    location(&resp)
}

/// How many of `outcomes` were a password check (wrong or right) and how many were refused
/// before any check.
fn checked_and_throttled(outcomes: &[String]) -> (usize, usize) {
    let throttled = outcomes
        .iter()
        .filter(|to| to.starts_with("/login?error=throttled"))
        .count();
    (outcomes.len() - throttled, throttled)
}

#[tokio::test]
async fn parallel_reservations_never_exceed_the_limit_on_both_backends() {
    use server::store::LoginReservation;
    for db in TestDb::both().await {
        let store = db.store().await;
        // Ten at once for one user, ten at once from one address (ten users): five each.
        for keys in [
            (0..10).map(|_| "user:ann".to_owned()).collect::<Vec<_>>(),
            (0..10).map(|i| format!("user:u{i}")).collect(),
        ] {
            let attempts = keys.into_iter().map(|user| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .reserve_login_attempt(&[(&user, 5), ("ip:10.0.0.1", 5)], 0, 1_000)
                        .await
                        .unwrap()
                })
            });
            let results = futures_util::future::join_all(attempts).await;
            let granted = results
                .iter()
                .filter(|r| matches!(r.as_ref().unwrap(), LoginReservation::Granted { .. }))
                .count();
            assert_eq!(granted, 5, "on {}", db.url);
            store.clear_login_failures("ip:10.0.0.1").await.unwrap();
        }
        // A refusal on one key costs the other key nothing.
        assert_eq!(store.login_failures("user:ann", 0).await.unwrap().0, 5);
        let refused = store
            .reserve_login_attempt(&[("user:ann", 5), ("ip:10.0.0.2", 5)], 0, 2_000)
            .await
            .unwrap();
        assert_eq!(
            refused,
            LoginReservation::Refused {
                key: 0,
                first_at: Some(1_000)
            }
        );
        assert_eq!(store.login_failures("ip:10.0.0.2", 0).await.unwrap().0, 0);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn ten_parallel_sign_ins_check_at_most_five_passwords_on_both_backends() {
    for db in TestDb::both().await {
        let mut settings = db.settings();
        settings.auth.max_failures_per_user = 5;
        settings.auth.max_failures_per_ip = 100;
        let server = TestServer::start(settings).await;
        // Nine wrong passwords at once, then the right one while they are still in flight.
        let wrong: Vec<_> = (0..9)
            .map(|_| {
                tokio::spawn(sign_in_once(
                    server.base.clone(),
                    "admin".into(),
                    "guess".into(),
                ))
            })
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while server
            .store
            .login_failures("user:admin", 0)
            .await
            .unwrap()
            .0
            < 5
        {
            assert!(std::time::Instant::now() < deadline, "on {}", db.url);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let right = sign_in_once(server.base.clone(), "admin".into(), ADMIN_PASSWORD.into()).await;
        let mut outcomes: Vec<String> = Vec::new();
        for w in wrong {
            outcomes.push(w.await.unwrap());
        }
        assert!(
            right.starts_with("/login?error=throttled"),
            "the right password is refused once five are spent, on {}: {right}",
            db.url
        );
        assert_eq!(
            checked_and_throttled(&outcomes),
            (5, 4),
            "on {}: {outcomes:?}",
            db.url
        );
        assert!(outcomes
            .iter()
            .all(|to| to == "/login?error=bad_credentials"
                || to.starts_with("/login?error=throttled")));

        // Per address: ten unknown names at once from one address with a limit of five.
        let mut settings = db.settings();
        settings.auth.max_failures_per_ip = 5;
        drop(server);
        let server = TestServer::start(settings).await;
        server
            .store
            .clear_login_failures("ip:127.0.0.1")
            .await
            .unwrap();
        let at_once = (0..10).map(|i| {
            tokio::spawn(sign_in_once(
                server.base.clone(),
                format!("mallory{i}"),
                "x".into(),
            ))
        });
        let outcomes: Vec<String> = futures_util::future::join_all(at_once)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            checked_and_throttled(&outcomes),
            (5, 5),
            "on {}: {outcomes:?}",
            db.url
        );
        drop(server);
        db.drop_db().await;
    }
}

/// Opens the application's event stream with `client` and waits for its first event.
async fn open_events(server: &TestServer, client: &Client) -> reqwest::Response {
    let mut resp = client
        .get(format!(
            "{}/api/v1/applications/guestbook/events",
            server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while !seen.contains("event: ready") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), resp.chunk())
            .await
            .expect("the stream sends `ready`")
            .unwrap()
            .expect("the stream stays open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    resp
}

/// Whether the stream ends (the server closes the response) within `secs` seconds.
async fn ends_within(resp: &mut reqwest::Response, secs: u64) -> bool {
    tokio::time::timeout(std::time::Duration::from_secs(secs), async {
        while let Ok(Some(_)) = resp.chunk().await {}
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn event_streams_end_when_their_session_signs_out_or_their_token_is_revoked() {
    for db in TestDb::both().await {
        let mut settings = db.settings();
        catalog(&mut settings);
        let server = TestServer::start(settings).await;

        // A browser session: signing out (in another tab, same cookie) ends the stream.
        let client = server.browser_signed_in("admin", ADMIN_PASSWORD).await;
        let mut stream = open_events(&server, &client).await;
        assert!(!ends_within(&mut stream, 4).await, "stays open while valid");
        let out = client
            .post(format!("{}/auth/logout", server.base))
            .header("origin", &server.base)
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), 303);
        assert!(
            ends_within(&mut stream, 10).await,
            "sign-out ends the stream, on {}",
            db.url
        );

        // An API token: revoking it ends the stream.
        let secret = server::auth::tokens::create(
            &server.store,
            &server::store::Actor::system(),
            "watcher",
            Role::Viewer,
            None,
            server::clock::now(),
        )
        .await
        .unwrap();
        let mut stream = open_events(&server, &bearer_client(&secret)).await;
        server::auth::tokens::revoke(
            &server.store,
            &server::store::Actor::system(),
            "watcher",
            server::clock::now(),
        )
        .await
        .unwrap();
        assert!(
            ends_within(&mut stream, 10).await,
            "revocation ends the stream, on {}",
            db.url
        );
        drop(server);
        db.drop_db().await;
    }
}

/// `tidemark user add NAME --password-stdin` against the database at `db_url`.
fn cli_set_password(db_url: &str, name: &str, password: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["user", "add", name, "--password-stdin"])
        .env("TIDEMARK__DATABASE__URL", db_url)
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn a_password_reset_ends_every_session_of_the_account_on_every_replica() {
    for db in TestDb::both().await {
        let mut settings = db.settings();
        catalog(&mut settings);
        settings.auth.default_role = Some(Role::Viewer);
        let server = TestServer::start(settings.clone()).await;
        local_user(&server, "erin", "erin-password-1").await;
        let laptop = server.browser_signed_in("erin", "erin-password-1").await;
        let phone = server.browser_signed_in("erin", "erin-password-1").await;
        let admin = server.browser_signed_in("admin", ADMIN_PASSWORD).await;
        let mut stream = open_events(&server, &phone).await;
        let page = |c: &Client| c.get(format!("{}/applications", server.base)).send();
        assert_eq!(page(&laptop).await.unwrap().status(), 200);

        // The operator resets erin's password with the CLI (another process).
        cli_set_password(&server.db_url, "erin", "erin-password-2");
        let resp = page(&laptop).await.unwrap();
        assert_eq!(
            (resp.status().as_u16(), location(&resp)),
            (303, "/login?next=%2Fapplications".into()),
            "on {}",
            db.url
        );
        let api = phone
            .get(format!("{}/api/v1/applications", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 401, "on {}", db.url);
        assert!(ends_within(&mut stream, 10).await, "on {}", db.url);
        assert_eq!(
            page(&admin).await.unwrap().status(),
            200,
            "other accounts stay"
        );
        // The new password works; a session started after the reset is valid.
        let fresh = server.browser_signed_in("erin", "erin-password-2").await;
        assert_eq!(page(&fresh).await.unwrap().status(), 200);

        // A second replica starting with a new `auth.admin_password` resets the bootstrap
        // admin: the admin's session on the first replica ends. (Replicas share PostgreSQL;
        // a second process on an SQLite file refuses to start: `replicas.rs`.)
        if !db.url.starts_with("postgres") {
            drop(server);
            db.drop_db().await;
            continue;
        }
        let mut replica = settings;
        replica.auth.admin_password = Some(server::config::Secret::new("another-password"));
        let second = TestServer::start(replica).await;
        let resp = page(&admin).await.unwrap();
        assert_eq!(resp.status(), 303, "on {}", db.url);
        let on_second = second.browser_signed_in("admin", "another-password").await;
        assert_eq!(
            on_second
                .get(format!("{}/applications", second.base))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        drop(second);
        drop(server);
        db.drop_db().await;
    }
}

// ---- a project's admin stays in its project; sign-in names stay bounded --------------------

/// An admin of project `web` edits its API application, but cannot move it (or a config one)
/// into project `payments`; the refusal is in the ledger and the application stays in `web`.
#[tokio::test]
async fn a_project_admin_cannot_move_an_application_into_another_project() {
    let db = TestDb::sqlite();
    let mut settings = db.settings();
    catalog(&mut settings);
    settings.applications[0].project = "web".into(); // guestbook
    settings.applications[1].project = "payments".into(); // podinfo
    let server = TestServer::start(settings).await;
    let url = format!("{}/api/v1/applications", server.base);
    let mut shop = json!({"name": "shop", "project": "web", "repository": "examples",
                          "path": "apps/shop", "cluster": "sandbox", "namespace": "shop"});
    let created = server.client.post(&url).json(&shop).send().await.unwrap();
    assert_eq!(created.status(), 201);

    let web_admin = bearer_client(&server.token(Role::Admin, Some("web")).await);
    shop["namespace"] = json!("shop-2");
    let same_project = web_admin
        .put(format!("{url}/shop"))
        .json(&shop)
        .send()
        .await
        .unwrap();
    assert_eq!(same_project.status(), 200, "its own project");

    shop["project"] = json!("payments");
    let moved = web_admin
        .put(format!("{url}/shop"))
        .json(&shop)
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 403);
    let message = moved.text().await.unwrap();
    assert!(message.contains("in project payments"), "{message}");
    assert_eq!(
        server.store.application_project("shop").await.unwrap(),
        Some("web".into())
    );
    let mut guestbook = shop.clone();
    guestbook["name"] = json!("guestbook");
    let config_app = web_admin
        .put(format!("{url}/guestbook"))
        .json(&guestbook)
        .send()
        .await
        .unwrap();
    assert_eq!(
        config_app.status(),
        403,
        "judged before the config conflict"
    );
    shop["name"] = json!("shop-payments");
    let create = web_admin.post(&url).json(&shop).send().await.unwrap();
    assert_eq!(create.status(), 403);
    assert_eq!(
        server
            .store
            .application_project("shop-payments")
            .await
            .unwrap(),
        None
    );
    let denials: Vec<(String, String)> = sqlx::query_as(
        "SELECT target, details FROM audit_log WHERE action = 'access_denied' ORDER BY seq",
    )
    .fetch_all(&sql(&server).await)
    .await
    .unwrap();
    assert!(
        denials
            .iter()
            .any(|(t, d)| t == "application:shop" && d.contains("\"project\":\"payments\"")),
        "{denials:?}"
    );

    // An unscoped admin may move it.
    shop["name"] = json!("shop");
    let by_admin = server
        .client
        .put(format!("{url}/shop"))
        .json(&shop)
        .send()
        .await
        .unwrap();
    assert_eq!(by_admin.status(), 200);
    assert_eq!(
        server.store.application_project("shop").await.unwrap(),
        Some("payments".into())
    );
}

/// Anyone can send a sign-in: a name too long or with control characters gets the generic
/// answer, is recorded cut to 128 characters without control characters, keeps no throttle
/// key of its own, and a formula-like name stays text in the CSV export.
#[tokio::test]
async fn hostile_sign_in_names_are_refused_and_recorded_bounded() {
    let db = TestDb::sqlite();
    let server = TestServer::start(db.settings()).await;
    let long = format!("admin{}", "x".repeat(20_000));
    for name in [
        long.as_str(),
        "admin\r\n2026-01-01 sign_in success",
        "=HYPERLINK(\"http://evil.example\")",
    ] {
        let to = sign_in_once(server.base.clone(), name.into(), ADMIN_PASSWORD.into()).await;
        assert_eq!(to, "/login?error=bad_credentials", "{name:.40}");
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT actor_name FROM audit_log WHERE action = 'sign_in' ORDER BY seq",
    )
    .fetch_all(&sql(&server).await)
    .await
    .unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(names[0], long[..128]);
    assert_eq!(names[1], "admin\u{FFFD}\u{FFFD}2026-01-01 sign_in success");
    assert!(names.iter().all(|n| !n.chars().any(char::is_control)));
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM login_throttle")
        .fetch_all(&sql(&server).await)
        .await
        .unwrap();
    assert!(keys.iter().all(|k| k.len() < 200), "{keys:?}");

    let csv = server
        .client
        .get(format!("{}/api/v1/audit?format=csv", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\")\","),
        "{csv}"
    );
}
