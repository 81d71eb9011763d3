//! The configured executors, built on the engine's thread (awc clients are `!Send`).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::azure_devops::{AzureDevOpsExecutor, AzureIdentity};
use super::odm_http::OdmHttpExecutor;
use super::Executor;
use crate::config::ExecutorSettings;
use crate::metrics::Metrics;

enum Entry {
    Ready(Rc<dyn Executor>),
    /// Configured but unusable (e.g. no credentials): tasks fail with this explanation.
    Misconfigured(String),
}

pub struct Executors {
    entries: HashMap<String, Entry>,
}

/// The identity of each active `azure-devops` executor (or why it has none), built once and
/// shared by the engine's executor and the executor API's (one token cache per executor).
#[derive(Clone, Default)]
pub struct AzureIdentities(HashMap<String, Result<AzureIdentity, String>>);

impl AzureIdentities {
    pub fn build(settings: &BTreeMap<String, ExecutorSettings>) -> AzureIdentities {
        AzureIdentities(
            settings
                .iter()
                .filter_map(|(name, config)| match config {
                    ExecutorSettings::AzureDevops(s) if s.active => {
                        Some((name.clone(), AzureIdentity::new(name, s)))
                    }
                    _ => None,
                })
                .collect(),
        )
    }

    /// The identity of the executor `name`; `None` when it is no active `azure-devops` one.
    pub fn get(&self, name: &str) -> Option<Result<AzureIdentity, String>> {
        self.0.get(name).cloned()
    }
}

impl Executors {
    /// Each executor records its requests under its name in `metrics`; `azure-devops` ones
    /// authenticate with their identity in `identities`.
    pub fn build(
        settings: &BTreeMap<String, ExecutorSettings>,
        metrics: &Metrics,
        identities: &AzureIdentities,
    ) -> Executors {
        let mut entries = HashMap::new();
        for (name, config) in settings.iter().filter(|(_, c)| c.active()) {
            let recorded = metrics.executor(name);
            let built: Result<Rc<dyn Executor>, String> = match config {
                ExecutorSettings::OdmHttp(s) => OdmHttpExecutor::new(name, s)
                    .map(|e| Rc::new(e.recording_to(recorded)) as Rc<dyn Executor>),
                ExecutorSettings::AzureDevops(s) => identities
                    .get(name)
                    .unwrap_or_else(|| AzureIdentity::new(name, s))
                    .and_then(|identity| AzureDevOpsExecutor::with_identity(name, s, identity))
                    .map(|e| Rc::new(e.recording_to(recorded)) as Rc<dyn Executor>),
            };
            let entry = match built {
                Ok(executor) => Entry::Ready(executor),
                Err(problem) => {
                    tracing::warn!(executor = %name, %problem, "executor not usable; its tasks will fail");
                    Entry::Misconfigured(problem)
                }
            };
            entries.insert(name.clone(), entry);
        }
        Executors { entries }
    }

    /// The executor a task's `executorRef` names, or the reason the task must fail.
    pub fn lookup(&self, name: &str) -> Result<Rc<dyn Executor>, String> {
        match self.entries.get(name) {
            Some(Entry::Ready(executor)) => Ok(executor.clone()),
            Some(Entry::Misconfigured(problem)) => Err(format!(
                "Executor [{name}] is not configured correctly: {problem}"
            )),
            None => Err(format!("Executor [{name}] not supported")),
        }
    }
}

/// What the request threads need to know about executors (no clients, so `Send`).
#[derive(Debug, Clone, Default)]
pub struct ExecutorCatalog {
    check_after_callback: HashMap<String, bool>,
}

impl ExecutorCatalog {
    pub fn new(settings: &BTreeMap<String, ExecutorSettings>) -> ExecutorCatalog {
        ExecutorCatalog {
            check_after_callback: settings
                .iter()
                .filter(|(_, c)| c.active())
                .map(|(name, c)| (name.clone(), c.check_after_callback()))
                .collect(),
        }
    }

    pub fn check_after_callback(&self, executor: Option<&str>) -> bool {
        executor
            .and_then(|name| self.check_after_callback.get(name))
            .copied()
            .unwrap_or(false)
    }
}
