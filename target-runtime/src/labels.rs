//! Task labels, like Go's pprof labels: key/value pairs attached to a task, inherited by
//! the tasks it spawns, and shown by gprof-rs as sample labels (`go tool pprof -tagfocus`).

use crate::sched;
use std::sync::Arc;

fn replace(new: Arc<Vec<(String, String)>>) -> Arc<Vec<(String, String)>> {
    sched::with_current_task("labels", |t| {
        crate::task::write_meta(t.slot, t.name.as_deref(), &new);
        // SAFETY: we are the running task.
        std::mem::replace(unsafe { &mut t.owned().labels }, new)
    })
}

fn merged(base: &[(String, String)], add: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = base.to_vec();
    for (k, v) in add {
        match out.iter_mut().find(|(ok, _)| ok == k) {
            Some(e) => e.1 = (*v).to_string(),
            None => out.push(((*k).to_string(), (*v).to_string())),
        }
    }
    out
}

/// Run `f` with `labels` added to the calling task's labels (a key already present
/// takes the new value), then restore the previous labels. Tasks spawned inside `f`
/// inherit the combined set.
///
/// ```no_run
/// target_runtime::run(|| {
///     target_runtime::labels::with(&[("handler", "login")], || {
///         // work attributed to handler=login in profiles
///     });
/// });
/// ```
///
/// # Panics
///
/// Outside a task.
pub fn with<R>(labels: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
    let current = get_arc();
    let old = replace(Arc::new(merged(&current, labels)));
    struct Restore(Option<Arc<Vec<(String, String)>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(old) = self.0.take() {
                replace(old);
            }
        }
    }
    let _restore = Restore(Some(old));
    f()
}

/// Replace the calling task's labels (Go's `SetGoroutineLabels`).
///
/// # Panics
///
/// Outside a task.
pub fn set(labels: &[(&str, &str)]) {
    replace(Arc::new(merged(&[], labels)));
}

fn get_arc() -> Arc<Vec<(String, String)>> {
    // SAFETY: we are the running task.
    sched::with_current_task("labels::get", |t| unsafe { t.owned().labels.clone() })
}

/// The calling task's labels.
///
/// # Panics
///
/// Outside a task.
pub fn get() -> Vec<(String, String)> {
    get_arc().as_ref().clone()
}
