//! Logs: `tracing` to stdout, pretty or JSON (`log.format`), filtered by `RUST_LOG` or `log.filter`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a container's log or a file
    // are noise (and `NO_COLOR` says no, as everywhere).
    let colours = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_target(false);
    let installed = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    // A second init (tests, the demo starting a server in-process) keeps the first subscriber.
    let _ = installed;
}

/// The span a piece of work was asked for in (a request's, with its id) and the subscriber
/// that logs it, carried to the thread that does the work — the blocking pool's or the SQLite
/// writer's — where the thread-local tracing state is not the caller's. Without it, what the
/// work logs has no request id.
pub struct CallerSpan {
    dispatch: tracing::Dispatch,
    span: tracing::Span,
}

impl CallerSpan {
    /// The calling thread's current span and subscriber.
    pub fn capture() -> CallerSpan {
        CallerSpan {
            dispatch: tracing::dispatcher::get_default(tracing::Dispatch::clone),
            span: tracing::Span::current(),
        }
    }

    /// Runs `work` inside the captured span, logging to the captured subscriber.
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> T {
        tracing::dispatcher::with_default(&self.dispatch, || self.span.in_scope(work))
    }
}

/// How errors reach the log: inside the service errors are typed (`thiserror`), and a typed
/// error is logged as `error = %error_chain(&e)`: its message and every cause under it, joined
/// by `": "`, the way the binary's edges (`anyhow`, see `cli`) print theirs with `{:#}`. Plain
/// `%e` drops the causes of an error that wraps another (a `DbError` says "database query
/// failed" without the query's error); it is enough only for errors that have no source.
///
/// Formatted only when the event is logged (no text is built for a filtered-out event).
pub fn error_chain(e: &dyn std::error::Error) -> ErrorChain<'_> {
    ErrorChain(e)
}

/// See [`error_chain`].
pub struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn an_error_chain_reads_like_anyhow_at_the_edges() {
        let e = Outer(Middle(std::io::Error::other("inner")));
        assert_eq!(error_chain(&e).to_string(), "outer: middle: inner");
        let edge = anyhow::Error::new(Outer(Middle(std::io::Error::other("inner"))));
        assert_eq!(format!("{edge:#}"), error_chain(&e).to_string());
    }
}
