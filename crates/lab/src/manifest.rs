//! Kubernetes manifests for the lab: plain YAML (files, directories, multi-document streams,
//! `kind: List`) read into typed objects, validated strictly with errors that name the file, the
//! object and the field, plus the bits of controller logic the lab needs (Deployment → Pods,
//! namespace labels, container ports). Services, EndpointSlices and LoadBalancer IP pools are
//! validated as the API server would; address allocation is in [`crate::services`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Container, Namespace, Pod, PodSpec, PodTemplateSpec, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The namespace of a namespaced object whose `metadata.namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The label Kubernetes puts on every namespace, holding the namespace's name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The label the Deployment controller puts on the pods of one pod template.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// The alphabet of Kubernetes' generated name suffixes (no vowels, no look-alike characters).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Kubernetes truncates a `generateName` prefix to this length before adding the suffix.
const MAX_GENERATED_PREFIX: usize = 58;

/// The protocols a container port may use.
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];

/// One supported Kubernetes object, decoded and validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A `v1 Namespace`.
    Namespace(Namespace),
    /// A `v1 Pod`.
    Pod(Pod),
    /// An `apps/v1 Deployment`.
    Deployment(Deployment),
    /// A network policy: `networking.k8s.io/v1 NetworkPolicy`, `cilium.io/v2
    /// CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`, validated by `plexus-policy`
    /// and kept as written, for the agent.
    Policy(Box<PolicyObject>),
    /// A `v1 Service`, validated as the API server would (addresses are allocated later, by
    /// [`crate::services`]).
    Service(Service),
    /// A `discovery.k8s.io/v1 EndpointSlice`.
    EndpointSlice(EndpointSlice),
    /// A `cilium.io/v2alpha1` (or `v2`) `CiliumLoadBalancerIPPool`, kept as written for the agent.
    LbPool(Box<LbPoolObject>),
}

/// A `CiliumLoadBalancerIPPool`: its metadata, the document as written, and the decoded spec.
#[derive(Debug, Clone, PartialEq)]
pub struct LbPoolObject {
    /// `cilium.io/v2alpha1` or `cilium.io/v2`.
    pub api_version: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The document as written (what the agent receives).
    pub value: Value,
    /// The decoded spec.
    pub spec: LbPoolSpec,
}

/// The kind of Cilium's LoadBalancer address pools.
pub const LB_POOL_KIND: &str = "CiliumLoadBalancerIPPool";

/// The document shape of a `CiliumLoadBalancerIPPool`, for strict decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LbPoolDocument {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: LbPoolSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<Value>,
}

/// `spec` of a `CiliumLoadBalancerIPPool`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LbPoolSpec {
    /// `blocks`: the address blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocks: Vec<LbPoolBlock>,
    /// `serviceSelector`: which Services may take addresses from the pool (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_selector: Option<LabelSelector>,
    /// `allowFirstLastIPs`: `Yes` or `No`.
    #[serde(
        default,
        rename = "allowFirstLastIPs",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_first_last_ips: Option<String>,
    /// `disabled`: no new allocations from the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

/// One entry of a pool's `blocks`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LbPoolBlock {
    /// `cidr`: a block in CIDR notation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// `start`: first address of a range (refused by the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `stop`: last address of a range (refused by the lab).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
}

/// A policy object: its metadata, the document as written, and the parsed rules.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyObject {
    /// `networking.k8s.io/v1` or `cilium.io/v2`.
    pub api_version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The document as written (what the agent receives).
    pub value: Value,
    /// The parsed policy.
    pub parsed: plexus_policy::ParsedPolicy,
}

impl Object {
    /// The object's kind, e.g. `Pod`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => Namespace::KIND,
            Object::Pod(_) => Pod::KIND,
            Object::Deployment(_) => Deployment::KIND,
            Object::Policy(p) => p.kind,
            Object::Service(_) => Service::KIND,
            Object::EndpointSlice(_) => EndpointSlice::KIND,
            Object::LbPool(_) => LB_POOL_KIND,
        }
    }

    /// The object's apiVersion, e.g. `apps/v1`.
    pub fn api_version(&self) -> &'static str {
        match self {
            Object::Namespace(_) => Namespace::API_VERSION,
            Object::Pod(_) => Pod::API_VERSION,
            Object::Deployment(_) => Deployment::API_VERSION,
            Object::Policy(p) => p.api_version,
            Object::Service(_) => Service::API_VERSION,
            Object::EndpointSlice(_) => EndpointSlice::API_VERSION,
            Object::LbPool(p) => p.api_version,
        }
    }

    /// The namespace of a namespaced object (`default` when unset); `None` for a Namespace.
    pub fn namespace(&self) -> Option<String> {
        match self {
            Object::Namespace(_) | Object::LbPool(_) => None,
            Object::Policy(p) if p.kind == CCNP_KIND => None,
            Object::Pod(_)
            | Object::Deployment(_)
            | Object::Policy(_)
            | Object::Service(_)
            | Object::EndpointSlice(_) => Some(namespace_or_default(self.metadata()).to_owned()),
        }
    }

    /// The object's name; never empty for an object returned by [`parse_str`] or [`load_paths`].
    pub fn name(&self) -> String {
        self.metadata().name.clone().unwrap_or_default()
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Policy(p) => &p.metadata,
            Object::Service(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::LbPool(p) => &p.metadata,
        }
    }
}

impl fmt::Display for Object {
    /// `Kind ns/name`, or `Kind name` for a cluster-scoped object.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.namespace() {
            Some(ns) => write!(f, "{} {}/{}", self.kind(), ns, self.name()),
            None => write!(f, "{} {}", self.kind(), self.name()),
        }
    }
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// The file the document was read from.
    pub file: PathBuf,
    /// The 0-based index of the document in the file (empty documents count).
    pub index: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.index)
    }
}

/// An object together with the document it came from. The items of a `kind: List` share the
/// list's source.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The decoded, validated object.
    pub object: Object,
    /// Where it was declared.
    pub source: Source,
}

/// Where a problem was found: the document and, once known, the object it declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The file and document.
    pub source: Source,
    /// `Kind ns/name` (or `Kind name` when cluster-scoped), when kind and name are known.
    pub object: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(
                f,
                "{}: {} (document {})",
                self.source.file.display(),
                object,
                self.source.index
            ),
            None => self.source.fmt(f),
        }
    }
}

/// Why a manifest could not be loaded. The message always names the file, the object (or the
/// document) and, where there is one, the field path relative to the document (for the items
/// of a `kind: List` it starts with `items[N]`).
#[derive(Debug, Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A document is not well-formed YAML; the message carries the line and column.
    #[error("{}: document {index}: invalid YAML: {source}", file.display())]
    Syntax {
        /// The file.
        file: PathBuf,
        /// The 0-based index of the document that failed.
        index: usize,
        /// The 1-based line of the error in the file, when known.
        line: Option<usize>,
        /// The 1-based column of the error, when known.
        column: Option<usize>,
        /// The parser's error.
        #[source]
        source: serde_yaml::Error,
    },
    /// A policy that `plexus-policy` refuses (its message names the object and the field).
    #[error("{}: {source}", at.source)]
    Policy {
        /// Where.
        at: Box<Origin>,
        /// The policy error.
        source: Box<plexus_policy::PolicyError>,
    },
    /// YAML that has no JSON equivalent: a custom tag, a non-scalar key, a non-finite number.
    #[error("{at}: field {field}: {message}")]
    UnsupportedYaml {
        /// Where.
        at: Box<Origin>,
        /// The field path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A document (or list item) is not a mapping.
    #[error("{at}: field {field}: expected a mapping with apiVersion and kind, found {found}")]
    NotAnObject {
        /// Where.
        at: Box<Origin>,
        /// The path of the value (`.` for the document itself).
        field: String,
        /// What was found instead, e.g. `a list`.
        found: &'static str,
    },
    /// `apiVersion` or `kind` is missing, empty or not a string.
    #[error("{at}: field {field}: required, must be a non-empty string")]
    MissingTypeMeta {
        /// Where.
        at: Box<Origin>,
        /// `apiVersion` or `kind`, with the list item prefix when inside a List.
        field: String,
    },
    /// A kind the lab does not support.
    #[error(
        "{at}: field {field}: unknown kind {api_version} {kind}; supported: {}",
        supported_kinds()
    )]
    UnknownKind {
        /// Where.
        at: Box<Origin>,
        /// The path of the `kind` field.
        field: String,
        /// The `apiVersion, kind` of the document.
        api_version: String,
        /// The `kind` of the document.
        kind: String,
    },
    /// A supported kind with the wrong apiVersion, e.g. `extensions/v1beta1 Deployment`.
    #[error(
        "{at}: field {field}: unsupported apiVersion {api_version} for kind {kind}; expected {}",
        expected_api_version(kind)
    )]
    WrongApiVersion {
        /// Where.
        at: Box<Origin>,
        /// The path of the `apiVersion` field.
        field: String,
        /// The `apiVersion` of the document.
        api_version: String,
        /// The `kind` of the document.
        kind: String,
    },
    /// A field has the wrong type (a string where a number belongs, …) or a required field is
    /// missing.
    #[error("{at}: field {field}: {message}")]
    InvalidType {
        /// Where.
        at: Box<Origin>,
        /// The field path.
        field: String,
        /// The decoder's message.
        message: String,
    },
    /// A field the object's type does not have (a typo such as `portz`).
    #[error("{at}: field {field}: unknown field")]
    UnknownField {
        /// Where.
        at: Box<Origin>,
        /// The field path.
        field: String,
    },
    /// A value that decodes but breaks a Kubernetes validation rule.
    #[error("{at}: field {field}: {message}")]
    Invalid {
        /// Where.
        at: Box<Origin>,
        /// The field path.
        field: String,
        /// What is wrong, naming the offending value.
        message: String,
    },
}

/// A supported kind: its apiVersion, whether it is namespaced, and how to decode and validate it.
/// Adding a kind means one entry here and one variant of [`Object`].
struct KindSpec {
    api_version: &'static str,
    kind: &'static str,
    namespaced: bool,
    decode: fn(&Value, &Ctx<'_>) -> Result<Object, ManifestError>,
}

/// Every kind the lab understands.
const KINDS: &[KindSpec] = &[
    KindSpec {
        api_version: Namespace::API_VERSION,
        kind: Namespace::KIND,
        namespaced: false,
        decode: decode_namespace,
    },
    KindSpec {
        api_version: Pod::API_VERSION,
        kind: Pod::KIND,
        namespaced: true,
        decode: decode_pod,
    },
    KindSpec {
        api_version: Deployment::API_VERSION,
        kind: Deployment::KIND,
        namespaced: true,
        decode: decode_deployment,
    },
    KindSpec {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        namespaced: true,
        decode: decode_policy,
    },
    KindSpec {
        api_version: CILIUM_API_VERSION,
        kind: "CiliumNetworkPolicy",
        namespaced: true,
        decode: decode_policy,
    },
    KindSpec {
        api_version: CILIUM_API_VERSION,
        kind: CCNP_KIND,
        namespaced: false,
        decode: decode_policy,
    },
    KindSpec {
        api_version: Service::API_VERSION,
        kind: Service::KIND,
        namespaced: true,
        decode: decode_service,
    },
    KindSpec {
        api_version: EndpointSlice::API_VERSION,
        kind: EndpointSlice::KIND,
        namespaced: true,
        decode: decode_endpoint_slice,
    },
    KindSpec {
        api_version: "cilium.io/v2alpha1",
        kind: LB_POOL_KIND,
        namespaced: false,
        decode: decode_lb_pool,
    },
    KindSpec {
        api_version: CILIUM_API_VERSION,
        kind: LB_POOL_KIND,
        namespaced: false,
        decode: decode_lb_pool,
    },
];

/// apiVersion of Cilium's policy kinds.
const CILIUM_API_VERSION: &str = "cilium.io/v2";
/// The cluster-wide (not namespaced) Cilium policy kind.
const CCNP_KIND: &str = "CiliumClusterwideNetworkPolicy";

/// Decodes and validates a policy of any supported kind with `plexus-policy`, so the lab refuses
/// exactly what the agent would.
fn decode_policy(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let parsed = plexus_policy::parse_policy(value).map_err(|source| ManifestError::Policy {
        at: Box::new(ctx.at.clone()),
        source: Box::new(source),
    })?;
    let metadata: ObjectMeta = value
        .get("metadata")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ctx.invalid("metadata", e.to_string()))?
        .unwrap_or_default();
    let spec = KINDS
        .iter()
        .find(|k| k.kind == parsed.id.kind)
        .ok_or_else(|| ctx.invalid("kind", "not a policy kind"))?;
    Ok(Object::Policy(Box::new(PolicyObject {
        api_version: spec.api_version,
        kind: spec.kind,
        metadata,
        value: value.clone(),
        parsed,
    })))
}

/// The kind of a document holding other objects under `items`.
const LIST_KIND: &str = "List";
/// The apiVersion of [`LIST_KIND`].
const LIST_API_VERSION: &str = "v1";

/// `v1 Namespace, v1 Pod, …` for error messages.
fn supported_kinds() -> String {
    KINDS
        .iter()
        .map(|k| format!("{} {}", k.api_version, k.kind))
        .chain([format!("{LIST_API_VERSION} {LIST_KIND}")])
        .collect::<Vec<_>>()
        .join(", ")
}

/// The apiVersions the lab accepts for `kind`, e.g. `cilium.io/v2alpha1 or cilium.io/v2`.
fn expected_api_version(kind: &str) -> String {
    let versions: Vec<&str> = KINDS
        .iter()
        .filter(|k| k.kind == kind)
        .map(|k| k.api_version)
        .collect();
    if versions.is_empty() {
        LIST_API_VERSION.to_owned()
    } else {
        versions.join(" or ")
    }
}

/// Reads every manifest under `paths`, in order. A path may be a file or a directory, whose
/// `*.yaml` and `*.yml` files are read sorted by name (not recursively). Every document is
/// decoded and validated before anything is returned; the first error aborts.
pub fn load_paths(paths: &[PathBuf]) -> Result<Vec<Loaded>, ManifestError> {
    let mut loaded = Vec::new();
    for path in paths {
        for file in manifest_files(path)? {
            let text = fs::read_to_string(&file).map_err(|source| ManifestError::Io {
                path: file.clone(),
                source,
            })?;
            loaded.extend(parse_str(&file, &text)?);
        }
    }
    Ok(loaded)
}

/// `path` itself when it is a file, else the manifest files in the directory, sorted.
fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ManifestError::Io { path, source }
    };
    if !fs::metadata(path).map_err(io_error(path))?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(io_error(path))? {
        let file = entry.map_err(io_error(path))?.path();
        let is_manifest = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_manifest && fs::metadata(&file).map_err(io_error(&file))?.is_file() {
            files.push(file);
        }
    }
    files.sort();
    Ok(files)
}

/// Decodes and validates every document of `text`, read from `file` (used in errors and
/// [`Source`]s only). Empty documents are skipped; a `kind: List` contributes its items.
pub fn parse_str(file: &Path, text: &str) -> Result<Vec<Loaded>, ManifestError> {
    let mut loaded = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            index,
        };
        let mut yaml = serde_yaml::Value::deserialize(document).map_err(|source| {
            let location = source.location();
            ManifestError::Syntax {
                file: file.to_path_buf(),
                index,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                source,
            }
        })?;
        if yaml.is_null() {
            continue;
        }
        let unsupported = |field: String, message: String| ManifestError::UnsupportedYaml {
            at: document_origin(&source),
            field,
            message,
        };
        yaml.apply_merge()
            .map_err(|e| unsupported("<<".to_owned(), e.to_string()))?;
        let value =
            yaml_to_json(&yaml, "").map_err(|(field, message)| unsupported(field, message))?;
        decode_document(&source, &value, &mut loaded)?;
    }
    Ok(loaded)
}

/// Converts YAML to the JSON data model the Kubernetes API uses: scalar keys become strings,
/// tags and non-finite numbers are refused. Errors carry the field path.
fn yaml_to_json(yaml: &serde_yaml::Value, path: &str) -> Result<Value, (String, String)> {
    use serde_yaml::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| (display_path(path), format!("number {n} is not finite")))?
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(entries) => {
            let mut map = serde_json::Map::new();
            for (key, item) in entries {
                let key = match key {
                    Y::String(s) => s.clone(),
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    _ => {
                        return Err((
                            display_path(path),
                            "mapping keys must be strings, numbers or booleans".to_owned(),
                        ))
                    }
                };
                let child = join(path, &key);
                let value = yaml_to_json(item, &child)?;
                if map.insert(key.clone(), value).is_some() {
                    return Err((child, format!("duplicate key {key:?}")));
                }
            }
            Value::Object(map)
        }
        Y::Tagged(tagged) => {
            return Err((
                display_path(path),
                format!("YAML tag {} is not supported", tagged.tag),
            ))
        }
    })
}

/// Decodes one document: a supported object, or a `kind: List` of them.
fn decode_document(
    source: &Source,
    value: &Value,
    loaded: &mut Vec<Loaded>,
) -> Result<(), ManifestError> {
    let (api_version, kind) = type_meta(source, value, "")?;
    if kind != LIST_KIND {
        let object = decode_object(source, value, "", api_version, kind)?;
        loaded.push(Loaded {
            object,
            source: source.clone(),
        });
        return Ok(());
    }
    let at = document_origin(source);
    if api_version != LIST_API_VERSION {
        return Err(ManifestError::WrongApiVersion {
            at,
            field: "apiVersion".to_owned(),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    let Value::Object(fields) = value else {
        return Ok(()); // type_meta has checked that it is a mapping.
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "items"))
    {
        return Err(ManifestError::UnknownField {
            at,
            field: unknown.clone(),
        });
    }
    let items = match fields.get("items") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(ManifestError::InvalidType {
                at,
                field: "items".to_owned(),
                message: format!("expected a list, found {}", describe(other)),
            })
        }
    };
    let mut objects = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let prefix = format!("items[{i}]");
        let (api_version, kind) = type_meta(source, item, &prefix)?;
        if kind == LIST_KIND {
            return Err(ManifestError::Invalid {
                at,
                field: join(&prefix, "kind"),
                message: "a List cannot contain another List".to_owned(),
            });
        }
        objects.push(decode_object(source, item, &prefix, api_version, kind)?);
    }
    loaded.extend(objects.into_iter().map(|object| Loaded {
        object,
        source: source.clone(),
    }));
    Ok(())
}

/// The `apiVersion` and `kind` of the mapping at `prefix`.
fn type_meta<'v>(
    source: &Source,
    value: &'v Value,
    prefix: &str,
) -> Result<(&'v str, &'v str), ManifestError> {
    let at = || document_origin(source);
    let Value::Object(fields) = value else {
        return Err(ManifestError::NotAnObject {
            at: at(),
            field: display_path(prefix),
            found: describe(value),
        });
    };
    let string = |name: &str| match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(ManifestError::MissingTypeMeta {
            at: at(),
            field: join(prefix, name),
        }),
    };
    Ok((string("apiVersion")?, string("kind")?))
}

/// Decodes and validates one object of a supported kind.
fn decode_object(
    source: &Source,
    value: &Value,
    prefix: &str,
    api_version: &str,
    kind: &str,
) -> Result<Object, ManifestError> {
    let spec = KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version == api_version)
        .or_else(|| KINDS.iter().find(|k| k.kind == kind));
    let at = Box::new(Origin {
        source: source.clone(),
        object: identity(value, kind, spec.map(|s| s.namespaced)),
    });
    let Some(spec) = spec else {
        return Err(ManifestError::UnknownKind {
            at,
            field: join(prefix, "kind"),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    };
    if spec.api_version != api_version {
        return Err(ManifestError::WrongApiVersion {
            at,
            field: join(prefix, "apiVersion"),
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        });
    }
    (spec.decode)(value, &Ctx { at: &at, prefix })
}

/// The origin of a document whose object is not known yet.
fn document_origin(source: &Source) -> Box<Origin> {
    Box::new(Origin {
        source: source.clone(),
        object: None,
    })
}

/// `Kind ns/name` read from the raw document, when it has a name. `namespaced` is `None` for an
/// unknown kind: then the namespace is shown only when the document sets one.
fn identity(value: &Value, kind: &str, namespaced: Option<bool>) -> Option<String> {
    let metadata = value.get("metadata");
    let name = metadata?.get("name")?.as_str().filter(|n| !n.is_empty())?;
    let namespace = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let namespace = match namespaced {
        Some(false) => None,
        Some(true) => Some(namespace.unwrap_or(DEFAULT_NAMESPACE)),
        None => namespace,
    };
    Some(match namespace {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    })
}

/// What a JSON value is, for messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// `a.b` from `a` and `b`, `a[0]` from `a` and `[0]`, `b` from `` and `b`.
fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// A field path for display: `.` for the document itself.
fn display_path(path: &str) -> String {
    if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }
}

/// The object being decoded: where it is, and the field path prefix of its root.
struct Ctx<'a> {
    at: &'a Origin,
    prefix: &'a str,
}

impl Ctx<'_> {
    /// The full path of `field`, a path relative to the object.
    fn field(&self, field: &str) -> String {
        display_path(&join(self.prefix, field))
    }

    /// A validation error at `field`.
    fn invalid(&self, field: &str, message: impl Into<String>) -> ManifestError {
        ManifestError::Invalid {
            at: Box::new(self.at.clone()),
            field: self.field(field),
            message: message.into(),
        }
    }
}

/// Decodes `value` into `T`, reporting type errors and unknown fields with their paths.
fn decode_strict<T: DeserializeOwned + Serialize>(
    value: &Value,
    ctx: &Ctx<'_>,
) -> Result<T, ManifestError> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.inner().to_string();
        let (field, message) = match missing_field(&message) {
            Some(missing) => (join(&path, missing), "required field is missing".to_owned()),
            None => (path, message),
        };
        ManifestError::InvalidType {
            at: Box::new(ctx.at.clone()),
            field: ctx.field(&field),
            message,
        }
    })?;
    // The k8s-openapi types skip fields they do not know. What they know survives a round
    // trip, so a key lost in it is unknown (unless its value was empty, see `unknown_field`).
    let round_trip = serde_json::to_value(&typed)
        .map_err(|e| ctx.invalid("", format!("cannot re-encode the object: {e}")))?;
    if let Some(field) = unknown_field(value, &round_trip, "") {
        return Err(ManifestError::UnknownField {
            at: Box::new(ctx.at.clone()),
            field: ctx.field(&field),
        });
    }
    Ok(typed)
}

/// `x` from serde's "missing field `x`".
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.strip_suffix('`')
}

/// The path of the first key of `original` that `round_trip` lost. A lost key whose value is
/// null, `{}` or `[]` is not reported: the type may know it and simply not write empty values.
fn unknown_field(original: &Value, round_trip: &Value, path: &str) -> Option<String> {
    match (original, round_trip) {
        (Value::Object(original), Value::Object(round_trip)) => {
            original.iter().find_map(|(key, value)| {
                let child = join(path, key);
                match round_trip.get(key) {
                    Some(kept) => unknown_field(value, kept, &child),
                    None if is_empty(value) => None,
                    None => Some(child),
                }
            })
        }
        (Value::Array(original), Value::Array(round_trip)) => original
            .iter()
            .zip(round_trip)
            .enumerate()
            .find_map(|(i, (value, kept))| unknown_field(value, kept, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Whether a value is null, an empty mapping or an empty list.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        _ => false,
    }
}

/// Decodes and validates a Namespace.
fn decode_namespace(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let ns: Namespace = decode_strict(value, ctx)?;
    validate_name(&ns.metadata, ctx, dns1123_label)?;
    validate_labels(ns.metadata.labels.as_ref(), ctx, "metadata.labels")?;
    Ok(Object::Namespace(ns))
}

/// Decodes and validates a Pod.
fn decode_pod(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let pod: Pod = decode_strict(value, ctx)?;
    validate_name(&pod.metadata, ctx, dns1123_label)?;
    validate_namespace_field(&pod.metadata, ctx)?;
    validate_labels(pod.metadata.labels.as_ref(), ctx, "metadata.labels")?;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| ctx.invalid("spec", "required"))?;
    validate_pod_spec(spec, ctx, "spec")?;
    Ok(Object::Pod(pod))
}

/// Decodes and validates a Deployment.
fn decode_deployment(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let deployment: Deployment = decode_strict(value, ctx)?;
    let meta = &deployment.metadata;
    validate_name(meta, ctx, dns1123_subdomain)?;
    if let Some(name) = meta.name.as_deref().filter(|n| n.contains('.')) {
        return Err(ctx.invalid(
            "metadata.name",
            format!(
                "invalid value {name:?}: must not contain '.', since the Deployment's pods are \
                 named after it and pod names are DNS-1123 labels"
            ),
        ));
    }
    validate_namespace_field(meta, ctx)?;
    validate_labels(meta.labels.as_ref(), ctx, "metadata.labels")?;
    let spec = deployment
        .spec
        .as_ref()
        .ok_or_else(|| ctx.invalid("spec", "required"))?;
    if let Some(replicas) = spec.replicas.filter(|r| *r < 0) {
        return Err(ctx.invalid(
            "spec.replicas",
            format!("invalid value {replicas}: must be greater than or equal to 0"),
        ));
    }
    let template_labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.as_ref());
    validate_labels(template_labels, ctx, "spec.template.metadata.labels")?;
    validate_selector(&spec.selector, ctx, "spec.selector")?;
    check_selector_matches(
        &spec.selector,
        template_labels.unwrap_or(&BTreeMap::new()),
        ctx,
        "spec.selector",
    )?;
    let pod_spec = spec
        .template
        .spec
        .as_ref()
        .ok_or_else(|| ctx.invalid("spec.template.spec", "required"))?;
    validate_pod_spec(pod_spec, ctx, "spec.template.spec")?;
    Ok(Object::Deployment(deployment))
}

/// The Service types Kubernetes knows.
const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];

/// The range of node ports the API server allocates from and accepts (its default
/// `--service-node-port-range`).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;

/// Longest `sessionAffinityConfig.clientIP.timeoutSeconds` the API server accepts (one day).
const MAX_AFFINITY_TIMEOUT: i32 = 86_400;

/// Decodes and validates a Service the way the API server does before allocating addresses.
fn decode_service(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let svc: Service = decode_strict(value, ctx)?;
    validate_name(&svc.metadata, ctx, dns1035_label)?;
    validate_namespace_field(&svc.metadata, ctx)?;
    validate_labels(svc.metadata.labels.as_ref(), ctx, "metadata.labels")?;
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| ctx.invalid("spec", "required"))?;
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        return Err(ctx.invalid(
            "spec.type",
            format!(
                "invalid value {ty:?}: must be one of {}",
                SERVICE_TYPES.join(", ")
            ),
        ));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    if !cluster_ip.is_empty() && cluster_ip != "None" && cluster_ip.parse::<IpAddr>().is_err() {
        return Err(ctx.invalid(
            "spec.clusterIP",
            format!("invalid value {cluster_ip:?}: must be empty, \"None\" or an IP address"),
        ));
    }
    for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
        let field = format!("spec.clusterIPs[{i}]");
        if ip != "None" && ip.parse::<IpAddr>().is_err() {
            return Err(ctx.invalid(
                &field,
                format!("invalid value {ip:?}: must be \"None\" or an IP address"),
            ));
        }
        if i == 0 && !cluster_ip.is_empty() && ip != cluster_ip {
            return Err(ctx.invalid(
                &field,
                format!("invalid value {ip:?}: must match spec.clusterIP {cluster_ip:?}"),
            ));
        }
    }
    if cluster_ip.is_empty() {
        if let Some(first) = spec.cluster_ips.iter().flatten().next() {
            return Err(ctx.invalid(
                "spec.clusterIP",
                format!("required when spec.clusterIPs is set (to {first:?})"),
            ));
        }
    }
    for (i, family) in spec.ip_families.iter().flatten().enumerate() {
        match family.as_str() {
            "IPv4" => {}
            "IPv6" => {
                return Err(ctx.invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    "invalid value \"IPv6\": the lab's services are IPv4 single-stack",
                ))
            }
            other => {
                return Err(ctx.invalid(
                    &format!("spec.ipFamilies[{i}]"),
                    format!("invalid value {other:?}: must be IPv4 or IPv6"),
                ))
            }
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        if !matches!(
            policy,
            "SingleStack" | "PreferDualStack" | "RequireDualStack"
        ) {
            return Err(ctx.invalid(
                "spec.ipFamilyPolicy",
                format!(
                    "invalid value {policy:?}: must be one of SingleStack, PreferDualStack, \
                     RequireDualStack"
                ),
            ));
        }
    }
    if ty == "ExternalName" {
        let name = spec.external_name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(ctx.invalid("spec.externalName", "required for type ExternalName"));
        }
        dns1123_subdomain(name.trim_end_matches('.')).map_err(|m| {
            ctx.invalid("spec.externalName", format!("invalid value {name:?}: {m}"))
        })?;
        if !cluster_ip.is_empty() {
            return Err(ctx.invalid(
                "spec.clusterIP",
                format!("invalid value {cluster_ip:?}: must be empty for type ExternalName"),
            ));
        }
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && cluster_ip != "None" {
        return Err(ctx.invalid(
            "spec.ports",
            "at least one port is required (unless clusterIP is \"None\" or type is ExternalName)",
        ));
    }
    validate_service_ports(ports, ty, ctx)?;
    validate_labels(spec.selector.as_ref(), ctx, "spec.selector")?;
    match spec.session_affinity.as_deref() {
        None | Some("None") => {
            if spec.session_affinity_config.is_some() {
                return Err(ctx.invalid(
                    "spec.sessionAffinityConfig",
                    "must not be set when spec.sessionAffinity is None",
                ));
            }
        }
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if let Some(t) = timeout.filter(|t| !(1..=MAX_AFFINITY_TIMEOUT).contains(t)) {
                return Err(ctx.invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    format!(
                        "invalid value {t}: must be between 1 and {MAX_AFFINITY_TIMEOUT}, inclusive"
                    ),
                ));
            }
        }
        Some(other) => {
            return Err(ctx.invalid(
                "spec.sessionAffinity",
                format!("invalid value {other:?}: must be None or ClientIP"),
            ))
        }
    }
    if let Some(policy) = spec.external_traffic_policy.as_deref() {
        if !matches!(policy, "Cluster" | "Local") {
            return Err(ctx.invalid(
                "spec.externalTrafficPolicy",
                format!("invalid value {policy:?}: must be Cluster or Local"),
            ));
        }
        if !matches!(ty, "NodePort" | "LoadBalancer") && spec.external_ips.is_none() {
            return Err(ctx.invalid(
                "spec.externalTrafficPolicy",
                format!("may only be set when type is NodePort or LoadBalancer (type is {ty})"),
            ));
        }
    }
    if let Some(policy) = spec.internal_traffic_policy.as_deref() {
        if !matches!(policy, "Cluster" | "Local") {
            return Err(ctx.invalid(
                "spec.internalTrafficPolicy",
                format!("invalid value {policy:?}: must be Cluster or Local"),
            ));
        }
    }
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            return Err(ctx.invalid(
                &format!("spec.externalIPs[{i}]"),
                format!("invalid value {ip:?}: must be an IP address"),
            ));
        }
    }
    if let Some(ip) = spec.load_balancer_ip.as_deref().filter(|ip| !ip.is_empty()) {
        if ip.parse::<IpAddr>().is_err() {
            return Err(ctx.invalid(
                "spec.loadBalancerIP",
                format!("invalid value {ip:?}: must be an IP address"),
            ));
        }
    }
    for (i, range) in spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .enumerate()
    {
        parse_cidr(range).map_err(|m| {
            ctx.invalid(
                &format!("spec.loadBalancerSourceRanges[{i}]"),
                format!("invalid value {range:?}: {m}"),
            )
        })?;
    }
    Ok(Object::Service(svc))
}

/// A Service's ports: numbers, protocols, names (required and unique when there are several),
/// target ports, node ports (in range, only for NodePort and LoadBalancer).
fn validate_service_ports(
    ports: &[ServicePort],
    ty: &str,
    ctx: &Ctx<'_>,
) -> Result<(), ManifestError> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut names = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let field = |f: &str| join(&at, f);
        match port.name.as_deref().filter(|n| !n.is_empty()) {
            None if ports.len() > 1 => {
                return Err(ctx.invalid(
                    &field("name"),
                    "required when the Service has more than one port",
                ))
            }
            None => {}
            Some(name) => {
                dns1123_label(name).map_err(|m| {
                    ctx.invalid(&field("name"), format!("invalid value {name:?}: {m}"))
                })?;
                if !names.insert(name) {
                    return Err(
                        ctx.invalid(&field("name"), format!("duplicate port name {name:?}"))
                    );
                }
            }
        }
        if !(1..=65535).contains(&port.port) {
            return Err(ctx.invalid(
                &field("port"),
                format!(
                    "invalid value {}: must be between 1 and 65535, inclusive",
                    port.port
                ),
            ));
        }
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        if !PROTOCOLS.contains(&protocol) {
            return Err(ctx.invalid(
                &field("protocol"),
                format!("invalid value {protocol:?}: must be one of TCP, UDP, SCTP"),
            ));
        }
        if !seen.insert((port.port, protocol)) {
            return Err(ctx.invalid(&at, format!("duplicate port {}/{protocol}", port.port)));
        }
        match &port.target_port {
            None => {}
            Some(IntOrString::Int(n)) if (1..=65535).contains(n) => {}
            Some(IntOrString::Int(n)) => {
                return Err(ctx.invalid(
                    &field("targetPort"),
                    format!("invalid value {n}: must be between 1 and 65535, inclusive"),
                ))
            }
            Some(IntOrString::String(name)) => iana_svc_name(name).map_err(|m| {
                ctx.invalid(&field("targetPort"), format!("invalid value {name:?}: {m}"))
            })?,
        }
        match port.node_port.filter(|n| *n != 0) {
            None => {}
            Some(_) if !matches!(ty, "NodePort" | "LoadBalancer") => {
                return Err(ctx.invalid(
                    &field("nodePort"),
                    format!("may not be used when type is {ty}"),
                ))
            }
            Some(n) if !NODE_PORT_RANGE.contains(&n) => {
                return Err(ctx.invalid(
                    &field("nodePort"),
                    format!(
                        "invalid value {n}: provided port is not in the valid range {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ))
            }
            Some(n) if !node_ports.insert((n, protocol)) => {
                return Err(ctx.invalid(
                    &field("nodePort"),
                    format!("duplicate nodePort {n}/{protocol}"),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The address types an EndpointSlice may have.
const ADDRESS_TYPES: [&str; 3] = ["IPv4", "IPv6", "FQDN"];

/// Decodes and validates an EndpointSlice.
fn decode_endpoint_slice(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let slice: EndpointSlice = decode_strict(value, ctx)?;
    validate_name(&slice.metadata, ctx, dns1123_subdomain)?;
    validate_namespace_field(&slice.metadata, ctx)?;
    validate_labels(slice.metadata.labels.as_ref(), ctx, "metadata.labels")?;
    let ty = slice.address_type.as_str();
    if ty.is_empty() {
        return Err(ctx.invalid("addressType", "required: one of IPv4, IPv6, FQDN"));
    }
    if !ADDRESS_TYPES.contains(&ty) {
        return Err(ctx.invalid(
            "addressType",
            format!("invalid value {ty:?}: must be one of IPv4, IPv6, FQDN"),
        ));
    }
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}].addresses");
        if endpoint.addresses.is_empty() || endpoint.addresses.len() > 100 {
            return Err(ctx.invalid(
                &at,
                format!(
                    "must have between 1 and 100 addresses (has {})",
                    endpoint.addresses.len()
                ),
            ));
        }
        for (j, address) in endpoint.addresses.iter().enumerate() {
            let ok = match ty {
                "IPv4" => address.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => address.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => dns1123_subdomain(address).is_ok(),
            };
            if !ok {
                return Err(ctx.invalid(
                    &format!("{at}[{j}]"),
                    format!("invalid value {address:?}: must be a valid {ty} address"),
                ));
            }
        }
    }
    let mut names = BTreeSet::new();
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let at = format!("ports[{i}]");
        if let Some(n) = port.port.filter(|n| !(1..=65535).contains(n)) {
            return Err(ctx.invalid(
                &join(&at, "port"),
                format!("invalid value {n}: must be between 1 and 65535, inclusive"),
            ));
        }
        if let Some(protocol) = port.protocol.as_deref() {
            if !PROTOCOLS.contains(&protocol) {
                return Err(ctx.invalid(
                    &join(&at, "protocol"),
                    format!("invalid value {protocol:?}: must be one of TCP, UDP, SCTP"),
                ));
            }
        }
        let name = port.name.as_deref().unwrap_or("");
        if !name.is_empty() {
            dns1123_label(name).map_err(|m| {
                ctx.invalid(&join(&at, "name"), format!("invalid value {name:?}: {m}"))
            })?;
        }
        if !names.insert(name) {
            return Err(ctx.invalid(&join(&at, "name"), format!("duplicate port name {name:?}")));
        }
    }
    Ok(Object::EndpointSlice(slice))
}

/// Decodes and validates a `CiliumLoadBalancerIPPool`.
fn decode_lb_pool(value: &Value, ctx: &Ctx<'_>) -> Result<Object, ManifestError> {
    let doc: LbPoolDocument = decode_strict(value, ctx)?;
    validate_name(&doc.metadata, ctx, dns1123_subdomain)?;
    validate_labels(doc.metadata.labels.as_ref(), ctx, "metadata.labels")?;
    if doc.spec.blocks.is_empty() {
        return Err(ctx.invalid("spec.blocks", "at least one block is required"));
    }
    for (i, block) in doc.spec.blocks.iter().enumerate() {
        let at = format!("spec.blocks[{i}]");
        if block.start.is_some() || block.stop.is_some() {
            let field = if block.start.is_some() {
                "start"
            } else {
                "stop"
            };
            return Err(ctx.invalid(
                &join(&at, field),
                "start/stop ranges are not supported by the lab; use cidr",
            ));
        }
        let Some(cidr) = block.cidr.as_deref() else {
            return Err(ctx.invalid(&join(&at, "cidr"), "required"));
        };
        parse_cidr(cidr)
            .map_err(|m| ctx.invalid(&join(&at, "cidr"), format!("invalid value {cidr:?}: {m}")))?;
    }
    if let Some(selector) = &doc.spec.service_selector {
        validate_selector_terms(selector, ctx, "spec.serviceSelector")?;
    }
    if let Some(allow) = doc.spec.allow_first_last_ips.as_deref() {
        if !matches!(allow, "Yes" | "No") {
            return Err(ctx.invalid(
                "spec.allowFirstLastIPs",
                format!("invalid value {allow:?}: must be Yes or No"),
            ));
        }
    }
    let api_version = KINDS
        .iter()
        .find(|k| k.kind == LB_POOL_KIND && k.api_version == doc.api_version)
        .map_or(CILIUM_API_VERSION, |k| k.api_version);
    Ok(Object::LbPool(Box::new(LbPoolObject {
        api_version,
        metadata: doc.metadata,
        value: value.clone(),
        spec: doc.spec,
    })))
}

/// `address/length` with an address of either family and a length that fits it.
pub fn parse_cidr(cidr: &str) -> Result<(IpAddr, u8), String> {
    let (address, length) = cidr
        .split_once('/')
        .ok_or_else(|| "must be in CIDR notation, e.g. 10.0.0.0/24".to_owned())?;
    let address: IpAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    match length.parse::<u8>() {
        Ok(len) if len <= max => Ok((address, len)),
        _ => Err(format!(
            "prefix length {length:?} must be between 0 and {max}"
        )),
    }
}

/// `metadata.name`: present and accepted by `rule`.
fn validate_name(
    meta: &ObjectMeta,
    ctx: &Ctx<'_>,
    rule: fn(&str) -> Result<(), String>,
) -> Result<(), ManifestError> {
    match meta.name.as_deref() {
        None | Some("") => Err(ctx.invalid("metadata.name", "required")),
        Some(name) => rule(name)
            .map_err(|m| ctx.invalid("metadata.name", format!("invalid value {name:?}: {m}"))),
    }
}

/// `metadata.namespace`, when set: a DNS-1123 label.
fn validate_namespace_field(meta: &ObjectMeta, ctx: &Ctx<'_>) -> Result<(), ManifestError> {
    match meta.namespace.as_deref() {
        None => Ok(()),
        Some(ns) => dns1123_label(ns)
            .map_err(|m| ctx.invalid("metadata.namespace", format!("invalid value {ns:?}: {m}"))),
    }
}

/// Label keys and values at `field`.
fn validate_labels(
    labels: Option<&BTreeMap<String, String>>,
    ctx: &Ctx<'_>,
    field: &str,
) -> Result<(), ManifestError> {
    for (key, value) in labels.into_iter().flatten() {
        label_key(key).map_err(|m| ctx.invalid(field, format!("invalid key {key:?}: {m}")))?;
        label_value(value).map_err(|m| {
            ctx.invalid(
                field,
                format!("invalid value {value:?} for key {key:?}: {m}"),
            )
        })?;
    }
    Ok(())
}

/// A workload's selector: non-empty, valid keys and values, known operators.
fn validate_selector(
    selector: &LabelSelector,
    ctx: &Ctx<'_>,
    field: &str,
) -> Result<(), ManifestError> {
    let labels = selector.match_labels.as_ref().filter(|l| !l.is_empty());
    let expressions = selector
        .match_expressions
        .as_deref()
        .filter(|e| !e.is_empty());
    if labels.is_none() && expressions.is_none() {
        return Err(ctx.invalid(
            field,
            "required: a non-empty selector that matches spec.template.metadata.labels",
        ));
    }
    validate_selector_terms(selector, ctx, field)
}

/// A label selector's keys, values and operators (an empty selector is valid here).
fn validate_selector_terms(
    selector: &LabelSelector,
    ctx: &Ctx<'_>,
    field: &str,
) -> Result<(), ManifestError> {
    let labels = selector.match_labels.as_ref();
    let expressions = selector.match_expressions.as_deref();
    validate_labels(labels, ctx, &join(field, "matchLabels"))?;
    for (i, expr) in expressions.into_iter().flatten().enumerate() {
        let at = format!("{field}.matchExpressions[{i}]");
        label_key(&expr.key).map_err(|m| {
            ctx.invalid(
                &join(&at, "key"),
                format!("invalid value {:?}: {m}", expr.key),
            )
        })?;
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(ctx.invalid(
                    &join(&at, "values"),
                    format!("must be non-empty when operator is {}", expr.operator),
                ))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(ctx.invalid(
                    &join(&at, "values"),
                    format!("must be empty when operator is {}", expr.operator),
                ))
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(ctx.invalid(
                    &join(&at, "operator"),
                    format!(
                        "invalid value {other:?}: must be one of In, NotIn, Exists, DoesNotExist"
                    ),
                ))
            }
        }
        for (j, value) in values.iter().enumerate() {
            label_value(value).map_err(|m| {
                ctx.invalid(
                    &format!("{at}.values[{j}]"),
                    format!("invalid value {value:?}: {m}"),
                )
            })?;
        }
    }
    Ok(())
}

/// The selector (already validated) must select `labels`, the pod template's labels.
fn check_selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
    ctx: &Ctx<'_>,
    field: &str,
) -> Result<(), ManifestError> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Err(ctx.invalid(
                &join(field, "matchLabels"),
                format!("{key}={value} does not match spec.template.metadata.labels"),
            ));
        }
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let actual = labels.get(&expr.key);
        let matches = match expr.operator.as_str() {
            "In" => actual.is_some_and(|v| values.contains(v)),
            "NotIn" => actual.is_none_or(|v| !values.contains(v)),
            "Exists" => actual.is_some(),
            _ => actual.is_none(),
        };
        if !matches {
            return Err(ctx.invalid(
                &format!("{field}.matchExpressions[{i}]"),
                "does not match spec.template.metadata.labels",
            ));
        }
    }
    Ok(())
}

/// A pod spec at `field`: containers present, names valid and unique, ports valid, port names
/// unique in the pod.
fn validate_pod_spec(spec: &PodSpec, ctx: &Ctx<'_>, field: &str) -> Result<(), ManifestError> {
    if spec.containers.is_empty() {
        return Err(ctx.invalid(
            &join(field, "containers"),
            "at least one container is required",
        ));
    }
    let groups: [(&str, &[Container]); 2] = [
        ("containers", &spec.containers),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ];
    let mut container_names = BTreeSet::new();
    let mut port_names = BTreeSet::new();
    for (group, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            let at = format!("{field}.{group}[{i}]");
            let name = &container.name;
            if name.is_empty() {
                return Err(ctx.invalid(&join(&at, "name"), "required"));
            }
            dns1123_label(name).map_err(|m| {
                ctx.invalid(&join(&at, "name"), format!("invalid value {name:?}: {m}"))
            })?;
            if !container_names.insert(name.as_str()) {
                return Err(ctx.invalid(
                    &join(&at, "name"),
                    format!("duplicate container name {name:?}"),
                ));
            }
            for (j, port) in container.ports.iter().flatten().enumerate() {
                let at = format!("{at}.ports[{j}]");
                let number = port.container_port;
                if !(1..=65535).contains(&number) {
                    return Err(ctx.invalid(
                        &join(&at, "containerPort"),
                        format!("invalid value {number}: must be between 1 and 65535, inclusive"),
                    ));
                }
                if let Some(protocol) = &port.protocol {
                    if !PROTOCOLS.contains(&protocol.as_str()) {
                        return Err(ctx.invalid(
                            &join(&at, "protocol"),
                            format!("invalid value {protocol:?}: must be one of TCP, UDP, SCTP"),
                        ));
                    }
                }
                if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                    iana_svc_name(name).map_err(|m| {
                        ctx.invalid(&join(&at, "name"), format!("invalid value {name:?}: {m}"))
                    })?;
                    if !port_names.insert(name) {
                        return Err(ctx.invalid(
                            &join(&at, "name"),
                            format!("duplicate port name {name:?} in the pod"),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether `c` may appear inside a DNS-1123 label.
fn is_label_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'
}

/// Whether `c` is a lowercase letter or a digit.
fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// A DNS-1123 label: at most 63 lowercase alphanumerics or '-', starting and ending with an
/// alphanumeric.
fn dns1123_label(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters (has {})",
            s.len()
        ));
    }
    label_shape(s, "a DNS-1123 label")
}

/// A DNS-1035 label (what Service names must be): a DNS-1123 label that starts with a letter.
fn dns1035_label(s: &str) -> Result<(), String> {
    dns1123_label(s)?;
    if s.bytes().next().is_some_and(|c| c.is_ascii_lowercase()) {
        Ok(())
    } else {
        Err("must be a DNS-1035 label: start with a lowercase letter".to_owned())
    }
}

/// The character rules of a DNS-1123 label, without the length limit.
fn label_shape(s: &str, what: &str) -> Result<(), String> {
    let bytes = s.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.iter().copied().all(is_label_char)
        && bytes.first().copied().is_some_and(is_lower_alnum)
        && bytes.last().copied().is_some_and(is_lower_alnum);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be {what}: lowercase alphanumeric characters or '-', starting and ending with \
             an alphanumeric character"
        ))
    }
}

/// A DNS-1123 subdomain: at most 253 characters, dot-separated DNS-1123 label shapes.
fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters (has {})",
            s.len()
        ));
    }
    if s.split('.').all(|part| label_shape(part, "").is_ok()) {
        Ok(())
    } else {
        Err(
            "must be a DNS-1123 subdomain: lowercase alphanumeric characters, '-' or '.', \
             each '.'-separated part starting and ending with an alphanumeric character"
                .to_owned(),
        )
    }
}

/// The name part of a qualified name (and a label value): at most 63 characters of
/// `[A-Za-z0-9_.-]`, starting and ending with an alphanumeric; empty is checked by the caller.
fn qualified_part(s: &str) -> Result<(), String> {
    if s.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters (has {})",
            s.len()
        ));
    }
    let bytes = s.as_bytes();
    let inner = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    let ok = bytes.iter().copied().all(inner)
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(
            "must consist of alphanumeric characters, '-', '_' or '.', starting and ending with \
             an alphanumeric character"
                .to_owned(),
        )
    }
}

/// A label key: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63
/// characters.
fn label_key(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() {
                return Err("prefix part must be non-empty".to_owned());
            }
            dns1123_subdomain(prefix).map_err(|m| format!("prefix part {m}"))?;
            if name.contains('/') {
                return Err("must contain at most one '/'".to_owned());
            }
            name
        }
        None => key,
    };
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    qualified_part(name).map_err(|m| format!("name part {m}"))
}

/// A label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and ending with
/// an alphanumeric.
fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Ok(())
    } else {
        qualified_part(value)
    }
}

/// An IANA service name (a port name): at most 15 lowercase alphanumerics or '-', at least one
/// letter, no '-' at either end and no "--".
fn iana_svc_name(s: &str) -> Result<(), String> {
    if s.len() > 15 {
        return Err(format!(
            "must be no more than 15 characters (has {})",
            s.len()
        ));
    }
    if !s.bytes().all(is_label_char) {
        return Err("must contain only lowercase alphanumeric characters or '-'".to_owned());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter".to_owned());
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must not begin or end with '-'".to_owned());
    }
    if s.contains("--") {
        return Err("must not contain consecutive '-'".to_owned());
    }
    Ok(())
}

/// `metadata.namespace`, or `default`.
fn namespace_or_default(meta: &ObjectMeta) -> &str {
    meta.namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
}

/// The pods the Deployment and ReplicaSet controllers would create for `deployment`:
/// `spec.replicas` (default 1) pods named `<name>-<pod-template-hash>-<suffix>`, each with the
/// template's labels plus `pod-template-hash`, the template's annotations and spec, in the
/// Deployment's namespace. Names are deterministic: the suffix comes from the replica index.
pub fn expand_deployment(deployment: &Deployment) -> Vec<Pod> {
    let Some(spec) = &deployment.spec else {
        return Vec::new();
    };
    let replicas = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let hash = pod_template_hash(&spec.template);
    let template_meta = spec.template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_TEMPLATE_HASH_LABEL.to_owned(), hash.clone());
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    // Like the ReplicaSet controller's generateName: `<rs-name>-`, cut so that the name fits
    // in 63 characters.
    let prefix: String = format!("{name}-{hash}-")
        .chars()
        .take(MAX_GENERATED_PREFIX)
        .collect();
    let namespace = namespace_or_default(&deployment.metadata).to_owned();
    let mut used = BTreeSet::new();
    (0..replicas)
        .map(|index| Pod {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{prefix}{}",
                    replica_suffix(&hash, index, &mut used)
                )),
                generate_name: Some(prefix.clone()),
                namespace: Some(namespace.clone()),
                labels: Some(labels.clone()),
                annotations: template_meta.annotations.clone(),
                ..ObjectMeta::default()
            },
            spec: spec.template.spec.clone(),
            status: None,
        })
        .collect()
}

/// A stable 10-character hash of a pod template, from the Kubernetes name alphabet: the same
/// template gives the same hash, a different one (almost surely) a different hash.
pub fn pod_template_hash(template: &PodTemplateSpec) -> String {
    // JSON of a k8s-openapi type is canonical: fields in a fixed order, maps sorted.
    let bytes =
        serde_json::to_vec(template).unwrap_or_else(|_| format!("{template:?}").into_bytes());
    encode_safe(fnv1a64(&bytes), 10)
}

/// The 5-character suffix of replica `index`, distinct from those in `used`.
fn replica_suffix(hash: &str, index: usize, used: &mut BTreeSet<String>) -> String {
    let mut attempt = 0u32;
    loop {
        let suffix = encode_safe(fnv1a64(format!("{hash}/{index}/{attempt}").as_bytes()), 5);
        if used.insert(suffix.clone()) {
            return suffix;
        }
        attempt += 1;
    }
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` characters of [`SAFE_ALPHABET`] drawn from `value`.
fn encode_safe(mut value: u64, len: usize) -> String {
    let base = SAFE_ALPHABET.len() as u64;
    (0..len)
        .map(|_| {
            let c = SAFE_ALPHABET[(value % base) as usize];
            value /= base;
            char::from(c)
        })
        .collect()
}

/// One port a pod's containers declare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodPort {
    /// The port's name, if it has one (an empty name counts as none).
    pub name: Option<String>,
    /// The container port.
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
}

/// Every port declared by the pod's containers (`spec.containers`, not init containers), in
/// order; the protocol defaults to TCP. Ports outside 1..=65535 (only in unvalidated pods) are
/// left out.
pub fn pod_ports(pod: &Pod) -> Vec<PodPort> {
    pod.spec
        .iter()
        .flat_map(|spec| &spec.containers)
        .flat_map(|container| container.ports.iter().flatten())
        .filter_map(|port| {
            Some(PodPort {
                name: port.name.clone().filter(|n| !n.is_empty()),
                port: u16::try_from(port.container_port)
                    .ok()
                    .filter(|p| *p != 0)?,
                protocol: port.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
            })
        })
        .collect()
}

/// The namespace's labels as Kubernetes keeps them: its own labels plus
/// `kubernetes.io/metadata.name=<name>` (which wins over a conflicting value).
pub fn namespace_labels(ns: &Namespace) -> BTreeMap<String, String> {
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    if let Some(name) = &ns.metadata.name {
        labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name.clone());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The standard e2e NetworkPolicy topology: namespaces x, y, z with pods a, b, c each.
    /// The conformance topology, in `shared/` beside the checkout.
    const TOPOLOGY: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/conformance/netpol/topology.yaml"
    );

    /// The file name the in-memory tests pretend to read.
    const FILE: &str = "manifests/web.yaml";

    const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: prod
  labels:
    app: web
spec:
  containers:
  - name: server
    image: workload
    ports:
    - name: http
      containerPort: 80
      protocol: TCP
";

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: prod
spec:
  replicas: 3
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
        tier: front
    spec:
      containers:
      - name: server
        image: workload
        ports:
        - name: http
          containerPort: 8080
";

    fn parse(text: &str) -> Result<Vec<Loaded>, ManifestError> {
        parse_str(Path::new(FILE), text)
    }

    /// `base` with `from` replaced by `to`; `from` must occur.
    fn edit(base: &str, from: &str, to: &str) -> String {
        assert!(base.contains(from), "{from:?} not in the base manifest");
        base.replacen(from, to, 1)
    }

    /// The error message for `text`, which must fail.
    fn error(text: &str) -> String {
        match parse(text) {
            Ok(loaded) => panic!(
                "expected an error, got {} objects from:\n{text}",
                loaded.len()
            ),
            Err(e) => e.to_string(),
        }
    }

    /// Asserts that parsing `text` fails with a message containing each of `parts`.
    /// Each case edits `base` (`from` → `to`) and expects an error naming the file, `object`,
    /// the field and the message.
    fn assert_field_errors(base: &str, object: &str, cases: &[(&str, &str, &str, &str)]) {
        for (from, to, field, message) in cases {
            assert_error(
                &edit(base, from, to),
                &[FILE, object, &format!("field {field}"), message],
            );
        }
    }

    fn assert_error(text: &str, parts: &[&str]) {
        let message = error(text);
        for part in parts {
            assert!(
                message.contains(part),
                "error {message:?} should mention {part:?}"
            );
        }
    }

    fn deployment(text: &str) -> Deployment {
        match parse(text).expect("valid deployment").remove(0).object {
            Object::Deployment(d) => d,
            other => panic!("expected a Deployment, got {other}"),
        }
    }

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("plexus-manifest-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create temp dir");
            TempDir(path)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).expect("write temp file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn topology_has_three_namespaces_and_nine_pods() {
        let loaded = load_paths(&[PathBuf::from(TOPOLOGY)]).expect("topology loads");
        assert_eq!(loaded.len(), 12);
        assert!(loaded.iter().all(|l| l.source.file == Path::new(TOPOLOGY)));

        let namespaces: Vec<&Namespace> = loaded
            .iter()
            .filter_map(|l| match &l.object {
                Object::Namespace(ns) => Some(ns),
                _ => None,
            })
            .collect();
        let names: Vec<&str> = namespaces
            .iter()
            .filter_map(|ns| ns.metadata.name.as_deref())
            .collect();
        assert_eq!(names, ["x", "y", "z"]);
        for ns in &namespaces {
            let labels = namespace_labels(ns);
            let name = ns.metadata.name.clone().unwrap_or_default();
            assert_eq!(labels.get("ns"), Some(&name));
            assert_eq!(labels.get(NAMESPACE_NAME_LABEL), Some(&name));
        }

        let pods: Vec<(&Loaded, &Pod)> = loaded
            .iter()
            .filter_map(|l| match &l.object {
                Object::Pod(pod) => Some((l, pod)),
                _ => None,
            })
            .collect();
        assert_eq!(pods.len(), 9);
        let expected = |port: u16, protocol: &str| PodPort {
            name: Some(format!("serve-{port}-{}", protocol.to_lowercase())),
            port,
            protocol: protocol.to_owned(),
        };
        let mut identities = Vec::new();
        for (loaded, pod) in &pods {
            identities.push(loaded.object.to_string());
            let mut ports = pod_ports(pod);
            ports.sort();
            assert_eq!(
                ports,
                [
                    expected(80, "TCP"),
                    expected(80, "UDP"),
                    expected(81, "TCP"),
                    expected(81, "UDP")
                ],
                "{}",
                loaded.object
            );
        }
        assert_eq!(
            identities,
            [
                "Pod x/a", "Pod x/b", "Pod x/c", "Pod y/a", "Pod y/b", "Pod y/c", "Pod z/a",
                "Pod z/b", "Pod z/c"
            ]
        );
        assert_eq!(pods[0].0.source.index, 3);
        assert_eq!(pods[0].0.object.namespace().as_deref(), Some("x"));
        assert_eq!(pods[0].0.object.name(), "a");
        assert_eq!(pods[0].0.object.kind(), "Pod");
        assert_eq!(pods[0].0.object.api_version(), "v1");
    }

    #[test]
    fn object_identity() {
        let loaded = parse(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\n{}---\n{}",
            edit(POD, "  namespace: prod\n", ""),
            DEPLOYMENT
        ))
        .expect("valid");
        let shown: Vec<String> = loaded.iter().map(|l| l.object.to_string()).collect();
        assert_eq!(
            shown,
            ["Namespace prod", "Pod default/web", "Deployment prod/web"]
        );
        assert_eq!(loaded[0].object.namespace(), None);
        assert_eq!(
            loaded[1].object.namespace().as_deref(),
            Some(DEFAULT_NAMESPACE)
        );
        assert_eq!(loaded[2].object.kind(), "Deployment");
        assert_eq!(loaded[2].object.api_version(), "apps/v1");
        let indices: Vec<usize> = loaded.iter().map(|l| l.source.index).collect();
        assert_eq!(indices, [0, 1, 2]);
    }

    #[test]
    fn multi_document_streams_skip_empty_documents() {
        let text = format!(
            "# leading comment\n---\n{POD}---\n---\n# only a comment\n---\n{DEPLOYMENT}...\n"
        );
        let loaded = parse(&text).expect("valid");
        let found: Vec<(usize, String)> = loaded
            .iter()
            .map(|l| (l.source.index, l.object.to_string()))
            .collect();
        assert_eq!(
            found,
            [
                (0, "Pod prod/web".to_owned()),
                (3, "Deployment prod/web".to_owned())
            ]
        );
        assert!(parse("").expect("empty file").is_empty());
        assert!(parse("# nothing\n---\n").expect("comments only").is_empty());
    }

    #[test]
    fn list_items_are_loaded_in_order() {
        let text = "\
apiVersion: v1
kind: List
metadata: {}
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: prod
- apiVersion: v1
  kind: Pod
  metadata:
    name: web
    namespace: prod
  spec:
    containers:
    - name: server
      image: workload
";
        let loaded = parse(text).expect("valid list");
        let shown: Vec<String> = loaded.iter().map(|l| l.object.to_string()).collect();
        assert_eq!(shown, ["Namespace prod", "Pod prod/web"]);
        assert!(loaded.iter().all(|l| l.source.index == 0));
        assert!(parse("apiVersion: v1\nkind: List\nitems: []\n")
            .expect("empty list")
            .is_empty());

        assert_error(
            &edit(
                text,
                "      image: workload\n",
                "      image: workload\n      portz: []\n      imagez: x\n",
            ),
            &[
                FILE,
                "Pod prod/web",
                "document 0",
                "items[1].spec.containers[0].imagez",
                "unknown field",
            ],
        );
        assert_error(
            &edit(text, "kind: Pod", "kind: ConfigMap"),
            &[
                FILE,
                "ConfigMap prod/web",
                "items[1].kind",
                "unknown kind v1 ConfigMap",
            ],
        );
        assert_error(
            &edit(text, "metadata: {}\n", "metadata: {}\nitemz: []\n"),
            &[FILE, "document 0", "field itemz", "unknown field"],
        );
        assert_error(
            "apiVersion: v1\nkind: List\nitems: {}\n",
            &[FILE, "document 0", "field items", "expected a list"],
        );
        assert_error(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n",
            &[FILE, "document 0", "items[0].kind", "another List"],
        );
        assert_error(
            "apiVersion: v1\nkind: List\nitems:\n- just a string\n",
            &[FILE, "document 0", "field items[0]", "found a string"],
        );
    }

    #[test]
    fn yaml_merge_keys_and_scalar_keys() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    80: http
    true: 'yes'
spec:
  containers:
  - &base
    name: server
    image: workload
  - <<: *base
    name: sidecar
";
        let loaded = parse(text).expect("valid");
        let Object::Pod(pod) = &loaded[0].object else {
            panic!("expected a pod");
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("80").map(String::as_str), Some("http"));
        assert_eq!(labels.get("true").map(String::as_str), Some("yes"));
        let spec = pod.spec.as_ref().expect("spec");
        assert_eq!(spec.containers[1].name, "sidecar");
        assert_eq!(spec.containers[1].image.as_deref(), Some("workload"));
    }

    #[test]
    fn harmless_empty_values_are_not_unknown_fields() {
        let text = edit(
            POD,
            "  labels:\n    app: web\n",
            "  labels: {}\n  annotations: null\n  creationTimestamp: null\n",
        );
        let text = edit(
            &text,
            "    image: workload\n",
            "    image: workload\n    env: []\n    resources: {}\n",
        );
        let loaded = parse(&text).expect("empty values are fine");
        assert_eq!(loaded.len(), 1);
    }

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        assert_error(
            &edit(POD, "    ports:", "    portz:"),
            &[
                FILE,
                "Pod prod/web",
                "document 0",
                "field spec.containers[0].portz",
                "unknown field",
            ],
        );
        assert_error(
            &edit(
                POD,
                "      protocol: TCP\n",
                "      protocol: TCP\n      hostIP2: 1.2.3.4\n",
            ),
            &[FILE, "Pod prod/web", "spec.containers[0].ports[0].hostIP2"],
        );
        assert_error(
            &edit(
                POD,
                "  namespace: prod\n",
                "  namespace: prod\n  nmespace: x\n",
            ),
            &[
                FILE,
                "Pod prod/web",
                "field metadata.nmespace",
                "unknown field",
            ],
        );
        assert_error(
            &format!("{POD}extra: 1\n"),
            &[FILE, "Pod prod/web", "field extra", "unknown field"],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "  replicas: 3\n",
                "  replicas: 3\n  replica: 2\n",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.replica",
                "unknown field",
            ],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "        image: workload\n",
                "        image: workload\n        command: [a]\n        comand: [b]\n",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "spec.template.spec.containers[0].comand",
            ],
        );
    }

    #[test]
    fn type_errors_are_reported_with_their_path() {
        assert_error(
            &edit(POD, "containerPort: 80", "containerPort: eighty"),
            &[
                FILE,
                "Pod prod/web",
                "document 0",
                "field spec.containers[0].ports[0].containerPort",
                "invalid type",
            ],
        );
        assert_error(
            &edit(POD, "containerPort: 80", "containerPort: \"80\""),
            &[
                FILE,
                "Pod prod/web",
                "spec.containers[0].ports[0].containerPort",
            ],
        );
        assert_error(
            &edit(POD, "    app: web\n", "    app: [web]\n"),
            &[FILE, "Pod prod/web", "metadata.labels.app"],
        );
        assert_error(
            &edit(DEPLOYMENT, "  replicas: 3", "  replicas: three"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.replicas",
                "invalid type",
            ],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "    matchLabels:\n      app: web\n",
                "    matchExpressions:\n      key: app\n",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "spec.selector.matchExpressions",
                "invalid type",
            ],
        );
    }

    #[test]
    fn yaml_errors_name_file_document_and_position() {
        let message = error(&format!("{POD}---\nkind: [1,\n"));
        for part in [FILE, "document 1", "line 18", "column 1"] {
            assert!(
                message.contains(part),
                "{message:?} should mention {part:?}"
            );
        }
        match parse(&format!("{POD}---\nkind: [1,\n")) {
            Err(ManifestError::Syntax { index, line, .. }) => {
                assert_eq!(index, 1);
                assert_eq!(line, Some(18));
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
        assert_error(
            "apiVersion: v1\nkind: Pod\nkind: Pod\n",
            &[FILE, "document 0", "duplicate entry with key \"kind\""],
        );
        assert_error(
            &edit(POD, "image: workload", "image: !custom workload"),
            &[FILE, "document 0", "spec.containers[0].image", "tag"],
        );
        assert_error(
            &edit(POD, "containerPort: 80", "containerPort: .inf"),
            &[
                FILE,
                "document 0",
                "spec.containers[0].ports[0].containerPort",
                "not finite",
            ],
        );
        assert_error(
            "- a\n- b\n",
            &[FILE, "document 0", "expected a mapping", "found a list"],
        );
    }

    #[test]
    fn type_meta_errors() {
        assert_error(
            &edit(POD, "apiVersion: v1\n", ""),
            &[FILE, "document 0", "field apiVersion", "required"],
        );
        assert_error(
            &edit(POD, "kind: Pod\n", ""),
            &[FILE, "document 0", "field kind", "required"],
        );
        assert_error(
            &edit(POD, "kind: Pod\n", "kind: 7\n"),
            &[FILE, "document 0", "field kind", "required"],
        );
        assert_error(
            &edit(POD, "kind: Pod", "kind: ConfigMap"),
            &[
                FILE,
                "ConfigMap prod/web",
                "document 0",
                "field kind",
                "unknown kind v1 ConfigMap",
                "supported: v1 Namespace, v1 Pod, apps/v1 Deployment",
            ],
        );
        assert_error(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
            &[FILE, "Widget w", "unknown kind example.com/v1 Widget"],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "apiVersion: apps/v1",
                "apiVersion: extensions/v1beta1",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field apiVersion",
                "extensions/v1beta1",
                "expected apps/v1",
            ],
        );
        assert_error(
            &edit(POD, "apiVersion: v1", "apiVersion: apps/v1"),
            &[FILE, "Pod prod/web", "field apiVersion", "expected v1"],
        );
    }

    #[test]
    fn the_first_error_aborts_the_whole_file() {
        match parse(&format!(
            "{POD}---\n{}",
            edit(DEPLOYMENT, "kind: Deployment", "kind: StatefulSet")
        )) {
            Err(ManifestError::UnknownKind { at, kind, .. }) => {
                assert_eq!(kind, "StatefulSet");
                assert_eq!(at.source.index, 1);
                assert_eq!(at.object.as_deref(), Some("StatefulSet prod/web"));
            }
            other => panic!("expected an unknown kind error, got {other:?}"),
        }
    }

    #[test]
    fn names_and_namespaces_are_validated() {
        assert_error(
            &edit(POD, "  name: web\n", "  name: Web\n"),
            &[
                FILE,
                "Pod prod/Web",
                "field metadata.name",
                "DNS-1123 label",
            ],
        );
        assert_error(
            &edit(POD, "  name: web\n", "  name: web.1\n"),
            &[
                FILE,
                "Pod prod/web.1",
                "field metadata.name",
                "DNS-1123 label",
            ],
        );
        assert_error(
            &edit(
                POD,
                "  name: web\n",
                &format!("  name: {}\n", "a".repeat(64)),
            ),
            &[FILE, "field metadata.name", "63 characters"],
        );
        assert_error(
            &edit(POD, "  name: web\n", ""),
            &[FILE, "document 0", "field metadata.name", "required"],
        );
        assert_error(
            &edit(POD, "  namespace: prod\n", "  namespace: prod.eu\n"),
            &[
                FILE,
                "Pod prod.eu/web",
                "field metadata.namespace",
                "DNS-1123 label",
            ],
        );
        assert_error(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x_y\n",
            &[
                FILE,
                "Namespace x_y",
                "field metadata.name",
                "DNS-1123 label",
            ],
        );
        assert_error(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n",
            &[FILE, "Namespace a.b", "field metadata.name"],
        );
        assert_error(
            "apiVersion: v1\nkind: Namespace\nmetadata: {}\n",
            &[FILE, "document 0", "field metadata.name", "required"],
        );
        assert_error(
            &edit(DEPLOYMENT, "  name: web\n", "  name: Web\n"),
            &[
                FILE,
                "Deployment prod/Web",
                "field metadata.name",
                "DNS-1123 subdomain",
            ],
        );
        assert_error(
            &edit(DEPLOYMENT, "  name: web\n", "  name: web.v2\n"),
            &[
                FILE,
                "Deployment prod/web.v2",
                "field metadata.name",
                "must not contain '.'",
            ],
        );
        assert_error(
            &edit(DEPLOYMENT, "  namespace: prod\n", "  namespace: -prod\n"),
            &[FILE, "Deployment -prod/web", "field metadata.namespace"],
        );
    }

    #[test]
    fn labels_are_validated() {
        for (labels, part) in [
            ("    -app: web\n", "invalid key \"-app\""),
            ("    example.com/a/b: web\n", "at most one '/'"),
            ("    Example.com/app: web\n", "prefix part"),
            ("    /app: web\n", "prefix part must be non-empty"),
            ("    example.com/: web\n", "name part must be non-empty"),
            (&format!("    {}: web\n", "k".repeat(64)), "63 characters"),
            (&format!("    app: {}\n", "v".repeat(64)), "63 characters"),
            ("    app: web_\n", "invalid value \"web_\" for key \"app\""),
            ("    app: we b\n", "invalid value \"we b\""),
        ] {
            assert_error(
                &edit(POD, "    app: web\n", labels),
                &[FILE, "Pod prod/web", "field metadata.labels", part],
            );
        }
        assert_error(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels:\n    a b: c\n",
            &[FILE, "Namespace x", "field metadata.labels"],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "        tier: front\n",
                "        tier: front_\n",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.template.metadata.labels",
            ],
        );
        let fine = edit(
            POD,
            "    app: web\n",
            "    app: web\n    example.com/Team_1.x: A-b_c.9\n    empty: ''\n",
        );
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn container_ports_are_validated() {
        let port = "spec.containers[0].ports[0]";
        for (from, to, field, part) in [
            (
                "containerPort: 80",
                "containerPort: 0",
                "containerPort",
                "between 1 and 65535",
            ),
            (
                "containerPort: 80",
                "containerPort: 65536",
                "containerPort",
                "between 1 and 65535",
            ),
            (
                "containerPort: 80",
                "containerPort: -1",
                "containerPort",
                "between 1 and 65535",
            ),
            (
                "protocol: TCP",
                "protocol: tcp",
                "protocol",
                "one of TCP, UDP, SCTP",
            ),
            (
                "protocol: TCP",
                "protocol: ICMP",
                "protocol",
                "one of TCP, UDP, SCTP",
            ),
            (
                "- name: http",
                "- name: http-alternative",
                "name",
                "15 characters",
            ),
            ("- name: http", "- name: HTTP", "name", "lowercase"),
            (
                "- name: http",
                "- name: http--alt",
                "name",
                "consecutive '-'",
            ),
            ("- name: http", "- name: -http", "name", "begin or end"),
            (
                "- name: http",
                "- name: \"8080\"",
                "name",
                "at least one letter",
            ),
        ] {
            assert_error(
                &edit(POD, from, to),
                &[FILE, "Pod prod/web", &format!("field {port}.{field}"), part],
            );
        }
        let no_protocol = edit(POD, "      protocol: TCP\n", "");
        let loaded = parse(&no_protocol).expect("protocol defaults to TCP");
        let Object::Pod(pod) = &loaded[0].object else {
            panic!("expected a pod");
        };
        assert_eq!(
            pod_ports(pod),
            [PodPort {
                name: Some("http".to_owned()),
                port: 80,
                protocol: "TCP".to_owned()
            }]
        );
    }

    #[test]
    fn port_names_are_unique_in_the_pod() {
        let second = "  - name: sidecar\n    image: workload\n    ports:\n    - name: http\n      containerPort: 81\n";
        assert_error(
            &format!("{POD}{second}"),
            &[
                FILE,
                "Pod prod/web",
                "field spec.containers[1].ports[0].name",
                "duplicate port name \"http\"",
            ],
        );
        let unnamed = format!(
            "{POD}{}",
            edit(
                second,
                "    - name: http\n      containerPort: 81",
                "    - containerPort: 80\n      protocol: UDP"
            )
        );
        let loaded = parse(&unnamed).expect("unnamed ports need no unique name");
        let Object::Pod(pod) = &loaded[0].object else {
            panic!("expected a pod");
        };
        let ports = pod_ports(pod);
        assert_eq!(ports.len(), 2);
        assert_eq!(
            ports[1],
            PodPort {
                name: None,
                port: 80,
                protocol: "UDP".to_owned()
            }
        );
    }

    #[test]
    fn containers_are_validated() {
        assert_error(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers: []\n",
            &[
                FILE,
                "Pod default/web",
                "field spec.containers",
                "at least one container",
            ],
        );
        assert_error(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n",
            &[FILE, "Pod default/web", "field spec", "required"],
        );
        assert_error(
            &edit(
                POD,
                "  - name: server\n    image: workload\n",
                "  - image: workload\n",
            ),
            &[
                FILE,
                "Pod prod/web",
                "field spec.containers[0].name",
                "required",
            ],
        );
        assert_error(
            &format!("{POD}  - name: server\n    image: other\n"),
            &[
                FILE,
                "Pod prod/web",
                "field spec.containers[1].name",
                "duplicate container name",
            ],
        );
        assert_error(
            &edit(DEPLOYMENT, "      containers:\n      - name: server\n        image: workload\n        ports:\n        - name: http\n          containerPort: 8080\n", "      containers: []\n"),
            &[FILE, "Deployment prod/web", "field spec.template.spec.containers", "at least one container"],
        );
        assert_error(
            &edit(DEPLOYMENT, "containerPort: 8080", "containerPort: 80800"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.template.spec.containers[0].ports[0].containerPort",
            ],
        );
    }

    #[test]
    fn deployment_specs_are_validated() {
        assert_error(
            &edit(
                DEPLOYMENT,
                "  selector:\n    matchLabels:\n      app: web\n",
                "",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector",
                "required",
            ],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "    matchLabels:\n      app: web\n",
                "    matchLabels: {}\n",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector",
                "required",
            ],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "      app: web\n  template",
                "      app: api\n  template",
            ),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchLabels",
                "app=api does not match",
            ],
        );
        assert_error(
            &edit(DEPLOYMENT, "  replicas: 3", "  replicas: -1"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.replicas",
                "greater than or equal to 0",
            ],
        );
        assert_error(
            &edit(
                DEPLOYMENT,
                "  template:\n    metadata:\n      labels:\n        app: web\n        tier: front\n",
                "  template:\n",
            ),
            &[FILE, "Deployment prod/web", "field spec.selector.matchLabels", "app=web does not match"],
        );
        assert_error(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
            &[FILE, "Deployment default/web", "field spec", "required"],
        );
        let expressions = |exprs: &str| {
            edit(
                DEPLOYMENT,
                "    matchLabels:\n      app: web\n",
                &format!("    matchExpressions:\n{exprs}"),
            )
        };
        assert_error(
            &expressions("    - {key: app, operator: Equals, values: [web]}\n"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchExpressions[0].operator",
                "In, NotIn, Exists, DoesNotExist",
            ],
        );
        assert_error(
            &expressions("    - {key: app, operator: In}\n"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchExpressions[0].values",
                "non-empty",
            ],
        );
        assert_error(
            &expressions("    - {key: app, operator: Exists, values: [web]}\n"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchExpressions[0].values",
                "must be empty",
            ],
        );
        assert_error(
            &expressions("    - {key: '-app', operator: Exists}\n"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchExpressions[0].key",
            ],
        );
        assert_error(
            &expressions("    - {key: app, operator: In, values: [api]}\n"),
            &[
                FILE,
                "Deployment prod/web",
                "field spec.selector.matchExpressions[0]",
                "does not match",
            ],
        );
        assert_error(
            &expressions("    - {key: app, operator: In, values: [web]}\n    - {key: tier, operator: DoesNotExist}\n"),
            &[FILE, "field spec.selector.matchExpressions[1]", "does not match"],
        );
        let fine = expressions(
            "    - {key: app, operator: In, values: [web, api]}\n    - {key: tier, operator: Exists}\n    - {key: tier, operator: NotIn, values: [back]}\n    - {key: canary, operator: DoesNotExist}\n",
        );
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn deployments_expand_to_replicas_with_a_stable_hash() {
        let d = deployment(DEPLOYMENT);
        let pods = expand_deployment(&d);
        assert_eq!(pods.len(), 3);
        let hash = pod_template_hash(&d.spec.as_ref().expect("spec").template);
        assert_eq!(hash.len(), 10);
        assert!(hash.bytes().all(|c| SAFE_ALPHABET.contains(&c)));

        let mut names = BTreeSet::new();
        for pod in &pods {
            let meta = &pod.metadata;
            let name = meta.name.clone().unwrap_or_default();
            assert!(name.starts_with(&format!("web-{hash}-")), "{name}");
            assert_eq!(name.len(), "web-".len() + 10 + 1 + 5);
            assert!(dns1123_label(&name).is_ok(), "{name}");
            names.insert(name);
            assert_eq!(meta.namespace.as_deref(), Some("prod"));
            let labels = meta.labels.clone().unwrap_or_default();
            assert_eq!(labels.get(POD_TEMPLATE_HASH_LABEL), Some(&hash));
            assert_eq!(labels.get("app").map(String::as_str), Some("web"));
            assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
            assert_eq!(
                pod.spec,
                d.spec.as_ref().and_then(|s| s.template.spec.clone())
            );
        }
        assert_eq!(names.len(), 3, "names must be distinct: {names:?}");

        // Deterministic, and scaling keeps the names of the existing replicas.
        assert_eq!(expand_deployment(&d), pods);
        let scaled =
            expand_deployment(&deployment(&edit(DEPLOYMENT, "replicas: 3", "replicas: 5")));
        assert_eq!(scaled.len(), 5);
        assert_eq!(scaled[..3], pods[..]);

        // A different template is a different hash.
        let changed = deployment(&edit(DEPLOYMENT, "image: workload", "image: workload:v2"));
        let changed_hash = pod_template_hash(&changed.spec.as_ref().expect("spec").template);
        assert_ne!(changed_hash, hash);
        let changed_pods = expand_deployment(&changed);
        assert_eq!(
            changed_pods[0]
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(POD_TEMPLATE_HASH_LABEL)),
            Some(&changed_hash)
        );
        assert!(changed_pods
            .iter()
            .all(|p| !names.contains(p.metadata.name.as_deref().unwrap_or_default())));
    }

    #[test]
    fn deployment_defaults() {
        let one = deployment(&edit(
            &edit(DEPLOYMENT, "  replicas: 3\n", ""),
            "  namespace: prod\n",
            "",
        ));
        let pods = expand_deployment(&one);
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods[0].metadata.namespace.as_deref(),
            Some(DEFAULT_NAMESPACE)
        );
        assert!(
            expand_deployment(&deployment(&edit(DEPLOYMENT, "replicas: 3", "replicas: 0")))
                .is_empty()
        );
        assert!(expand_deployment(&Deployment::default()).is_empty());
    }

    #[test]
    fn expanded_pods_are_valid_pods_even_for_long_names() {
        let long = "w".repeat(60);
        let d = deployment(&edit(
            DEPLOYMENT,
            "  name: web\n",
            &format!("  name: {long}\n"),
        ));
        let pods = expand_deployment(&d);
        assert_eq!(pods.len(), 3);
        for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            assert_eq!(name.len(), 63, "{name}");
            let json = serde_json::to_string(pod).expect("serialize pod");
            let loaded = parse(&json).expect("expanded pod validates");
            assert_eq!(loaded[0].object, Object::Pod(pod.clone()));
        }
    }

    #[test]
    fn namespace_labels_add_the_name_label() {
        let loaded = parse(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n  labels:\n    team: a\n    kubernetes.io/metadata.name: other\n",
        )
        .expect("valid");
        let Object::Namespace(ns) = &loaded[0].object else {
            panic!("expected a namespace");
        };
        let labels = namespace_labels(ns);
        let expected: BTreeMap<String, String> = [("team", "a"), (NAMESPACE_NAME_LABEL, "prod")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(labels, expected);
        assert_eq!(namespace_labels(&Namespace::default()), BTreeMap::new());
    }

    #[test]
    fn init_container_ports_are_validated_but_not_listed() {
        let text = edit(
            POD,
            "spec:\n",
            "spec:\n  initContainers:\n  - name: init\n    image: workload\n    ports:\n    - name: metrics\n      containerPort: 9090\n",
        );
        let loaded = parse(&text).expect("valid");
        let Object::Pod(pod) = &loaded[0].object else {
            panic!("expected a pod");
        };
        assert_eq!(pod_ports(pod).len(), 1);
        assert_error(
            &edit(&text, "name: metrics", "name: http"),
            &[
                FILE,
                "Pod prod/web",
                "field spec.initContainers[0].ports[0].name",
                "duplicate port name",
            ],
        );
    }

    #[test]
    fn directories_are_read_sorted_by_name() {
        let dir = TempDir::new("dir");
        dir.write("b.yml", &edit(POD, "  name: web\n", "  name: second\n"));
        dir.write(
            "a.yaml",
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n---\n{POD}"),
        );
        dir.write("c.txt", "not: a manifest\n");
        dir.write("README.md", "# docs\n");
        fs::create_dir(dir.0.join("nested.yaml")).expect("create nested dir");
        let extra = TempDir::new("extra");
        let single = extra.write("deploy.yaml", DEPLOYMENT);

        let loaded = load_paths(&[dir.0.clone(), single.clone()]).expect("loads");
        let found: Vec<(String, usize, String)> = loaded
            .iter()
            .map(|l| {
                let file = l
                    .source
                    .file
                    .file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default();
                (file.to_owned(), l.source.index, l.object.to_string())
            })
            .collect();
        let expected = [
            ("a.yaml", 0, "Namespace prod"),
            ("a.yaml", 1, "Pod prod/web"),
            ("b.yml", 0, "Pod prod/second"),
            ("deploy.yaml", 0, "Deployment prod/web"),
        ]
        .map(|(f, i, o)| (f.to_owned(), i, o.to_owned()));
        assert_eq!(found, expected);
        assert_eq!(loaded[0].source.file, dir.0.join("a.yaml"));

        // An error in any file names that file, and nothing is returned.
        let bad = dir.write("d.yaml", &edit(POD, "    ports:", "    portz:"));
        match load_paths(std::slice::from_ref(&dir.0)) {
            Err(e) => {
                let message = e.to_string();
                let bad = bad.display().to_string();
                assert!(message.contains(&bad), "{message:?} should mention {bad:?}");
                assert!(message.contains("spec.containers[0].portz"), "{message}");
            }
            Ok(loaded) => panic!("expected an error, got {} objects", loaded.len()),
        }
    }

    #[test]
    fn missing_paths_are_io_errors() {
        let dir = TempDir::new("missing");
        let missing = dir.0.join("absent.yaml");
        match load_paths(std::slice::from_ref(&missing)) {
            Err(ManifestError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        let message = load_paths(std::slice::from_ref(&missing))
            .map(|_| ())
            .expect_err("missing file")
            .to_string();
        assert!(message.contains("absent.yaml"), "{message}");
    }

    #[test]
    fn name_rules() {
        for ok in ["a", "a-b", "0", "x1", &"a".repeat(63)] {
            assert!(dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        for ok in [
            "a",
            "a.b",
            "a-b.c-d",
            "example.com",
            &format!("{}.b", "a".repeat(100)),
        ] {
            assert!(dns1123_subdomain(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a.-b", "A.b", &"a".repeat(254)] {
            assert!(dns1123_subdomain(bad).is_err(), "{bad}");
        }
        for ok in ["app", "App_1.x", "example.com/app", "a/b", "k8s.io/Name-1"] {
            assert!(label_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "-a",
            "a-",
            "EXAMPLE.com/a",
            "a b",
            &"k".repeat(64),
        ] {
            assert!(label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "v", "V-1_x.y", &"v".repeat(63)] {
            assert!(label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-v", "v.", "v v", "v/x", &"v".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
        for ok in ["http", "serve-80-tcp", "h2c", "a", "a-b-c-d-e-f-g-h"] {
            assert!(iana_svc_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "80",
            "-http",
            "http-",
            "ht--tp",
            "HTTP",
            "http_x",
            "abcdefghijklmnop",
        ] {
            assert!(iana_svc_name(bad).is_err(), "{bad}");
        }
    }

    const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: prod
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - name: http
    port: 80
    targetPort: 8080
    nodePort: 30080
  - name: dns
    port: 53
    protocol: UDP
";

    const SLICE: &str = "\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: prod
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
endpoints:
- addresses: [10.244.0.5]
  conditions:
    ready: true
ports:
- name: http
  port: 8080
  protocol: TCP
";

    const POOL: &str = "\
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  name: blue
spec:
  blocks:
  - cidr: 172.18.255.0/24
  serviceSelector:
    matchLabels:
      color: blue
  allowFirstLastIPs: 'No'
  disabled: false
";

    #[test]
    fn services_decode_with_identity() {
        let loaded = parse(SERVICE).expect("valid service");
        let Object::Service(svc) = &loaded[0].object else {
            panic!("expected a Service");
        };
        assert_eq!(loaded[0].object.to_string(), "Service prod/web");
        assert_eq!(loaded[0].object.api_version(), "v1");
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_ref())
            .expect("ports");
        assert_eq!(ports[0].node_port, Some(30080));
        // Headless and ExternalName Services need no ports.
        parse("apiVersion: v1\nkind: Service\nmetadata:\n  name: h\nspec:\n  clusterIP: None\n")
            .expect("headless");
        parse("apiVersion: v1\nkind: Service\nmetadata:\n  name: e\nspec:\n  type: ExternalName\n  externalName: db.example.com\n")
            .expect("external name");
    }

    #[test]
    fn service_fields_are_validated() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("    port: 80\n", "    port: 0\n", "spec.ports[0].port", "between 1 and 65535"),
            ("    port: 80\n", "    port: 70000\n", "spec.ports[0].port", "between 1 and 65535"),
            ("    protocol: UDP\n", "    protocol: ICMP\n", "spec.ports[1].protocol", "TCP, UDP, SCTP"),
            ("  type: NodePort\n", "  type: Magic\n", "spec.type", "ClusterIP, NodePort, LoadBalancer, ExternalName"),
            ("    nodePort: 30080\n", "    nodePort: 8080\n", "spec.ports[0].nodePort", "30000-32767"),
            ("  type: NodePort\n", "  type: ClusterIP\n", "spec.ports[0].nodePort", "may not be used"),
            ("  type: NodePort\n", "  type: NodePort\n  clusterIP: 10.96.0.300\n", "spec.clusterIP", "IP address"),
            ("  type: NodePort\n", "  type: NodePort\n  sessionAffinity: Sticky\n", "spec.sessionAffinity", "None or ClientIP"),
            (
                "  type: NodePort\n",
                "  type: NodePort\n  sessionAffinity: ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 86401\n",
                "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                "between 1 and 86400",
            ),
            ("  type: NodePort\n", "  type: NodePort\n  externalTrafficPolicy: Nearby\n", "spec.externalTrafficPolicy", "Cluster or Local"),
            ("  type: NodePort\n", "  type: NodePort\n  internalTrafficPolicy: Global\n", "spec.internalTrafficPolicy", "Cluster or Local"),
            ("  type: NodePort\n", "  type: ClusterIP\n  externalTrafficPolicy: Local\n", "spec.ports[0].nodePort", "may not be used"),
            ("  - name: dns\n", "  - name: http\n", "spec.ports[1].name", "duplicate port name"),
            ("  - name: dns\n", "  - name: dnS\n", "spec.ports[1].name", "DNS-1123"),
            ("  - name: dns\n", "  -\n", "spec.ports[1].name", "required when"),
            ("    targetPort: 8080\n", "    targetPort: 0\n", "spec.ports[0].targetPort", "between 1 and 65535"),
            ("    targetPort: 8080\n", "    targetPort: Not_A_Name\n", "spec.ports[0].targetPort", "invalid value"),
            ("    port: 80\n", "    port: 80\n    portz: 1\n", "spec.ports[0].portz", "unknown field"),
            ("    port: 80\n", "    port: eighty\n", "spec.ports[0].port", "invalid type"),
        ];
        assert_field_errors(SERVICE, "Service prod/web", cases);
        assert_error(
            &edit(SERVICE, "  name: web\n", "  name: 1web\n"),
            &[FILE, "Service prod/1web", "field metadata.name", "DNS-1035"],
        );
        let no_ports =
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  selector:\n    app: a\n";
        assert_error(
            no_ports,
            &[
                FILE,
                "Service default/s",
                "field spec.ports",
                "at least one port",
            ],
        );
        assert_error(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n",
            &[FILE, "Service default/s", "field spec", "required"],
        );
        assert_error(
            &edit(
                SERVICE,
                "  type: NodePort\n",
                "  type: ClusterIP\n  externalTrafficPolicy: Local\n",
            )
            .replace("    nodePort: 30080\n", ""),
            &[
                FILE,
                "Service prod/web",
                "field spec.externalTrafficPolicy",
                "may only be set",
            ],
        );
        assert_error(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: e\nspec:\n  type: ExternalName\n",
            &[
                FILE,
                "Service default/e",
                "field spec.externalName",
                "required",
            ],
        );
    }

    #[test]
    fn endpoint_slices_are_validated() {
        let loaded = parse(SLICE).expect("valid slice");
        assert_eq!(loaded[0].object.to_string(), "EndpointSlice prod/web-1");
        assert_eq!(loaded[0].object.api_version(), "discovery.k8s.io/v1");
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "addressType: IPv4\n",
                "addressType: IPv5\n",
                "addressType",
                "IPv4, IPv6, FQDN",
            ),
            (
                "[10.244.0.5]",
                "[10.244.0.500]",
                "endpoints[0].addresses[0]",
                "valid IPv4 address",
            ),
            (
                "[10.244.0.5]",
                "[]",
                "endpoints[0].addresses",
                "between 1 and 100",
            ),
            (
                "  port: 8080\n",
                "  port: 65536\n",
                "ports[0].port",
                "between 1 and 65535",
            ),
            (
                "  protocol: TCP\n",
                "  protocol: tcp\n",
                "ports[0].protocol",
                "TCP, UDP, SCTP",
            ),
            (
                "    ready: true\n",
                "    ready: true\n    lively: true\n",
                "endpoints[0].conditions.lively",
                "unknown field",
            ),
        ];
        assert_field_errors(SLICE, "EndpointSlice prod/web-1", cases);
        assert_error(
            &edit(SLICE, "  name: web-1\n", "  name: Web_1\n"),
            &[
                FILE,
                "EndpointSlice prod/Web_1",
                "field metadata.name",
                "DNS-1123",
            ],
        );
        assert_error(
            &edit(SLICE, "addressType: IPv4\n", ""),
            &[FILE, "EndpointSlice prod/web-1", "addressType", "required"],
        );
        assert_error(
            &edit(
                SLICE,
                "apiVersion: discovery.k8s.io/v1",
                "apiVersion: discovery.k8s.io/v1beta1",
            ),
            &[FILE, "field apiVersion", "expected discovery.k8s.io/v1"],
        );
    }

    #[test]
    fn lb_pools_are_validated() {
        let loaded = parse(POOL).expect("valid pool");
        let Object::LbPool(pool) = &loaded[0].object else {
            panic!("expected a pool");
        };
        assert_eq!(
            loaded[0].object.to_string(),
            "CiliumLoadBalancerIPPool blue"
        );
        assert_eq!(loaded[0].object.namespace(), None);
        assert_eq!(pool.api_version, "cilium.io/v2alpha1");
        assert_eq!(pool.value["spec"]["blocks"][0]["cidr"], "172.18.255.0/24");
        assert_eq!(pool.spec.allow_first_last_ips.as_deref(), Some("No"));
        let v2 = parse(&edit(POOL, "cilium.io/v2alpha1", "cilium.io/v2")).expect("v2 pool");
        assert_eq!(v2[0].object.api_version(), "cilium.io/v2");
        let cases: &[(&str, &str, &str, &str)] = &[
            (
                "  - cidr: 172.18.255.0/24\n",
                "  - cidr: 172.18.255.0/33\n",
                "spec.blocks[0].cidr",
                "prefix length",
            ),
            (
                "  - cidr: 172.18.255.0/24\n",
                "  - cidr: 172.18.255.0\n",
                "spec.blocks[0].cidr",
                "CIDR notation",
            ),
            (
                "  - cidr: 172.18.255.0/24\n",
                "  - start: 172.18.255.10\n    stop: 172.18.255.20\n",
                "spec.blocks[0].start",
                "not supported",
            ),
            (
                "  - cidr: 172.18.255.0/24\n",
                "  - cidr: 172.18.255.0/24\n    cidrs: x\n",
                "spec.blocks[0].cidrs",
                "unknown field",
            ),
            (
                "  allowFirstLastIPs: 'No'\n",
                "  allowFirstLastIPs: maybe\n",
                "spec.allowFirstLastIPs",
                "Yes or No",
            ),
            (
                "  disabled: false\n",
                "  disabled: nope\n",
                "spec.disabled",
                "invalid type",
            ),
            (
                "  disabled: false\n",
                "  disabled: false\n  colour: red\n",
                "spec.colour",
                "unknown field",
            ),
            (
                "      color: blue\n",
                "      color: blue!\n",
                "spec.serviceSelector.matchLabels",
                "invalid value",
            ),
            (
                "    matchLabels:\n      color: blue\n",
                "    matchExpressions:\n    - key: color\n      operator: Near\n",
                "spec.serviceSelector.matchExpressions[0].operator",
                "In, NotIn, Exists, DoesNotExist",
            ),
        ];
        assert_field_errors(POOL, "CiliumLoadBalancerIPPool blue", cases);
        assert_error(
            &edit(
                POOL,
                "  blocks:\n  - cidr: 172.18.255.0/24\n",
                "  blocks: []\n",
            ),
            &[
                FILE,
                "CiliumLoadBalancerIPPool blue",
                "field spec.blocks",
                "at least one block",
            ],
        );
        assert_error(
            &edit(POOL, "cilium.io/v2alpha1", "cilium.io/v1"),
            &[
                FILE,
                "field apiVersion",
                "cilium.io/v2alpha1 or cilium.io/v2",
            ],
        );
    }
}
