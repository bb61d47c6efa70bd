//! What started the current work (`RotateTimer`, `EventGridSecretChanged`, `patrol rotate`, …), carried as a
//! task-local so the lifecycle log can record it. Imports nothing from the crate: every layer may use it.

tokio::task_local! {
    /// What started the current work (`RotateTimer`, `EventGridSecretChanged`, `patrol rotate`, …).
    static TRIGGER: String;
}

/// Runs `f` with `trigger` as what started it (read back with [`trigger`], e.g. by the lifecycle log).
pub async fn with_trigger<F: std::future::Future>(trigger: impl Into<String>, f: F) -> F::Output {
    TRIGGER.scope(trigger.into(), f).await
}

/// What started the current work, when the caller said ([`with_trigger`]).
pub fn trigger() -> Option<String> {
    TRIGGER.try_with(Clone::clone).ok()
}
