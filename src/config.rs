//! Settings: `config/default.yaml` (compiled in), then `--config FILE`, then `ODM_DEVOPS__…`
//! environment variables. Every struct refuses unknown keys so a typo fails the start, naming it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::secret::Secret;

const DEFAULTS: &str = include_str!("../config/default.yaml");
const ENV_PREFIX: &str = "ODM_DEVOPS";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub registry: RegistrySettings,
    pub callbacks: CallbackSettings,
    pub placeholders: PlaceholderSettings,
    pub engine: EngineSettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub executors: BTreeMap<String, ExecutorSettings>,
    pub policy: PolicySettings,
    pub notifications: NotificationSettings,
    pub limits: LimitSettings,
    pub secrets: SecretsSettings,
    /// ODM's executor protocol served by this binary (DESIGN §6).
    #[serde(default)]
    pub executor_api: ExecutorApiSettings,
    /// `GET /tasks/{id}/logs` (DESIGN §6, "Run status and logs").
    #[serde(default)]
    pub logs: LogsSettings,
}

/// `logs`: how much of a run's logs `GET /tasks/{id}/logs` answers (not `log`, the service's
/// own logging).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSettings {
    /// The last this many bytes of the joined logs, cut on a UTF-8 character boundary.
    #[serde(deserialize_with = "whole")]
    pub max_bytes: usize,
}

impl LogsSettings {
    /// The largest `logs.max_bytes` accepted: what one answer may hold in memory.
    pub const MAX_MAX_BYTES: usize = 64 * 1024 * 1024;
}

impl Default for LogsSettings {
    fn default() -> Self {
        LogsSettings {
            max_bytes: 1_048_576,
        }
    }
}

/// `executor_api`: `POST /api/v1/up/executor/tasks` and `GET …/tasks/{id}/status`, answered
/// with the Azure DevOps executor named `executor`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorApiSettings {
    /// `false`: the routes do not exist (404).
    pub enabled: bool,
    /// Bearer tokens of its own; empty = the API tokens (`auth.api_tokens`) protect it.
    pub tokens: Vec<Secret>,
    /// No token at all on these routes, on purpose (ODM's client sends none): the network
    /// must keep strangers out.
    pub anonymous: bool,
    /// The `azure-devops` executor (under `executors:`) whose settings run the tasks.
    pub executor: String,
}

impl Default for ExecutorApiSettings {
    fn default() -> Self {
        ExecutorApiSettings {
            enabled: true,
            tokens: Vec::new(),
            anonymous: false,
            executor: "azure-devops".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub bind: String,
    pub public_url: String,
    #[serde(deserialize_with = "whole")]
    pub body_limit_bytes: usize,
    #[serde(deserialize_with = "whole")]
    pub workers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: Secret,
    #[serde(deserialize_with = "whole")]
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before a 503 50301.
    #[serde(deserialize_with = "whole")]
    pub pool_timeout_ms: u64,
    /// Writes waiting for the writer thread before a 503 50301.
    #[serde(deserialize_with = "whole")]
    pub write_queue: usize,
    /// PostgreSQL: wake the other replicas' engines with NOTIFY and hear theirs with LISTEN
    /// (`false` behind PgBouncer in transaction mode; ignored on SQLite).
    pub listen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryMode {
    Embedded,
    Remote,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    pub mode: RegistryMode,
    pub address: Option<String>,
    pub preload_dir: Option<String>,
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSettings {
    pub require_token: bool,
    pub secret: Option<Secret>,
}

pub use crate::placeholders::OnMissing;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceholderSettings {
    pub on_missing: OnMissing,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    #[serde(deserialize_with = "whole")]
    pub tick_ms: u64,
    #[serde(deserialize_with = "whole")]
    pub poll_after_secs: u64,
    #[serde(deserialize_with = "whole")]
    pub task_timeout_secs: u64,
    #[serde(deserialize_with = "whole")]
    pub lease_secs: u64,
    #[serde(deserialize_with = "whole")]
    pub max_dispatch_attempts: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub api_tokens: Vec<Secret>,
    /// No tokens beyond loopback only when said so (DESIGN §14).
    pub anonymous: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Set: `/metrics` needs it as a bearer token.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ExecutorSettings {
    AzureDevops(AzureDevOpsSettings),
    OdmHttp(OdmHttpSettings),
}

impl ExecutorSettings {
    pub fn active(&self) -> bool {
        match self {
            ExecutorSettings::AzureDevops(s) => s.active,
            ExecutorSettings::OdmHttp(s) => s.active,
        }
    }

    pub fn check_after_callback(&self) -> bool {
        match self {
            ExecutorSettings::AzureDevops(s) => s.check_after_callback,
            ExecutorSettings::OdmHttp(s) => s.check_after_callback,
        }
    }
}

fn yes() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_retries() -> u32 {
    4
}
fn default_retry_base_delay_ms() -> u64 {
    500
}
fn default_retry_max_delay_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureDevOpsSettings {
    #[serde(default = "yes")]
    pub active: bool,
    pub base_url: String,
    pub auth: AzureAuthSettings,
    #[serde(default)]
    pub check_after_callback: bool,
    #[serde(default = "default_connect_timeout_ms")]
    #[serde(deserialize_with = "whole")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    #[serde(deserialize_with = "whole")]
    pub request_timeout_ms: u64,
    /// Retries after the first attempt on 429, 5xx and connection errors.
    #[serde(default = "default_max_retries")]
    #[serde(deserialize_with = "whole")]
    pub max_retries: u32,
    /// First backoff between retries; doubled each time, with jitter.
    #[serde(default = "default_retry_base_delay_ms")]
    #[serde(deserialize_with = "whole")]
    pub retry_base_delay_ms: u64,
    /// Longest single wait, backoff or `Retry-After`. A longer `Retry-After` ends the attempt
    /// at once with "rate limited" and the engine reschedules the task.
    #[serde(default = "default_retry_max_delay_ms")]
    #[serde(deserialize_with = "whole")]
    pub retry_max_delay_ms: u64,
    /// The password of HTTP Basic that Azure DevOps service hooks send to
    /// `POST /api/v1/pp/devops/hooks/<name>`; `None`: that route does not exist (404).
    #[serde(default)]
    pub service_hook_secret: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AzureAuthSettings {
    ClientCredentials(ClientCredentialsSettings),
    Pat(PatSettings),
    /// Federated credentials (AKS workload identity): no secret, a JWT file the platform rotates.
    WorkloadIdentity(WorkloadIdentitySettings),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIdentitySettings {
    pub token_url: String,
    pub client_id: String,
    /// The federated token (a JWT), read again at each token refresh (AKS rotates it).
    pub token_file: String,
    #[serde(default = "azure_devops_scope")]
    pub scope: String,
    /// Only there because the default `client_credentials` block is merged in: must stay
    /// blank (a secret here means the configuration is not what its author thinks).
    #[serde(default)]
    pub client_secret: Option<Secret>,
}

fn azure_devops_scope() -> String {
    "499b84ac-1321-427f-aa17-267ca6975798/.default".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentialsSettings {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scope: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatSettings {
    pub pat: Secret,
    /// The default `client_credentials` block's keys, merged in under another `kind`: unused.
    #[serde(default)]
    pub token_url: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdmHttpSettings {
    #[serde(default = "yes")]
    pub active: bool,
    pub address: String,
    #[serde(default)]
    pub check_after_callback: bool,
    #[serde(default = "default_connect_timeout_ms")]
    #[serde(deserialize_with = "whole")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    #[serde(deserialize_with = "whole")]
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    pub active: bool,
    /// ODM's policy service (`POST {address}/api/v1/pp/policy/validation`).
    pub address: Option<String>,
    /// Connect and answer, per request to the policy service.
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
    /// Stages in promotion order: a stage starts only once the one before it was reached.
    pub stage_order: Vec<String>,
}

/// DESIGN §9; checked (names, events, templates, headers) by `crate::notifications::Listeners`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    pub listeners: Vec<ListenerSettings>,
    /// Delivered rows are deleted after this many days.
    #[serde(deserialize_with = "whole")]
    pub keep_days: u32,
    /// The first wait before a failed delivery is tried again; doubled at each failure.
    #[serde(deserialize_with = "whole")]
    pub retry_first_ms: u64,
    /// The longest wait between two tries.
    #[serde(deserialize_with = "whole")]
    pub retry_max_ms: u64,
    /// How long one delivery may take (connect and answer).
    #[serde(deserialize_with = "whole")]
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// ODM's notification service or an ODM observer: `POST {address}/api/v1/pp/notification/dispatch`.
    #[default]
    Odm,
    /// Any HTTP receiver: `POST {address}` with the body rendered from `template`.
    Webhook,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub kind: ListenerKind,
    /// The event types it gets; empty: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Webhook: a handlebars template of the body, the event as its data.
    #[serde(default)]
    pub template: Option<String>,
    /// Sent with every delivery; a value may be read from the environment.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSetting>,
}

/// A header's value: given (`"text"`), or read from the environment at start (`{env: NAME}`),
/// for tokens that must not sit in a file. Never logged.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderSetting {
    Value(Secret),
    Env(EnvHeader),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvHeader {
    /// The environment variable holding the value.
    pub env: String,
}

/// Bounds on what one request may make the service do (DESIGN §14); every refusal names the
/// limit, its value and its key. The checks live in `crate::limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSettings {
    #[serde(deserialize_with = "whole")]
    pub tasks_per_stage: usize,
    #[serde(deserialize_with = "whole")]
    pub stages: usize,
    #[serde(deserialize_with = "whole")]
    pub name_chars: usize,
    #[serde(deserialize_with = "whole")]
    pub results_bytes: usize,
    #[serde(deserialize_with = "whole")]
    pub configurations_bytes: usize,
    #[serde(deserialize_with = "whole")]
    pub placeholders_per_task: usize,
    #[serde(deserialize_with = "whole")]
    pub listed_errors: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// Sealing key of per-activity secrets; `None`: derived from the callback secret.
    pub key: Option<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Quotes the loader's error, so it is not also its `source` (printed twice in a chain).
    #[error("configuration: {0}")]
    Load(config::ConfigError),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}

impl Settings {
    /// Defaults, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULTS, config::FileFormat::Yaml));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            // YAML whatever the extension (JSON is YAML too).
            let source = config::File::new(&file.to_string_lossy(), config::FileFormat::Yaml);
            refuse_secrets_in(file, source.clone())?;
            builder = builder.add_source(source);
        }
        let (secrets, others): (config::Map<_, _>, config::Map<_, _>) = environment_overrides(env)
            .into_iter()
            .partition(|(name, _)| secret_path(name).is_some());
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("policy.stage_order")
                .source(Some(others)),
        );
        // Secrets as written: parsed, `0123` became the number 123 (a token nobody sends) and
        // a numeric token where a list was expected stopped the start, printing it.
        for (name, value) in secrets {
            let path = secret_path(&name).expect("partitioned on it");
            builder = if SECRET_LISTS.contains(&path.as_str()) {
                let list: Vec<String> = value.split(',').map(str::to_owned).collect();
                builder.set_override(path, list)?
            } else {
                builder.set_override(path, value)?
            };
        }
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.trim_bearer_tokens();
        settings.validate()?;
        Ok(settings)
    }

    /// Bearer tokens as a client can send them: whitespace around a token (the newline ending
    /// a mounted secret file, a space after a list's comma) is not part of it, and kept it
    /// would make the token impossible to match.
    fn trim_bearer_tokens(&mut self) {
        let tokens = self.auth.api_tokens.iter_mut();
        let tokens = tokens.chain(self.executor_api.tokens.iter_mut());
        for token in tokens.chain(self.metrics.token.iter_mut()) {
            *token = Secret::new(token.expose().trim());
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.mode == RegistryMode::Remote && self.registry.address.is_none() {
            return Err(ConfigError::Invalid(
                "registry.address is required when registry.mode is remote".into(),
            ));
        }
        self.policy.validate()?;
        // Not built yet: accepting them would let governance fail open.
        crate::notifications::Listeners::build(&self.notifications)
            .map_err(ConfigError::Invalid)?;
        if self.auth.api_tokens.iter().any(Secret::is_empty) {
            return Err(ConfigError::Invalid(
                "auth.api_tokens holds a blank token (is ODM_DEVOPS__AUTH__API_TOKENS empty?): \
                 give every token a value, or none at all"
                    .into(),
            ));
        }
        if self.executor_api.tokens.iter().any(Secret::is_empty) {
            return Err(ConfigError::Invalid(
                "executor_api.tokens holds a blank token (is ODM_DEVOPS__EXECUTOR_API__TOKENS \
                 empty?): give every token a value, or none at all"
                    .into(),
            ));
        }
        if self.metrics.token.as_ref().is_some_and(Secret::is_empty) {
            return Err(ConfigError::Invalid(
                "metrics.token is blank (is ODM_DEVOPS__METRICS__TOKEN empty?): give it a value, \
                 or leave it out to serve /metrics without one"
                    .into(),
            ));
        }
        if self.database.pool_size == 0
            || self.database.pool_timeout_ms == 0
            || self.database.write_queue == 0
        {
            return Err(ConfigError::Invalid(
                "database.pool_size, database.pool_timeout_ms and database.write_queue must be at least 1".into(),
            ));
        }
        if self.engine.tick_ms == 0 || self.engine.lease_secs == 0 {
            return Err(ConfigError::Invalid(
                "engine.tick_ms and engine.lease_secs must be positive".into(),
            ));
        }
        if !(1..=MAX_TASK_TIMEOUT_SECS).contains(&self.engine.task_timeout_secs) {
            return Err(ConfigError::Invalid(format!(
                "engine.task_timeout_secs must be from 1 to {MAX_TASK_TIMEOUT_SECS} (30 days), found {}",
                self.engine.task_timeout_secs
            )));
        }
        if !(1..=LogsSettings::MAX_MAX_BYTES).contains(&self.logs.max_bytes) {
            return Err(ConfigError::Invalid(format!(
                "logs.max_bytes must be from 1 to {}, found {}",
                LogsSettings::MAX_MAX_BYTES,
                self.logs.max_bytes
            )));
        }
        let blank_hook_secret = self.executors.iter().find(|(_, e)| {
            matches!(e, ExecutorSettings::AzureDevops(s)
                if s.service_hook_secret.as_ref().is_some_and(Secret::is_empty))
        });
        if let Some((name, _)) = blank_hook_secret {
            return Err(ConfigError::Invalid(format!(
                "executors.{name}.service_hook_secret is blank (is \
                 ODM_DEVOPS__EXECUTORS__{}__SERVICE_HOOK_SECRET empty?): give it a value, or \
                 leave it out to turn the service hook route off",
                name.to_uppercase().replace('-', "_")
            )));
        }
        self.limits.validate()
    }
}

impl PolicySettings {
    /// The longest wait for the policy service (`policy.timeout_ms`).
    pub const MAX_TIMEOUT_MS: u64 = 300_000;

    fn validate(&self) -> Result<(), ConfigError> {
        let address = self.address.as_deref().map(str::trim).unwrap_or_default();
        if self.active && address.is_empty() {
            return Err(ConfigError::Invalid(
                "policy.active is true but policy.address is not set: give the address of ODM's \
                 policy service (ODM_DEVOPS__POLICY__ADDRESS), or set policy.active: false"
                    .into(),
            ));
        }
        if self.active && !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(ConfigError::Invalid(
                "policy.address must be an http:// or https:// URL".into(),
            ));
        }
        if !(1..=Self::MAX_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(ConfigError::Invalid(format!(
                "policy.timeout_ms must be from 1 to {}, found {}",
                Self::MAX_TIMEOUT_MS,
                self.timeout_ms
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for stage in &self.stage_order {
            if stage.trim().is_empty() || !seen.insert(stage.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "policy.stage_order must list distinct, non-blank stages, found {:?}",
                    self.stage_order
                )));
            }
        }
        Ok(())
    }
}

/// The longest a task may run (`engine.task_timeout_secs`, `configurations.timeout`): 30 days.
pub const MAX_TASK_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

impl LimitSettings {
    /// Each limit as (config key, value), for checks and messages.
    pub fn all(&self) -> [(&'static str, usize); 7] {
        [
            ("limits.tasks_per_stage", self.tasks_per_stage),
            ("limits.stages", self.stages),
            ("limits.name_chars", self.name_chars),
            ("limits.results_bytes", self.results_bytes),
            ("limits.configurations_bytes", self.configurations_bytes),
            ("limits.placeholders_per_task", self.placeholders_per_task),
            ("limits.listed_errors", self.listed_errors),
        ]
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self.all().into_iter().find(|(_, value)| *value == 0) {
            Some((key, _)) => Err(ConfigError::Invalid(format!("{key} must be at least 1"))),
            None => Ok(()),
        }
    }
}

/// Where a secret may sit in the configuration, the executors' under `executors.<name>.`.
const SECRET_KEYS: [&str; 5] = [
    "auth.api_tokens",
    "executor_api.tokens",
    "metrics.token",
    "callbacks.secret",
    "secrets.key",
];
const EXECUTOR_SECRET_KEYS: [&str; 3] = ["auth.client_secret", "auth.pat", "service_hook_secret"];
/// The secrets that are lists, given in one variable separated by commas.
const SECRET_LISTS: [&str; 2] = ["auth.api_tokens", "executor_api.tokens"];

/// The key a variable (as `environment_overrides` names it) sets, when it is a secret's.
fn secret_path(variable: &str) -> Option<String> {
    let path = variable
        .strip_prefix(ENV_PREFIX)?
        .strip_prefix("__")?
        .split("__")
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase();
    let of_executor = path.strip_prefix("executors.").is_some_and(|rest| {
        rest.split_once('.')
            .is_some_and(|(_, key)| EXECUTOR_SECRET_KEYS.contains(&key))
    });
    (SECRET_KEYS.contains(&path.as_str()) || of_executor).then_some(path)
}

/// DESIGN §11: secrets come from the environment only, never from a file that is copied,
/// committed and read by more people than the secret should be. A secret key set in `file`
/// (and a PostgreSQL URL with a password) stops the start, naming the key and its variable.
fn refuse_secrets_in<S>(file: &Path, source: S) -> Result<(), ConfigError>
where
    S: config::Source + Send + Sync + 'static,
{
    let written = config::Config::builder().add_source(source).build()?;
    let set = |key: &str| match written.get::<serde_json::Value>(key) {
        Ok(serde_json::Value::String(text)) => !text.trim().is_empty(),
        Ok(serde_json::Value::Array(items)) => !items.is_empty(),
        Ok(serde_json::Value::Null) | Err(_) => false,
        Ok(_) => true,
    };
    let executors = written
        .get::<serde_json::Map<String, serde_json::Value>>("executors")
        .unwrap_or_default();
    let executor_keys = executors.keys().flat_map(|name| {
        EXECUTOR_SECRET_KEYS
            .iter()
            .map(move |key| format!("executors.{name}.{key}"))
    });
    let found = SECRET_KEYS
        .iter()
        .map(|key| key.to_string())
        .chain(executor_keys)
        .find(|key| set(key))
        .or_else(|| {
            let url = written.get::<String>("database.url").unwrap_or_default();
            has_password(&url).then(|| "database.url".to_owned())
        });
    match found {
        None => Ok(()),
        Some(key) => Err(ConfigError::Invalid(format!(
            "{} sets {key}, a secret: secrets may come from the environment only (DESIGN §11). \
             Remove it from the file and set {} instead",
            file.display(),
            variable_of(&key)
        ))),
    }
}

/// `postgres://user:password@host/db` or `…/db?password=…`: a password in the URL.
fn has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let in_user = authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            key.eq_ignore_ascii_case("password")
        })
    });
    in_user || in_query
}

/// The environment variable that sets `key` (`executors.azure-devops.auth.pat` →
/// `ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__PAT`).
fn variable_of(key: &str) -> String {
    let path = key.replace('.', "__").replace('-', "_").to_uppercase();
    format!("{ENV_PREFIX}__{path}")
}

/// A count, size or duration: a whole number, not negative, that fits. The configuration
/// library would round `1.5` and read a number beyond its type as the largest one; a number
/// that is not what its author wrote stops the start instead, naming the key.
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    struct Whole<T>(std::marker::PhantomData<T>);
    impl<T: TryFrom<u64>> serde::de::Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number, not negative")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::custom(format!("{v} is too large for this key")))
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
            let v = u64::try_from(v).map_err(|_| {
                E::custom(format!("expected a whole number, not negative, found {v}"))
            })?;
            self.visit_u64(v)
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
            // `3.0` is three; `1.5`, `1e20` (what too many digits become) and `-1.0` are not.
            const EXACT: f64 = 9_007_199_254_740_992.0;
            if v.fract() == 0.0 && (0.0..=EXACT).contains(&v) {
                return self.visit_u64(v as u64);
            }
            Err(E::custom(format!(
                "expected a whole number, not negative, that fits, found {v}"
            )))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
            match v.trim().parse::<u64>() {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!(
                    "expected a whole number, not negative, that fits, found {v:?}"
                ))),
            }
        }
    }
    deserializer.deserialize_any(Whole(std::marker::PhantomData))
}

/// Only our variables, with executor names given with `_` mapped back to the `-` they are
/// written with in YAML (`AZURE_DEVOPS` → `azure-devops`), since shells refuse `-` in names.
fn environment_overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> config::Map<String, String> {
    let prefix = format!("{ENV_PREFIX}__");
    env.into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(name, value)| {
            let mut parts: Vec<String> = name.split("__").map(str::to_owned).collect();
            if parts.len() > 2 && parts[1].eq_ignore_ascii_case("EXECUTORS") {
                parts[2] = parts[2].replace('_', "-");
            }
            (parts.join("__"), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::load_with_env(
            None,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_load_and_match_the_design() {
        let s = load(&[]).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8002");
        assert_eq!(s.database.url.expose(), "sqlite://data/odm-devops.db");
        assert_eq!(s.registry.mode, RegistryMode::Embedded);
        assert!(s.callbacks.require_token);
        assert_eq!(s.placeholders.on_missing, OnMissing::Fail);
        assert_eq!(s.engine.poll_after_secs, 300);
        assert!(matches!(
            s.executors.get("azure-devops"),
            Some(ExecutorSettings::AzureDevops(_))
        ));
    }

    #[test]
    fn environment_overrides_nested_keys_and_executor_names() {
        let s = load(&[
            ("ODM_DEVOPS__DATABASE__URL", "postgres://u@h/db"),
            ("ODM_DEVOPS__DATABASE__POOL_SIZE", "3"),
            ("ODM_DEVOPS__AUTH__API_TOKENS", "a,b"),
            (
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET",
                "s3cret",
            ),
        ])
        .unwrap();
        assert_eq!(s.database.url.expose(), "postgres://u@h/db");
        assert_eq!(s.database.pool_size, 3);
        assert!(s.database.listen, "database.listen is on by default");
        assert_eq!(s.auth.api_tokens.len(), 2);
        match &s.executors["azure-devops"] {
            ExecutorSettings::AzureDevops(a) => match &a.auth {
                AzureAuthSettings::ClientCredentials(c) => {
                    assert_eq!(c.client_secret.expose(), "s3cret")
                }
                other => panic!("unexpected auth {other:?}"),
            },
            other => panic!("unexpected executor {other:?}"),
        }
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = load(&[("ODM_DEVOPS__ENGINE__TICKS", "5")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ticks"), "{err}");
    }

    #[test]
    fn blank_tokens_are_refused_rather_than_matching_an_empty_bearer() {
        for (key, value, named) in [
            ("ODM_DEVOPS__AUTH__API_TOKENS", "", "auth.api_tokens"),
            ("ODM_DEVOPS__AUTH__API_TOKENS", "a, ", "auth.api_tokens"),
            ("ODM_DEVOPS__METRICS__TOKEN", " ", "metrics.token"),
        ] {
            let err = load(&[(key, value)]).unwrap_err().to_string();
            assert!(err.contains(named), "{key}={value:?}: {err}");
        }
        let s = load(&[("ODM_DEVOPS__METRICS__TOKEN", "m")]).unwrap();
        assert_eq!(s.metrics.token.unwrap().expose(), "m");
        assert!(!s.auth.anonymous);
    }

    /// Secrets are text, whatever they look like: never read as numbers or booleans.
    #[test]
    fn secrets_that_look_like_numbers_are_kept_as_written() {
        let s = load(&[
            ("ODM_DEVOPS__AUTH__API_TOKENS", "918273645"),
            ("ODM_DEVOPS__EXECUTOR_API__TOKENS", "007,true"),
            ("ODM_DEVOPS__METRICS__TOKEN", "0123"),
            ("ODM_DEVOPS__CALLBACKS__SECRET", "1e3"),
            ("ODM_DEVOPS__SECRETS__KEY", "12345678901234567890123456789"),
            (
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET",
                "00",
            ),
            (
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__SERVICE_HOOK_SECRET",
                "False",
            ),
        ])
        .unwrap();
        let exposed = |t: &[Secret]| t.iter().map(|t| t.expose().to_owned()).collect::<Vec<_>>();
        assert_eq!(exposed(&s.auth.api_tokens), ["918273645"]);
        assert_eq!(exposed(&s.executor_api.tokens), ["007", "true"]);
        assert_eq!(s.metrics.token.unwrap().expose(), "0123");
        assert_eq!(s.callbacks.secret.unwrap().expose(), "1e3");
        assert_eq!(
            s.secrets.key.unwrap().expose(),
            "12345678901234567890123456789"
        );
        let ExecutorSettings::AzureDevops(azure) = &s.executors["azure-devops"] else {
            panic!("not azure-devops")
        };
        let AzureAuthSettings::ClientCredentials(c) = &azure.auth else {
            panic!("{:?}", azure.auth)
        };
        assert_eq!(c.client_secret.expose(), "00");
        assert_eq!(
            azure.service_hook_secret.as_ref().unwrap().expose(),
            "False"
        );
        // Numbers elsewhere are still numbers.
        let s = load(&[("ODM_DEVOPS__DATABASE__POOL_SIZE", "3")]).unwrap();
        assert_eq!(s.database.pool_size, 3);
    }

    #[test]
    fn tokens_are_compared_without_the_whitespace_around_them() {
        let s = load(&[
            ("ODM_DEVOPS__AUTH__API_TOKENS", "tok, two "),
            ("ODM_DEVOPS__EXECUTOR_API__TOKENS", "exec\n"),
            ("ODM_DEVOPS__METRICS__TOKEN", " m\n"),
        ])
        .unwrap();
        let exposed = |t: &[Secret]| t.iter().map(|t| t.expose().to_owned()).collect::<Vec<_>>();
        assert_eq!(exposed(&s.auth.api_tokens), ["tok", "two"]);
        assert_eq!(exposed(&s.executor_api.tokens), ["exec"]);
        assert_eq!(s.metrics.token.unwrap().expose(), "m");
    }

    fn load_file(yaml: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!("odm-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("odm-devops.yaml");
        std::fs::write(&file, yaml).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let loaded = Settings::load_with_env(Some(&file), env);
        std::fs::remove_dir_all(&dir).unwrap();
        loaded
    }

    #[test]
    fn a_secret_in_the_config_file_is_refused_naming_its_variable() {
        for (yaml, key, variable) in [
            (
                "auth: {api_tokens: [tok]}",
                "auth.api_tokens",
                "ODM_DEVOPS__AUTH__API_TOKENS",
            ),
            (
                "metrics: {token: m}",
                "metrics.token",
                "ODM_DEVOPS__METRICS__TOKEN",
            ),
            (
                "callbacks: {secret: s}",
                "callbacks.secret",
                "ODM_DEVOPS__CALLBACKS__SECRET",
            ),
            (
                "secrets: {key: k}",
                "secrets.key",
                "ODM_DEVOPS__SECRETS__KEY",
            ),
            (
                "executor_api: {tokens: [e]}",
                "executor_api.tokens",
                "ODM_DEVOPS__EXECUTOR_API__TOKENS",
            ),
            (
                "executors: {azure-devops: {kind: azure-devops, auth: {kind: client_credentials, \
                 token_url: t, client_id: c, client_secret: shh}}}",
                "executors.azure-devops.auth.client_secret",
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET",
            ),
            (
                "executors: {ado: {kind: azure-devops, auth: {kind: pat, pat: p}}}",
                "executors.ado.auth.pat",
                "ODM_DEVOPS__EXECUTORS__ADO__AUTH__PAT",
            ),
            (
                "executors: {azure-devops: {kind: azure-devops, service_hook_secret: h}}",
                "executors.azure-devops.service_hook_secret",
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__SERVICE_HOOK_SECRET",
            ),
            (
                "database: {url: \"postgres://app:pw@db:5432/odm\"}",
                "database.url",
                "ODM_DEVOPS__DATABASE__URL",
            ),
            (
                "database: {url: \"postgres://app@db:5432/odm?sslmode=require&password=pw\"}",
                "database.url",
                "ODM_DEVOPS__DATABASE__URL",
            ),
        ] {
            let refused = load_file(yaml, &[]).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("sets {key}, a secret"))
                    && refused.contains(&format!("set {variable} instead")),
                "{yaml}: {refused}"
            );
            assert!(
                !refused.contains("shh") && !refused.contains("pw"),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_config_file_without_secrets_takes_them_from_the_environment() {
        let yaml = "database: {url: \"postgres://app@db:5432/odm\"}\n\
                    executors: {azure-devops: {kind: azure-devops, auth: {kind: \
                    client_credentials, token_url: t, client_id: c, client_secret: \"\"}}}\n\
                    auth: {api_tokens: []}\nmetrics: {token: null}";
        let s = load_file(
            yaml,
            &[(
                "ODM_DEVOPS__EXECUTORS__AZURE_DEVOPS__AUTH__CLIENT_SECRET",
                "from-env",
            )],
        )
        .unwrap();
        match &s.executors["azure-devops"] {
            ExecutorSettings::AzureDevops(a) => match &a.auth {
                AzureAuthSettings::ClientCredentials(c) => {
                    assert_eq!(c.client_secret.expose(), "from-env")
                }
                other => panic!("unexpected auth {other:?}"),
            },
            other => panic!("unexpected executor {other:?}"),
        }
        assert_eq!(s.database.url.expose(), "postgres://app@db:5432/odm");
    }

    #[test]
    fn a_number_that_is_not_what_its_author_wrote_stops_the_start() {
        for (key, value, named) in [
            (
                "ODM_DEVOPS__SERVER__BODY_LIMIT_BYTES",
                "1.5",
                "body_limit_bytes",
            ),
            (
                "ODM_DEVOPS__SERVER__BODY_LIMIT_BYTES",
                "99999999999999999999",
                "body_limit_bytes",
            ),
            ("ODM_DEVOPS__LIMITS__NAME_CHARS", "-3", "name_chars"),
            ("ODM_DEVOPS__DATABASE__POOL_SIZE", "4294967296", "pool_size"),
            ("ODM_DEVOPS__ENGINE__TICK_MS", "soon", "tick_ms"),
        ] {
            let refused = load(&[(key, value)]).unwrap_err().to_string();
            assert!(refused.contains(named), "{key}={value}: {refused}");
        }
        let yaml = "server: {body_limit_bytes: 2.5}";
        let refused = load_file(yaml, &[]).unwrap_err().to_string();
        assert!(
            refused.contains("body_limit_bytes") && refused.contains("2.5"),
            "{refused}"
        );
        // Whole numbers however written.
        let s = load(&[
            ("ODM_DEVOPS__SERVER__BODY_LIMIT_BYTES", "2048"),
            ("ODM_DEVOPS__DATABASE__POOL_SIZE", "4294967295"),
        ])
        .unwrap();
        assert_eq!(s.server.body_limit_bytes, 2048);
        assert_eq!(s.database.pool_size, u32::MAX);
        let s = load_file("limits: {name_chars: 300.0}", &[]).unwrap();
        assert_eq!(s.limits.name_chars, 300);
    }

    #[test]
    fn remote_registry_needs_an_address() {
        let err = load(&[("ODM_DEVOPS__REGISTRY__MODE", "remote")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("registry.address"), "{err}");
    }
}
