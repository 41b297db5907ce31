//! The one place background tasks are spawned, so each is named in the logs when it fails.

use std::future::Future;

/// Spawns a named background task on the current runtime.
#[expect(clippy::disallowed_methods, reason = "this is the task helper the lint points to")]
pub fn spawn<F>(name: &'static str, fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tracing::debug!(task = name, "spawning background task");
    tokio::spawn(fut)
}
