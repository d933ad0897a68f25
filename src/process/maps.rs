//! `/proc/PID/maps`, parsed defensively.
//!
//! The text comes from the kernel, but the paths in it come from the target (it chose
//! its file names), so the parser accepts any bytes in a path, never panics, and skips
//! lines it cannot parse instead of guessing. Line format (proc(5)):
//!
//! ```text
//! 55d0c6e00000-55d0c6e01000 r-xp 00001000 fd:01 1234567    /usr/bin/my prog (deleted)
//! start        -end          perms offset   dev  inode      path (may contain spaces)
//! ```
//!
//! The kernel pads the inode column with spaces before the path and writes `\n` in a
//! path as `\012` (`fs/proc/task_mmu.c:show_map_vma` → `seq_file_path(m, file, "\n")`),
//! so one mapping is always one line.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Most lines we accept from one maps file (the kernel's default `vm.max_map_count` is
/// 65530; a hostile or broken input must not make us allocate without bound).
pub const MAX_MAP_LINES: usize = 1 << 20;

/// Permission column of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Perms {
    /// `r`
    pub read: bool,
    /// `w`
    pub write: bool,
    /// `x`
    pub exec: bool,
    /// `s` (shared) as opposed to `p` (private).
    pub shared: bool,
}

impl Perms {
    fn parse(s: &[u8]) -> Option<Perms> {
        if s.len() != 4 {
            return None;
        }
        let flag = |c: u8, yes: u8| match c {
            c if c == yes => Some(true),
            b'-' => Some(false),
            _ => None,
        };
        Some(Perms {
            read: flag(s[0], b'r')?,
            write: flag(s[1], b'w')?,
            exec: flag(s[2], b'x')?,
            shared: match s[3] {
                b's' => true,
                b'p' => false,
                _ => return None,
            },
        })
    }
}

impl fmt::Display for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = |b: bool, ch: char| if b { ch } else { '-' };
        write!(
            f,
            "{}{}{}{}",
            c(self.read, 'r'),
            c(self.write, 'w'),
            c(self.exec, 'x'),
            if self.shared { 's' } else { 'p' }
        )
    }
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address (`start < end`).
    pub end: u64,
    /// Permissions.
    pub perms: Perms,
    /// File offset of `start`.
    pub offset: u64,
    /// Device `(major, minor)` of the backing file, `(0, 0)` when anonymous.
    pub dev: (u32, u32),
    /// Inode of the backing file, 0 when anonymous.
    pub inode: u64,
    /// Path as the kernel printed it (raw bytes; may end in ` (deleted)`, may be a
    /// pseudo name like `[vdso]`, `[stack]`, `/memfd:name (deleted)`, or empty).
    pub path: OsString,
}

impl MapEntry {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    /// Never true for a parsed entry (`start < end`); here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.start >= self.end
    }
    /// Does `[addr, addr + len)` lie inside this mapping?
    pub fn contains_range(&self, addr: u64, len: u64) -> bool {
        addr >= self.start && addr.checked_add(len).is_some_and(|e| e <= self.end)
    }
    /// The path, lossily decoded for display.
    pub fn path_lossy(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
    /// Did the kernel mark the backing file as deleted?
    pub fn is_deleted(&self) -> bool {
        self.path.as_bytes().ends_with(b" (deleted)")
    }
    /// The path without a trailing ` (deleted)`.
    pub fn path_without_deleted(&self) -> &OsStr {
        let b = self.path.as_bytes();
        OsStr::from_bytes(b.strip_suffix(b" (deleted)").unwrap_or(b))
    }
    /// A pseudo mapping such as `[vdso]`, `[heap]`, `[stack]`, `[anon:name]`.
    pub fn is_pseudo(&self) -> bool {
        self.path.as_bytes().first() == Some(&b'[')
    }
    /// A memfd mapping (`/memfd:NAME`, which the kernel always shows as deleted).
    pub fn is_memfd(&self) -> bool {
        self.path.as_bytes().starts_with(b"/memfd:")
    }
    /// Backed by a regular file on some filesystem (absolute path, has an inode, not a memfd).
    pub fn is_file_backed(&self) -> bool {
        self.inode != 0 && self.path.as_bytes().first() == Some(&b'/') && !self.is_memfd()
    }
}

fn hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
}

fn dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Split off the next space-separated field, skipping leading spaces.
fn field(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let s = trim_start(s);
    if s.is_empty() {
        return None;
    }
    let end = s.iter().position(|&c| c == b' ').unwrap_or(s.len());
    Some((&s[..end], &s[end..]))
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&c| c == b' ' || c == b'\t').count();
    &s[n..]
}

/// Parse one line (without its newline). `None` if it is malformed.
pub fn parse_line(line: &[u8]) -> Option<MapEntry> {
    let (range, rest) = field(line)?;
    let dash = range.iter().position(|&c| c == b'-')?;
    let start = hex(&range[..dash])?;
    let end = hex(&range[dash + 1..])?;
    if start >= end {
        return None;
    }
    let (perms, rest) = field(rest)?;
    let perms = Perms::parse(perms)?;
    let (offset, rest) = field(rest)?;
    let offset = hex(offset)?;
    let (dev, rest) = field(rest)?;
    let colon = dev.iter().position(|&c| c == b':')?;
    let major = u32::try_from(hex(&dev[..colon])?).ok()?;
    let minor = u32::try_from(hex(&dev[colon + 1..])?).ok()?;
    let (inode, rest) = field(rest)?;
    let inode = dec(inode)?;
    // The rest, after the padding, is the path; it may contain spaces of its own.
    let path = trim_start(rest);
    Some(MapEntry {
        start,
        end,
        perms,
        offset,
        dev: (major, minor),
        inode,
        path: OsString::from_vec(path.to_vec()),
    })
}

/// Parse a whole maps file. Malformed lines are skipped; at most [`MAX_MAP_LINES`]
/// entries are returned.
pub fn parse_maps(text: &[u8]) -> Vec<MapEntry> {
    text.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .take(MAX_MAP_LINES)
        .collect()
}

/// Read and parse `/proc/PID/maps`.
pub fn read_maps(pid: u32) -> std::io::Result<Vec<MapEntry>> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&text))
}

/// The entry containing `addr`, if any (`maps` sorted by address, as the kernel prints it).
pub fn find(maps: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    let i = maps.partition_point(|m| m.end <= addr);
    maps.get(i).filter(|m| m.start <= addr && addr < m.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_lines() {
        let text = b"\
55d0c6e00000-55d0c6e01000 r--p 00000000 fd:01 1234567                    /usr/bin/prog
55d0c6e01000-55d0c6e05000 r-xp 00001000 fd:01 1234567                    /usr/bin/prog
7ffd1a3f0000-7ffd1a411000 rw-p 00000000 00:00 0                          [stack]
7ffd1a5e1000-7ffd1a5e3000 r-xp 00000000 00:00 0                          [vdso]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 6);
        assert_eq!(m[1].start, 0x55d0c6e01000);
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[1].dev, (0xfd, 1));
        assert_eq!(m[1].inode, 1234567);
        assert!(m[1].perms.exec && m[1].perms.read && !m[1].perms.write && !m[1].perms.shared);
        assert_eq!(m[1].path, "/usr/bin/prog");
        assert!(m[1].is_file_backed());
        assert!(m[3].is_pseudo() && m[3].path == "[vdso]");
        assert_eq!(m[4].path, "");
        assert!(!m[4].is_file_backed());
        assert_eq!(m[5].end, 0xffffffffff601000);
        assert_eq!(m[1].perms.to_string(), "r-xp");
        assert_eq!(find(&m, 0x55d0c6e01fff).unwrap().offset, 0x1000);
        assert!(find(&m, 0x55d0c6e05000).is_none());
    }

    #[test]
    fn spaces_deleted_memfd() {
        let text = b"\
7f1000000000-7f1000001000 r-xp 00000000 08:02 42   /opt/my app/lib foo.so (deleted)
7f2000000000-7f2000100000 rw-s 00000000 00:01 77   /memfd:gprof-rt (deleted)
7f3000000000-7f3000001000 r--p 00000000 08:02 43   /tmp/  leading spaces kept
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path, "/opt/my app/lib foo.so (deleted)");
        assert!(m[0].is_deleted());
        assert_eq!(m[0].path_without_deleted(), "/opt/my app/lib foo.so");
        assert!(m[1].is_memfd() && m[1].perms.shared && !m[1].is_file_backed());
        assert_eq!(m[2].path, "/tmp/  leading spaces kept");
    }

    #[test]
    fn hostile_lines_are_skipped_not_panicked_on() {
        let text: &[u8] = b"\
55d0c6e00000-55d0c6e01000 r--p 00000000 fd:01 12
55d0c6e00000-55d0c6e01000 r--p 00000000 fd:01
55d0c6e00000-55d0c6e01000 r--p
55d0c6e00000-
-55d0c6e01000 r--p 00000000 fd:01 1 /x
55d0c6e01000-55d0c6e00000 r--p 00000000 fd:01 1 /backwards
55d0c6e00000-55d0c6e01000 rwxz 00000000 fd:01 1 /badperm
55d0c6e00000-55d0c6e01000 r--p 00000000 fd01 1 /nocolon
55d0c6e00000-55d0c6e01000 r--p 00000000 fd:01 -1 /neginode
155d0c6e00000155d0c6e00000-55d0c6e01000 r--p 0 0:0 0 /toolong
55d0c6e00000-55d0c6e01000 r--p 00000000 fffffffff:01 1 /bigdev
\xff\xfe garbage \x00
\n\n\r\n
7f3000000000-7f3000001000 r--p 00000000 08:02 43 /ok\xffbyte
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 2, "{m:#?}");
        assert_eq!(m[0].inode, 12);
        assert_eq!(m[0].path, "");
        assert_eq!(m[1].path.as_bytes(), b"/ok\xffbyte");
        // Truncating a valid line anywhere never panics.
        let good = b"7f3000000000-7f3000001000 r-xp 00001000 08:02 43   /usr/lib/x.so";
        for n in 0..good.len() {
            let _ = parse_line(&good[..n]);
        }
        assert!(parse_line(good).is_some());
    }
}
