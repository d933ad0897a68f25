//! Reading a binary's DWARF for `addr2line`.
//!
//! A Rust binary built with debug info carries megabytes of DWARF, and a one-shot run
//! parses it every time, on a CPU the target may be using. Copying the sections out of
//! the file cost more than parsing them: 4.5 MB read into fresh memory is ~1,100 page
//! faults at 3-5 us each on this kind of VM, 5 ms of a 15 ms snapshot of 1k tasks.
//! So the file is mapped, and `addr2line` reads the page cache in place: only the pages
//! it touches are faulted in, 16 at a time (fault-around). Only compressed sections are
//! copied (decompressed). The sections `addr2line` never reads (variable locations,
//! often the largest in optimised C) are not looked at.
//!
//! A mapped file that someone truncates raises SIGBUS when a page past the new end is
//! touched. That is turned into a clear error and exit status 9 (bad data from the
//! target); by then the target has been released (symbolization runs after STW 2), and
//! it would also outlive a tool that died at any other point.

use std::ops::Deref;
use std::sync::{Arc, Once};

use gimli::{RunTimeEndian, SectionId};
use object::{Object, ObjectSection};

/// The bytes a section reader holds on to.
#[derive(Debug, Clone)]
pub enum Bytes {
    /// The whole mapped file (a reader is a range of it).
    Mapped(Arc<memmap2::Mmap>),
    /// A decompressed section.
    Owned(Arc<[u8]>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(b) => b,
        }
    }
}

// SAFETY: both variants deref to memory owned behind an `Arc` (a mapping, or a heap
// slice) that neither moves nor is freed while any clone of the `Arc` lives, so the
// address `deref` returns is the same for a value, its moves and its clones.
unsafe impl stable_deref_trait::StableDeref for Bytes {}
// SAFETY: as above: a clone shares the same `Arc`, hence the same address.
unsafe impl stable_deref_trait::CloneStableDeref for Bytes {}

/// The reader `addr2line` parses.
pub type Reader = gimli::EndianReader<RunTimeEndian, Bytes>;

/// An `addr2line` context over the DWARF of `obj`, if it has any. `file`, when given,
/// is the open file behind `obj`; its uncompressed sections are read where they lie.
pub fn load_dwarf<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    file: Option<&std::fs::File>,
) -> Option<addr2line::Context<Reader>> {
    obj.section_by_name(".debug_info")?;
    let endian = if obj.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let mapped = file.and_then(map);
    let empty = Reader::new(Bytes::Owned(Arc::from(&[][..])), endian);
    let load = |id: SectionId| -> Result<Reader, gimli::Error> {
        if matches!(id, SectionId::DebugLoc | SectionId::DebugLocLists) {
            return Ok(empty.clone());
        }
        let Some(s) = obj.section_by_name(id.name()) else {
            return Ok(empty.clone());
        };
        if let (Some(m), Ok(r)) = (&mapped, s.compressed_file_range()) {
            let end = r.offset.checked_add(r.uncompressed_size);
            if r.format == object::CompressionFormat::None
                && end.is_some_and(|end| end <= m.len() as u64)
            {
                let whole = Reader::new(Bytes::Mapped(m.clone()), endian);
                return Ok(
                    whole.range(r.offset as usize..(r.offset + r.uncompressed_size) as usize)
                );
            }
        }
        Ok(match s.uncompressed_data() {
            Ok(d) => Reader::new(Bytes::Owned(Arc::from(&*d)), endian),
            Err(_) => empty.clone(),
        })
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

/// Map `file` read-only, with SIGBUS turned into a clear error first.
fn map(file: &std::fs::File) -> Option<Arc<memmap2::Mmap>> {
    static SIGBUS: Once = Once::new();
    SIGBUS.call_once(install_sigbus_handler);
    // SAFETY: the mapping is read-only and private. Another process may still change
    // the file under it: a truncation raises SIGBUS, handled above; changed bytes are
    // parsed as the untrusted input they already are (gimli checks every offset and
    // length against the slice, so no read leaves the mapping).
    let m = unsafe { memmap2::Mmap::map(file) }.ok()?;
    Some(Arc::new(m))
}

fn install_sigbus_handler() {
    // SAFETY: installs a handler that only calls async-signal-safe functions (write,
    // _exit) on static data.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(_: libc::c_int) {
    const MSG: &[u8] = b"gprof-rs: a binary or library of the target was truncated while gprof-rs read its debug info (SIGBUS); the target was not changed: take the snapshot again\n";
    // SAFETY: write and _exit are async-signal-safe; MSG is static.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(9);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// Set in the child the test below starts: it maps a file, truncates it and reads
    /// past the new end.
    const CHILD: &str = "GPROF_RS_TEST_SIGBUS_CHILD";

    #[test]
    fn a_mapped_file_truncated_under_us_is_a_clear_error() {
        if let Some(path) = std::env::var_os(CHILD) {
            let file = std::fs::File::open(&path).unwrap();
            let m = super::map(&file).unwrap();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(0)
                .unwrap();
            // The page is gone from the file: this read raises SIGBUS.
            let byte = std::hint::black_box(m[100]);
            panic!("read {byte} from a truncated file without SIGBUS");
        }
        let dir = std::env::temp_dir().join(format!("gprof-rs-sigbus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("debug-info");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&[7u8; 3 * 4096])
            .unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "symbolize::sections::tests::a_mapped_file_truncated_under_us_is_a_clear_error",
                "--nocapture",
            ])
            .env(CHILD, &path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "stderr: {stderr}");
        assert!(
            stderr.contains("was truncated while gprof-rs read its debug info (SIGBUS)"),
            "stderr: {stderr}"
        );
    }
}
