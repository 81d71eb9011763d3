//! Building and running the service: the database, the engine and the HTTP server.

use std::net::TcpListener;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer};

use crate::api::{self, ApiState};
use crate::clock::secs_to_ms;
use crate::config::Settings;
use crate::db::listen::{ListenHandle, ListenObserver};
use crate::db::{self, Db, DbError};
use crate::executor::{AzureIdentities, ExecutorCatalog, Executors};
use crate::executor_api::ExecutorApiParts;
use crate::keys::Keys;
use crate::lifecycle::engine::{Engine, EngineConfig, EngineHandle, Notifier, ResultGates};
use crate::lifecycle::{DryRunParts, EngineTimings, LifecycleParts, LifecycleService, Waker};
use crate::metrics::Metrics;
use crate::notifications::Listeners;
use crate::policy::Policies;
use crate::registry::Registry;
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {bind}")]
    Bind {
        bind: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Registry(String),
    #[error("{0}")]
    Notifications(String),
    #[error(
        "refusing to serve the API without authentication on {0}, beyond loopback: set a token \
         (ODM_DEVOPS__AUTH__API_TOKENS=<token>, i.e. auth.api_tokens), or let anyone who reaches \
         this address drive the API on purpose with auth.anonymous: true \
         (ODM_DEVOPS__AUTH__ANONYMOUS=true)"
    )]
    Anonymous(std::net::SocketAddr),
}

pub struct Application {
    port: u16,
    public_url: String,
    server: Server,
    engine: RunningEngine,
    lifecycle: LifecycleService,
    /// PostgreSQL with `database.listen`: stops listening when the application is dropped.
    _listening: Option<ListenHandle>,
}

/// Wakes this replica's engine when another replica's NOTIFY arrives (`db/listen.rs`).
struct WakeOnNotify {
    waker: Waker,
    metrics: Arc<Metrics>,
}

impl ListenObserver for WakeOnNotify {
    fn notified(&self) {
        self.metrics.listen_wakeup();
        self.waker.wake();
    }

    fn listening(&self) {
        self.waker.wake();
    }

    fn connected(&self, up: bool) {
        self.metrics.listen_connected(up);
    }

    fn peers(&self, count: u32) {
        self.metrics.listen_peers(count);
    }
}

/// How the engine runs: on its own (the service), or ticked by its caller (tests that step it
/// instead of waiting for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineMode {
    Background,
    Stepped,
}

enum RunningEngine {
    Background(EngineHandle),
    Stepped(Rc<Engine>),
}

impl Application {
    /// Opens the database (migrating it), starts the engine and binds the server (port 0 picks
    /// a free port). Must run inside an actix System: the engine lives on this thread.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Application::build_with(settings, EngineMode::Background).await
    }

    /// `build`, with the engine running on its own or left to its caller to tick
    /// (`stepped_engine`).
    pub async fn build_with(
        settings: Settings,
        mode: EngineMode,
    ) -> Result<Application, StartupError> {
        let bind = settings.server.bind.clone();
        let listener = TcpListener::bind(&bind).map_err(|source| StartupError::Bind {
            bind: bind.clone(),
            source,
        })?;
        let address = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { bind, source })?;
        let public_url = match settings.server.public_url.trim() {
            "" => format!("http://{address}"),
            url => url.trim_end_matches('/').to_owned(),
        };
        let anonymous = settings.auth.api_tokens.is_empty();
        if anonymous && !address.ip().is_loopback() && !settings.auth.anonymous {
            return Err(StartupError::Anonymous(address));
        }

        let url = settings.database.url.expose().to_owned();
        let limits = db::DbLimits {
            pool_size: settings.database.pool_size,
            pool_timeout: Duration::from_millis(settings.database.pool_timeout_ms),
            write_queue: settings.database.write_queue,
            sqlite_lock_wait: db::DbLimits::SQLITE_LOCK_WAIT,
        };
        let db = actix_web::web::block(move || Db::connect_with(&url, limits))
            .await
            .map_err(|_| DbError::Canceled)??;
        let waker = Waker::default();
        let metrics = Metrics::new();
        metrics.count_writes_of(&db);
        let listening = settings
            .database
            .listen
            .then(|| {
                db.listen(WakeOnNotify {
                    waker: waker.clone(),
                    metrics: metrics.clone(),
                })
            })
            .flatten();
        let (callback_secret, kept_in_database) =
            server_secret(&db, settings.callbacks.secret.clone()).await?;
        let sealing_key = settings.secrets.key.as_ref().filter(|k| !k.is_empty());
        if sealing_key.is_none() && kept_in_database {
            warn_sealing_key_in_database();
        }
        let keys = Keys::new(&callback_secret, sealing_key);
        let registry = Registry::new(db.clone(), &settings.registry, settings.limits);
        if let Some(dir) = settings
            .registry
            .preload_dir
            .as_deref()
            .filter(|d| !d.is_empty())
        {
            let stored = registry
                .preload(std::path::Path::new(dir))
                .await
                .map_err(StartupError::Registry)?;
            tracing::info!(stored, dir, "registry preloaded");
        }

        let listeners =
            Listeners::build(&settings.notifications).map_err(StartupError::Notifications)?;
        for listener in listeners.iter() {
            metrics.listener(&listener.name);
        }
        let timings = EngineTimings {
            poll_after_ms: secs_to_ms(settings.engine.poll_after_secs),
            default_timeout_ms: secs_to_ms(settings.engine.task_timeout_secs),
        };
        let notifier = Notifier::new(listeners.clone(), registry.clone(), &settings.notifications);
        let lifecycle = LifecycleService::new(LifecycleParts {
            db: db.clone(),
            registry,
            keys: keys.clone(),
            catalog: ExecutorCatalog::new(&settings.executors),
            timings,
            limits: settings.limits,
            require_token: settings.callbacks.require_token,
            waker: waker.clone(),
            metrics: metrics.clone(),
            listeners,
            policies: Policies::new(&settings.policy),
        });
        // One identity (and token cache) per Azure executor, for the engine and the executor API.
        let identities = AzureIdentities::build(&settings.executors);
        let executor_api = ExecutorApiParts::new(&settings, db.clone(), &identities, &metrics);
        let engine = Engine::new(
            db,
            Executors::build(&settings.executors, &metrics, &identities),
            keys,
            timings,
            EngineConfig {
                tick: Duration::from_millis(settings.engine.tick_ms),
                lease_ms: secs_to_ms(settings.engine.lease_secs),
                max_dispatch_attempts: settings.engine.max_dispatch_attempts,
                on_missing: settings.placeholders.on_missing,
                limits: settings.limits,
                public_url: public_url.clone(),
                batch: 64,
                max_in_flight: 512,
            },
            waker,
            metrics.clone(),
        )
        .with_result_gates(ResultGates {
            policies: Policies::new(&settings.policy),
            registry: lifecycle.registry().clone(),
            catalog: ExecutorCatalog::new(&settings.executors),
        })
        .with_notifications(notifier);
        let engine = match mode {
            EngineMode::Background => RunningEngine::Background(engine.spawn()),
            EngineMode::Stepped => RunningEngine::Stepped(Rc::new(engine)),
        };

        let loopback_url = ["//127.0.0.1", "//localhost", "//[::1]"]
            .iter()
            .any(|host| public_url.contains(host));
        if loopback_url && !address.ip().is_loopback() {
            tracing::warn!(%public_url, "server.public_url is a loopback address: pipelines on other machines cannot call back; set it to the address they reach this service at");
        }
        if anonymous && !address.ip().is_loopback() {
            tracing::warn!(%address, "auth.anonymous: the API is open to anyone who reaches this address");
        }
        if settings.executor_api.enabled
            && settings.executor_api.anonymous
            && !address.ip().is_loopback()
        {
            tracing::warn!(%address, "executor_api.anonymous: anyone who reaches this address can start pipeline runs through /api/v1/up/executor; keep it behind a network policy");
        }
        let edge = Arc::new(api::Edge {
            perimeter: api::Perimeter {
                api_tokens: settings.auth.api_tokens.clone(),
                metrics_token: settings.metrics.token.clone(),
                own_origins: api::origin::own_origins(&public_url, address),
                executor_tokens: settings.executor_api.tokens.clone(),
                executor_anonymous: settings.executor_api.anonymous,
                hook_executors: api::hook_secrets(&settings).into_keys().collect(),
            },
            metrics: metrics.clone(),
        });
        let runs = api::RunViewParts::new(&settings, &identities, &metrics);
        let dry_run = DryRunParts::new(&settings, &identities, &metrics, &public_url);
        let state = ApiState {
            lifecycle: lifecycle.clone(),
            body_limit: settings.server.body_limit_bytes,
            metrics,
            stored_work: Arc::new(api::StoredWork::default()),
            executor_api,
            runs,
            dry_run,
        };
        let mut server = HttpServer::new(move || {
            let edge = edge.clone();
            App::new()
                .wrap(from_fn(move |req, next| {
                    api::around(edge.clone(), req, next)
                }))
                .configure(api::routes(state.clone()))
        })
        .listen(listener)
        .map_err(|source| StartupError::Bind {
            bind: address.to_string(),
            source,
        })?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.run();
        tracing::info!(%address, %public_url, backend = ?lifecycle.db().backend(), "odm-devops listening");
        Ok(Application {
            port: address.port(),
            public_url,
            server,
            engine,
            lifecycle,
            _listening: listening,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address pipelines call back on.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn server_handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub fn lifecycle(&self) -> &LifecycleService {
        &self.lifecycle
    }

    /// The engine, for its caller to tick, when built with `EngineMode::Stepped`.
    pub fn stepped_engine(&self) -> Option<Rc<Engine>> {
        match &self.engine {
            RunningEngine::Stepped(engine) => Some(engine.clone()),
            RunningEngine::Background(_) => None,
        }
    }

    /// Serves until the server is stopped (a signal, or `ServerHandle::stop`), then stops the engine.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let RunningEngine::Background(engine) = self.engine {
            engine.stop().await;
        }
        served
    }
}

/// `callbacks.secret`, or the one generated once and kept in the database for every replica
/// (then `true`).
async fn server_secret(db: &Db, configured: Option<Secret>) -> Result<(Secret, bool), DbError> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        return Ok((secret, false));
    }
    let candidate = Keys::generate_secret();
    let stored = db
        .write(move |conn| {
            Ok::<_, DbError>(db::meta_get_or_insert(conn, "callback_secret", &candidate)?)
        })
        .await?;
    Ok((Secret::new(stored), true))
}

/// Once per process (tests and the demo build several applications in one).
fn warn_sealing_key_in_database() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            "per-activity secrets are sealed with a key derived from the callback secret \
             generated and kept in the same database: whoever reads the database can open them. \
             Set secrets.key (ODM_DEVOPS__SECRETS__KEY) or callbacks.secret from the environment"
        )
    });
}
