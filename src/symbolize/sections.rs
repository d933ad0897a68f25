//! Reading a binary's DWARF for `addr2line`.
//!
//! A Rust binary built with debug info carries megabytes of DWARF, and a one-shot run
//! parses it every time, on a CPU the target may be using. Copying the sections out of
//! the file cost more than parsing them: 4.5 MB read into fresh memory is ~1,100 page
//! faults at 3-5 us each on this kind of VM, 5 ms of a 15 ms snapshot of 1k tasks.
//! So `addr2line` reads the file's mapping in place ([`SectionBytes`]): only the pages
//! it touches are faulted in, 16 at a time (fault-around). Only compressed sections are
//! copied (decompressed). The sections `addr2line` never reads (variable locations,
//! often the largest in optimised C) are not looked at.

use gimli::{RunTimeEndian, SectionId};
use object::Object;

use crate::unwind::file::{self, SectionBytes};

/// The reader `addr2line` parses.
pub type Reader = gimli::EndianReader<RunTimeEndian, SectionBytes>;

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
    let mapped = file.and_then(file::map);
    let load = |id: SectionId| -> Result<Reader, gimli::Error> {
        let bytes = match id {
            SectionId::DebugLoc | SectionId::DebugLocLists => None,
            _ => obj
                .section_by_name(id.name())
                .and_then(|s| SectionBytes::of(&s, mapped.as_ref())),
        };
        Ok(Reader::new(bytes.unwrap_or_default(), endian))
    };
    let dwarf = gimli::Dwarf::load(load).ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}
