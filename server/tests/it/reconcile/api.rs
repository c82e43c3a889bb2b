//! The REST API: sync previews and syncs, the paged timeline, applications created and edited
//! through the API.

use serde_json::json;
use server::reconcile;

use super::{fixture, live_replicas, scale_by_hand};

#[tokio::test]
async fn the_rest_api_previews_syncs_and_pages_the_timeline() {
    let f = fixture().await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let url = |p: &str| format!("{}/api/v1/applications{p}", server.base);
    let client = server.client.clone();

    let list: serde_json::Value = client
        .get(url(""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list[0]["name"], "guestbook");

    // Dry run: the diff, nothing applied.
    let preview: serde_json::Value = client
        .post(url("/guestbook/sync"))
        .json(&json!({"dry_run": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        preview["resources"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Missing"),
        "{preview}"
    );
    assert!(f.store.syncs("guestbook", 1).await.unwrap().is_empty());

    let foreign = client
        .post(url("/guestbook/sync"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    assert_eq!(
        client
            .post(url("/nope/sync"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let done: serde_json::Value = client
        .post(url("/guestbook/sync"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(live_replicas(&f).await, 2);

    let app = f.store.app_source("guestbook").await.unwrap().unwrap();
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let detail: serde_json::Value = client
        .get(url("/guestbook"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["status"]["sync_status"], "Synced", "{detail}");
    assert_eq!(detail["status"]["health"], "Healthy");
    let resources: serde_json::Value = client
        .get(url("/guestbook/resources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resources["resources"].as_array().unwrap().len(), 4);
    assert!(!resources.to_string().contains("hunter2"));

    let page: serde_json::Value = client
        .get(url("/guestbook/timeline?limit=1&kinds=sync"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(
        page["items"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("sync of"),
        "{page}"
    );
    assert!(page["next"].is_null(), "one sync only: {page}");
    // Drift adds a second event, so a page of one has a next page.
    scale_by_hand(&f, 3).await;
    reconcile::reconcile_app(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let all: serde_json::Value = client
        .get(url("/guestbook/timeline?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next = all["next"].as_str().unwrap().to_owned();
    let older: serde_json::Value = client
        .get(url(&format!("/guestbook/timeline?limit=1&cursor={next}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all["items"][0]["kind"], "drift_opened", "{all}");
    assert_ne!(older["items"][0]["kind"], "drift_opened", "{older}");
    assert!(older["items"][0]["id"].as_i64().unwrap() < all["items"][0]["id"].as_i64().unwrap());
}

#[tokio::test]
async fn applications_can_be_created_and_edited_through_the_api_but_config_ones_are_read_only() {
    let f = fixture().await;
    let server = crate::helpers::TestServer::start(f.settings.clone()).await;
    let client = server.client.clone();
    let url = format!("{}/api/v1/applications", server.base);
    let send = |method: reqwest::Method, path: &str, body: &serde_json::Value| {
        let req = client.request(method, format!("{url}{path}")).json(body);
        async move { req.send().await.unwrap() }
    };
    let (post, put) = (reqwest::Method::POST, reqwest::Method::PUT);
    let mut body = json!({"name": "guestbook-staging", "repository": "demo", "path": "apps/guestbook",
                          "cluster": "sandbox", "namespace": "staging", "sync_policy": "auto", "prune": true});

    assert_eq!(send(post.clone(), "", &body).await.status(), 201);
    assert_eq!(send(post.clone(), "", &body).await.status(), 409);
    let listed: serde_json::Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "guestbook-staging" && a["sync_policy"] == "auto"));

    body["namespace"] = json!("staging-2");
    assert_eq!(
        send(put.clone(), "/guestbook-staging", &body)
            .await
            .status(),
        200
    );
    assert_eq!(
        f.store
            .app_source("guestbook-staging")
            .await
            .unwrap()
            .unwrap()
            .namespace,
        "staging-2"
    );

    // Bad input changes nothing and says what is wrong.
    for (field, value) in [
        ("path", json!("../etc")),
        ("repository", json!("nope")),
        ("namespace", json!("Bad NS")),
    ] {
        let mut bad = body.clone();
        bad[field] = value;
        let r = send(put.clone(), "/guestbook-staging", &bad).await;
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains(field));
    }
    assert_eq!(
        f.store
            .app_source("guestbook-staging")
            .await
            .unwrap()
            .unwrap()
            .namespace,
        "staging-2"
    );
    let mut unknown_key = body.clone();
    unknown_key["sync_polcy"] = json!("auto");
    assert!(send(post.clone(), "", &unknown_key)
        .await
        .status()
        .is_client_error());

    let mut declared = body.clone();
    declared["name"] = json!("guestbook");
    assert_eq!(
        send(put.clone(), "/guestbook", &declared).await.status(),
        409
    );
    let mut missing = body.clone();
    missing["name"] = json!("ghost");
    assert_eq!(send(put, "/ghost", &missing).await.status(), 404);
    let foreign = client
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}
