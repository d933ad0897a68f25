//! DWARF CFI unwinding of copied task stacks, on top of `framehop`.
//!
//! The caller gives the target's executable mappings and a [`FileSource`] once per
//! snapshot ([`Unwinder::set_modules`]); each ELF file is parsed once (keyed by path and
//! build id, see [`FileKey`]) and its `.eh_frame`/`.eh_frame_hdr`/`.debug_frame` are kept
//! for later snapshots. Then [`Unwinder::unwind`] walks one task: registers `ip`, `sp`,
//! `bp` plus the bytes of its stack copied from `sp` upward. Nothing outside that copy is
//! ever read, so a stack copied while the task was parked is unwound exactly as it was.
//!
//! Walks are remembered by the stack words they read (`memo.rs`): a stack of a shape
//! already walked (same instruction pointer and length, same words where it matters)
//! gets the remembered frames without a walk, which is most parked tasks.
//!
//! # How a walk ends
//!
//! `framehop` reports "no caller" (`Ok(None)`) in three different situations that it
//! does not tell apart: the CFI row for the frame marks the return address undefined
//! (`.cfi_undefined rip`, its `EndOfStack` rule, see framehop-0.13.3
//! `src/x86_64/dwarf.rs` `translate_into_unwind_rule`), a frame-pointer fallback found
//! `rbp == 0`, or a zero return address was read. The task-entry trampoline of
//! `target-runtime` relies on the first, so when framehop stops we look the last frame
//! up again with gimli ourselves (once per address, cached) and only call it
//! [`UnwindEnd::EndOfStack`] when its CFI really says "return address undefined".

pub mod file;
mod memo;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Unwinder as _};
use gimli::{
    BaseAddresses, EhFrame, EhFrameHdr, LittleEndian, RegisterRule, UnwindContext, UnwindSection,
    X86_64,
};
use object::{Object, ObjectSection};

pub use file::{
    for_each_symbol, ElfData, ElfSym, FileKey, FileSource, LocalFiles, ProcFiles, SectionBytes,
    SymTable,
};

use crate::model::ModuleInfo;

/// Default hard cap on frames per stack.
pub const DEFAULT_MAX_FRAMES: usize = 1024;

/// Why [`Unwinder::unwind`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindEnd {
    /// The last frame's CFI marks the return address undefined: the root of the stack
    /// (a task's entry trampoline, a thread's `clone` frame, `_start`). The only
    /// complete ending.
    EndOfStack,
    /// The next read would have been outside the copied stack bytes.
    StackCopyEnded,
    /// A frame had no CFI (no module, or no FDE covering it) and the frame-pointer
    /// fallback ran out (`rbp == 0` or a zero return address).
    NoUnwindInfo,
    /// The frame cap was reached.
    FrameCap,
    /// The unwinder gave up for another reason.
    Error(UnwindError),
}

impl UnwindEnd {
    /// Whether the walk reached the root of the stack.
    pub fn is_complete(self) -> bool {
        self == UnwindEnd::EndOfStack
    }
}

/// Why the unwinder gave up, for [`UnwindEnd::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwindError {
    /// A read below the copied stack's start (below `sp`), at this address.
    ReadBelowStack(u64),
    /// The frame has CFI with a defined return address, but a zero return address (or
    /// a zero frame pointer after a CFI evaluation failure) ended the walk.
    NullFrame,
    /// Neither ip nor sp changed: the walk would loop.
    DidNotAdvance,
    /// The stack pointer moved backwards (toward lower addresses).
    MovedBackwards,
    /// Address arithmetic overflowed.
    Overflow,
}

/// A module load problem reported by [`Unwinder::set_modules`]; that module is unwound
/// with the frame-pointer fallback only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleError {
    /// Path of the module as the target sees it.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// CFI of one ELF file, owned, shared by every mapping of that file.
struct CfiFile {
    text_svma: Option<std::ops::Range<u64>>,
    got_svma: Option<std::ops::Range<u64>>,
    eh_frame_svma: Option<std::ops::Range<u64>>,
    eh_frame_hdr_svma: Option<std::ops::Range<u64>>,
    eh_frame: Option<SectionBytes>,
    eh_frame_hdr: Option<SectionBytes>,
    debug_frame: Option<SectionBytes>,
    segments: Vec<file::LoadSegment>,
}

impl CfiFile {
    fn parse(data: &ElfData) -> Result<CfiFile, String> {
        crate::with_elf!(data, |obj| CfiFile::from_object(&obj, data.file()))
    }

    /// `file`, when given, is the open file behind `obj`: its CFI is read in place.
    fn from_object<'d, R: object::ReadRef<'d>>(
        obj: &object::File<'d, R>,
        file: Option<&std::fs::File>,
    ) -> CfiFile {
        let range = |name: &str| {
            obj.section_by_name(name)
                .map(|s| s.address()..s.address().saturating_add(s.size()))
        };
        let mapped = file.and_then(file::map);
        let data = |name: &str| -> Option<SectionBytes> {
            let s = obj.section_by_name(name)?;
            SectionBytes::of(&s, mapped.as_ref()).filter(|d| !d.is_empty())
        };
        CfiFile {
            text_svma: range(".text"),
            got_svma: range(".got"),
            eh_frame_svma: range(".eh_frame"),
            eh_frame_hdr_svma: range(".eh_frame_hdr"),
            eh_frame: data(".eh_frame"),
            eh_frame_hdr: data(".eh_frame_hdr"),
            debug_frame: data(".debug_frame"),
            segments: file::load_segments(obj),
        }
    }

    fn section_info(&self) -> ExplicitModuleSectionInfo<SectionBytes> {
        ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: self.text_svma.clone(),
            got_svma: self.got_svma.clone(),
            eh_frame_svma: self.eh_frame_svma.clone(),
            eh_frame_hdr_svma: self.eh_frame_hdr_svma.clone(),
            eh_frame: self.eh_frame.clone(),
            eh_frame_hdr: self.eh_frame_hdr.clone(),
            debug_frame: self.debug_frame.clone(),
            ..Default::default()
        }
    }

    fn bases(&self) -> BaseAddresses {
        let mut b = BaseAddresses::default();
        if let Some(r) = &self.eh_frame_hdr_svma {
            b = b.set_eh_frame_hdr(r.start);
        }
        if let Some(r) = &self.eh_frame_svma {
            b = b.set_eh_frame(r.start);
        }
        if let Some(r) = &self.text_svma {
            b = b.set_text(r.start);
        }
        if let Some(r) = &self.got_svma {
            b = b.set_got(r.start);
        }
        b
    }

    /// Whether the CFI row for `svma` marks the return address undefined; `None` when
    /// no FDE covers `svma`.
    fn return_address_undefined(&self, svma: u64) -> Option<bool> {
        let bases = self.bases();
        let mut ctx = UnwindContext::new();
        if let Some(eh) = &self.eh_frame {
            let mut section = EhFrame::new(eh, LittleEndian);
            section.set_address_size(8);
            let row = match self
                .eh_frame_hdr
                .as_deref()
                .and_then(|hdr| EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8).ok())
            {
                Some(hdr) => match hdr.table() {
                    Some(table) => table
                        .unwind_info_for_address(&section, &bases, &mut ctx, svma, |s, b, o| {
                            s.cie_from_offset(b, o)
                        })
                        .ok()
                        .cloned(),
                    None => None,
                },
                None => section
                    .unwind_info_for_address(&bases, &mut ctx, svma, |s, b, o| {
                        s.cie_from_offset(b, o)
                    })
                    .ok()
                    .cloned(),
            };
            if let Some(row) = row {
                return Some(ra_rule_undefined(&row.register(X86_64::RA)));
            }
        }
        if let Some(df) = &self.debug_frame {
            let mut section = gimli::DebugFrame::new(df, LittleEndian);
            section.set_address_size(8);
            if let Ok(row) = section
                .unwind_info_for_address(&bases, &mut ctx, svma, |s, b, o| s.cie_from_offset(b, o))
                .cloned()
            {
                return Some(ra_rule_undefined(&row.register(X86_64::RA)));
            }
        }
        None
    }
}

fn ra_rule_undefined<T: gimli::ReaderOffset>(rule: &RegisterRule<T>) -> bool {
    matches!(rule, RegisterRule::Undefined)
}

/// A module currently added to the framehop unwinder.
struct Active {
    info: ModuleInfo,
    file: Option<Arc<CfiFile>>,
    bias: u64,
}

/// Unwinds copied stacks of one target process, reusing parsed files and the framehop
/// rule cache across calls and snapshots.
pub struct Unwinder {
    inner: UnwinderX86_64<SectionBytes>,
    cache: CacheX86_64,
    source: Box<dyn FileSource + Send>,
    files: HashMap<FileKey, Option<Arc<CfiFile>>>,
    active: BTreeMap<u64, Active>,
    ends: HashMap<u64, UnwindEnd>,
    max_frames: usize,
    memo: memo::Memo,
}

impl Unwinder {
    /// An unwinder with no modules yet, reading ELF files through `source`.
    /// The unwinder is `Send`, so stacks can be unwound on another thread.
    pub fn new(source: impl FileSource + Send + 'static) -> Self {
        Unwinder {
            inner: UnwinderX86_64::new(),
            cache: CacheX86_64::new(),
            source: Box::new(source),
            files: HashMap::new(),
            active: BTreeMap::new(),
            ends: HashMap::new(),
            max_frames: DEFAULT_MAX_FRAMES,
            memo: memo::Memo::default(),
        }
    }

    /// Set the hard cap on frames per stack (at least 1).
    pub fn set_max_frames(&mut self, max: usize) {
        self.max_frames = max.max(1);
        self.memo.clear();
    }

    /// Stacks that were given the frames of an earlier walk of the same shape (see
    /// `memo.rs`) instead of being walked.
    pub fn memo_hits(&self) -> u64 {
        self.memo.hits()
    }

    /// Forget the remembered walks (tests compare against walks done in full).
    #[cfg(test)]
    pub(crate) fn forget_walks(&mut self) {
        self.memo.clear();
    }

    /// Make `modules` the target's executable mappings. Mappings unchanged since the
    /// last call are kept as they are (and so is the rule cache); files already parsed
    /// are reused. Returns the modules whose file couldn't be read or parsed; those are
    /// unwound with the frame-pointer fallback only.
    pub fn set_modules(&mut self, modules: &[ModuleInfo]) -> Vec<ModuleError> {
        let mut errors = Vec::new();
        let wanted: HashMap<u64, &ModuleInfo> = modules.iter().map(|m| (m.start, m)).collect();
        let stale: Vec<u64> = self
            .active
            .iter()
            .filter(|(start, a)| wanted.get(start).is_none_or(|m| **m != a.info))
            .map(|(start, _)| *start)
            .collect();
        let changed = !stale.is_empty();
        for start in stale {
            self.inner.remove_module(start);
            self.active.remove(&start);
        }
        let mut added = false;
        for m in modules {
            if m.end <= m.start || self.active.contains_key(&m.start) {
                continue;
            }
            let key = FileKey::of(m);
            let file = match self.files.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let parsed = self
                        .source
                        .open(m)
                        .map_err(|e| format!("cannot read: {e}"))
                        .and_then(|data| CfiFile::parse(&data));
                    let f = match parsed {
                        Ok(f) => Some(Arc::new(f)),
                        Err(message) => {
                            errors.push(ModuleError {
                                path: m.path.clone(),
                                message,
                            });
                            None
                        }
                    };
                    self.files.insert(key, f.clone());
                    f
                }
            };
            let bias = file
                .as_ref()
                .map(|f| file::load_bias(&f.segments, m))
                .unwrap_or(m.start.wrapping_sub(m.file_offset));
            if let Some(f) = &file {
                let module =
                    framehop::Module::new(m.path.clone(), m.start..m.end, bias, f.section_info());
                self.inner.add_module(module);
            }
            self.active.insert(
                m.start,
                Active {
                    info: m.clone(),
                    file,
                    bias,
                },
            );
            added = true;
        }
        if changed || added {
            self.ends.clear();
            self.memo.clear();
        }
        errors
    }

    /// Walk one stack. `stack` holds the target's memory starting at address `sp`.
    /// `out` is cleared, then gets `ip` followed by the return addresses, innermost first
    /// (look every later entry up at `addr - 1`; see [`FrameAddress`]).
    pub fn unwind(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        stack: &[u8],
        out: &mut Vec<u64>,
    ) -> UnwindEnd {
        self.unwind_from(ip, sp, bp, sp, stack, out)
    }

    /// [`unwind`](Self::unwind) with a stack copy that starts at `base <= sp`. A thread
    /// stopped at an arbitrary instruction may need the bytes just below its stack
    /// pointer: the x86_64 red zone, where the context switch's final `jmp` keeps its
    /// target (see target-runtime's `arch/x86_64.rs`).
    pub fn unwind_from(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        base: u64,
        stack: &[u8],
        out: &mut Vec<u64>,
    ) -> UnwindEnd {
        let base = base.min(sp);
        let key = memo::Key {
            ip,
            below_sp: sp - base,
            len: stack.len() as u64,
        };
        if let Some(end) = self.memo.find(&key, sp, bp, stack, out) {
            return end;
        }
        self.memo.begin();
        let end = self.walk(ip, sp, bp, base, stack, out, &[]);
        if !self.memo.has_room(&key) {
            return end;
        }
        let Some(walk) = self.memo.classify(sp, bp, out, end) else {
            return end;
        };
        // The flipped walks of `memo.rs`: which saved words and whether the frame
        // pointer register the walk did not use.
        let read = self.memo.read_offsets();
        let words = memo::Memo::relative_offsets(&walk);
        let mut again = Vec::with_capacity(out.len());
        let mut same = |u: &mut Self, bp: u64, flip: &[u64]| {
            u.memo.begin();
            let e = u.walk(ip, sp, bp, base, stack, &mut again, flip);
            e == end && again == *out && u.memo.read_offsets() == read
        };
        let (free, bp_free) = if same(self, bp ^ memo::FLIP, &words) {
            (words, true)
        } else {
            let free = words
                .iter()
                .copied()
                .filter(|&w| same(self, bp, &[w]))
                .collect();
            (free, same(self, bp ^ memo::FLIP, &[]))
        };
        self.memo.remember(key, walk, &free, bp_free);
        end
    }

    /// [`unwind_from`](Self::unwind_from) without the memo; records its reads in it.
    /// The words at the offsets `flip` read as flipped (`memo::FLIP`).
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &mut self,
        ip: u64,
        sp: u64,
        bp: u64,
        base: u64,
        stack: &[u8],
        out: &mut Vec<u64>,
        flip: &[u64],
    ) -> UnwindEnd {
        out.clear();
        out.push(ip);
        let stack_end = base.saturating_add(stack.len() as u64);
        let reading = std::cell::RefCell::new(std::mem::take(&mut self.memo.reading));
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let off = addr.checked_sub(base).ok_or(())?;
            let value = usize::try_from(off)
                .ok()
                .and_then(|o| stack.get(o..o.checked_add(8)?))
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                .map(|v| {
                    if flip.contains(&off) {
                        v ^ memo::FLIP
                    } else {
                        v
                    }
                });
            reading.borrow_mut().push((off, value));
            value.ok_or(())
        };
        let mut regs = UnwindRegsX86_64::new(ip, sp, bp);
        let mut frame = FrameAddress::from_instruction_pointer(ip);
        let end = loop {
            if out.len() >= self.max_frames {
                break UnwindEnd::FrameCap;
            }
            self.memo.steps.push(reading.borrow().len());
            match self
                .inner
                .unwind_frame(frame, &mut regs, &mut self.cache, &mut read_stack)
            {
                Ok(Some(ra)) => match FrameAddress::from_return_address(ra) {
                    Some(next) => {
                        out.push(ra);
                        frame = next;
                    }
                    // framehop's uncacheable DWARF path can hand back a zero return address.
                    None => break self.classify_stop(frame),
                },
                Ok(None) => break self.classify_stop(frame),
                Err(framehop::Error::CouldNotReadStack(addr)) => {
                    break if addr >= base && addr.saturating_add(8) > stack_end {
                        UnwindEnd::StackCopyEnded
                    } else {
                        UnwindEnd::Error(UnwindError::ReadBelowStack(addr))
                    };
                }
                Err(framehop::Error::DidNotAdvance) => {
                    break UnwindEnd::Error(UnwindError::DidNotAdvance)
                }
                Err(framehop::Error::FramepointerUnwindingMovedBackwards) => {
                    break UnwindEnd::Error(UnwindError::MovedBackwards)
                }
                Err(framehop::Error::IntegerOverflow) => {
                    break UnwindEnd::Error(UnwindError::Overflow)
                }
                Err(framehop::Error::ReturnAddressIsNull) => break self.classify_stop(frame),
            }
        };
        self.memo.reading = reading.into_inner();
        end
    }

    /// framehop found no caller of `frame`: decide why (see the module docs).
    fn classify_stop(&mut self, frame: FrameAddress) -> UnwindEnd {
        let lookup = frame.address_for_lookup();
        if let Some(&end) = self.ends.get(&lookup) {
            return end;
        }
        let module = self
            .active
            .range(..=lookup)
            .next_back()
            .map(|(_, a)| a)
            .filter(|a| lookup < a.info.end);
        let end = match module.and_then(|a| {
            let svma = lookup.wrapping_sub(a.bias);
            a.file.as_ref()?.return_address_undefined(svma)
        }) {
            Some(true) => UnwindEnd::EndOfStack,
            Some(false) => UnwindEnd::Error(UnwindError::NullFrame),
            None => UnwindEnd::NoUnwindInfo,
        };
        self.ends.insert(lookup, end);
        end
    }
}

/// The address to look a frame up at: `addr` for the first frame (an instruction
/// pointer), `addr - 1` for every later one (a return address points after the call).
pub fn lookup_address(addr: u64, is_return_address: bool) -> u64 {
    if is_return_address {
        addr.saturating_sub(1)
    } else {
        addr
    }
}

#[cfg(test)]
mod tests;
