//! Address → function, file:line, with inlined frames, for the target's modules.
//!
//! Each ELF file is read once (keyed by path and build id, see
//! [`FileKey`]); its DWARF goes to `addr2line` and its symbol
//! table is kept sorted for the fallback. Results are cached per lookup address, so a
//! return address shared by 100k tasks is symbolized once.
//!
//! Fallbacks, in order: DWARF (`addr2line`, inlined frames innermost first) → the ELF
//! symbol table (`.symtab`, then `.dynsym`) → `module+0xsvma` → `0xaddr` for an
//! address outside every module.

use std::collections::HashMap;
use std::rc::Rc;

use crate::model::ModuleInfo;
use crate::unwind::file::{self, ElfData, FileKey, FileSource, LoadSegment, SymTable};
use crate::unwind::lookup_address;
use sections::{load_dwarf, Reader};

mod sections;

/// One (possibly inlined) function frame at an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymFrame {
    /// Demangled function name, without the Rust `::h<hash>` suffix.
    pub function: String,
    /// Source file, if debug info has one.
    pub file: Option<String>,
    /// Source line, 0 if unknown.
    pub line: u32,
    /// Address (avma) of the start of the machine-code function that contains the
    /// address (for inlined frames, the function they were inlined into), if known.
    /// `lookup address - entry` is the `+0x..` offset of Go's text formats.
    pub entry: Option<u64>,
}

struct Sym {
    svma: u64,
    size: u64,
    name: String,
}

/// What is kept of one ELF file.
struct SymFile {
    ctx: Option<addr2line::Context<Reader>>,
    /// Sorted by svma.
    symbols: Vec<Sym>,
    segments: Vec<LoadSegment>,
}

impl SymFile {
    /// Parse `bytes`; when the file has no DWARF but a build id, try the separate
    /// debug file `/usr/lib/debug/.build-id/xx/yyyy.debug` through `source`.
    fn parse(data: &ElfData, source: &mut dyn FileSource) -> Result<SymFile, String> {
        crate::with_elf!(data, |obj| SymFile::from_object(&obj, data.file(), source))
    }

    fn from_object<'d, R: object::ReadRef<'d>>(
        obj: &object::File<'d, R>,
        file: Option<&std::fs::File>,
        source: &mut dyn FileSource,
    ) -> SymFile {
        let mut ctx = load_dwarf(obj, file);
        if ctx.is_none() {
            if let Some(id) = file::build_id_hex(obj).filter(|id| id.len() > 2) {
                let debug_file = ModuleInfo {
                    start: 0,
                    end: 0,
                    file_offset: 0,
                    path: format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]),
                    build_id: None,
                };
                if let Ok(debug_data) = source.open(&debug_file) {
                    ctx = crate::with_elf!(&debug_data, |debug_obj| {
                        load_dwarf(&debug_obj, debug_data.file())
                    })
                    .ok()
                    .flatten();
                }
            }
        }
        let mut symbols = Vec::new();
        for table in [SymTable::Symtab, SymTable::Dynsym] {
            if !symbols.is_empty() {
                break;
            }
            file::for_each_symbol(obj, table, |s| {
                if s.is_function && s.svma != 0 {
                    symbols.push(Sym {
                        svma: s.svma,
                        size: s.size,
                        name: String::from_utf8_lossy(s.name).into_owned(),
                    });
                }
                true
            });
        }
        symbols.sort_by(|a, b| a.svma.cmp(&b.svma).then(b.size.cmp(&a.size)));
        symbols.dedup_by_key(|s| s.svma);
        SymFile {
            ctx,
            symbols,
            segments: file::load_segments(obj),
        }
    }

    /// The symbol containing `svma` (a zero-size symbol covers up to the next one).
    fn symbol(&self, svma: u64) -> Option<&Sym> {
        let i = self.symbols.partition_point(|s| s.svma <= svma);
        let s = self.symbols.get(i.checked_sub(1)?)?;
        if s.size == 0 || svma < s.svma.saturating_add(s.size) {
            Some(s)
        } else {
            None
        }
    }
}

struct Mapped {
    info: ModuleInfo,
    file: Option<Rc<SymFile>>,
    bias: u64,
    /// Whether `file` was looked for yet: files are parsed on first use, so a snapshot
    /// that never lands in, say, libc never decompresses libc's debug info.
    loaded: bool,
}

/// Symbolizes addresses of one target process.
///
/// Not `Send`: `addr2line`'s lazily parsed units live behind `Rc`. Create it on the
/// thread that writes the output.
pub struct Symbolizer {
    source: Box<dyn FileSource>,
    files: HashMap<FileKey, Option<Rc<SymFile>>>,
    /// Sorted by start.
    modules: Vec<Mapped>,
    cache: HashMap<u64, Vec<SymFrame>>,
    errors: Vec<(String, String)>,
}

impl Symbolizer {
    /// A symbolizer with no modules yet, reading ELF files through `source`.
    pub fn new(source: impl FileSource + 'static) -> Self {
        Symbolizer {
            source: Box::new(source),
            files: HashMap::new(),
            modules: Vec::new(),
            cache: HashMap::new(),
            errors: Vec::new(),
        }
    }

    /// Make `modules` the target's executable mappings. Files already read are reused;
    /// returns `(path, message)` for modules whose file couldn't be read or parsed (their
    /// addresses are shown as `module+0xoffset`).
    pub fn set_modules(&mut self, modules: &[ModuleInfo]) -> Vec<(String, String)> {
        let errors = Vec::new();
        let same = modules.len() == self.modules.len()
            && modules.iter().zip(&self.modules).all(|(a, b)| *a == b.info);
        if same {
            return errors;
        }
        self.cache.clear();
        self.modules.clear();
        for m in modules {
            if m.end <= m.start {
                continue;
            }
            self.modules.push(Mapped {
                info: m.clone(),
                file: None,
                bias: m.start.wrapping_sub(m.file_offset),
                loaded: false,
            });
        }
        self.modules.sort_by_key(|m| m.info.start);
        errors
    }

    /// Parse the file behind module `i` if that has not been tried yet.
    fn load(&mut self, i: usize) {
        if self.modules[i].loaded {
            return;
        }
        let m = self.modules[i].info.clone();
        let key = FileKey::of(&m);
        let file = match self.files.get(&key) {
            Some(f) => f.clone(),
            None => {
                let parsed = self
                    .source
                    .open(&m)
                    .map_err(|e| format!("cannot read: {e}"))
                    .and_then(|d| SymFile::parse(&d, &mut *self.source));
                let f = match parsed {
                    Ok(f) => Some(Rc::new(f)),
                    Err(msg) => {
                        self.errors.push((m.path.clone(), msg));
                        None
                    }
                };
                self.files.insert(key, f.clone());
                f
            }
        };
        if let Some(f) = &file {
            self.modules[i].bias = file::load_bias(&f.segments, &m);
        }
        self.modules[i].file = file;
        self.modules[i].loaded = true;
    }

    /// Modules whose file could not be read or parsed so far, as `(path, message)`.
    pub fn errors(&self) -> &[(String, String)] {
        &self.errors
    }

    /// Frames at `addr`, innermost first: the innermost inlined function first, the
    /// function it was compiled into last. A return address is looked up at
    /// `addr - 1`. Never empty.
    pub fn lookup(&mut self, addr: u64, is_return_address: bool) -> &[SymFrame] {
        let probe = lookup_address(addr, is_return_address);
        if !self.cache.contains_key(&probe) {
            let i = self.modules.partition_point(|m| m.info.start <= probe);
            if let Some(i) = i.checked_sub(1) {
                if probe < self.modules[i].info.end {
                    self.load(i);
                }
            }
            let frames = self.resolve(probe);
            self.cache.insert(probe, frames);
        }
        &self.cache[&probe]
    }

    /// The cached frames at `addr`, if [`lookup`](Self::lookup) already resolved it.
    pub fn cached(&self, addr: u64, is_return_address: bool) -> Option<&[SymFrame]> {
        self.cache
            .get(&lookup_address(addr, is_return_address))
            .map(Vec::as_slice)
    }

    /// Pre-seed the result for an address (tests, or frames resolved elsewhere). An
    /// empty `frames` is stored as the `0xaddr` placeholder (results are never empty).
    pub fn insert(&mut self, addr: u64, is_return_address: bool, mut frames: Vec<SymFrame>) {
        if frames.is_empty() {
            frames.push(SymFrame {
                function: format!("0x{:x}", lookup_address(addr, is_return_address)),
                file: None,
                line: 0,
                entry: None,
            });
        }
        self.cache
            .insert(lookup_address(addr, is_return_address), frames);
    }

    /// The module containing `addr`, if any.
    pub fn module_for(&self, addr: u64) -> Option<&ModuleInfo> {
        self.mapped_for(addr).map(|m| &m.info)
    }

    fn mapped_for(&self, addr: u64) -> Option<&Mapped> {
        let i = self.modules.partition_point(|m| m.info.start <= addr);
        let m = self.modules.get(i.checked_sub(1)?)?;
        (addr < m.info.end).then_some(m)
    }

    fn resolve(&self, probe: u64) -> Vec<SymFrame> {
        let Some(m) = self.mapped_for(probe) else {
            return vec![SymFrame {
                function: format!("0x{probe:x}"),
                file: None,
                line: 0,
                entry: None,
            }];
        };
        let svma = probe.wrapping_sub(m.bias);
        let sym = m.file.as_ref().and_then(|f| f.symbol(svma));
        let entry = sym.map(|s| s.svma.wrapping_add(m.bias));
        let mut frames = Vec::new();
        if let Some(ctx) = m.file.as_ref().and_then(|f| f.ctx.as_ref()) {
            if let Ok(mut iter) = ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    let function = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.raw_name().ok())
                        .map(|n| demangle(&n[..]));
                    let (file, line) = match &frame.location {
                        Some(loc) => (loc.file.map(str::to_string), loc.line.unwrap_or(0)),
                        None => (None, 0),
                    };
                    let function = match function {
                        Some(f) => f,
                        None => match sym {
                            Some(s) if frames.is_empty() => demangle(&s.name),
                            _ => "?".to_string(),
                        },
                    };
                    frames.push(SymFrame {
                        function,
                        file,
                        line,
                        entry,
                    });
                    if frames.len() >= 256 {
                        break;
                    }
                }
            }
        }
        if frames.is_empty() {
            let function = match sym {
                Some(s) => demangle(&s.name),
                None => format!("{}+0x{svma:x}", basename(&m.info.path)),
            };
            frames.push(SymFrame {
                function,
                file: None,
                line: 0,
                entry,
            });
        }
        frames
    }
}

/// Demangle a Rust (legacy or v0) symbol without its `::h<hash>` suffix; other names
/// are returned as they are.
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangle_strips_hash() {
        assert_eq!(
            demangle("_ZN3foo3bar17h0123456789abcdefE"),
            "foo::bar".to_string()
        );
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    #[inline(never)]
    fn known_function_for_symbolizer() -> u64 {
        std::hint::black_box(7)
    }

    #[test]
    fn symbolizes_own_function() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let modules = file::parse_proc_maps(&maps);
        let mut s = Symbolizer::new(crate::unwind::LocalFiles);
        s.set_modules(&modules);
        let addr = known_function_for_symbolizer as fn() -> u64 as usize as u64;
        let frames = s.lookup(addr, false).to_vec();
        let last = frames.last().unwrap();
        assert!(
            last.function.ends_with("known_function_for_symbolizer"),
            "{frames:?}"
        );
        assert!(last.file.as_deref().unwrap().ends_with("symbolize/mod.rs"));
        assert!(last.line > 0);
        assert_eq!(last.entry, Some(addr));
        // Cached and stable.
        assert_eq!(s.cached(addr, false).unwrap(), &frames[..]);
        // Outside every module.
        assert_eq!(s.lookup(8, false)[0].function, "0x8");
    }

    extern "C" {
        fn getpid() -> i32;
    }

    #[test]
    fn separate_debug_file_by_build_id() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let modules = file::parse_proc_maps(&maps);
        let addr = getpid as unsafe extern "C" fn() -> i32 as usize as u64;
        let Some(libc) = modules.iter().find(|m| m.start <= addr && addr < m.end) else {
            eprintln!("skipping: getpid is not in a mapped file");
            return;
        };
        let bytes = std::fs::read(&libc.path).unwrap();
        let Some(id) = file::read_build_id(&bytes) else {
            eprintln!("skipping: {} has no build id", libc.path);
            return;
        };
        let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
        let mut s = Symbolizer::new(crate::unwind::LocalFiles);
        s.set_modules(&modules);
        let frames = s.lookup(addr, false).to_vec();
        assert!(
            frames.iter().any(|f| f.function.contains("getpid")),
            "{frames:?}"
        );
        if std::path::Path::new(&debug).exists() {
            assert!(frames.iter().any(|f| f.file.is_some()), "{frames:?}");
        } else {
            eprintln!("no {debug}: only the symbol table was checked");
        }
    }
}
