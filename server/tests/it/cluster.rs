//! The cluster adapter against the sandbox over HTTP: placement, ordered apply (a CRD and its
//! custom resource in one pass), reads, dry runs, deletes and the API's errors.

use serde_json::{json, Value};
use server::cluster::client::{sync_order, ClusterClient, ClusterError};
use server::config::ClusterSettings;

use crate::sandbox::TestCluster;

fn manifests() -> Vec<Value> {
    vec![
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 2}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"},
               "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                                      "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
    ]
}

#[tokio::test]
async fn ordered_apply_places_objects_and_reads_them_back() {
    let c = TestCluster::sandbox().await;
    let cluster = ClusterClient::connect(&ClusterSettings {
        name: "sandbox".into(),
        url: c.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let desired = manifests();
    for obj in sync_order(&desired) {
        // The CRD is applied before the Widget, so the Widget's kind resolves by then.
        let placed = cluster.place(obj.clone(), "shop", None).await.unwrap();
        cluster.apply(&placed, false).await.unwrap();
    }
    let widget = cluster
        .place(desired[0].clone(), "shop", None)
        .await
        .unwrap();
    assert_eq!(widget["metadata"]["namespace"], "shop");
    let live = cluster.get(&widget).await.unwrap().unwrap();
    assert_eq!(live["spec"]["size"], 2);
    let ns = cluster
        .place(desired[3].clone(), "shop", None)
        .await
        .unwrap();
    assert!(ns["metadata"].get("namespace").is_none());

    // The watch cache drops managedFields (never compared); the API server has them.
    let managers = cluster
        .get_direct(
            &cluster
                .place(desired[1].clone(), "shop", None)
                .await
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        managers["metadata"]["managedFields"][0]["manager"],
        "tidemark"
    );

    // Dry run returns the change without storing it.
    let mut bigger = widget.clone();
    bigger["spec"]["size"] = json!(9);
    assert_eq!(
        cluster.apply(&bigger, true).await.unwrap()["spec"]["size"],
        9
    );
    assert_eq!(
        cluster.get(&widget).await.unwrap().unwrap()["spec"]["size"],
        2
    );

    cluster.delete(&widget).await.unwrap();
    assert!(cluster.get(&widget).await.unwrap().is_none());
    cluster.delete(&widget).await.unwrap(); // already gone: fine
}

#[tokio::test]
async fn unknown_kinds_and_rejected_objects_are_explained() {
    let c = TestCluster::sandbox().await;
    let cluster = ClusterClient::connect(&ClusterSettings {
        name: "sandbox".into(),
        url: c.url.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let gadget = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g", "namespace": "default"}});
    let err = cluster.apply(&gadget, false).await.unwrap_err();
    assert_eq!(
        err,
        ClusterError::UnknownKind {
            cluster: "sandbox".into(),
            api_version: "example.com/v1".into(),
            kind: "Gadget".into()
        }
    );

    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name", "namespace": "default"}});
    match cluster.apply(&bad, false).await.unwrap_err() {
        ClusterError::Api {
            object,
            code,
            reason,
            message,
        } => {
            assert_eq!(
                (object.as_str(), code, reason.as_str()),
                ("ConfigMap default/Bad_Name", 422, "Invalid")
            );
            assert!(message.contains("RFC 1123"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_cluster_can_be_reached_through_a_kubeconfig_context() {
    let c = TestCluster::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\n\
         clusters:\n- name: sandbox\n  cluster: {{server: \"{}\"}}\n- name: dead\n  cluster: {{server: \"http://127.0.0.1:9\"}}\n\
         users:\n- name: me\n  user: {{}}\n\
         contexts:\n- name: sandbox-ctx\n  context: {{cluster: sandbox, user: me}}\n- name: elsewhere\n  context: {{cluster: dead, user: me}}\n",
        c.url
    );
    std::fs::write(&path, kubeconfig).unwrap();
    let settings = ClusterSettings {
        name: "via-kubeconfig".into(),
        kubeconfig: Some(path.clone()),
        context: Some("sandbox-ctx".into()),
        ..Default::default()
    };
    let cluster = ClusterClient::connect(&settings).await.unwrap();
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
    assert!(cluster.get(&ns).await.unwrap().is_some());

    let missing = ClusterSettings {
        kubeconfig: Some(dir.path().join("nope")),
        ..settings
    };
    let err = ClusterClient::connect(&missing).await.err().unwrap();
    assert!(err.to_string().contains("cannot read kubeconfig"), "{err}");
}
