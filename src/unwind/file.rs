//! Reaching the target's ELF files, and the ELF facts both the unwinder and the
//! symbolizer need (load segments, build id, the load bias of one mapping).
//!
//! Headers and symbol tables are read with plain `pread(2)`, only the parts a parser
//! asks for; the sections the unwinder and the symbolizer keep (CFI, DWARF) are read in
//! place from a mapping of the file ([`map`], [`SectionBytes`]). Reading whole files
//! cost the tool a 6 MB copy and ~1,500 page faults per binary, twice: ~10 ms of a
//! 30 ms attach; copying just the sections still cost ~1,100 faults for a Rust binary's
//! 4.5 MB of DWARF, most of which addr2line never reads, at 3-5 us each on this VM.
//!
//! A mapped file that someone truncates raises SIGBUS when a page past the new end is
//! touched. [`map`] turns that into a clear error and exit status 9 (bad data from the
//! target). The target survives it as it survives a tool killed at any moment: ptrace
//! detaches at exit and the runtime's lease ends the session (RELIABILITY.md). The
//! executable itself cannot be truncated while it runs (ETXTBSY); libraries and
//! separate debug files can.

use std::io;
use std::ops::{Deref, Range};
use std::path::PathBuf;
use std::sync::{Arc, Once};

use object::{Object, ObjectSegment};

use crate::model::ModuleInfo;

/// Gives the bytes of the ELF file behind one executable mapping of the target.
///
/// Implemented by [`ProcFiles`] for a live process, by [`LocalFiles`] for paths valid in
/// this process, and by any `FnMut(&ModuleInfo) -> io::Result<Vec<u8>>` closure.
pub trait FileSource {
    /// Read the whole file that `module` maps.
    fn read(&mut self, module: &ModuleInfo) -> io::Result<Vec<u8>>;

    /// The file that `module` maps, for parsers that read only what they need. The
    /// default reads it whole.
    fn open(&mut self, module: &ModuleInfo) -> io::Result<ElfData> {
        self.read(module).map(ElfData::Bytes)
    }
}

/// An ELF file: in memory, or open and read on demand.
pub enum ElfData {
    /// The whole file.
    Bytes(Vec<u8>),
    /// An open file: `object` reads the ranges it needs through `cache`; `file` (the
    /// same open file) is for reading large sections straight into their final buffer.
    File {
        /// Ranges `object` has read.
        cache: object::ReadCache<std::fs::File>,
        /// The file itself.
        file: std::fs::File,
    },
}

impl ElfData {
    /// The open file, if the data is read on demand.
    pub fn file(&self) -> Option<&std::fs::File> {
        match self {
            ElfData::Bytes(_) => None,
            ElfData::File { file, .. } => Some(file),
        }
    }
}

/// Call `$f` with an `object::File` parsed from `$data` (an [`ElfData`]), whichever way
/// it is held: `object` is generic over how bytes are read.
#[macro_export]
#[doc(hidden)]
macro_rules! with_elf {
    ($data:expr, |$obj:ident| $body:expr) => {
        match $data {
            $crate::unwind::ElfData::Bytes(b) => match object::File::parse(&b[..]) {
                Ok($obj) => Ok($body),
                Err(e) => Err(format!("not a valid ELF file: {e}")),
            },
            $crate::unwind::ElfData::File { cache, .. } => match object::File::parse(cache) {
                Ok($obj) => Ok($body),
                Err(e) => Err(format!("not a valid ELF file: {e}")),
            },
        }
    };
}

impl<F: FnMut(&ModuleInfo) -> io::Result<Vec<u8>>> FileSource for F {
    fn read(&mut self, module: &ModuleInfo) -> io::Result<Vec<u8>> {
        self(module)
    }
}

/// Reads the files of a live process: `/proc/PID/map_files/START-END` first (the exact
/// file that is mapped, even if deleted or replaced since), then `/proc/PID/root/PATH`
/// (right for targets in another mount namespace), then `PATH` itself.
#[derive(Debug, Clone, Copy)]
pub struct ProcFiles {
    /// Target pid.
    pub pid: u32,
}

impl FileSource for ProcFiles {
    fn read(&mut self, module: &ModuleInfo) -> io::Result<Vec<u8>> {
        if module.path == "[vdso]" {
            // The vDSO has no file: its whole ELF image (with the .eh_frame a thread
            // stopped inside clock_gettime needs) is the mapping itself.
            return read_vdso(self.pid, module);
        }
        let candidates = candidates(self.pid, module);
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no candidate path");
        for p in &candidates {
            match std::fs::read(p) {
                Ok(bytes) => return Ok(bytes),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open(&mut self, module: &ModuleInfo) -> io::Result<ElfData> {
        if module.path == "[vdso]" {
            return read_vdso(self.pid, module).map(ElfData::Bytes);
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no candidate path");
        for p in candidates(self.pid, module) {
            match std::fs::File::open(&p).and_then(|f| Ok((f.try_clone()?, f))) {
                Ok((file, f)) => {
                    return Ok(ElfData::File {
                        cache: object::ReadCache::new(f),
                        file,
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Where the file behind `module` may be found, best first (see [`ProcFiles`]).
fn candidates(pid: u32, module: &ModuleInfo) -> [PathBuf; 3] {
    [
        PathBuf::from(format!(
            "/proc/{}/map_files/{:x}-{:x}",
            pid, module.start, module.end
        )),
        PathBuf::from(format!(
            "/proc/{}/root/{}",
            pid,
            module.path.trim_start_matches('/')
        )),
        PathBuf::from(&module.path),
    ]
}

/// Largest vDSO image read from a target (it is two pages on x86_64 Linux).
const MAX_VDSO: u64 = 1 << 20;

/// Read the target's `[vdso]` mapping, a complete ELF image, out of its memory.
fn read_vdso(pid: u32, module: &ModuleInfo) -> io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = module.end.saturating_sub(module.start);
    if len == 0 || len > MAX_VDSO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "implausible [vdso] size",
        ));
    }
    // Through a live thread: a zombie leader has no memory to read (locate::proc_dir).
    let (dir, _) = crate::locate::proc_dir(pid);
    let mem = std::fs::File::open(format!("{dir}/mem"))?;
    let mut buf = vec![0u8; len as usize];
    mem.read_exact_at(&mut buf, module.start)?;
    Ok(buf)
}

/// Reads `ModuleInfo::path` as a path of this process (tests, and targets sharing our root).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalFiles;

impl FileSource for LocalFiles {
    fn read(&mut self, module: &ModuleInfo) -> io::Result<Vec<u8>> {
        std::fs::read(&module.path)
    }
}

/// Cache key of a parsed file: its path as the target sees it plus its build id, so a
/// rebuilt binary at the same path is parsed again. Without a build id the path alone
/// is the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// Path as the target sees it.
    pub path: String,
    /// GNU build id, hex.
    pub build_id: Option<String>,
}

impl FileKey {
    /// The key of the file behind `module`.
    pub fn of(module: &ModuleInfo) -> Self {
        FileKey {
            path: module.path.clone(),
            build_id: module.build_id.clone(),
        }
    }
}

/// One `PT_LOAD` segment: where it sits in the file and at which svma it is meant to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_offset`.
    pub file_offset: u64,
    /// `p_filesz`.
    pub file_size: u64,
    /// `p_vaddr` (svma).
    pub svma: u64,
}

/// The load segments of a parsed ELF file.
pub fn load_segments<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> Vec<LoadSegment> {
    obj.segments()
        .map(|s| {
            let (file_offset, file_size) = s.file_range();
            LoadSegment {
                file_offset,
                file_size,
                svma: s.address(),
            }
        })
        .collect()
}

/// The load bias of `module` (avma = svma + bias), from the segment that contains the
/// mapping's file offset. Falls back to `start - file_offset` (right for the usual
/// `p_vaddr == p_offset` layouts) when no segment matches.
pub fn load_bias(segments: &[LoadSegment], module: &ModuleInfo) -> u64 {
    const PAGE_MASK: u64 = !0xfff;
    // Two segments can share a file page (a read-only segment ending at 0x9c174 and
    // the text segment starting at 0x9c180): the one whose first page is the mapping's
    // offset is the one this mapping maps. Failing that (a mapping split by mprotect),
    // the last segment containing the offset.
    let exact = segments
        .iter()
        .find(|seg| seg.file_offset & PAGE_MASK == module.file_offset);
    let containing = || {
        segments.iter().rev().find(|seg| {
            let begin = seg.file_offset & PAGE_MASK;
            let end = seg.file_offset.saturating_add(seg.file_size);
            begin <= module.file_offset && module.file_offset < end
        })
    };
    match exact.or_else(containing) {
        Some(seg) => {
            // svma of the first mapped byte: p_vaddr - (p_offset - file_offset).
            let svma_at_start = seg
                .svma
                .wrapping_sub(seg.file_offset.wrapping_sub(module.file_offset));
            module.start.wrapping_sub(svma_at_start)
        }
        None => module.start.wrapping_sub(module.file_offset),
    }
}

/// One ELF symbol, as the symbolizer and the descriptor search need it.
#[derive(Debug, Clone, Copy)]
pub struct ElfSym<'d> {
    /// Name bytes (not demangled).
    pub name: &'d [u8],
    /// `st_value`: an svma for the symbols of executables and libraries.
    pub svma: u64,
    /// `st_size`.
    pub size: u64,
    /// `STT_FUNC` and defined here (`Symbol::is_definition` of `object`).
    pub is_function: bool,
    /// Not `SHN_UNDEF`.
    pub is_defined: bool,
}

/// Which symbol table [`for_each_symbol`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymTable {
    /// `.symtab`: every symbol, unless the file is stripped.
    Symtab,
    /// `.dynsym`: the exported and imported ones, kept by `strip`.
    Dynsym,
}

/// Calls `each` with the symbols of one table of `obj` until it returns `false`.
///
/// Each table and its string table are read in one piece. `object`'s own symbol
/// iterator looks every name up through the `ReadCache` of an open file, which is an
/// `lseek` and a `read` per name: 13% of a 1k-task snapshot went to that, twice (the
/// descriptor search and the symbolizer), and it ran on a CPU the target was using.
pub fn for_each_symbol<'d, R: object::ReadRef<'d>>(
    obj: &object::File<'d, R>,
    table: SymTable,
    each: impl FnMut(ElfSym<'d>) -> bool,
) {
    match obj {
        object::File::Elf32(f) => elf_symbols(f, table, each),
        object::File::Elf64(f) => elf_symbols(f, table, each),
        _ => {}
    }
}

fn elf_symbols<'d, Elf, R>(
    f: &object::read::elf::ElfFile<'d, Elf, R>,
    table: SymTable,
    mut each: impl FnMut(ElfSym<'d>) -> bool,
) where
    Elf: object::read::elf::FileHeader<Endian = object::Endianness>,
    R: object::ReadRef<'d>,
{
    use object::read::elf::Sym;
    let endian = f.endian();
    let table = match table {
        SymTable::Symtab => f.elf_symbol_table(),
        SymTable::Dynsym => f.elf_dynamic_symbol_table(),
    };
    if table.is_empty() {
        return;
    }
    let Ok(strings) = f
        .elf_section_table()
        .section(table.string_section())
        .and_then(|s| object::read::elf::SectionHeader::data(s, endian, f.data()))
    else {
        return;
    };
    let strings = object::StringTable::new(strings, 0, strings.len() as u64);
    for sym in table.symbols() {
        let Ok(name) = sym.name(endian, strings) else {
            continue;
        };
        let keep_going = each(ElfSym {
            name,
            svma: sym.st_value(endian).into(),
            size: sym.st_size(endian).into(),
            is_function: sym.st_type() == object::elf::STT_FUNC && sym.is_definition(endian),
            is_defined: !sym.is_undefined(endian),
        });
        if !keep_going {
            return;
        }
    }
}

/// The bytes of one section a parser keeps: a range of a mapped file, or a copy
/// (decompressed sections, the vDSO's image, files given as bytes).
#[derive(Debug, Clone)]
pub enum SectionBytes {
    /// `range` of the mapped file.
    Mapped {
        /// The whole file.
        map: Arc<memmap2::Mmap>,
        /// Where the section lies in it (checked against the mapping's length).
        range: Range<usize>,
    },
    /// Owned bytes.
    Owned(Arc<[u8]>),
}

impl Default for SectionBytes {
    /// No bytes.
    fn default() -> Self {
        SectionBytes::Owned(Arc::from(&[][..]))
    }
}

impl SectionBytes {
    /// The section `s` of a file whose mapping is `map`: read in place when it is stored
    /// uncompressed inside the mapping, else decompressed (or copied) by `object`.
    pub fn of<'d>(
        s: &impl object::ObjectSection<'d>,
        map: Option<&Arc<memmap2::Mmap>>,
    ) -> Option<SectionBytes> {
        if let (Some(m), Ok(r)) = (map, s.compressed_file_range()) {
            let end = r.offset.checked_add(r.uncompressed_size);
            if r.format == object::CompressionFormat::None
                && end.is_some_and(|end| end <= m.len() as u64)
            {
                return Some(SectionBytes::Mapped {
                    map: m.clone(),
                    range: r.offset as usize..(r.offset + r.uncompressed_size) as usize,
                });
            }
        }
        let d = s.uncompressed_data().ok()?;
        Some(SectionBytes::Owned(Arc::from(&*d)))
    }
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            SectionBytes::Mapped { map, range } => &map[range.clone()],
            SectionBytes::Owned(b) => b,
        }
    }
}

// SAFETY: both variants deref to memory owned behind an `Arc` (a mapping, or a heap
// slice) that neither moves nor is freed while any clone of the `Arc` lives, and the
// range never changes: the address `deref` returns is the same for a value, its moves
// and its clones.
unsafe impl stable_deref_trait::StableDeref for SectionBytes {}
// SAFETY: as above: a clone shares the same `Arc` and range, hence the same address.
unsafe impl stable_deref_trait::CloneStableDeref for SectionBytes {}

/// Map `file` read-only, SIGBUS having been turned into a clear error first (see the
/// module's documentation).
pub fn map(file: &std::fs::File) -> Option<Arc<memmap2::Mmap>> {
    static SIGBUS: Once = Once::new();
    SIGBUS.call_once(install_sigbus_handler);
    // SAFETY: the mapping is read-only and private. Another process may still change
    // the file under it: a truncation raises SIGBUS, handled above; changed bytes are
    // parsed as the untrusted input they already are (object, gimli and framehop check
    // every offset and length against the slice, so no read leaves the mapping).
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
    const MSG: &[u8] = b"gprof-rs: a binary or library of the target was truncated while gprof-rs read it (SIGBUS); the target was not changed: take the snapshot again\n";
    // SAFETY: write and _exit are async-signal-safe; MSG is static.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(9);
    }
}

/// Hex GNU build id of a parsed ELF file, if it has one.
pub fn build_id_hex<'d, R: object::ReadRef<'d>>(obj: &object::File<'d, R>) -> Option<String> {
    let id = obj.build_id().ok()??;
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Hex GNU build id of the ELF file in `bytes`, if it parses and has one.
pub fn read_build_id(bytes: &[u8]) -> Option<String> {
    build_id_hex(&object::File::parse(bytes).ok()?)
}

/// Executable, file-backed mappings listed in a `/proc/PID/maps` text, in address order.
///
/// `build_id` is left `None`; the unwinder and symbolizer read it from the file.
pub fn parse_proc_maps(text: &str) -> Vec<ModuleInfo> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset), Some(_dev), Some(_inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        // The path may contain spaces; it is everything after the inode column.
        let path: Vec<&str> = fields.collect();
        let path = path.join(" ");
        if !perms.contains('x') || !path.starts_with('/') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(file_offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        if end <= start {
            continue;
        }
        out.push(ModuleInfo {
            start,
            end,
            file_offset,
            path,
            build_id: None,
        });
    }
    out.sort_by_key(|m| m.start);
    out
}

#[cfg(test)]
mod tests {
    use object::Object;
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
                "unwind::file::tests::a_mapped_file_truncated_under_us_is_a_clear_error",
                "--nocapture",
            ])
            .env(CHILD, &path)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(9), "stderr: {stderr}");
        assert!(
            stderr.contains("was truncated while gprof-rs read it (SIGBUS)"),
            "stderr: {stderr}"
        );
    }

    /// A task stopped inside `clock_gettime` is in the vDSO, which has no file: its
    /// image, with the CFI the unwinder needs, is read out of the target's memory.
    #[test]
    fn the_vdso_image_is_read_from_memory() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.ends_with("[vdso]"))
            .expect("a [vdso] mapping");
        let (start, end) = line
            .split_whitespace()
            .next()
            .unwrap()
            .split_once('-')
            .unwrap();
        let vdso = crate::model::ModuleInfo {
            start: u64::from_str_radix(start, 16).unwrap(),
            end: u64::from_str_radix(end, 16).unwrap(),
            file_offset: 0,
            path: "[vdso]".into(),
            build_id: None,
        };
        let bytes = super::ProcFiles {
            pid: std::process::id(),
        }
        .read(&vdso)
        .unwrap();
        assert_eq!(&bytes[..4], b"\x7fELF");
        let obj = object::File::parse(&*bytes).unwrap();
        assert!(obj.section_by_name(".eh_frame").is_some());
    }

    use super::*;

    #[test]
    fn parse_maps_keeps_exec_file_mappings() {
        let text = "\
55d0c0a00000-55d0c0a10000 r--p 00000000 fd:01 123 /usr/bin/prog
55d0c0a10000-55d0c0a50000 r-xp 00010000 fd:01 123 /usr/bin/prog
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
7f0000002000-7f0000003000 r-xp 00001000 fd:01 7 /tmp/with space.so
garbage line
ffffffff-0 r-xp 0 0 0 /bad
";
        let m = parse_proc_maps(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].start, 0x55d0c0a10000);
        assert_eq!(m[0].file_offset, 0x10000);
        assert_eq!(m[0].path, "/usr/bin/prog");
        assert_eq!(m[1].path, "/tmp/with space.so");
    }

    #[test]
    fn bias_from_segment() {
        let segs = [
            LoadSegment {
                file_offset: 0,
                file_size: 0x1000,
                svma: 0,
            },
            LoadSegment {
                file_offset: 0x1234,
                file_size: 0x5000,
                svma: 0x2234,
            },
        ];
        let m = ModuleInfo {
            start: 0x7000_2000,
            end: 0x7000_7000,
            file_offset: 0x1000,
            path: "/x".into(),
            build_id: None,
        };
        // svma 0x2000 (file offset 0x1000) is mapped at 0x7000_2000.
        assert_eq!(load_bias(&segs, &m), 0x7000_0000);
        // A read-only segment sharing the text segment's first page must not win
        // (layout of a real rustc test binary).
        let segs = [
            LoadSegment {
                file_offset: 0,
                file_size: 0x9c174,
                svma: 0,
            },
            LoadSegment {
                file_offset: 0x9c180,
                file_size: 0x215c30,
                svma: 0x9d180,
            },
        ];
        let m = ModuleInfo {
            start: 0x5555_5560_0000 + 0x9d000,
            end: 0x5555_5560_0000 + 0x2b3000,
            file_offset: 0x9c000,
            path: "/x".into(),
            build_id: None,
        };
        assert_eq!(load_bias(&segs, &m), 0x5555_5560_0000);
    }
}
