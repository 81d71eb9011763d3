//! Where descriptors come from (DESIGN §8): the service's own database (embedded, the default)
//! or a remote ODM registry.

use std::path::Path;
use std::time::Duration;

use awc::error::SendRequestError;
use serde_json::Value;

use crate::clock::now_ms;
use crate::config::{LimitSettings, RegistryMode, RegistrySettings};
use crate::db::{self, Db, DbError};
use crate::descriptor;
use crate::http_client::{client, path_segment};

#[derive(Clone)]
pub struct Registry {
    db: Db,
    remote: Option<Remote>,
    limits: LimitSettings,
}

#[derive(Clone)]
struct Remote {
    address: String,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("version {version} of product {product} does not exist")]
    NotFound { product: String, version: String },
    /// 503 50050
    #[error("{0}")]
    Unreachable(RemoteFailure),
    /// 502 50250
    #[error("{0}")]
    Failed(RemoteFailure),
    #[error("the descriptor is invalid: {0}")]
    Invalid(String),
    /// 422 42213
    #[error("{0}")]
    OverLimit(String),
    /// 422 42201
    #[error(
        "templates by reference are resolved only through a remote ODM registry \
         (`registry.mode: remote`), and this service uses its embedded one"
    )]
    NoTemplates,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What went wrong with the remote registry, in two parts: callers hear which service and what
/// happened (`summary`); only the log gets its URL and its answer (`detail`, DESIGN §14).
#[derive(Debug)]
pub struct RemoteFailure {
    pub summary: String,
    pub detail: String,
}

impl RemoteFailure {
    pub(crate) fn new(summary: impl Into<String>, detail: String) -> RemoteFailure {
        RemoteFailure {
            summary: summary.into(),
            detail,
        }
    }

    /// Says what the registry was asked for, e.g. which task's template.
    pub fn resolving(mut self, what: &str) -> RemoteFailure {
        self.summary = format!("{} while resolving {what}", self.summary);
        self
    }
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl From<diesel::result::Error> for RegistryError {
    fn from(e: diesel::result::Error) -> Self {
        RegistryError::Db(DbError::Query(e))
    }
}

impl Registry {
    pub fn new(db: Db, settings: &RegistrySettings, limits: LimitSettings) -> Registry {
        let remote = (settings.mode == RegistryMode::Remote).then(|| Remote {
            address: settings
                .address
                .clone()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
            timeout: Duration::from_millis(settings.timeout_ms),
        });
        Registry { db, remote, limits }
    }

    pub fn is_embedded(&self) -> bool {
        self.remote.is_none()
    }

    /// The descriptor of a product version, as JSON.
    pub async fn descriptor(&self, product: &str, version: &str) -> Result<Value, RegistryError> {
        let not_found = || RegistryError::NotFound {
            product: product.to_owned(),
            version: version.to_owned(),
        };
        match &self.remote {
            Some(remote) => remote.fetch(product, version).await?.ok_or_else(not_found),
            None => {
                let stored = self.stored(product, version).await?.ok_or_else(not_found)?;
                serde_json::from_str(&stored).map_err(|e| {
                    RegistryError::Invalid(format!("stored descriptor is not JSON: {e}"))
                })
            }
        }
    }

    /// The descriptor of a product version as text, as the registry holds it (embedded: as put)
    /// or answers it (remote): parsed into a `Value`, an object forgets its keys' order, and a
    /// stage map is ordered by them.
    pub async fn descriptor_text(
        &self,
        product: &str,
        version: &str,
    ) -> Result<String, RegistryError> {
        let found = match &self.remote {
            Some(remote) => remote
                .get_text(&remote.descriptor_url(product, version))
                .await?
                .map(|(text, _)| text),
            None => self.stored(product, version).await?,
        };
        found.ok_or_else(|| RegistryError::NotFound {
            product: product.to_owned(),
            version: version.to_owned(),
        })
    }

    /// A template of the remote registry (`GET …/templates/{id}`) as the registry answers it;
    /// `None` when it has no such template. The embedded registry keeps no templates.
    pub async fn template(&self, id: &str) -> Result<Option<Value>, RegistryError> {
        let remote = self.remote.as_ref().ok_or(RegistryError::NoTemplates)?;
        remote
            .get(&format!(
                "{}/api/v1/pp/registry/templates/{}",
                remote.address,
                path_segment(id)
            ))
            .await
    }

    /// Validates and stores a descriptor in the embedded registry; true when it is new. Over a
    /// limit (`limits.*`: names, stages, tasks per stage) it is refused, as an activity of it
    /// would be. `text` is the descriptor as sent (`descriptor` parsed from it), stored as is:
    /// the order of its stage map's keys is the stage order the dashboard shows.
    pub async fn put(
        &self,
        product: &str,
        version: &str,
        descriptor: &Value,
        text: &str,
    ) -> Result<bool, RegistryError> {
        let over = |e: crate::limits::OverLimit| RegistryError::OverLimit(e.0);
        self.limits
            .check_name("the product id", product)
            .map_err(over)?;
        self.limits
            .check_name("the version", version)
            .map_err(over)?;
        let info = descriptor::parse(descriptor).map_err(|e| RegistryError::Invalid(e.0))?;
        self.limits.check_lifecycle(&info).map_err(over)?;
        let (product, version, content) = (product.to_owned(), version.to_owned(), text.to_owned());
        // Rerunnable (it writes what it was given, whatever it finds): no savepoint of its own.
        self.db
            .write_rerunnable(move |conn| {
                Ok(db::put_descriptor(
                    conn,
                    &product,
                    &version,
                    &content,
                    now_ms(),
                )?)
            })
            .await
    }

    pub async fn stored(
        &self,
        product: &str,
        version: &str,
    ) -> Result<Option<String>, RegistryError> {
        let (product, version) = (product.to_owned(), version.to_owned());
        self.db
            .read(move |conn| Ok(db::get_descriptor(conn, &product, &version)?))
            .await
    }

    pub async fn versions(&self, product: &str) -> Result<Vec<String>, RegistryError> {
        let product = product.to_owned();
        self.db
            .read(move |conn| Ok(db::descriptor_versions(conn, &product)?))
            .await
    }

    /// Stores every `*.json` descriptor of `dir`, keyed by `info.id` (else
    /// `info.fullyQualifiedName`, else the file name) and `info.version`.
    pub async fn preload(&self, dir: &Path) -> Result<usize, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("registry.preload_dir {}: {e}", dir.display()))?;
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in &paths {
            let shown = path.display();
            let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
            let descriptor: Value =
                serde_json::from_str(&text).map_err(|e| format!("{shown}: not JSON: {e}"))?;
            let info = descriptor.get("info");
            let text_of = |key: &str| info.and_then(|i| i.get(key)).and_then(Value::as_str);
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let product = text_of("id")
                .or(text_of("fullyQualifiedName"))
                .unwrap_or(stem)
                .to_owned();
            let version = text_of("version")
                .ok_or_else(|| format!("{shown}: info.version is missing"))?
                .to_owned();
            self.put(&product, &version, &descriptor, &text)
                .await
                .map_err(|e| format!("{shown}: {e}"))?;
            tracing::info!(file = %shown, %product, %version, "descriptor preloaded");
        }
        Ok(paths.len())
    }
}

impl Remote {
    fn descriptor_url(&self, product: &str, version: &str) -> String {
        format!(
            "{}/api/v1/pp/registry/products/{}/versions/{}?format=normalized",
            self.address,
            path_segment(product),
            path_segment(version)
        )
    }

    async fn fetch(&self, product: &str, version: &str) -> Result<Option<Value>, RegistryError> {
        self.get(&self.descriptor_url(product, version)).await
    }

    /// A JSON answer; `None` on 404. Unreachable or timed out → `Unreachable` (503 50050), any
    /// other failure of the registry → `Failed` (502 50250).
    async fn get(&self, url: &str) -> Result<Option<Value>, RegistryError> {
        Ok(self.get_text(url).await?.map(|(_, json)| json))
    }

    /// A JSON answer as text and parsed (`get`'s failures).
    async fn get_text(&self, url: &str) -> Result<Option<(String, Value)>, RegistryError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            RegistryError::Unreachable(RemoteFailure::new(
                "the ODM registry is unreachable",
                format!("GET {url}: {e}"),
            ))
        };
        let send = || {
            client()
                .get(url)
                .insert_header(("Accept", "application/json"))
                .timeout(self.timeout)
                .send()
        };
        let sent = match send().await {
            // A pooled connection the registry had closed (HTTP/1.0, or its keep-alive ended)
            // fails before the request reaches it: the GET, which changes nothing, goes once
            // more. A timeout is not tried again: that would double the wait.
            Err(SendRequestError::Connect(_) | SendRequestError::Send(_)) => send().await,
            sent => sent,
        };
        let mut response = sent.map_err(|e| unreachable(&e))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        let body = response
            .body()
            .limit(16 << 20)
            .await
            .map_err(|e| unreachable(&e))?;
        if !status.is_success() {
            let excerpt: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(RegistryError::Failed(RemoteFailure::new(
                format!("the ODM registry answered {}", status.as_u16()),
                format!("GET {url} answered {status}: {excerpt}"),
            )));
        }
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&body);
        let json = serde_json::from_slice(body).map_err(|e| {
            RegistryError::Failed(RemoteFailure::new(
                "the ODM registry answered with invalid JSON",
                format!("GET {url} answered with invalid JSON: {e}"),
            ))
        })?;
        Ok(Some((String::from_utf8_lossy(body).into_owned(), json)))
    }
}
