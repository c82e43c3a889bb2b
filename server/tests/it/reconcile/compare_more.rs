//! More cases of each kind of compare fault of issue 18 (items 1–3), tried on the real control
//! plane (`TIDEMARK_TEST_KUBECONFIG`) and on the sandbox: values the API server normalises or
//! defaults, fields Git removed, list items matched by the schema's keys, changes a person makes
//! by hand, Secret values in diffs, and the dry-run cache. Tests that need `kubectl` (client-side
//! apply, `kubectl create`) or the real controllers run on the real control plane only; kinds
//! the sandbox does not serve (HPA, PDB, NetworkPolicy, LimitRange, ResourceQuota) are added
//! there only. Each test states what the compare must say; some fail on today's code (the
//! faults the review of issue 18 reported).

use serde_json::{json, Value};
use server::cluster::client::ClusterClient;
use server::diff::{ResourceDiff, ResourceStatus, DRY_RUN, PURE};
use server::reconcile;
use server::store::SyncStatus;

use super::compare::{app, assert_synced, commit, compare, deployment, of, sync};
use super::{fixture_any, Fixture};

/// `yaml` with `@ns` replaced by the test's namespace.
fn in_ns(f: &Fixture, yaml: &str) -> String {
    yaml.replace("@ns", &f.ns)
}

fn named<'a>(diffs: &'a [ResourceDiff], kind: &str, name: &str) -> &'a ResourceDiff {
    diffs
        .iter()
        .find(|d| d.object.kind == kind && d.object.name == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {diffs:?}"))
}

fn paths(d: &ResourceDiff) -> Vec<&str> {
    d.changes.iter().map(|c| c.path.as_str()).collect()
}

/// The identity of an object of the application's namespace, as the cluster client takes it.
fn ident(f: &Fixture, api_version: &str, kind: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": f.ns}})
}

/// Whether `o` is the version `rv` (from a write's answer) or newer: a controller may write again
/// before the watch shows it.
fn at_least(o: Option<&Value>, rv: &Value) -> bool {
    let n = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
    o.is_some_and(|o| match (n(&o["metadata"]["resourceVersion"]), n(rv)) {
        (Some(a), Some(b)) => a >= b,
        _ => o["metadata"]["resourceVersion"] == *rv,
    })
}

/// Waits until the cluster client's view of `obj` satisfies `ok`.
async fn wait_for(f: &Fixture, obj: &Value, ok: impl Fn(Option<&Value>) -> bool) {
    for _ in 0..1500 {
        if ok(f.cluster.get(obj).await.unwrap().as_ref()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the watch cache did not catch up on {obj}");
}

/// The REST path of `obj` (namespaced kinds only, and cluster-scoped ones without namespace).
async fn url_of(f: &Fixture, obj: &Value) -> String {
    let api_version = obj["apiVersion"].as_str().unwrap();
    let kind = obj["kind"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(&f.kube, &gvk).await.unwrap();
    let base = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let name = obj["metadata"]["name"].as_str().unwrap();
    match caps.scope {
        kube::discovery::Scope::Namespaced => {
            format!("{base}/namespaces/{}/{}/{name}", f.ns, ar.plural)
        }
        kube::discovery::Scope::Cluster => format!("{base}/{}/{name}", ar.plural),
    }
}

/// A change a person makes by hand: a PATCH of `content_type`
/// (`application/merge-patch+json`, `application/strategic-merge-patch+json`,
/// `application/apply-patch+yaml`) as field manager `manager`, with `query` added (e.g.
/// `&force=true`); `subresource` e.g. `/scale`. Returns the patched object.
async fn patch_by_hand(
    f: &Fixture,
    obj: &Value,
    subresource: &str,
    manager: &str,
    content_type: &str,
    body: &Value,
    query: &str,
) -> Value {
    let url = format!(
        "{}{subresource}?fieldManager={manager}{query}",
        url_of(f, obj).await
    );
    let request = http::Request::patch(url)
        .header("Content-Type", content_type)
        .body(serde_json::to_vec(body).unwrap())
        .unwrap();
    f.kube.request::<Value>(request).await.unwrap()
}

/// A change a person makes with `kubectl edit`: the object read, JSON-patch `ops` (`replace`,
/// `remove`, `add`; `-` appends) applied to it, written back (PUT) as field manager `manager`,
/// and waited for in the watch cache. Returns the written object.
async fn edit_by_hand(f: &Fixture, obj: &Value, manager: &str, ops: &Value) -> Value {
    let mut live = f.cluster.get_direct(obj).await.unwrap().unwrap();
    for op in ops.as_array().unwrap() {
        let path = op["path"].as_str().unwrap();
        let (parent, last) = path.rsplit_once('/').unwrap();
        let target = live
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no {parent} in {obj}"));
        match (op["op"].as_str().unwrap(), target) {
            ("remove", Value::Array(items)) => {
                items.remove(last.parse::<usize>().unwrap());
            }
            ("remove", Value::Object(m)) => {
                m.remove(last);
            }
            ("add", Value::Array(items)) if last == "-" => items.push(op["value"].clone()),
            (_, target) => *target.pointer_mut(&format!("/{last}")).unwrap() = op["value"].clone(),
        }
    }
    let url = format!("{}?fieldManager={manager}", url_of(f, obj).await);
    let request = http::Request::put(url)
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(&live).unwrap())
        .unwrap();
    let written: Value = f.kube.request(request).await.unwrap();
    let rv = written["metadata"]["resourceVersion"].clone();
    wait_for(f, obj, |o| at_least(o, &rv)).await;
    written
}

/// A sync that may fail: its status and results.
async fn try_sync(f: &Fixture) -> (SyncStatus, Vec<reconcile::ResourceResult>) {
    super::sync_target(f, "guestbook").await
}

/// The same compare from a new cluster client (no cached dry-run answers or schemas): what the
/// API server says now.
async fn compare_fresh(f: &Fixture) -> Vec<ResourceDiff> {
    let cluster = ClusterClient::connect(&f.settings.clusters[0])
        .await
        .unwrap();
    let app = app(f).await;
    let (_, _, desired) = reconcile::desired(&f.store, &cluster, &app).await.unwrap();
    reconcile::compare(&f.store, &cluster, &app, &desired, &app.ignore)
        .await
        .unwrap()
}

fn summary(diffs: &[ResourceDiff]) -> Vec<(String, ResourceStatus, Vec<String>)> {
    diffs
        .iter()
        .map(|d| {
            (
                format!("{} {}", d.object.kind, d.object.name),
                d.status,
                d.changes.iter().map(|c| c.path.clone()).collect(),
            )
        })
        .collect()
}

/// The kubeconfig of the real control plane, if the tests run on one.
fn kubeconfig() -> Option<std::ffi::OsString> {
    std::env::var_os("TIDEMARK_TEST_KUBECONFIG")
}

/// Runs `kubectl args…` with `stdin` as its input; panics unless it succeeds.
fn kubectl(kubeconfig: &std::ffi::OsStr, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Kind 1: values the API server normalises, defaults or drops.
// ---------------------------------------------------------------------------------------------

const SERVICES: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: '@ns'
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
  - {name: dns-tcp, port: 53, targetPort: 5353}
---
apiVersion: v1
kind: Service
metadata: {name: nodeport, namespace: '@ns'}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: headless, namespace: '@ns'}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: '@ns'}
spec:
  type: ExternalName
  externalName: db.example.com
---
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: '@ns'}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  clusterIP: ''
  selector: {app: web}
  ports: [{name: https, port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Service
metadata: {name: single, namespace: '@ns'}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv4]
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{port: 443, targetPort: 8443}]
";

/// Services: allocated clusterIP(s) (also for Git's `clusterIP: ''`), nodePorts and the
/// healthCheckNodePort of a LoadBalancer, allocateLoadBalancerNodePorts, defaulted ipFamilies, ipFamilyPolicy,
/// sessionAffinity, internalTrafficPolicy, protocol, int-or-string targetPorts (named or a
/// number; a numeric string is refused by the API server, as it should be).
#[tokio::test]
async fn service_defaults_allocations_and_int_or_string_ports_are_not_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    commit(&f, &in_ns(&f, SERVICES)).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(diffs.iter().all(|d| d.compared_by == DRY_RUN), "{diffs:?}");
}

const WORKLOADS: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: '@ns'}
spec:
  serviceName: db
  replicas: 1
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      creationTimestamp: null
    spec:
      containers:
      - name: db
        image: postgres:16
        resources:
          requests: {cpu: 250m, memory: 0.25Gi}
        volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]
  volumeClaimTemplates:
  - metadata: {name: data, creationTimestamp: null}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1024Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cache, namespace: '@ns'}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 0.5Gi}, limits: {storage: 2048Mi}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: '@ns'}
spec:
  ttlSecondsAfterFinished: 3600
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: busybox:1
        command: [sh, -c, 'true']
        resources: {limits: {cpu: '0.1', memory: 64M}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly, namespace: '@ns'}
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    metadata: {labels: {job: nightly}}
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: job, image: 'busybox:1', resources: {requests: {memory: 0.5Gi, cpu: 1e-1}}}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: '@ns'}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: 'busybox:1', resources: {limits: {memory: 128Mi, cpu: 100m}}}]
";

/// Kinds of [`WORKLOADS`] the sandbox does not serve.
const WORKLOADS_REAL_ONLY: &str = "apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: db, namespace: '@ns'}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: StatefulSet, name: db}
  minReplicas: 1
  maxReplicas: 3
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: AverageValue, averageValue: 500m}}
  - type: Resource
    resource: {name: memory, target: {type: Utilization, averageUtilization: 80}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 120}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db, namespace: '@ns'}
spec:
  maxUnavailable: 50%
  selector: {matchLabels: {app: db}}
";

/// Workloads: StatefulSet volumeClaimTemplates (defaulted apiVersion/kind/volumeMode/status),
/// PVC storage requests and limits, Job and CronJob defaults (generated selector and labels,
/// backoffLimit, completionMode, suspend, concurrencyPolicy…), DaemonSet updateStrategy,
/// HPA v2 behavior defaults and quantity targets, PDB int-or-string; quantities in odd spellings
/// (`0.25Gi`, `1e-1`, `64M`, `0.1`).
#[tokio::test]
async fn workload_defaults_and_quantities_in_every_position_are_not_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let mut yaml = WORKLOADS.to_owned();
    if kubeconfig().is_some() {
        yaml = format!("{yaml}---\n{WORKLOADS_REAL_ONLY}");
    }
    commit(&f, &in_ns(&f, &yaml)).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(diffs.iter().all(|d| d.compared_by == DRY_RUN), "{diffs:?}");
}

const POD_FIELDS: &str = "      imagePullSecrets: [{name: regcred}]
      overhead: {cpu: 250m, memory: 120Mi}
      volumes:
      - {name: scratch, emptyDir: {sizeLimit: 0.5Gi}}
      - {name: shm, emptyDir: {medium: Memory, sizeLimit: 64Mi}}
      - {name: conf, configMap: {name: conf, defaultMode: 420}}
      - {name: sec, secret: {secretName: sec}}
      - name: info
        downwardAPI:
          items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: mem, resourceFieldRef: {containerName: web, resource: limits.memory, divisor: 1Mi}}
      securityContext: {}
      initContainers:
      - name: init
        image: busybox:1
        resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {cpu: 100m, memory: 0.0625Gi}}
      containers:
      - name: web
        image: nginx:1.27
        ports: [{name: http, containerPort: 8080}, {containerPort: 9090, name: metrics}]
        env:
        - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
        - {name: TOKEN, valueFrom: {secretKeyRef: {name: sec, key: token, optional: true}}}
        - {name: MODE, valueFrom: {configMapKeyRef: {name: conf, key: mode}}}
        - {name: PORT, value: '8080'}
        envFrom: [{configMapRef: {name: conf}}, {prefix: S_, secretRef: {name: sec, optional: true}}]
        resources:
          requests: {cpu: 0.5, memory: 500M}
          limits: {cpu: 1500m, memory: 1536Mi, ephemeral-storage: 1Gi}
        livenessProbe: {httpGet: {path: /healthz, port: http}}
        readinessProbe: {httpGet: {path: /ready, port: 8080, scheme: HTTP}, periodSeconds: 5}
        startupProbe: {tcpSocket: {port: 8080}, failureThreshold: 30}
        lifecycle: {preStop: {exec: {command: [sleep, '5']}}}
        volumeMounts:
        - {name: scratch, mountPath: /tmp}
        - {name: conf, mountPath: /etc/conf, readOnly: true}
        - {name: info, mountPath: /etc/info}
";

/// A pod template with everything the API server defaults inside it: env `valueFrom`
/// (fieldRef apiVersion, divisor), probes with named and numeric ports (and their
/// defaulted thresholds, timeouts, scheme), volume defaults (defaultMode), quantities in
/// requests/limits/overhead/emptyDir sizeLimit/divisor, an empty securityContext.
#[tokio::test]
async fn pod_template_defaults_env_value_from_probes_and_volume_quantities_are_not_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    commit(&f, &deployment(&f.ns, POD_FIELDS)).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(diffs.iter().all(|d| d.compared_by == DRY_RUN), "{diffs:?}");
}

const CONFIG_AND_ACCESS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: conf
  namespace: '@ns'
  labels: {version: '1.10', build: '010', enabled: 'true', hex: '0x1F', exp: '1e3', empty: ''}
  annotations: {replicas: '3', note: ''}
data: {mode: fast, port: '8080', yes: 'no'}
binaryData: {blob: AAECAw==}
---
apiVersion: v1
kind: Secret
metadata: {name: sec, namespace: '@ns'}
data: {token: aHVudGVyMg==}
stringData: {extra: s3cr3t-more, token2: hunter3}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: '@ns'}
type: kubernetes.io/tls
stringData: {tls.crt: cert, tls.key: key}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: deployer, namespace: '@ns'}
automountServiceAccountToken: false
imagePullSecrets: [{name: regcred}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: '@ns'}
rules:
- apiGroups: ['']
  resources: [pods, configmaps]
  verbs: [get, list, watch]
- apiGroups: [apps]
  resources: [deployments]
  resourceNames: [web]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: '@ns'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects:
- {kind: ServiceAccount, name: deployer}
- {kind: User, name: ada, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: '@ns'}
spec:
  defaultBackend: {service: {name: web, port: {name: http}}}
  tls: [{hosts: [a.example.com], secretName: tls}]
  rules:
  - host: a.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /api, pathType: ImplementationSpecific, backend: {service: {name: api, port: {number: 8080}}}}
";

/// Kinds of [`CONFIG_AND_ACCESS`] the sandbox does not serve.
const ACCESS_REAL_ONLY: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: '@ns'}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}, {podSelector: {}}]
    ports: [{port: 80}, {port: http}, {port: 53, protocol: UDP, endPort: 60}]
---
apiVersion: v1
kind: LimitRange
metadata: {name: limits, namespace: '@ns'}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 0.5Gi}
    defaultRequest: {cpu: 0.1, memory: 128Mi}
    max: {cpu: '2', memory: 2048Mi}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: quota, namespace: '@ns'}
spec:
  hard: {requests.cpu: 4000m, requests.memory: 8192Mi, pods: '10', count/configmaps: '20'}
";

/// Configuration and access objects: ConfigMap binaryData and labels that look like numbers,
/// booleans or are empty; Secrets with `data` + `stringData` and a defaulted or explicit
/// `type`; ServiceAccount, RBAC (defaulted subject apiGroup), NetworkPolicy (defaulted
/// protocol and policyTypes), Ingress, LimitRange and ResourceQuota quantities.
#[tokio::test]
async fn config_secrets_rbac_network_policy_ingress_and_quota_defaults_are_not_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let mut yaml = CONFIG_AND_ACCESS.to_owned();
    if kubeconfig().is_some() {
        yaml = format!("{yaml}---\n{ACCESS_REAL_ONLY}");
    }
    commit(&f, &in_ns(&f, &yaml)).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(diffs.iter().all(|d| d.compared_by == DRY_RUN), "{diffs:?}");
    let text = serde_json::to_string(&diffs).unwrap();
    assert!(
        !text.contains("s3cr3t-more") && !text.contains("hunter"),
        "{text}"
    );
}

/// Objects controllers and admission fill in: an aggregated ClusterRole whose `rules` the
/// clusterrole-aggregation controller writes (Git says `rules: []`, as the Kubernetes docs'
/// example does), a bare Pod (scheduler's nodeName, admission's service-account volume and
/// default tolerations next to Git's toleration). None of that is drift: a sync cannot change
/// it for good.
#[tokio::test]
async fn fields_controllers_and_admission_fill_in_are_not_drift() {
    if kubeconfig().is_none() {
        eprintln!("skipped: needs a real API server's controllers (TIDEMARK_TEST_KUBECONFIG)");
        return;
    }
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = in_ns(
        &f,
        "apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: '@ns'}
spec:
  tolerations: [{key: dedicated, operator: Exists}]
  containers: [{name: c, image: 'busybox:1', resources: {requests: {cpu: 100m}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: '@ns-aggregate'
  labels: {tidemark-test: 'true'}
aggregationRule:
  clusterRoleSelectors: [{matchLabels: {rbac.tidemark.test/aggregate-to: '@ns'}}]
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: '@ns-part'
  labels: {tidemark-test: 'true', rbac.tidemark.test/aggregate-to: '@ns'}
rules: [{apiGroups: [''], resources: [pods], verbs: [get]}]
",
    );
    commit(&f, &yaml).await;
    sync(&f).await;
    // Wait until the controllers have done their part.
    let aggregate = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                           "metadata": {"name": format!("{}-aggregate", f.ns)}});
    wait_for(&f, &aggregate, |o| {
        o.is_some_and(|o| o["rules"].as_array().is_some_and(|r| !r.is_empty()))
    })
    .await;
    wait_for(&f, &ident(&f, "v1", "Pod", "bare"), |o| {
        o.is_some_and(|o| o["spec"]["nodeName"].is_string())
    })
    .await;
    let diffs = compare(&f).await;
    let crs: kube::Api<k8s_openapi::api::rbac::v1::ClusterRole> = kube::Api::all(f.kube.clone());
    for name in ["aggregate", "part"] {
        let _ = crs
            .delete(
                &format!("{}-{name}", f.ns),
                &kube::api::DeleteParams::background(),
            )
            .await;
    }
    let out: Vec<_> = summary(&diffs)
        .into_iter()
        .filter(|s| s.1 != ResourceStatus::Synced)
        .collect();
    assert!(out.is_empty(), "{out:?}");
}

/// A service-account token Secret and its ServiceAccount in one application: after the sync
/// the token controller has filled the Secret in (its data is not drift, and never shows).
/// Applied before the ServiceAccount exists, the token controller deletes it at once.
#[tokio::test]
async fn a_service_account_token_secret_is_filled_in_and_not_drift() {
    if kubeconfig().is_none() {
        eprintln!("skipped: needs a real API server's controllers (TIDEMARK_TEST_KUBECONFIG)");
        return;
    }
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = in_ns(
        &f,
        "apiVersion: v1
kind: ServiceAccount
metadata: {name: bot, namespace: '@ns'}
---
apiVersion: v1
kind: Secret
metadata:
  name: bot-token
  namespace: '@ns'
  annotations: {kubernetes.io/service-account.name: bot}
type: kubernetes.io/service-account-token
",
    );
    commit(&f, &yaml).await;
    sync(&f).await;
    let token = ident(&f, "v1", "Secret", "bot-token");
    for _ in 0..250 {
        let live = f.cluster.get_direct(&token).await.unwrap();
        if live.as_ref().is_none_or(|o| o["data"]["token"].is_string()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let live = f.cluster.get_direct(&token).await.unwrap();
    let diffs = compare(&f).await;
    assert!(
        live.is_some(),
        "the token Secret is gone after the sync: {:?}",
        summary(&diffs)
    );
    let value = live.unwrap()["data"]["token"].as_str().unwrap().to_owned();
    assert!(!serde_json::to_string(&diffs)
        .unwrap()
        .contains(&value[..20]));
    assert_synced(&diffs);
}

/// Git removes a field the API server defaults: the sync puts the default back, so the
/// compare shows the default, not a removal (replicas, imagePullPolicy, strategy, a Service's
/// sessionAffinity — whose sessionAffinityConfig the API server then drops).
#[tokio::test]
async fn a_field_git_removes_that_has_a_default_shows_the_default() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = |extra: bool| {
        let (replicas, policy, strategy, affinity) = if extra {
            (
                "  replicas: 3\n",
                "\n        imagePullPolicy: Always",
                "  strategy: {type: Recreate}\n",
                "\n  sessionAffinity: ClientIP",
            )
        } else {
            ("", "", "", "")
        };
        in_ns(
            &f,
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: '@ns'}}\nspec:\n{replicas}{strategy}  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1.27{policy}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: '@ns'}}\nspec:\n  selector: {{app: web}}{affinity}\n  ports: [{{port: 80}}]\n"
            ),
        )
    };
    commit(&f, &yaml(true)).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    commit(&f, &yaml(false)).await;
    let diffs = compare(&f).await;
    let shown = |kind: &str| -> Vec<(String, Option<Value>, Option<Value>)> {
        of(&diffs, kind)
            .changes
            .iter()
            .map(|c| (c.path.clone(), c.desired.clone(), c.live.clone()))
            .collect()
    };
    let mut web = shown("Deployment");
    web.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        web,
        [
            (".spec.replicas".into(), Some(json!(1)), Some(json!(3))),
            (
                ".spec.strategy.rollingUpdate".into(),
                Some(json!({"maxSurge": "25%", "maxUnavailable": "25%"})),
                None
            ),
            (
                ".spec.strategy.type".into(),
                Some(json!("RollingUpdate")),
                Some(json!("Recreate"))
            ),
            (
                ".spec.template.spec.containers[name=web].imagePullPolicy".into(),
                Some(json!("IfNotPresent")),
                Some(json!("Always"))
            ),
        ]
    );
    assert_eq!(
        shown("Service"),
        [
            (
                ".spec.sessionAffinity".into(),
                Some(json!("None")),
                Some(json!("ClientIP"))
            ),
            (
                ".spec.sessionAffinityConfig".into(),
                None,
                Some(json!({"clientIP": {"timeoutSeconds": 10800}}))
            )
        ]
    );
    sync(&f).await;
    assert_synced(&compare(&f).await);
}

// ---------------------------------------------------------------------------------------------
// Kind 2: fields removed from Git.
// ---------------------------------------------------------------------------------------------

fn removals(extra: bool) -> String {
    let (ann, ns_sel, limits, env_web, env_helper, udp, extra_c, svc_udp) = if extra {
        (
            ", b: '2'",
            ", zone: a",
            ", memory: 128Mi",
            ", {name: MOVED, value: x}",
            "",
            "{containerPort: 53, protocol: UDP, name: dns}, ",
            "\n      - {name: extra, image: 'busybox:1'}",
            "\n  - {name: dns, port: 53, protocol: UDP}",
        )
    } else {
        (
            "",
            "",
            "",
            "",
            ", env: [{name: MOVED, value: x}]",
            "",
            "",
            "",
        )
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: '@ns'}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata:
      labels: {{app: web}}
      annotations: {{a: '1'{ann}}}
    spec:
      nodeSelector: {{disk: ssd{ns_sel}}}
      containers:
      - name: web
        image: nginx:1.27
        ports: [{udp}{{containerPort: 53, protocol: TCP, name: dns-tcp}}]
        env: [{{name: KEEP, value: '1'}}{env_web}]
        resources: {{limits: {{cpu: 100m{limits}}}}}
      - {{name: helper, image: 'busybox:1'{env_helper}}}{extra_c}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: '@ns'}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: dns-tcp, port: 53, protocol: TCP}}{svc_udp}
"
    )
}

/// Fields Git removed, in every position: a pod-template annotation, a key of an (atomic)
/// nodeSelector map, a quantity in `limits`, a whole container, one item of a two-key list (the
/// UDP port next to the TCP one of the same number) in a container and in a Service, and an env
/// entry moved from one container to another. All are drift until a sync removes them.
#[tokio::test]
async fn fields_removed_from_git_in_nested_maps_keyed_lists_and_whole_items_are_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    commit(&f, &in_ns(&f, &removals(true))).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    commit(&f, &in_ns(&f, &removals(false))).await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    let removed: Vec<&str> = web
        .changes
        .iter()
        .filter(|c| c.desired.is_none())
        .map(|c| c.path.as_str())
        .collect();
    let c = ".spec.template.spec.containers";
    for path in [
        ".spec.template.metadata.annotations.b".to_owned(),
        ".spec.template.spec.nodeSelector.zone".to_owned(),
        format!("{c}[name=web].resources.limits.memory"),
        format!("{c}[name=web].env[name=MOVED]"),
        format!("{c}[name=extra]"),
        format!("{c}[name=web].ports[containerPort=53,protocol=UDP]"),
    ] {
        assert!(removed.contains(&path.as_str()), "{path} not in {web:?}");
    }
    assert!(
        web.changes
            .iter()
            .any(|ch| ch.path.starts_with(&format!("{c}[name=helper].env")) && ch.live.is_none()),
        "the moved env entry is not shown added to helper: {web:?}"
    );
    let svc = of(&diffs, "Service");
    assert_eq!(paths(svc), [".spec.ports[port=53,protocol=UDP]"], "{svc:?}");

    sync(&f).await;
    assert_synced(&compare(&f).await);
}

/// Git reorders the items of a keyed list: `env` (where order matters: `$(A)` refers only to
/// variables defined before it) and `containers` (the first is the default container of
/// `kubectl logs/exec`). Server-side apply stores the new order, so a sync changes the object:
/// that is drift.
#[tokio::test]
async fn items_of_a_keyed_list_reordered_in_git_are_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = |env: &str, containers_swapped: bool| {
        let web = format!("      - name: web\n        image: nginx:1.27\n        env: {env}\n");
        let side = "      - {name: side, image: 'busybox:1'}\n";
        let containers = if containers_swapped {
            format!("{side}{web}")
        } else {
            format!("{web}{side}")
        };
        format!("      containers:\n{containers}")
    };
    let before = "[{name: A, value: '1'}, {name: B, value: '$(A)/x'}]";
    commit(&f, &deployment(&f.ns, &pod(before, false))).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    let after = "[{name: B, value: '$(A)/x'}, {name: A, value: '1'}]";
    commit(&f, &deployment(&f.ns, &pod(after, false))).await;
    let diffs = compare(&f).await;
    let web = of(&diffs, "Deployment");
    // What the sync would store: the new order.
    let app = app(&f).await;
    let (_, _, desired) = reconcile::desired(&f.store, &f.cluster, &app)
        .await
        .unwrap();
    let d = desired.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let predicted = f.cluster.apply(d, true).await.unwrap();
    assert_eq!(
        predicted["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"],
        "B"
    );
    let env = web.status;

    commit(&f, &deployment(&f.ns, &pod(before, true))).await;
    let diffs = compare(&f).await;
    let containers = of(&diffs, "Deployment").status;
    assert_eq!(
        (env, containers),
        (ResourceStatus::OutOfSync, ResourceStatus::OutOfSync),
        "(env reordered, containers reordered)"
    );
}

// ---------------------------------------------------------------------------------------------
// Kind 3: list items matched by the schema's keys; changes by hand shown at the right path.
// ---------------------------------------------------------------------------------------------

const LISTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: '@ns', labels: {tier: web}, annotations: {team: a}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}, annotations: {owner: ops}}
    spec:
      imagePullSecrets: [{name: a}, {name: b}]
      tolerations:
      - {key: dedicated, operator: Equal, value: web, effect: NoSchedule}
      - {key: dedicated, operator: Equal, value: web, effect: NoExecute}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: web}}}
      - {maxSkew: 2, topologyKey: zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 53, protocol: UDP, name: dns}, {containerPort: 53, protocol: TCP, name: dns-tcp}]
        env: [{name: A, value: '1'}, {name: B, value: '2'}]
---
apiVersion: v1
kind: Service
metadata: {name: dns, namespace: '@ns'}
spec:
  selector: {app: web}
  ports:
  - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 5353}
  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: '@ns', labels: {tier: web}}
data: {mode: fast}
";

/// Changes a person makes by hand (`kubectl patch/edit/label/annotate/scale/set image`), each
/// as its own field manager, to fields Git sets: each is drift, shown at the path of the item
/// that changed — Service and container ports of one number on two protocols, two spread
/// constraints on one topology key, imagePullSecrets, an atomic tolerations list.
#[tokio::test]
async fn changes_made_by_hand_are_drift_at_the_path_of_the_item_that_changed() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    commit(&f, &in_ns(&f, LISTS)).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let web = ident(&f, "apps/v1", "Deployment", "web");
    let svc = ident(&f, "v1", "Service", "dns");

    // kubectl edit of the UDP item (second) of the Service's ports.
    edit_by_hand(
        &f,
        &svc,
        "kubectl-edit",
        &json!([{"op": "replace", "path": "/spec/ports/1/targetPort", "value": 9999}]),
    )
    .await;
    // The same on the Deployment: the TCP container port's name, the second spread
    // constraint's maxSkew, imagePullSecret b removed, a toleration added, env B changed.
    let base = "/spec/template/spec";
    edit_by_hand(
        &f,
        &web,
        "kubectl-edit",
        &json!([
            {"op": "replace", "path": format!("{base}/containers/0/ports/1/name"), "value": "tcp"},
            {"op": "replace", "path": format!("{base}/topologySpreadConstraints/1/maxSkew"), "value": 5},
            {"op": "remove", "path": format!("{base}/imagePullSecrets/1")},
            {"op": "add", "path": format!("{base}/tolerations/-"), "value": {"operator": "Exists"}},
            {"op": "replace", "path": format!("{base}/containers/0/env/1/value"), "value": "3"},
        ]),
    )
    .await;
    let diffs = compare(&f).await;
    assert_eq!(
        paths(named(&diffs, "Service", "dns")),
        [".spec.ports[port=53,protocol=UDP].targetPort"]
    );
    let s = ".spec.template.spec";
    let mut got = paths(named(&diffs, "Deployment", "web"));
    got.sort_unstable();
    let mut want = vec![
        format!("{s}.containers[name=web].env[name=B].value"),
        format!("{s}.containers[name=web].ports[containerPort=53,protocol=TCP].name"),
        format!("{s}.imagePullSecrets[name=b]"),
        format!("{s}.tolerations"),
        format!("{s}.topologySpreadConstraints[topologyKey=zone,whenUnsatisfiable=ScheduleAnyway].maxSkew"),
    ];
    want.sort_unstable();
    assert_eq!(got, want, "{diffs:?}");

    // kubectl label --overwrite, kubectl annotate --overwrite, kubectl scale, kubectl set image
    // after a sync put everything back.
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let merge = "application/merge-patch+json";
    patch_by_hand(
        &f,
        &web,
        "",
        "kubectl-label",
        merge,
        &json!({"metadata": {"labels": {"tier": "api"}}}),
        "",
    )
    .await;
    patch_by_hand(
        &f,
        &web,
        "",
        "kubectl-annotate",
        merge,
        &json!({"metadata": {"annotations": {"team": "b"}}}),
        "",
    )
    .await;
    patch_by_hand(
        &f,
        &web,
        "/scale",
        "kubectl-scale",
        merge,
        &json!({"spec": {"replicas": 3}}),
        "",
    )
    .await;
    let patched = patch_by_hand(
        &f,
        &web,
        "",
        "kubectl-set",
        "application/strategic-merge-patch+json",
        &json!({"spec": {"template": {"metadata": {"annotations": {"owner": null}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}}),
        "",
    )
    .await;
    let rv = patched["metadata"]["resourceVersion"].clone();
    wait_for(&f, &web, |o| at_least(o, &rv)).await;
    let cm = ident(&f, "v1", "ConfigMap", "settings");
    let patched = patch_by_hand(
        &f,
        &cm,
        "",
        "kubectl-label",
        merge,
        &json!({"metadata": {"labels": {"tier": null}}, "data": {"mode": "slow"}}),
        "",
    )
    .await;
    let rv = patched["metadata"]["resourceVersion"].clone();
    wait_for(&f, &cm, |o| at_least(o, &rv)).await;
    let diffs = compare(&f).await;
    let mut got = paths(named(&diffs, "Deployment", "web"));
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ".metadata.annotations.team",
            ".metadata.labels.tier",
            ".spec.replicas",
            ".spec.template.metadata.annotations",
            ".spec.template.spec.containers[name=web].image",
        ],
        "{diffs:?}"
    );
    let mut got = paths(named(&diffs, "ConfigMap", "settings"));
    got.sort_unstable();
    assert_eq!(got, [".data.mode", ".metadata.labels"], "{diffs:?}");
}

/// A Deployment made with client-side `kubectl apply` and two env entries of one name (the API
/// server accepts it with a warning; server-side apply refuses it, so the compare falls back to
/// the desired fields): Git declares exactly the live object, so nothing differs. Pairing both
/// entries with the first live one of the name reads the second as changed.
#[tokio::test]
async fn duplicate_env_names_in_git_and_live_are_paired_in_order() {
    let Some(kubeconfig) = kubeconfig() else {
        eprintln!("skipped: needs a real API server (TIDEMARK_TEST_KUBECONFIG)");
        return;
    };
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = "      containers:\n      - name: web\n        image: nginx:1.27\n        env: [{name: A, value: '1'}, {name: A, value: '2'}, {name: C, value: '3'}]\n";
    let yaml = deployment(&f.ns, pod);
    kubectl(&kubeconfig, &["apply", "-f", "-"], &yaml);
    let web = ident(&f, "apps/v1", "Deployment", "web");
    wait_for(&f, &web, |o| o.is_some()).await;
    commit(&f, &yaml).await;
    let diffs = compare(&f).await;
    let d = of(&diffs, "Deployment");
    assert!(d.compared_by.starts_with(PURE), "{d:?}");
    // The last-applied annotation is kubectl's, not Git's: not a field Git names.
    assert_eq!(d.status, ResourceStatus::Synced, "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// Objects first made by kubectl; Secret values.
// ---------------------------------------------------------------------------------------------

const KUBECTL_MADE: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: '@ns'}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80}]
        env: [{name: A, value: '1'}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: '@ns'}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

/// Objects first made with client-side `kubectl apply` of exactly what Git declares. The only
/// thing a sync changes is the removal of kubectl's last-applied annotation (Tidemark takes
/// over kubectl's fields, as `kubectl apply --server-side` does); the fields the API server
/// defaulted on creation (which kubectl's manager owns: `imagePullPolicy`, `dnsPolicy`,
/// `sessionAffinity`…) and the ports Git declares without `protocol` are defaulted again, so
/// they are no change.
#[tokio::test]
async fn an_object_kubectl_applied_as_git_declares_it_differs_only_by_the_last_applied_annotation()
{
    let Some(kubeconfig) = kubeconfig() else {
        eprintln!("skipped: needs a real API server (TIDEMARK_TEST_KUBECONFIG)");
        return;
    };
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = in_ns(&f, KUBECTL_MADE);
    kubectl(&kubeconfig, &["apply", "-f", "-"], &yaml);
    wait_for(&f, &ident(&f, "v1", "Service", "web"), |o| o.is_some()).await;
    wait_for(&f, &ident(&f, "apps/v1", "Deployment", "web"), |o| {
        o.is_some()
    })
    .await;
    commit(&f, &yaml).await;
    let diffs = compare(&f).await;
    let last_applied = ".metadata.annotations";
    let extra: Vec<(&str, Vec<&str>)> = ["Deployment", "Service"]
        .into_iter()
        .map(|kind| {
            let d = of(&diffs, kind);
            let extra = paths(d)
                .into_iter()
                .filter(|p| !p.starts_with(last_applied))
                .collect();
            (kind, extra)
        })
        .collect();
    assert_eq!(
        extra,
        [("Deployment", vec![]), ("Service", vec![])],
        "{diffs:?}"
    );
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let live = f
        .cluster
        .get_direct(&ident(&f, "apps/v1", "Deployment", "web"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
}

/// A Secret first made with client-side `kubectl apply`: its last-applied annotation holds the
/// values. Git declares the Secret (its values, no annotations): the compare shows the
/// annotation going, never its content.
#[tokio::test]
async fn the_last_applied_annotation_of_a_kubectl_applied_secret_never_shows_its_values() {
    let Some(kubeconfig) = kubeconfig() else {
        eprintln!("skipped: needs a real API server (TIDEMARK_TEST_KUBECONFIG)");
        return;
    };
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = in_ns(
        &f,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds, namespace: '@ns'}\nstringData: {password: pl41n-s3cr3t}\ndata: {token: dG9rZW4tczNjcjN0}\n",
    );
    kubectl(&kubeconfig, &["apply", "-f", "-"], &yaml);
    let creds = ident(&f, "v1", "Secret", "creds");
    wait_for(&f, &creds, |o| o.is_some()).await;
    commit(&f, &yaml).await;
    let diffs = compare(&f).await;
    let text = serde_json::to_string(&diffs).unwrap();
    let leaked: Vec<&str> = ["pl41n-s3cr3t", "dG9rZW4tczNjcjN0", "cGw0MW4tczNjcjN0"]
        .into_iter()
        .filter(|v| text.contains(v))
        .collect();
    // A sync removes the annotation; nothing else differs.
    let mut before = paths(of(&diffs, "Secret"));
    before.sort_unstable();
    sync(&f).await;
    let after = summary(&compare(&f).await);
    assert!(
        leaked.is_empty()
            && before == [".metadata.annotations"]
            && after.iter().all(|s| s.1 == ResourceStatus::Synced),
        "leaked {leaked:?}; before the sync {before:?}; after it {after:?}; {text}"
    );
}

/// Secret values a person changes by hand, or Git changes or removes, read `(changed)`: never
/// the old or new value, in base64 or plain.
#[tokio::test]
async fn secret_values_changed_by_hand_or_in_git_never_show() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let secret = |data: &str| {
        in_ns(
            &f,
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: '@ns', labels: {{a: b}}}}\n{data}\n"
            ),
        )
    };
    commit(
        &f,
        &secret("stringData: {password: g1t-v4lue, user: admin}"),
    )
    .await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let creds = ident(&f, "v1", "Secret", "creds");
    // By hand: a new value (base64 of "h4nd-v4lue") and a new key.
    let patched = patch_by_hand(
        &f,
        &creds,
        "",
        "kubectl-edit",
        "application/merge-patch+json",
        &json!({"data": {"password": "aDRuZC12NGx1ZQ==", "extra": "ZXh0cjQtdjRsdWU="}, "metadata": {"labels": null}}),
        "",
    )
    .await;
    let rv = patched["metadata"]["resourceVersion"].clone();
    wait_for(&f, &creds, |o| at_least(o, &rv)).await;
    // And Git changes the value too.
    commit(
        &f,
        &secret("stringData: {password: g1t-v4lue2, user: admin}"),
    )
    .await;
    let diffs = compare(&f).await;
    let d = of(&diffs, "Secret");
    assert_eq!(d.status, ResourceStatus::OutOfSync);
    let text = serde_json::to_string(&diffs).unwrap();
    for value in [
        "g1t-v4lue",
        "ZzF0LXY0bHVl",
        "h4nd-v4lue",
        "aDRuZC12NGx1ZQ",
        "admin",
        "YWRtaW4",
    ] {
        assert!(!text.contains(value), "{value} in {text}");
    }
    let mut got = paths(d);
    got.sort_unstable();
    assert_eq!(got, [".data.password", ".metadata.labels"], "{d:?}");
}

/// A key Git removes from a Secret's `stringData` (or `data`): drift, and the sync removes it.
/// Server-side apply records `stringData` keys as the applier's, never the `data` keys they
/// become, so applying without the key leaves it in `data` for good.
#[tokio::test]
async fn a_secret_key_git_removes_from_string_data_is_drift_and_the_sync_removes_it() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let secret = |data: &str| {
        in_ns(
            &f,
            &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: '@ns'}}\n{data}\n"),
        )
    };
    commit(
        &f,
        &secret("stringData: {password: g1t-v4lue, user: admin}"),
    )
    .await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    commit(&f, &secret("stringData: {password: g1t-v4lue}")).await;
    let diffs = compare(&f).await;
    let d = of(&diffs, "Secret");
    let text = serde_json::to_string(&diffs).unwrap();
    assert!(
        !text.contains("YWRtaW4") && !text.contains("admin"),
        "{text}"
    );
    sync(&f).await;
    let live = f
        .cluster
        .get_direct(&ident(&f, "v1", "Secret", "creds"))
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<&String> = live["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        (d.status, paths(d), keys),
        (
            ResourceStatus::OutOfSync,
            vec![".data.user"],
            vec![&"password".to_owned()]
        ),
        "the compare before the sync, and the keys live after it"
    );
}

/// Objects the API server will not change in place — an immutable ConfigMap and Secret, a Job
/// (its pod template is immutable) — whose Git content changed: the dry run is refused, the
/// compare falls back to the fields Git names and shows only what Git changed (the Secret's
/// value as `(changed)`), not the Job's generated selector and labels or the API server's
/// defaults.
#[tokio::test]
async fn immutable_objects_changed_in_git_show_only_what_git_changed() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = |v: &str| {
        in_ns(
            &f,
            &format!(
                "apiVersion: v1
kind: ConfigMap
metadata: {{name: frozen, namespace: '@ns'}}
immutable: true
data: {{mode: '{v}'}}
---
apiVersion: v1
kind: Secret
metadata: {{name: frozen, namespace: '@ns'}}
immutable: true
stringData: {{token: 'fr0zen-{v}'}}
---
apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: '@ns'}}
spec:
  backoffLimit: 2
  template:
    metadata: {{labels: {{app: migrate}}}}
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: 'busybox:1.{v}'
        resources: {{requests: {{cpu: 100m, memory: 0.5Gi}}}}
"
            ),
        )
    };
    commit(&f, &yaml("36")).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    commit(&f, &yaml("37")).await;
    let diffs = compare(&f).await;
    let got: Vec<(String, Vec<&str>, bool)> = diffs
        .iter()
        .filter(|d| d.object.kind != "Namespace")
        .map(|d| {
            (
                d.object.kind.clone(),
                paths(d),
                d.compared_by.starts_with(PURE),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("ConfigMap".to_owned(), vec![".data.mode"], true),
            ("Secret".to_owned(), vec![".data.token"], true),
            (
                "Job".to_owned(),
                vec![".spec.template.spec.containers[name=migrate].image"],
                true
            ),
        ],
        "{diffs:?}"
    );
    let text = serde_json::to_string(&diffs).unwrap();
    assert!(
        !text.contains("fr0zen") && !text.contains("ZnIwemVu"),
        "{text}"
    );
}

/// The tracking annotation a person rewrites by hand (here: to another application's id) is
/// what prune and conflicts decide by. The README says the compare checks it like any other
/// field; a person's change to it must show.
#[tokio::test]
async fn the_tracking_annotation_changed_by_hand_is_drift() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    commit(
        &f,
        &in_ns(
            &f,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: '@ns'}\ndata: {mode: fast}\n",
        ),
    )
    .await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let cm = ident(&f, "v1", "ConfigMap", "settings");
    let other = format!("other:/ConfigMap:{}/settings", f.ns);
    let patched = patch_by_hand(
        &f,
        &cm,
        "",
        "kubectl-annotate",
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {reconcile::TRACKING_ANNOTATION: other}}}),
        "",
    )
    .await;
    let rv = patched["metadata"]["resourceVersion"].clone();
    wait_for(&f, &cm, |o| at_least(o, &rv)).await;
    let diffs = compare(&f).await;
    let d = named(&diffs, "ConfigMap", "settings");
    assert_eq!(d.status, ResourceStatus::OutOfSync, "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// The dry-run cache.
// ---------------------------------------------------------------------------------------------

/// After each change a person makes — a label or annotation Git sets, a finalizer Git sets, the
/// object deleted and made again under the same name — the compare is what the API server says
/// now (a new client, with nothing cached, is the reference).
#[tokio::test]
async fn cached_dry_runs_follow_labels_annotations_finalizers_and_recreation() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let yaml = in_ns(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: '@ns', labels: {tier: web}, annotations: {team: a}, finalizers: [tidemark.test/keep]}\ndata: {mode: fast}\n---\n",
    ) + &deployment(&f.ns, "      containers: [{name: web, image: 'nginx:1.27'}]\n");
    commit(&f, &yaml).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);
    let cm = ident(&f, "v1", "ConfigMap", "settings");
    let web = ident(&f, "apps/v1", "Deployment", "web");
    let merge = "application/merge-patch+json";
    let check = |step: &'static str| {
        let f = &f;
        async move {
            let cached = compare(f).await;
            let fresh = compare_fresh(f).await;
            assert_eq!(summary(&cached), summary(&fresh), "{step}");
            cached
        }
    };
    for (step, obj, body) in [
        (
            "label",
            &cm,
            json!({"metadata": {"labels": {"tier": "api"}}}),
        ),
        (
            "label back",
            &cm,
            json!({"metadata": {"labels": {"tier": "web"}}}),
        ),
        (
            "annotation",
            &cm,
            json!({"metadata": {"annotations": {"team": "b"}}}),
        ),
        (
            "annotation back",
            &cm,
            json!({"metadata": {"annotations": {"team": "a"}}}),
        ),
        ("finalizer", &cm, json!({"metadata": {"finalizers": null}})),
        (
            "deployment label",
            &web,
            json!({"metadata": {"labels": {"extra": "1"}}}),
        ),
        (
            "deployment annotation",
            &web,
            json!({"metadata": {"annotations": {"x": "1"}}}),
        ),
        (
            "deployment finalizer",
            &web,
            json!({"metadata": {"finalizers": ["tidemark.test/x"]}}),
        ),
        (
            "deployment finalizer gone",
            &web,
            json!({"metadata": {"finalizers": null}}),
        ),
    ] {
        let patched = patch_by_hand(&f, obj, "", "kubectl-edit", merge, &body, "").await;
        let rv = patched["metadata"]["resourceVersion"].clone();
        wait_for(&f, obj, |o| at_least(o, &rv)).await;
        check(step).await;
    }
    // The finalizer Git sets was removed by hand: drift.
    let diffs = compare(&f).await;
    assert_eq!(
        paths(named(&diffs, "ConfigMap", "settings")),
        [".metadata.finalizers"]
    );

    // Deleted and made again by a person under the same name, with another image.
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(f.kube.clone(), &f.ns);
    deploys
        .delete("web", &kube::api::DeleteParams::foreground())
        .await
        .unwrap();
    for _ in 0..500 {
        if deploys.get_opt("web").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let again = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": f.ns},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}});
    deploys
        .create(
            &kube::api::PostParams {
                field_manager: Some("kubectl-create".into()),
                ..Default::default()
            },
            &serde_json::from_value(again).unwrap(),
        )
        .await
        .unwrap();
    wait_for(&f, &web, |o| {
        o.is_some_and(|o| o["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28")
    })
    .await;
    let diffs = check("re-created").await;
    assert_eq!(
        paths(named(&diffs, "Deployment", "web")),
        [".spec.template.spec.containers[name=web].image"]
    );
    // Let the namespace go.
    patch_by_hand(
        &f,
        &cm,
        "",
        "kubectl-edit",
        merge,
        &json!({"metadata": {"finalizers": null}}),
        "",
    )
    .await;
}

/// Another field manager applies (server-side) the value Git no longer sets — a co-owner: the
/// API server would now keep the field when Tidemark applies, so it is no longer drift. Only
/// `managedFields` changed (generation, labels, annotations are the same): a cached answer
/// keyed by those would still say the field is removed, even after a sync that cannot remove it.
#[tokio::test]
async fn a_new_co_owner_of_a_field_git_removed_is_not_answered_from_the_cache() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = |env: &str| {
        format!("      containers:\n      - name: web\n        image: nginx:1.27\n        env: [{{name: KEEP, value: '1'}}{env}]\n")
    };
    commit(
        &f,
        &deployment(&f.ns, &pod(", {name: FEATURE_X, value: '1'}")),
    )
    .await;
    sync(&f).await;
    commit(&f, &deployment(&f.ns, &pod(""))).await;
    let diffs = compare(&f).await;
    assert_eq!(of(&diffs, "Deployment").status, ResourceStatus::OutOfSync);

    let web = ident(&f, "apps/v1", "Deployment", "web");
    let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": f.ns},
        "spec": {"template": {"spec": {"containers": [{"name": "web",
            "env": [{"name": "FEATURE_X", "value": "1"}]}]}}}});
    let patched = patch_by_hand(
        &f,
        &web,
        "",
        "ops",
        "application/apply-patch+yaml",
        &config,
        "&force=true",
    )
    .await;
    let rv = patched["metadata"]["resourceVersion"].clone();
    wait_for(&f, &web, |o| at_least(o, &rv)).await;
    let before = (
        summary(&compare(&f).await),
        summary(&compare_fresh(&f).await),
    );
    // A sync cannot remove the field (ops owns it): afterwards the compare must not say it is
    // still to be removed (an auto-sync application with self-heal would sync forever).
    sync(&f).await;
    let after = (
        summary(&compare(&f).await),
        summary(&compare_fresh(&f).await),
    );
    assert_eq!(
        of(&compare_fresh(&f).await, "Deployment").status,
        ResourceStatus::Synced
    );
    assert!(
        before.0 == before.1 && after.0 == after.1,
        "cached vs fresh, before the sync: {before:?}; after it: {after:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// A CustomResourceDefinition with a structural schema, and a resource of it.
// ---------------------------------------------------------------------------------------------

fn crd_yaml(group: &str) -> String {
    let spec = json!({"type": "object", "properties": {
                        "size": {"type": "integer", "default": 3},
                        "mode": {"type": "string", "default": "fast"},
                        "memory": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "target": {"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "options": {"type": "object", "default": {}, "properties": {
                            "retries": {"type": "integer", "default": 2},
                            "verbose": {"type": "boolean", "default": false}}},
                        "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["port", "protocol"],
                            "items": {"type": "object", "required": ["port"], "properties": {
                                "port": {"type": "integer"},
                                "protocol": {"type": "string", "default": "TCP"},
                                "name": {"type": "string"},
                                "weight": {"type": "integer", "default": 1}}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}});
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{group}"), "labels": {"tidemark-test": "true"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget", "listKind": "GadgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": spec,
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]
        }
    });
    serde_json::to_string(&crd).unwrap()
}

fn gadget(group: &str, ports: &str, extra: &str) -> String {
    format!(
        "apiVersion: {group}/v1\nkind: Gadget\nmetadata: {{name: g1, namespace: '@ns'}}\nspec:\n  memory: 1Gi\n  target: 80\n  tags: [b, a]\n  labels: {{version: '1.10'}}\n  free: {{nested: {{list: [1, 2]}}, empty: {{}}}}\n  ports: {ports}\n{extra}"
    )
}

/// A CRD with defaults, an int-or-string, a set, and a two-key map list whose second key has a
/// default, with a resource of it in the same application: after the sync it is Synced (the
/// CRD's defaults are the API server's); a change by hand in one item names that item; an
/// item Git removes is drift; a default Git stops overriding is drift.
#[tokio::test]
async fn a_custom_resource_with_schema_defaults_and_list_map_keys_compares_by_the_crd_schema() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let group = format!(
        "g{}.tidemark.test",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let kube = f.kube.clone();
    // The steps run apart so that the CRD is deleted whatever they find.
    let steps = tokio::task::LocalSet::new()
        .run_until({
            let group = group.clone();
            async move { tokio::task::spawn_local(gadget_steps(f, group)).await }
        })
        .await;
    if kubeconfig().is_some() {
        delete_crd(kube, &group).await;
    }
    if let Err(e) = steps {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn gadget_steps(f: Fixture, group: String) {
    let two = "[{port: 53, protocol: UDP, name: dns}, {port: 53, name: dns-tcp}]";
    let with = |ports: &str, extra: &str| {
        in_ns(
            &f,
            &format!(
                "{}\n---\n{}",
                crd_yaml(&group),
                gadget(&group, ports, extra)
            ),
        )
    };
    commit(&f, &with(two, "  options: {retries: 5}\n")).await;
    sync(&f).await;
    let diffs = compare(&f).await;
    assert_synced(&diffs);
    assert!(diffs.iter().all(|d| d.compared_by == DRY_RUN), "{diffs:?}");

    let g1 = json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget",
                    "metadata": {"name": "g1", "namespace": f.ns}});
    // The API server applied the schema's defaults.
    let live = f.cluster.get_direct(&g1).await.unwrap().unwrap();
    assert_eq!(
        (
            &live["spec"]["size"],
            &live["spec"]["options"],
            &live["spec"]["ports"][1]
        ),
        (
            &json!(3),
            &json!({"retries": 5, "verbose": false}),
            &json!({"name": "dns-tcp", "port": 53, "protocol": "TCP", "weight": 1})
        ),
        "the CRD's structural-schema defaults"
    );

    // A person changes the TCP item's weight.
    edit_by_hand(
        &f,
        &g1,
        "kubectl-edit",
        &json!([{"op": "replace", "path": "/spec/ports/1/weight", "value": 7}]),
    )
    .await;
    let diffs = compare(&f).await;
    let g = of(&diffs, "Gadget");
    // Not drift: Git does not set weight (its default is the API server's).
    assert_eq!(g.status, ResourceStatus::Synced, "{g:?}");
    edit_by_hand(
        &f,
        &g1,
        "kubectl-edit",
        &json!([{"op": "replace", "path": "/spec/ports/1/name", "value": "renamed"}]),
    )
    .await;
    let diffs = compare(&f).await;
    let g = of(&diffs, "Gadget");
    assert_eq!(
        paths(g),
        [".spec.ports[port=53,protocol=TCP].name"],
        "{g:?}"
    );

    // Git removes the UDP item and stops overriding options.retries.
    commit(&f, &with("[{port: 53, name: dns-tcp}]", "")).await;
    let diffs = compare(&f).await;
    let g = of(&diffs, "Gadget");
    let mut got = paths(g);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ".spec.options.retries",
            ".spec.ports[port=53,protocol=TCP].name",
            ".spec.ports[port=53,protocol=UDP]",
        ],
        "{g:?}"
    );
    sync(&f).await;
    assert_synced(&compare(&f).await);
}

async fn delete_crd(kube: kube::Client, group: &str) {
    let ar = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
        ),
        "customresourcedefinitions",
    );
    let crds: kube::Api<kube::api::DynamicObject> = kube::Api::all_with(kube, &ar);
    let _ = crds
        .delete(
            &format!("gadgets.{group}"),
            &kube::api::DeleteParams::background(),
        )
        .await;
}

// ---------------------------------------------------------------------------------------------
// The pure compare (dry run refused).
// ---------------------------------------------------------------------------------------------

/// Git changes an immutable field (the Deployment's selector): the API server refuses the dry
/// run and the compare falls back to the fields Git names. Values the API server normalises
/// (quantities, empty maps and lists, a probe port, `creationTimestamp: null`) must not
/// show there either: only the selector and the template label.
#[tokio::test]
async fn the_pure_fallback_shows_only_what_git_changed() {
    let f = fixture_any(app::model::SyncPolicy::Manual, false).await;
    let pod = "      nodeSelector: {}\n      securityContext: {}\n      containers:\n      - name: web\n        image: nginx:1.27\n        args: []\n        ports: [{containerPort: 8080, name: http}]\n        readinessProbe: {httpGet: {path: /, port: 8080}}\n        env: [{name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]\n        resources:\n          requests: {cpu: 1000m, memory: 1024Mi}\n          limits: {cpu: '1.5', memory: 2e9}\n";
    let yaml = |app_label: &str| {
        deployment(&f.ns, pod)
            .replace("{app: web}", &format!("{{app: {app_label}}}"))
            .replace(
                "metadata: {labels",
                "metadata: {creationTimestamp: null, labels",
            )
    };
    commit(&f, &yaml("web")).await;
    sync(&f).await;
    assert_synced(&compare(&f).await);

    commit(&f, &yaml("web2")).await;
    let diffs = compare(&f).await;
    let d = of(&diffs, "Deployment");
    assert!(d.compared_by.starts_with(PURE), "{d:?}");
    let mut got = paths(d);
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ".spec.selector.matchLabels.app",
            ".spec.template.metadata.labels.app"
        ],
        "{d:?}"
    );
    let (status, _) = try_sync(&f).await;
    assert_eq!(status, SyncStatus::Failed);
}
