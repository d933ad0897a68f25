//! Task-local storage.
//!
//! A task can move between worker threads at any park or yield, so a `thread_local!`
//! read before a park and after it may see two different threads' values (and LLVM may
//! even cache the first thread's address across the call: llvm-project issue 98479).
//! Use [`task_local!`](crate::task_local) for per-task state instead.

use std::any::Any;

/// A key for a task-local value, made with [`task_local!`](crate::task_local).
pub struct LocalKey<T: 'static> {
    #[doc(hidden)]
    pub init: fn() -> T,
}

impl<T: 'static> std::fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey")
    }
}

impl<T: 'static> LocalKey<T> {
    /// Run `f` with this task's value, initialising it on first use.
    ///
    /// # Panics
    ///
    /// Outside a task.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        let key = self as *const Self as usize;
        let p: *const T = crate::sched::with_current_task("task_local", |t| {
            // SAFETY: we are the running task.
            let locals = unsafe { &mut t.owned().locals };
            if let Some((_, v)) = locals.iter().find(|(k, _)| *k == key) {
                return v.downcast_ref::<T>().expect("one type per key") as *const T;
            }
            let b: Box<dyn Any> = Box::new((self.init)());
            let p = b.downcast_ref::<T>().expect("just boxed") as *const T;
            locals.push((key, b));
            p
        });
        // SAFETY: the value is boxed (stable address) and only dropped when the task ends,
        // which cannot happen while this task is running `f`.
        f(unsafe { &*p })
    }
}

/// Declare task-local keys:
///
/// ```no_run
/// use std::cell::Cell;
/// target_runtime::task_local! {
///     static REQUESTS: Cell<u32> = Cell::new(0);
/// }
/// target_runtime::run(|| REQUESTS.with(|r| r.set(r.get() + 1)));
/// ```
#[macro_export]
macro_rules! task_local {
    ($($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;)+) => {$(
        $(#[$attr])* $vis static $name: $crate::LocalKey<$t> = $crate::LocalKey {
            init: { fn __init() -> $t { $init } __init },
        };
    )+};
}
