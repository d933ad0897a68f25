//! Find the runtime in a process and map its shared region.
//!
//! 1. [`locate`]: walk `/proc/PID/maps`, open every mapped ELF object (through
//!    `/proc/PID/map_files/…`, else `/proc/PID/root/<path>`), look up
//!    [`gprof_abi::DESCRIPTOR_SYMBOL`] in `.symtab` and `.dynsym`, add the object's load
//!    bias, read the [`Descriptor`] with [`RemoteMemory`] and validate every field.
//! 2. [`Located::open_region`]: open `/proc/PID/fd/<memfd>` ourselves (a fresh open file
//!    description: the lease is a `flock` on it, and `pidfd_getfd` would share the
//!    runtime's description, so the runtime's probe would never see it held —
//!    reliability.md §3.3 and experiment E11), check it is a sealed regular file of the
//!    right size, map it `MAP_SHARED`, validate the [`ControlBlock`], and take
//!    `flock(LOCK_EX|LOCK_NB)`.
//!
//! Everything read from the target is untrusted (reliability.md §4.3): each header is
//! copied once into a local value and validated, offsets and sizes with checked
//! arithmetic; the rest of the tool uses the validated [`Layout`], never the header.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::mem::{align_of, offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::ptr::NonNull;

use gprof_abi::{
    ControlBlock, Descriptor, TaskSlot, WorkerRecord, ABI_VERSION, CONTROL_SIZE, LABELS_CAP, MAGIC,
    NAME_CAP, WORKER_CAP,
};
use object::{Object, ObjectSegment};

use crate::error::{from_proc_io, Error, Result};
use crate::model::ModuleInfo;
use crate::process::maps::{self, MapEntry};
use crate::process::memory::{self, LiveMemory, RemoteMemory};
use crate::unwind::{for_each_symbol, SymTable};

/// Largest region we agree to map (address space only: the region is sparse).
pub const MAX_REGION_LEN: u64 = 64 << 30;
/// Most task slots we accept.
pub const MAX_SLOTS: u32 = 1 << 24;
/// Largest ELF file we open to look for symbols (reliability.md §4.2).
pub const MAX_ELF_SIZE: u64 = 4 << 30;

/// What [`locate`] found.
#[derive(Debug, Clone)]
pub struct Located {
    /// Target PID.
    pub pid: u32,
    /// Address of the descriptor in the target.
    pub descriptor_addr: u64,
    /// Path of the object that exports it, as the target sees it.
    pub object_path: String,
    /// The region's address in the target.
    pub region_addr: u64,
    /// The region's length.
    pub region_len: u64,
    /// The memfd's descriptor number in the target.
    pub memfd: u32,
    /// `(dev, inode)` of the memfd, from the mapping at `region_addr`.
    pub region_file: ((u32, u32), u64),
    /// The maps as read during `locate`.
    pub maps: Vec<MapEntry>,
    /// The `/proc` directory used for the process: `/proc/PID`, or
    /// `/proc/PID/task/TID` of a live thread when the leader is a zombie (its `maps`,
    /// `fd/` and `root` are empty once it has exited: reliability.md §2.4, E6).
    pub proc_dir: String,
    /// The id to read memory through (PID, or that live TID).
    pub mem_pid: u32,
}

/// The `/proc` directory and memory pid to use for `pid`; see [`Located::proc_dir`].
pub fn proc_dir(pid: u32) -> (String, u32) {
    use crate::process::stop::thread_state;
    let dead = |s: Option<char>| matches!(s, None | Some('Z') | Some('X'));
    if dead(thread_state(pid, pid)) {
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for ent in dir.flatten() {
                if let Some(tid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                    if tid != pid && !dead(thread_state(pid, tid)) {
                        return (format!("/proc/{pid}/task/{tid}"), tid);
                    }
                }
            }
        }
    }
    (format!("/proc/{pid}"), pid)
}

/// A candidate ELF object: every maps entry of one file.
struct Object_ {
    path: std::ffi::OsString,
    entries: Vec<MapEntry>,
}

/// Group file-backed mappings by file, the main executable first.
fn mapped_objects(proc_dir: &str, maps: &[MapEntry]) -> Vec<Object_> {
    let mut objs: Vec<Object_> = Vec::new();
    for m in maps.iter().filter(|m| m.is_file_backed()) {
        match objs
            .iter_mut()
            .find(|o| o.entries[0].dev == m.dev && o.entries[0].inode == m.inode)
        {
            Some(o) => o.entries.push(m.clone()),
            None => objs.push(Object_ {
                path: m.path.clone(),
                entries: vec![m.clone()],
            }),
        }
    }
    // /proc/PID/exe names the main executable; look there first.
    if let Ok(exe) = std::fs::metadata(format!("{proc_dir}/exe")) {
        if let Some(i) = objs.iter().position(|o| o.entries[0].inode == exe.ino()) {
            let o = objs.remove(i);
            objs.insert(0, o);
        }
    }
    objs
}

/// Open the file behind a mapping: `/proc/PID/map_files/START-END` opens exactly the
/// mapped file even if it was deleted or replaced (needs CAP_SYS_ADMIN or
/// CAP_CHECKPOINT_RESTORE, `fs/proc/base.c:proc_map_files_get_link`); otherwise the
/// path inside the target's root (`<proc_dir>/root`, reliability.md §2.2/§4.2).
/// `proc_dir` is `/proc/PID` or `/proc/PID/task/TID` (see [`proc_dir`]).
pub fn open_mapped_file(pid: u32, proc_dir: &str, m: &MapEntry) -> io::Result<File> {
    let open = |p: &std::path::Path| -> io::Result<File> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(p)?;
        let md = f.metadata()?;
        if !md.file_type().is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        if md.len() > MAX_ELF_SIZE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "file too large"));
        }
        Ok(f)
    };
    let via_map_files = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    match open(std::path::Path::new(&via_map_files)) {
        Ok(f) => Ok(f),
        Err(first) => {
            let path = m.path_without_deleted();
            if m.is_deleted() || path.as_bytes().first() != Some(&b'/') {
                return Err(first);
            }
            let mut p = std::ffi::OsString::from(format!("{proc_dir}/root"));
            p.push(path);
            open(std::path::Path::new(&p))
        }
    }
}

/// Load bias of an object: the value to add to its ELF virtual addresses.
///
/// `segments` are its `PT_LOAD`s as `(p_vaddr, p_offset, p_filesz)`; `mappings` its maps
/// entries as `(start, file offset)`. A file byte at offset `x` of a segment lives at
/// `p_vaddr + (x - p_offset) + bias`; a maps entry says offset `off` is at `start`. The
/// kernel maps from `p_offset` rounded down to a page (`fs/binfmt_elf.c:elf_map`), so an
/// entry's offset may sit up to a page below `p_offset`. Works for PIE/shared objects
/// (bias = load address) and non-PIE executables (bias 0); wrapping arithmetic because a
/// prelinked object can have a "negative" bias.
pub fn load_bias(segments: &[(u64, u64, u64)], mappings: &[(u64, u64)], page: u64) -> Option<u64> {
    for &(start, off) in mappings {
        for &(vaddr, p_off, filesz) in segments {
            let first = p_off - p_off % page.max(1);
            let end = p_off.checked_add(filesz)?;
            if filesz > 0 && off >= first && off < end {
                return Some(
                    start
                        .wrapping_sub(off)
                        .wrapping_add(p_off)
                        .wrapping_sub(vaddr),
                );
            }
        }
    }
    None
}

pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map(|v| v as u64)
        .unwrap_or(4096)
}

/// Look for the descriptor symbol in one object; returns its runtime address.
fn find_descriptor_in(pid: u32, proc_dir: &str, obj: &Object_) -> Option<u64> {
    let file = open_mapped_file(pid, proc_dir, &obj.entries[0]).ok()?;
    let cache = object::ReadCache::new(file);
    let elf = object::File::parse(&cache).ok()?;
    let name = gprof_abi::DESCRIPTOR_SYMBOL.as_bytes();
    let mut svma = None;
    for table in [SymTable::Symtab, SymTable::Dynsym] {
        for_each_symbol(&elf, table, |s| {
            if s.name == name && s.is_defined {
                svma = Some(s.svma);
            }
            svma.is_none()
        });
        if svma.is_some() {
            break;
        }
    }
    let svma = svma?;
    let segments: Vec<(u64, u64, u64)> = elf
        .segments()
        .map(|s| {
            let (off, size) = s.file_range();
            (s.address(), off, size)
        })
        .collect();
    let mappings: Vec<(u64, u64)> = obj.entries.iter().map(|m| (m.start, m.offset)).collect();
    let bias = load_bias(&segments, &mappings, page_size())?;
    Some(svma.wrapping_add(bias))
}

/// The descriptor was not found: say "not a target" only if `pid` is still a live
/// process with mappings. A target that exits while it is being located loses its
/// mappings (`exit_mm`) before it becomes a zombie, and that is "exited", not "not ours".
fn not_a_target_or_exited(pid: u32, proc_dir: &str, had_maps: bool) -> Error {
    let state = std::fs::read(format!("{proc_dir}/stat"))
        .ok()
        .and_then(|s| {
            let close = s.iter().rposition(|&c| c == b')')?;
            s.get(close + 2).copied()
        });
    let gone = matches!(state, None | Some(b'Z') | Some(b'X'));
    let lost_maps =
        had_maps && std::fs::read(format!("{proc_dir}/maps")).map_or(true, |m| m.is_empty());
    if gone || lost_maps {
        Error::ProcessExited { pid }
    } else {
        Error::NotATarget { pid }
    }
}

/// Find and validate the runtime descriptor of `pid`.
pub fn locate(pid: u32) -> Result<Located> {
    let (_, mem_pid) = proc_dir(pid);
    locate_with(pid, &LiveMemory::new(mem_pid))
}

/// [`locate`] with a given memory reader (tests).
pub fn locate_with(pid: u32, mem: &dyn RemoteMemory) -> Result<Located> {
    let (proc_dir, mem_pid) = proc_dir(pid);
    let mut maps = std::fs::read(format!("{proc_dir}/maps"))
        .map(|text| maps::parse_maps(&text))
        .map_err(|e| from_proc_io(pid, e))?;
    if maps.is_empty() {
        // A kernel thread or a zombie has no mappings; so does a process that is exiting.
        return Err(not_a_target_or_exited(pid, &proc_dir, false));
    }
    let mut found = None;
    for obj in mapped_objects(&proc_dir, &maps) {
        if let Some(addr) = find_descriptor_in(pid, &proc_dir, &obj) {
            found = Some((addr, obj));
            break;
        }
    }
    let Some((descriptor_addr, obj)) = found else {
        return Err(not_a_target_or_exited(pid, &proc_dir, true));
    };
    let object_path = obj.path.to_string_lossy().into_owned();
    // The descriptor is initialized data of that object: it must lie in one of its
    // mappings (otherwise the file on disk is not what is mapped, or the ELF lies).
    let desc_len = size_of::<Descriptor>() as u64;
    if !obj
        .entries
        .iter()
        .any(|m| m.perms.read && m.contains_range(descriptor_addr, desc_len))
    {
        return Err(Error::bad(format!(
            "{} in {object_path} resolves to {descriptor_addr:#x}, which is not mapped from that file",
            gprof_abi::DESCRIPTOR_SYMBOL
        )));
    }
    let read = |mem: &dyn RemoteMemory| -> Result<DescriptorCopy> {
        let d: Descriptor =
            memory::read_pod(mem, descriptor_addr).map_err(|e| e.into_error(pid))?;
        Ok(DescriptorCopy::from(&d))
    };
    let d = read(mem)?;
    validate_descriptor(&d)?;
    if d.region_addr == 0 {
        return Err(Error::RuntimeNotStarted);
    }
    // The runtime publishes region_addr last (release); one copy does not order the
    // fields, so read again now that region_addr was seen set and use that copy.
    let d2 = read(mem)?;
    validate_descriptor(&d2)?;
    if d2.region_addr != d.region_addr {
        return Err(Error::bad(
            "the descriptor's region address changed while being read",
        ));
    }
    let d = d2;
    if d.region_len < CONTROL_SIZE || d.region_len > MAX_REGION_LEN {
        return Err(Error::bad(format!(
            "region length {:#x} is outside [{CONTROL_SIZE:#x}, {MAX_REGION_LEN:#x}]",
            d.region_len
        )));
    }
    if d.memfd > i32::MAX as u32 {
        return Err(Error::bad(format!(
            "memfd number {} is not a file descriptor",
            d.memfd
        )));
    }
    // The runtime maps the region before it publishes region_addr, but `maps` was read
    // before region_addr was seen set: in a target that is just starting it can predate
    // the mapping. Read it again before calling the region unmapped.
    let region_file = match check_region_mapped(&maps, d.region_addr, d.region_len) {
        Ok(f) => f,
        Err(_) => {
            maps = std::fs::read(format!("{proc_dir}/maps"))
                .map(|text| maps::parse_maps(&text))
                .map_err(|e| from_proc_io(pid, e))?;
            check_region_mapped(&maps, d.region_addr, d.region_len)?
        }
    };
    Ok(Located {
        pid,
        descriptor_addr,
        object_path,
        region_addr: d.region_addr,
        region_len: d.region_len,
        memfd: d.memfd,
        region_file,
        maps,
        proc_dir,
        mem_pid,
    })
}

/// The descriptor's fields, copied out of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorCopy {
    /// [`Descriptor::magic`].
    pub magic: u64,
    /// [`Descriptor::abi_version`].
    pub abi_version: u32,
    /// [`Descriptor::descriptor_size`].
    pub descriptor_size: u32,
    /// [`Descriptor::region_addr`].
    pub region_addr: u64,
    /// [`Descriptor::region_len`].
    pub region_len: u64,
    /// [`Descriptor::memfd`].
    pub memfd: u32,
    /// [`Descriptor::control_size`].
    pub control_size: u32,
    /// [`Descriptor::worker_record_size`].
    pub worker_record_size: u32,
    /// [`Descriptor::slot_size`].
    pub slot_size: u32,
}

impl From<&Descriptor> for DescriptorCopy {
    fn from(d: &Descriptor) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        DescriptorCopy {
            magic: d.magic,
            abi_version: d.abi_version,
            descriptor_size: d.descriptor_size,
            region_addr: d.region_addr.load(Relaxed),
            region_len: d.region_len.load(Relaxed),
            memfd: d.memfd.load(Relaxed),
            control_size: d.control_size,
            worker_record_size: d.worker_record_size,
            slot_size: d.slot_size,
        }
    }
}

fn size_check(what: &str, found: u64, expected: usize) -> Result<()> {
    if found != expected as u64 {
        return Err(Error::bad(format!(
            "{what} is {found} bytes, but ABI v{ABI_VERSION} defines it as {expected} bytes"
        )));
    }
    Ok(())
}

/// Magic, then version (so a future ABI with other sizes reports the version), then sizes.
pub fn validate_descriptor(d: &DescriptorCopy) -> Result<()> {
    if d.magic != MAGIC {
        return Err(Error::bad(format!(
            "descriptor magic is {:#018x}, expected {MAGIC:#018x} (\"GPROFRT1\")",
            d.magic
        )));
    }
    if d.abi_version != ABI_VERSION {
        return Err(Error::AbiMismatch {
            found: d.abi_version,
            expected: ABI_VERSION,
        });
    }
    size_check(
        "the descriptor",
        d.descriptor_size.into(),
        size_of::<Descriptor>(),
    )?;
    size_check(
        "the control block",
        d.control_size.into(),
        size_of::<ControlBlock>(),
    )?;
    size_check(
        "a worker record",
        d.worker_record_size.into(),
        size_of::<WorkerRecord>(),
    )?;
    size_check("a task slot", d.slot_size.into(), size_of::<TaskSlot>())?;
    Ok(())
}

/// `[addr, addr + len)` must be covered by contiguous shared mappings of one memfd.
fn check_region_mapped(maps: &[MapEntry], addr: u64, len: u64) -> Result<((u32, u32), u64)> {
    let end = addr.checked_add(len).ok_or_else(|| {
        Error::bad(format!(
            "region {addr:#x}+{len:#x} overflows the address space"
        ))
    })?;
    let not_mapped = || {
        Error::bad(format!(
            "the region [{addr:#x}, {end:#x}) is not a shared memfd mapping in the target"
        ))
    };
    let first = maps::find(maps, addr).ok_or_else(not_mapped)?;
    if !(first.is_memfd() && first.perms.shared && first.perms.read) || first.offset != 0 {
        return Err(not_mapped());
    }
    let mut covered = first.end;
    let mut i = maps
        .iter()
        .position(|m| std::ptr::eq(m, first))
        .unwrap_or(0)
        + 1;
    while covered < end {
        match maps.get(i) {
            Some(m)
                if m.start == covered
                    && m.inode == first.inode
                    && m.dev == first.dev
                    && m.perms.shared =>
            {
                covered = m.end;
                i += 1;
            }
            _ => return Err(not_mapped()),
        }
    }
    Ok((first.dev, first.inode))
}

/// Static layout of the region, validated once; use this rather than the header fields,
/// which the target could change after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Region length (mapped bytes).
    pub region_len: u64,
    /// Offset of the worker records.
    pub worker_off: u64,
    /// Number of worker records.
    pub worker_cap: u32,
    /// Offset of the task slots.
    pub slot_off: u64,
    /// Number of task slots.
    pub slot_cap: u32,
    /// Offset of the arena.
    pub arena_off: u64,
    /// Arena length.
    pub arena_len: u64,
    /// Offset of the profile helper's ring.
    pub ring_off: u64,
    /// Ring length (a multiple of 16).
    pub ring_len: u64,
    /// Pid of the runtime's process, as it saw itself (namespace-relative).
    pub runtime_pid: u32,
}

/// The plain (non-atomic) header fields, copied once.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderCopy {
    /// [`ControlBlock::magic`].
    pub magic: u64,
    /// [`ControlBlock::abi_version`].
    pub abi_version: u32,
    /// [`ControlBlock::control_size`].
    pub control_size: u32,
    /// [`ControlBlock::region_len`].
    pub region_len: u64,
    /// [`ControlBlock::worker_off`].
    pub worker_off: u64,
    /// [`ControlBlock::worker_cap`].
    pub worker_cap: u32,
    /// [`ControlBlock::worker_record_size`].
    pub worker_record_size: u32,
    /// [`ControlBlock::slot_off`].
    pub slot_off: u64,
    /// [`ControlBlock::slot_cap`].
    pub slot_cap: u32,
    /// [`ControlBlock::slot_size`].
    pub slot_size: u32,
    /// [`ControlBlock::arena_off`].
    pub arena_off: u64,
    /// [`ControlBlock::arena_len`].
    pub arena_len: u64,
    /// [`ControlBlock::ring_off`].
    pub ring_off: u64,
    /// [`ControlBlock::ring_len`].
    pub ring_len: u64,
    /// [`ControlBlock::runtime_pid`].
    pub runtime_pid: u32,
}

/// Validate a control block header against the region length the descriptor gave.
pub fn validate_header(h: &HeaderCopy, region_len: u64) -> Result<Layout> {
    if h.magic != MAGIC {
        return Err(Error::bad(format!(
            "control block magic is {:#018x}, expected {MAGIC:#018x}",
            h.magic
        )));
    }
    if h.abi_version != ABI_VERSION {
        return Err(Error::AbiMismatch {
            found: h.abi_version,
            expected: ABI_VERSION,
        });
    }
    size_check(
        "the control block (header)",
        h.control_size.into(),
        size_of::<ControlBlock>(),
    )?;
    size_check(
        "a worker record (header)",
        h.worker_record_size.into(),
        size_of::<WorkerRecord>(),
    )?;
    size_check(
        "a task slot (header)",
        h.slot_size.into(),
        size_of::<TaskSlot>(),
    )?;
    if h.region_len != region_len {
        return Err(Error::bad(format!(
            "control block says the region is {:#x} bytes, the descriptor says {region_len:#x}",
            h.region_len
        )));
    }
    if h.worker_cap > WORKER_CAP {
        return Err(Error::bad(format!(
            "worker_cap {} exceeds the ABI limit {WORKER_CAP}",
            h.worker_cap
        )));
    }
    if h.slot_cap > MAX_SLOTS {
        return Err(Error::bad(format!(
            "slot_cap {} exceeds the limit {MAX_SLOTS}",
            h.slot_cap
        )));
    }
    let part = |what: &str, off: u64, count: u64, size: u64, align: u64| -> Result<(u64, u64)> {
        let len = count.checked_mul(size);
        let end = len.and_then(|l| off.checked_add(l));
        match end {
            Some(end) if off >= CONTROL_SIZE && end <= region_len && off % align == 0 => Ok((off, end)),
            _ => Err(Error::bad(format!(
                "{what} (offset {off:#x}, {count} x {size} bytes) does not fit in the {region_len:#x}-byte region \
                 after the {CONTROL_SIZE:#x}-byte control block (or is misaligned)"
            ))),
        }
    };
    let workers = part(
        "the worker table",
        h.worker_off,
        h.worker_cap.into(),
        size_of::<WorkerRecord>() as u64,
        align_of::<WorkerRecord>() as u64,
    )?;
    let slots = part(
        "the slot table",
        h.slot_off,
        h.slot_cap.into(),
        size_of::<TaskSlot>() as u64,
        align_of::<TaskSlot>() as u64,
    )?;
    let arena = part("the arena", h.arena_off, h.arena_len, 1, 16)?;
    if h.ring_len == 0 || h.ring_len % 16 != 0 {
        return Err(Error::bad(format!(
            "the helper's ring is {:#x} bytes, not a positive multiple of 16",
            h.ring_len
        )));
    }
    let ring = part("the helper's ring", h.ring_off, h.ring_len, 1, 16)?;
    let parts = [
        ("worker table", workers),
        ("slot table", slots),
        ("arena", arena),
        ("helper's ring", ring),
    ];
    for (i, (a, (a0, a1))) in parts.iter().enumerate() {
        for (b, (b0, b1)) in &parts[i + 1..] {
            if a0 < a1 && b0 < b1 && a0 < b1 && b0 < a1 {
                return Err(Error::bad(format!("the {a} and the {b} overlap")));
            }
        }
    }
    Ok(Layout {
        region_len,
        worker_off: h.worker_off,
        worker_cap: h.worker_cap,
        slot_off: h.slot_off,
        slot_cap: h.slot_cap,
        arena_off: h.arena_off,
        arena_len: h.arena_len,
        ring_off: h.ring_off,
        ring_len: h.ring_len,
        runtime_pid: h.runtime_pid,
    })
}

/// The runtime's shared region, mapped into this process, with the profiler lease held.
///
/// # Concurrency
///
/// The target writes this memory at any time. Every field the runtime changes after
/// start-up is an atomic in the ABI, so handing out `&ControlBlock`, `&WorkerRecord` and
/// `&TaskSlot` is sound as long as callers use atomic loads/stores on those fields.
/// The plain integer fields of [`ControlBlock`] are written once before the region is
/// published; use [`Region::layout`] (validated copies) instead of reading them. The
/// byte arrays of a slot (`name`, `labels`) are written under the slot's `meta_seq`
/// seqlock: copy them with [`copy_name`]/[`copy_labels`] (volatile reads) between two
/// reads of `meta_seq`, never through a `&[u8]`.
#[derive(Debug)]
pub struct Region {
    pid: u32,
    base: NonNull<u8>,
    layout: Layout,
    /// Our own open of `/proc/PID/fd/N`; its `flock` is the lease. Closing it (drop)
    /// releases the lease.
    file: File,
    /// We hold the flock (and stamped `owner_pid`).
    leased: bool,
}

// SAFETY: the mapping is process-wide (any thread may use it) and lives until drop;
// all shared accesses go through atomics or volatile copies (see the type docs).
unsafe impl Send for Region {}
// SAFETY: as above; &Region only hands out shared references to atomics-based types.
unsafe impl Sync for Region {}

impl Located {
    /// Open, check, map and lock the region. See the module docs.
    pub fn open_region(&self) -> Result<Region> {
        Region::open(self)
    }

    /// Executable mappings of the target, with GNU build ids.
    pub fn modules(&self) -> Vec<ModuleInfo> {
        modules(
            self.pid,
            &self.proc_dir,
            &self.maps,
            &LiveMemory::new(self.mem_pid),
        )
    }
}

impl Region {
    fn open(loc: &Located) -> Result<Region> {
        let pid = loc.pid;
        let fd_path = format!("{}/fd/{}", loc.proc_dir, loc.memfd);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&fd_path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) if !exiting(pid) => Error::bad(format!(
                    "the descriptor names fd {}, which is not open in the target",
                    loc.memfd
                )),
                Some(libc::ENOENT) => Error::ProcessExited { pid },
                Some(libc::EACCES) | Some(libc::EPERM) => Error::permission(pid),
                _ => Error::bad(format!("cannot open fd {} of the target: {e}", loc.memfd)),
            })?;
        let md = file.metadata()?;
        if !md.file_type().is_file() {
            return Err(Error::bad(format!(
                "fd {} of the target is not a memfd (not a regular file)",
                loc.memfd
            )));
        }
        if md.ino() != loc.region_file.1 {
            return Err(Error::bad(format!(
                "fd {} of the target is not the file mapped at the region address {:#x}",
                loc.memfd, loc.region_addr
            )));
        }
        // Seals first: once SHRINK is set the size can only stay, so the size check below
        // holds for as long as we map it and the target cannot SIGBUS us (memfd_create(2);
        // reliability.md §4.2).
        let seals = nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS)
            .map_err(|e| {
                Error::bad(format!(
                    "fd {} of the target does not support seals ({e}): not a memfd",
                    loc.memfd
                ))
            })?;
        let need = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        if seals & need != need {
            return Err(Error::bad(format!(
                "the region memfd is not sealed with F_SEAL_SHRINK|F_SEAL_GROW (seals {seals:#x}): mapping it could crash the tool"
            )));
        }
        if md.len() < loc.region_len {
            return Err(Error::bad(format!(
                "the region memfd is {:#x} bytes, shorter than the advertised {:#x}",
                md.len(),
                loc.region_len
            )));
        }
        let len = std::num::NonZeroUsize::new(
            usize::try_from(loc.region_len).map_err(|_| Error::bad("region too large"))?,
        )
        .ok_or_else(|| Error::bad("empty region"))?;
        // SAFETY: a fresh MAP_SHARED mapping of a file we hold open, at an address the
        // kernel picks; nothing in this process aliases it yet. The file is sealed
        // against shrinking and at least `len` bytes long (checked above), so every
        // page of the mapping stays backed.
        let base = unsafe {
            nix::sys::mman::mmap(
                None,
                len,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                file.as_fd(),
                0,
            )
        }
        .map_err(|e| Error::Io(e.into()))?;
        let base = base.cast::<u8>();
        // From here on, drop unmaps. Layout is filled after validation.
        let mut region = Region {
            pid,
            base,
            layout: Layout {
                region_len: loc.region_len,
                worker_off: 0,
                worker_cap: 0,
                slot_off: 0,
                slot_cap: 0,
                arena_off: 0,
                arena_len: 0,
                ring_off: 0,
                ring_len: 0,
                runtime_pid: 0,
            },
            file,
            leased: false,
        };
        let header = region.copy_header();
        region.layout = validate_header(&header, loc.region_len)?;
        // The lease (reliability.md §3.3 tool side step 1): EWOULDBLOCK = another profiler.
        // SAFETY: flock on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(region.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let e = io::Error::last_os_error();
        let busy = r != 0 && e.raw_os_error() == Some(libc::EWOULDBLOCK);
        if r != 0 && !(busy && region.retry_runtime_probe()) {
            if busy {
                let owner_pid = region
                    .control()
                    .owner_pid
                    .load(std::sync::atomic::Ordering::Acquire);
                return Err(Error::ProfilerBusy { owner_pid });
            }
            return Err(Error::Io(e));
        }
        region.leased = true;
        // Diagnostics only (the lease decides): who holds it.
        region.control().owner_pid.store(
            std::process::id().into(),
            std::sync::atomic::Ordering::Release,
        );
        Ok(region)
    }

    /// The lock is taken but nobody claims the lease (`owner_pid` 0): the runtime itself
    /// holds `LOCK_SH` for a moment, to probe whether a profiler is alive or while it
    /// gives arena pages back (abi docs, "Profile helper"). Try again for a little
    /// while; a profiler that holds the lease keeps it, and stamps `owner_pid` at once.
    fn retry_runtime_probe(&self) -> bool {
        const RUNTIME_PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
        let t = std::time::Instant::now();
        loop {
            let owner = self
                .control()
                .owner_pid
                .load(std::sync::atomic::Ordering::Acquire);
            if owner != 0 || t.elapsed() > RUNTIME_PROBE_WAIT {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
            // SAFETY: flock on a descriptor we own; no memory is involved.
            let r = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return true;
            }
        }
    }

    /// Copy the plain header fields once, with volatile reads (TOCTOU rule of
    /// memfd_create(2): copy, then validate, then use the copy).
    fn copy_header(&self) -> HeaderCopy {
        let p = self.base.as_ptr();
        macro_rules! field {
            ($f:ident: $t:ty) => {{
                const OFF: usize = offset_of!(ControlBlock, $f);
                // SAFETY: the mapping is at least CONTROL_SIZE >= size_of::<ControlBlock>()
                // bytes (region_len >= CONTROL_SIZE was checked by `locate`), page
                // aligned, so the field at OFF is in bounds and aligned for $t; any bit
                // pattern is a valid integer.
                unsafe { std::ptr::read_volatile(p.add(OFF).cast::<$t>()) }
            }};
        }
        HeaderCopy {
            magic: field!(magic: u64),
            abi_version: field!(abi_version: u32),
            control_size: field!(control_size: u32),
            region_len: field!(region_len: u64),
            worker_off: field!(worker_off: u64),
            worker_cap: field!(worker_cap: u32),
            worker_record_size: field!(worker_record_size: u32),
            slot_off: field!(slot_off: u64),
            slot_cap: field!(slot_cap: u32),
            slot_size: field!(slot_size: u32),
            arena_off: field!(arena_off: u64),
            arena_len: field!(arena_len: u64),
            ring_off: field!(ring_off: u64),
            ring_len: field!(ring_len: u64),
            runtime_pid: field!(runtime_pid: u32),
        }
    }

    /// The target PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The validated static layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The lease file (our open of the memfd).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The control block. Use only its atomic fields; see the type docs.
    pub fn control(&self) -> &ControlBlock {
        // SAFETY: offset 0 of a page-aligned mapping of >= CONTROL_SIZE bytes that lives
        // as long as `self`; ControlBlock is integers and atomics (every bit pattern
        // valid), and the fields the target changes concurrently are atomics.
        unsafe { &*self.base.as_ptr().cast::<ControlBlock>() }
    }

    /// Worker record `i`, if `i < worker_cap`.
    pub fn worker(&self, i: u32) -> Option<&WorkerRecord> {
        if i >= self.layout.worker_cap {
            return None;
        }
        let off = self.layout.worker_off + u64::from(i) * size_of::<WorkerRecord>() as u64;
        // SAFETY: validate_header proved worker_off + worker_cap * size <= region_len and
        // worker_off aligned for WorkerRecord; i < worker_cap. WorkerRecord is all atomics.
        Some(unsafe { &*self.base.as_ptr().add(off as usize).cast::<WorkerRecord>() })
    }

    /// Task slot `i`, if `i < slot_cap`.
    pub fn slot(&self, i: u32) -> Option<&TaskSlot> {
        if i >= self.layout.slot_cap {
            return None;
        }
        let off = self.layout.slot_off + u64::from(i) * size_of::<TaskSlot>() as u64;
        // SAFETY: validate_header proved slot_off + slot_cap * size <= region_len and
        // slot_off aligned for TaskSlot; i < slot_cap. TaskSlot is atomics plus two byte
        // arrays that are only read through `copy_name`/`copy_labels` (volatile).
        Some(unsafe { &*self.base.as_ptr().add(off as usize).cast::<TaskSlot>() })
    }

    /// The task slot copy at `offset` in the arena (an [`gprof_abi::ArenaRecord`]'s),
    /// read in place; `None` if it is outside the arena or misaligned (a malformed
    /// record).
    pub fn arena_slot(&self, offset: u64) -> Option<&TaskSlot> {
        let size = size_of::<TaskSlot>() as u64;
        let end = offset.checked_add(size)?;
        let at = self.layout.arena_off.checked_add(offset)?;
        if end > self.layout.arena_len || at % std::mem::align_of::<TaskSlot>() as u64 != 0 {
            return None;
        }
        // SAFETY: [arena_off + offset, + size) lies inside the mapping (validated layout
        // and the check above) and is aligned for TaskSlot. As in `slot`, TaskSlot is
        // atomics plus byte arrays read only through `copy_name`/`copy_labels`.
        Some(unsafe { &*self.base.as_ptr().add(at as usize).cast::<TaskSlot>() })
    }

    /// Length of the arena.
    pub fn arena_len(&self) -> u64 {
        self.layout.arena_len
    }

    /// `[offset, offset + len)` lies inside the arena.
    fn check_arena_read(&self, offset: u64, len: usize) -> Result<()> {
        check_part_read("arena", self.layout.arena_len, offset, len)
    }

    /// Copy `buf.len()` bytes at `offset` of the region's part (arena, ring) that starts
    /// at `part_off` and is `part_len` long, after checking they lie inside it.
    fn copy_part(
        &self,
        what: &str,
        part_off: u64,
        part_len: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        check_part_read(what, part_len, offset, buf.len())?;
        let start = (part_off + offset) as usize;
        // SAFETY: [part_off + offset, + len) lies inside the part (checked above), which
        // lies inside the mapping (validated layout); `buf` is a distinct local buffer;
        // u8 has no invalid values.
        unsafe { volatile_copy(self.base.as_ptr().add(start), buf) };
        Ok(())
    }

    /// Like [`Region::read_arena`], through the file (`pread`) instead of the mapping:
    /// for reading the whole arena once, where touching it through the mapping would
    /// fault its pages in (and unmap them at exit) one fault-around block at a time.
    /// Returns the bytes read, fewer only at the end of the file.
    pub fn pread_arena(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        use std::os::unix::fs::FileExt;
        self.check_arena_read(offset, buf.len())?;
        let at = self.layout.arena_off + offset;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], at + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(done)
    }

    /// Length of the profile helper's ring.
    pub fn ring_len(&self) -> u64 {
        self.layout.ring_len
    }

    /// Copy `buf.len()` bytes of the helper's ring at `offset` (relative to the ring).
    /// The helper may write the ring again as soon as we move `ring_tail`, and a hostile
    /// one at any time, so its records are copied out with volatile reads (as
    /// [`Region::read_arena`]) and only the copy is interpreted. Through the mapping, not
    /// `pread` as the arena: the ring's 2 MiB stay mapped and hot, while the kernel's
    /// file copy cost 0.17-0.48 s of system time per 1M-task snapshot against
    /// 0.03-0.11 s this way (0.77-0.87 s against 0.45-0.52 s end to end, side by side).
    pub fn read_ring(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (off, len) = (self.layout.ring_off, self.layout.ring_len);
        self.copy_part("ring", off, len, offset, buf)
    }

    /// Copy `buf.len()` arena bytes starting at `offset` (relative to the arena).
    ///
    /// Read only what the runtime has published (below `arena_used`, loaded with
    /// Acquire): those bytes are not written again during the session. Bytes outside
    /// that range may be changing; the copy is then garbage, never unsafe for the tool.
    pub fn read_arena(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let (off, len) = (self.layout.arena_off, self.layout.arena_len);
        self.copy_part("arena", off, len, offset, buf)
    }
}

/// `[offset, offset + len)` lies inside a part of the region (`what`) of `part_len` bytes.
fn check_part_read(what: &str, part_len: u64, offset: u64, len: usize) -> Result<()> {
    if offset.checked_add(len as u64).is_none_or(|e| e > part_len) {
        return Err(Error::bad(format!(
            "{what} read [{offset:#x}, +{len:#x}) is outside the {part_len:#x}-byte {what}"
        )));
    }
    Ok(())
}

/// Copy bytes from shared memory that another process may write, without creating a
/// reference to it.
///
/// # Safety
///
/// `src..src + dst.len()` must be readable memory that stays mapped during the call.
unsafe fn volatile_copy(src: *const u8, dst: &mut [u8]) {
    // Word-sized volatile reads where aligned, bytes at the ends.
    let mut i = 0;
    let n = dst.len();
    while i < n && (src as usize + i) % 8 != 0 {
        // SAFETY: i < n, inside the range the caller vouches for.
        dst[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
    // Eight words a step: one bounds check and one store of 64 bytes per step (a word at
    // a time, a bounds check each, ran at about the kernel's `pread` speed).
    while i + 64 <= n {
        let p = src.wrapping_add(i).cast::<u64>();
        let mut block = [0u64; 8];
        for (k, w) in block.iter_mut().enumerate() {
            // SAFETY: src + i is 8-aligned (loop above) and i + 64 <= n.
            *w = unsafe { std::ptr::read_volatile(p.add(k)) };
        }
        let out: &mut [u8; 64] = (&mut dst[i..i + 64]).try_into().expect("64 bytes");
        for (k, w) in block.iter().enumerate() {
            out[k * 8..k * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        i += 64;
    }
    while i + 8 <= n {
        // SAFETY: src + i is 8-aligned (loop above) and i + 8 <= n.
        let w = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
        dst[i..i + 8].copy_from_slice(&w.to_ne_bytes());
        i += 8;
    }
    while i < n {
        // SAFETY: i < n.
        dst[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
        i += 1;
    }
}

/// Copy a slot's name bytes (racy: bracket with two reads of `meta_seq`).
pub fn copy_name(slot: &TaskSlot) -> [u8; NAME_CAP] {
    let mut out = [0u8; NAME_CAP];
    // SAFETY: the array is part of `slot`, which is live for this call.
    unsafe { volatile_copy(std::ptr::addr_of!(slot.name).cast::<u8>(), &mut out) };
    out
}

/// Copy a slot's label bytes (racy: bracket with two reads of `meta_seq`).
pub fn copy_labels(slot: &TaskSlot) -> [u8; LABELS_CAP] {
    let mut out = [0u8; LABELS_CAP];
    // SAFETY: the array is part of `slot`, which is live for this call.
    unsafe { volatile_copy(std::ptr::addr_of!(slot.labels).cast::<u8>(), &mut out) };
    out
}

/// The region's fd is gone: is the process exiting (the kernel closes its files before
/// it turns into a zombie, so `/proc/PID` can still look alive), rather than lying about
/// its fd? Looks for at most 100 ms.
fn exiting(pid: u32) -> bool {
    let t = std::time::Instant::now();
    loop {
        if crate::record::process_gone(pid) {
            return true;
        }
        if t.elapsed() > std::time::Duration::from_millis(100) {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Clear our diagnostics stamp if we held the lease and it is still ours; the
        // lease itself goes with the file description when `file` is closed. (A Region
        // that lost the flock race must not clear the holder's stamp.)
        if self.leased {
            let me: u64 = std::process::id().into();
            let _ = self.control().owner_pid.compare_exchange(
                me,
                0,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        // SAFETY: `base`/`region_len` are exactly the mapping made in `open`; no
        // reference into it outlives `self` (all accessors borrow `self`).
        let _ =
            unsafe { nix::sys::mman::munmap(self.base.cast(), self.layout.region_len as usize) };
    }
}

/// Find the target, map its region and list its executable mappings.
pub fn attach(pid: u32) -> Result<(Region, Vec<ModuleInfo>)> {
    let loc = locate(pid)?;
    let region = loc.open_region()?;
    Ok((region, loc.modules()))
}

/// GNU build id of an ELF image.
fn build_id_of<'a, R: object::ReadRef<'a>>(data: R) -> Option<String> {
    let elf = object::File::parse(data).ok()?;
    let id = elf.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Executable mappings (file-backed and `[vdso]`) as [`ModuleInfo`]s, sorted by start,
/// each file's build id read once.
pub fn modules(
    pid: u32,
    proc_dir: &str,
    maps: &[MapEntry],
    mem: &dyn RemoteMemory,
) -> Vec<ModuleInfo> {
    type FileKey = ((u32, u32), u64);
    let mut ids: Vec<(FileKey, Option<String>)> = Vec::new();
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| m.perms.exec) {
        let build_id = if m.is_file_backed() {
            let key = (m.dev, m.inode);
            match ids.iter().find(|(k, _)| *k == key) {
                Some((_, id)) => id.clone(),
                None => {
                    // Read from the object's first mapping (map_files needs any range of it).
                    let id = open_mapped_file(pid, proc_dir, m)
                        .ok()
                        .and_then(|f| build_id_of(&object::ReadCache::new(f)));
                    ids.push((key, id.clone()));
                    id
                }
            }
        } else if m.path == OsStr::new("[vdso]") && m.len() <= 1 << 20 {
            // The vDSO is an ELF image in memory only.
            let mut image = vec![0u8; m.len() as usize];
            match mem.read(m.start, &mut image) {
                Ok(()) => build_id_of(image.as_slice()),
                Err(_) => None,
            }
        } else {
            continue;
        };
        out.push(ModuleInfo {
            start: m.start,
            end: m.end,
            file_offset: m.offset,
            path: m.path_lossy(),
            build_id,
        });
    }
    out.sort_by_key(|m| m.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good_header(region_len: u64) -> HeaderCopy {
        HeaderCopy {
            magic: MAGIC,
            abi_version: ABI_VERSION,
            control_size: size_of::<ControlBlock>() as u32,
            region_len,
            worker_off: CONTROL_SIZE,
            worker_cap: WORKER_CAP,
            worker_record_size: size_of::<WorkerRecord>() as u32,
            slot_off: CONTROL_SIZE + 64 * WORKER_CAP as u64,
            slot_cap: 100,
            slot_size: size_of::<TaskSlot>() as u32,
            arena_off: 1 << 20,
            arena_len: 1 << 19,
            ring_off: 3 << 19,
            ring_len: 1 << 19,
            runtime_pid: 1,
        }
    }

    #[test]
    fn volatile_copy_copies_every_alignment_and_length() {
        let src: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for from in 0..17 {
            for len in (0..=300).step_by(7).chain([63, 64, 65, 127, 128, 129]) {
                let mut out = vec![0u8; len];
                // SAFETY: [from, from + len) lies inside `src`, which nobody writes.
                unsafe { volatile_copy(src.as_ptr().add(from), &mut out) };
                assert_eq!(out, src[from..from + len], "from {from} len {len}");
            }
        }
    }

    #[test]
    fn header_validation() {
        let len = 2 << 20;
        assert!(validate_header(&good_header(len), len).is_ok());
        type Mutate = Box<dyn Fn(&mut HeaderCopy)>;
        let cases: Vec<(Mutate, &str)> = vec![
            (Box::new(|h| h.magic = 1), "magic"),
            (Box::new(|h| h.slot_cap = u32::MAX), "slot_cap"),
            (Box::new(|h| h.slot_cap = MAX_SLOTS), "slot table"),
            (Box::new(|h| h.slot_off = u64::MAX - 10), "slot table"),
            (Box::new(|h| h.slot_off += 1), "misaligned"),
            (Box::new(|h| h.worker_off = 0), "worker table"),
            (Box::new(|h| h.arena_len = u64::MAX), "arena"),
            (Box::new(|h| h.arena_off = CONTROL_SIZE), "overlap"),
            (Box::new(|h| h.ring_off = 1 << 20), "overlap"),
            (Box::new(|h| h.ring_len = 8), "multiple of 16"),
            (Box::new(|h| h.ring_len = 0), "multiple of 16"),
            (Box::new(|h| h.ring_off = u64::MAX - 15), "ring"),
            (Box::new(|h| h.region_len = 5), "descriptor says"),
            (Box::new(|h| h.worker_cap = WORKER_CAP + 1), "worker_cap"),
            (Box::new(|h| h.slot_size = 1), "task slot"),
        ];
        for (mutate, needle) in cases {
            let mut h = good_header(len);
            mutate(&mut h);
            let e = validate_header(&h, len).unwrap_err();
            assert!(matches!(e, Error::BadTargetData(_)), "{e}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        let mut h = good_header(len);
        h.abi_version = 99;
        assert!(matches!(
            validate_header(&h, len),
            Err(Error::AbiMismatch {
                found: 99,
                expected: ABI_VERSION
            })
        ));
    }

    #[test]
    fn load_bias_pie_nonpie_and_shared() {
        let page = 4096;
        // PIE: first PT_LOAD at vaddr 0, offset 0, mapped at 0x5555_0000_0000.
        let segs = [
            (0, 0, 0x1000),
            (0x1000 + 0x234, 0x1234, 0x5000),
            (0x8000 + 0x10, 0x6010, 0x200),
        ];
        let maps = [(0x5555_0000_0000, 0), (0x5555_0000_1000, 0x1000)];
        assert_eq!(load_bias(&segs, &maps, page), Some(0x5555_0000_0000));
        // Only the second segment's mapping is known (e.g. the first was unmapped).
        assert_eq!(
            load_bias(&segs, &[(0x5555_0000_1000, 0x1000)], page),
            Some(0x5555_0000_0000)
        );
        // Non-PIE: vaddr == address, bias 0.
        let segs = [(0x400000, 0, 0x1000), (0x401000, 0x1000, 0x3000)];
        assert_eq!(load_bias(&segs, &[(0x400000, 0)], page), Some(0));
        assert_eq!(load_bias(&segs, &[(0x401000, 0x1000)], page), Some(0));
        // Shared library whose first segment starts at a non-zero file offset page.
        let segs = [(0x2000, 0x2000, 0x100)];
        assert_eq!(
            load_bias(&segs, &[(0x7f00_0000_2000, 0x2000)], page),
            Some(0x7f00_0000_0000)
        );
        // Nothing matches.
        assert_eq!(load_bias(&segs, &[(0x7f00_0000_0000, 0x9000)], page), None);
        // Hostile: overflowing segment.
        assert_eq!(
            load_bias(&[(0, u64::MAX, 2)], &[(0x1000, u64::MAX - 4095)], page),
            None
        );
    }

    #[test]
    fn descriptor_validation_order() {
        let good = DescriptorCopy::from(&Descriptor::new());
        assert!(validate_descriptor(&good).is_ok());
        let mut d = good;
        d.magic = 0;
        d.abi_version = ABI_VERSION + 1;
        assert!(
            matches!(validate_descriptor(&d), Err(Error::BadTargetData(m)) if m.contains("magic"))
        );
        let mut d = good;
        d.abi_version = ABI_VERSION + 1;
        d.slot_size = 9999;
        assert!(matches!(
            validate_descriptor(&d),
            Err(Error::AbiMismatch { found, .. }) if found == ABI_VERSION + 1
        ));
        let mut d = good;
        d.slot_size = 9999;
        assert!(
            matches!(validate_descriptor(&d), Err(Error::BadTargetData(m)) if m.contains("9999"))
        );
    }

    #[test]
    fn region_must_be_a_shared_memfd_mapping() {
        let text = b"\
7f0000000000-7f0000100000 rw-s 00000000 00:01 77   /memfd:gprof-rt (deleted)
7f0000100000-7f0000200000 rw-s 00100000 00:01 77   /memfd:gprof-rt (deleted)
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
";
        let maps = maps::parse_maps(text);
        assert_eq!(
            check_region_mapped(&maps, 0x7f0000000000, 0x200000).unwrap(),
            ((0, 1), 77)
        );
        assert!(check_region_mapped(&maps, 0x7f0000000000, 0x300000).is_err());
        assert!(check_region_mapped(&maps, 0x7f0000200000, 0x1000).is_err());
        assert!(check_region_mapped(&maps, 0x1000, 0x1000).is_err());
        assert!(check_region_mapped(&maps, u64::MAX - 10, 0x1000).is_err());
    }
}
