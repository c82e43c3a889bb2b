//! Where an application's manifests come from and how they are rendered: the source type and
//! the Helm options of `[[applications]]` (shared by the configuration, the store and the
//! renderer).

use std::collections::BTreeMap;

use serde_json::Value;

/// How an application's path is rendered (`source` in `[[applications]]`): by default a
/// path holding `Chart.yaml` is a Helm chart, one holding a kustomization is Kustomize, any
/// other a directory of manifests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// Plain YAML/JSON manifests.
    Directory,
    /// `kustomize build` of the path.
    Kustomize,
    /// `helm template` of the chart at the path (or from a chart repository).
    Helm,
}

/// How an application's chart is rendered (`[applications.helm]`), for charts in Git and
/// charts from a chart repository alike. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HelmOptions {
    /// Helm's release name (`.Release.Name`); default: the application's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// `.Release.Namespace`; default: the application's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Values files, relative to the chart directory; they may point elsewhere in the same
    /// repository (`../../envs/prod.yaml`), never outside it. Applied in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values_files: Vec<String>,
    /// Inline values (a TOML table in `tidemark.toml`, a JSON object over REST), applied after
    /// the values files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Map<String, Value>>,
    /// `--set key=value` (typed as Helm types it: `true`, `3`), applied last.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
    /// `--set-string key=value` (always a string).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub set_string: BTreeMap<String, String>,
    /// Leave out the chart's `crds/` directory (default: CRDs are rendered, as Argo CD does).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_crds: bool,
    /// `.Capabilities.KubeVersion` (`1.31.0`); default: the target cluster's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// `.Capabilities.APIVersions` (`apps/v1`, `monitoring.coreos.com/v1/ServiceMonitor`);
    /// default: the target cluster's API groups and kinds (discovery).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_versions: Vec<String>,
    /// A chart from a chart repository (not in Git): its name in the repository's index (or
    /// the last path segment of an `oci://` reference).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// The chart repository, `https://…` or `oci://…` (instead of `repository`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// The chart version: exact (`6.1.0`) or a range (`^6.0`, `>=1.2 <2`, `6.x`); the
    /// application's revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl HelmOptions {
    /// Whether nothing is set (for serialisation).
    pub fn is_default(&self) -> bool {
        self == &HelmOptions::default()
    }

    /// Whether any rendering option is set (beyond where the chart comes from).
    pub fn is_empty(&self) -> bool {
        self == &HelmOptions {
            chart: self.chart.clone(),
            repo_url: self.repo_url.clone(),
            version: self.version.clone(),
            ..HelmOptions::default()
        }
    }
}
