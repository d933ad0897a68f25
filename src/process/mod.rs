//! The target process: its memory maps, its memory, and stopping its threads.

pub mod maps;
pub mod memory;
pub mod placement;
pub mod priority;
pub mod regs;
pub mod stop;

pub use maps::{MapEntry, Perms};
pub use memory::{LiveMemory, MemError, Pod, RemoteMemory, SliceMemory};
pub use regs::Regs;
pub use stop::{StopConfig, StopKind, StopTimings, StoppedThread, Tracer, WorldStop};
