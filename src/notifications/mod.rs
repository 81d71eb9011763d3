//! Notifications (DESIGN §9): the events a change announces, written to an outbox in the
//! transaction of the change (`record`), and sent by the engine to the configured listeners
//! (`lifecycle::engine`, through `send`): ODM's notification service and observers
//! (`kind: odm`), or any HTTP receiver with a body rendered from a handlebars template
//! (`kind: webhook`).
//!
//! One outbox row per (event, listener): each listener's rows are its own queue, so a dead
//! listener holds back nothing but its own rows, and what it gets is exactly what it asked for.

mod payload;
mod send;
mod webhook;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

pub use payload::{event_body, sample_event, EventRows};
pub use send::{deliver, Delivery};

use crate::config::{HeaderSetting, ListenerKind, NotificationSettings};
use crate::db::{self, DbConnection, NewNotification};
use crate::domain::{Event, EventType};
use crate::secret::Secret;

/// The longest listener name: it is a metrics label and a column.
const NAME_CHARS: usize = 64;

/// The configured listeners, checked and compiled once at start. Cheap to clone.
/// Debug shows names and endpoints, never header values.
#[derive(Clone, Default, Debug)]
pub struct Listeners(Arc<[Listener]>);

pub struct Listener {
    pub name: String,
    pub kind: ListenerKind,
    /// Where deliveries are POSTed (for `odm`, the dispatch route under the address).
    pub endpoint: String,
    /// `None`: every event.
    events: Option<HashSet<EventType>>,
    template: Option<webhook::Template>,
    /// Never logged or listed.
    headers: Vec<(String, Secret)>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// None: nothing is recorded or sent.
    pub fn none() -> Listeners {
        Listeners::default()
    }

    /// Checks every listener; the refusal names the listener and what is wrong with it.
    pub fn build(settings: &NotificationSettings) -> Result<Listeners, String> {
        Self::build_with_env(settings, |name| std::env::var(name).ok())
    }

    pub fn build_with_env(
        settings: &NotificationSettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Listeners, String> {
        if settings.retry_first_ms == 0 || settings.timeout_ms == 0 {
            return Err(
                "notifications.retry_first_ms and notifications.timeout_ms must be at least 1"
                    .into(),
            );
        }
        if settings.retry_max_ms < settings.retry_first_ms {
            return Err(
                "notifications.retry_max_ms must be at least notifications.retry_first_ms".into(),
            );
        }
        let mut names = HashSet::new();
        let mut listeners = Vec::with_capacity(settings.listeners.len());
        for (i, l) in settings.listeners.iter().enumerate() {
            let named =
                |problem: String| format!("notifications.listeners[{i}] ({}): {problem}", l.name);
            let name_ok = !l.name.is_empty()
                && l.name.chars().count() <= NAME_CHARS
                && l.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !name_ok {
                return Err(named(format!(
                    "the name must be 1 to {NAME_CHARS} letters, digits, '-', '_' or '.'"
                )));
            }
            if !names.insert(l.name.clone()) {
                return Err(named("another listener has the same name".into()));
            }
            let address = l.address.trim().trim_end_matches('/');
            if !(address.starts_with("http://") || address.starts_with("https://")) {
                return Err(named("address must be an http:// or https:// URL".into()));
            }
            let events = match l.events.is_empty() {
                true => None,
                false => Some(
                    l.events
                        .iter()
                        .map(|e| {
                            EventType::parse(e).ok_or_else(|| {
                                named(format!(
                                    "unknown event type {e} (known: {})",
                                    EventType::names()
                                ))
                            })
                        })
                        .collect::<Result<HashSet<_>, _>>()?,
                ),
            };
            let headers = headers(&l.headers, &env).map_err(named)?;
            let (endpoint, template) = match l.kind {
                ListenerKind::Odm => {
                    if l.template.is_some() {
                        return Err(named(
                            "a template is for kind: webhook (an odm listener gets ODM's event)"
                                .into(),
                        ));
                    }
                    (format!("{address}/api/v1/pp/notification/dispatch"), None)
                }
                ListenerKind::Webhook => {
                    let text = l.template.as_deref().ok_or_else(|| {
                        named("kind: webhook needs a template (handlebars) of the body".into())
                    })?;
                    (
                        address.to_owned(),
                        Some(webhook::Template::compile(text).map_err(named)?),
                    )
                }
            };
            let listener = Listener {
                name: l.name.clone(),
                kind: l.kind,
                endpoint,
                events,
                template,
                headers,
            };
            // What it will be sent must render: tried on a sample of each event it gets.
            for &event_type in EventType::ALL {
                if listener.wants(event_type) {
                    listener
                        .body(&sample_event(event_type))
                        .map_err(|e| named(format!("for a sample {event_type} event: {e}")))?;
                }
            }
            listeners.push(listener);
        }
        Ok(Listeners(listeners.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Listener> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&Listener> {
        self.0.iter().find(|l| l.name == name)
    }
}

impl Listener {
    pub fn wants(&self, event_type: EventType) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&event_type))
    }

    /// The body sent for `event` (ODM's event as JSON, or the webhook's rendered template).
    pub fn body(&self, event: &serde_json::Value) -> Result<String, String> {
        match &self.template {
            Some(template) => template.render(event),
            None => Ok(event.to_string()),
        }
    }

    pub fn headers(&self) -> impl Iterator<Item = (&str, &Secret)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v))
    }
}

fn headers(
    given: &BTreeMap<String, HeaderSetting>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, Secret)>, String> {
    given
        .iter()
        .map(|(name, value)| {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !valid_name {
                return Err(format!(
                    "header name {name:?} is not a valid HTTP header name"
                ));
            }
            let value = match value {
                HeaderSetting::Value(v) => v.clone(),
                HeaderSetting::Env(e) => env(&e.env)
                    .filter(|v| !v.is_empty())
                    .map(Secret::new)
                    .ok_or_else(|| {
                        format!(
                            "header {name}: the environment variable {} is not set",
                            e.env
                        )
                    })?,
            };
            // Checked without printing it: a header value may be a token.
            if value
                .expose()
                .bytes()
                .any(|b| b == b'\r' || b == b'\n' || b == 0)
            {
                return Err(format!(
                    "header {name}: the value holds a line break or NUL"
                ));
            }
            Ok((name.clone(), value))
        })
        .collect()
}

/// Whether a listener wants one of `events`: `record` then writes their outbox rows, reading
/// the activity and task rows they report.
pub fn wanted(listeners: &Listeners, events: &[Event]) -> bool {
    events
        .iter()
        .any(|e| listeners.iter().any(|l| l.wants(e.event_type)))
}

/// Writes the outbox rows of `events` (one per listener that wants each) inside the caller's
/// transaction: they commit or roll back with the change they report. `true` when it wrote any.
/// Nothing is read when no listener wants any of them.
pub fn record(
    conn: &mut DbConnection,
    listeners: &Listeners,
    events: &[Event],
    now: i64,
) -> diesel::QueryResult<bool> {
    let wanted = events
        .iter()
        .filter(|e| listeners.iter().any(|l| l.wants(e.event_type)));
    let mut rows = EventRows::default();
    let mut wrote = false;
    for event in wanted {
        let Some(body) = rows.event_body(conn, event, now)? else {
            continue;
        };
        let payload = body.to_string();
        let entity_id = event.task.map_or(event.activity.get(), |t| t.get());
        for listener in listeners.iter().filter(|l| l.wants(event.event_type)) {
            db::insert_notification(
                conn,
                &NewNotification {
                    listener: &listener.name,
                    event_type: event.event_type.as_str(),
                    entity_id,
                    activity_id: event.activity.get(),
                    payload: &payload,
                    created_at: now,
                    due_at: now,
                },
            )?;
            wrote = true;
        }
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvHeader, ListenerSettings};

    fn settings(listeners: Vec<ListenerSettings>) -> NotificationSettings {
        NotificationSettings {
            listeners,
            keep_days: 7,
            retry_first_ms: 1000,
            retry_max_ms: 300_000,
            timeout_ms: 10_000,
        }
    }

    fn listener(name: &str) -> ListenerSettings {
        ListenerSettings {
            name: name.into(),
            address: "http://observer:8080/".into(),
            kind: ListenerKind::Odm,
            events: Vec::new(),
            template: None,
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn odm_listeners_post_to_odms_dispatch_route_and_filter_events() {
        let mut audit = listener("audit");
        audit.events = vec!["DATA_PRODUCT_TASK_COMPLETED".into()];
        let built = Listeners::build(&settings(vec![listener("odm"), audit])).unwrap();
        let odm = built.get("odm").unwrap();
        assert_eq!(
            odm.endpoint,
            "http://observer:8080/api/v1/pp/notification/dispatch"
        );
        assert!(EventType::ALL.iter().all(|&t| odm.wants(t)));
        let audit = built.get("audit").unwrap();
        assert!(audit.wants(EventType::TaskCompleted));
        assert!(!audit.wants(EventType::TaskCreated));
    }

    #[test]
    fn header_values_come_from_the_environment_and_are_never_printed() {
        let mut hook = listener("hook");
        hook.headers.insert(
            "Authorization".into(),
            HeaderSetting::Env(EnvHeader {
                env: "HOOK_TOKEN".into(),
            }),
        );
        let env = |name: &str| (name == "HOOK_TOKEN").then(|| "Bearer t0ken".to_owned());
        let built = Listeners::build_with_env(&settings(vec![hook.clone()]), env).unwrap();
        let (name, value) = built.get("hook").unwrap().headers().next().unwrap();
        assert_eq!((name, value.expose()), ("Authorization", "Bearer t0ken"));
        assert!(!format!("{:?}", built.get("hook")).contains("t0ken"));
        let missing = Listeners::build_with_env(&settings(vec![hook]), |_| None).unwrap_err();
        assert!(
            missing.contains("(hook)") && missing.contains("HOOK_TOKEN"),
            "{missing}"
        );
        let mut broken = listener("broken");
        broken
            .headers
            .insert("X-A".into(), HeaderSetting::Value("a\r\nX-B: b".into()));
        let refused = Listeners::build(&settings(vec![broken])).unwrap_err();
        assert!(
            refused.contains("line break") && !refused.contains("X-B"),
            "{refused}"
        );
    }

    #[test]
    fn names_addresses_and_retries_are_checked() {
        for (bad, why) in [
            (listener("has space"), "name"),
            (
                ListenerSettings {
                    address: "observer:8080".into(),
                    ..listener("a")
                },
                "http",
            ),
            (
                ListenerSettings {
                    template: Some("{}".into()),
                    ..listener("b")
                },
                "webhook",
            ),
        ] {
            let error = Listeners::build(&settings(vec![bad])).unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        let twice = Listeners::build(&settings(vec![listener("a"), listener("a")])).unwrap_err();
        assert!(twice.contains("same name"), "{twice}");
        let mut no_retry = settings(Vec::new());
        no_retry.retry_max_ms = 10;
        assert!(Listeners::build(&no_retry)
            .unwrap_err()
            .contains("retry_max_ms"));
    }
}
