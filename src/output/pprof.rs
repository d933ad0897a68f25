//! pprof `profile.proto` goroutine profile, gzip-compressed, as Go's runtime/pprof
//! writes it: sample type and period type `goroutine`/`count`, period 1, one sample
//! per distinct (stack, labels) whose value is the number of tasks, task labels as
//! string sample labels, one location per distinct frame address whose inlined frames
//! are several lines (innermost first), mappings with file name and build id.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use super::pprof_proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use super::{frames_at, group_tasks, symbolize_stacks};
use crate::model::{ModuleInfo, Snapshot};
use crate::symbolize::Symbolizer;

/// String table with "" at index 0.
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings {
            table: Vec::new(),
            index: HashMap::new(),
        };
        s.intern("");
        s
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds a pprof [`Profile`] sample by sample: the string table, mappings, one location
/// per distinct (address, is-return-address) with its inlined frames as lines, and
/// deduplicated functions. Shared by the one-shot goroutine profile ([`build_profile`])
/// and `gprof-rs record` (sampled task profiles).
pub struct ProfileBuilder<'m> {
    strings: Strings,
    sample_type: Vec<ValueType>,
    modules: &'m [ModuleInfo],
    mapping: Vec<Mapping>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, Option<String>), u64>,
    locations: Vec<Location>,
    // Keyed by (address, is_return_address): the same address is looked up at
    // `addr` as an instruction pointer but at `addr - 1` as a return address.
    location_ids: HashMap<(u64, bool), u64>,
    samples: Vec<Sample>,
}

impl<'m> ProfileBuilder<'m> {
    /// A profile whose samples carry one value per `(type, unit)` of `sample_types`,
    /// with one mapping per module.
    pub fn new(sample_types: &[(&str, &str)], modules: &'m [ModuleInfo]) -> Self {
        let mut strings = Strings::new();
        let sample_type = sample_types
            .iter()
            .map(|(t, u)| ValueType {
                r#type: strings.intern(t),
                unit: strings.intern(u),
            })
            .collect();
        let mapping = modules
            .iter()
            .enumerate()
            .map(|(i, m)| Mapping {
                id: i as u64 + 1,
                memory_start: m.start,
                memory_limit: m.end,
                file_offset: m.file_offset,
                filename: strings.intern(&m.path),
                build_id: strings.intern(m.build_id.as_deref().unwrap_or("")),
                has_functions: true,
                has_filenames: true,
                has_line_numbers: true,
                has_inline_frames: true,
            })
            .collect();
        ProfileBuilder {
            strings,
            sample_type,
            modules,
            mapping,
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            samples: Vec::new(),
        }
    }

    /// Index of `s` in the string table.
    pub fn intern(&mut self, s: &str) -> i64 {
        self.strings.intern(s)
    }

    fn mapping_of(&self, addr: u64) -> u64 {
        self.modules
            .iter()
            .position(|m| m.start <= addr && addr < m.end)
            .map_or(0, |i| i as u64 + 1)
    }

    /// Add one sample: `addrs` innermost first (the first an instruction pointer, the
    /// rest return addresses), resolved from `sym`'s cache (see
    /// [`symbolize_stacks`]); string labels; one value per
    /// sample type.
    pub fn add_sample(
        &mut self,
        addrs: &[u64],
        sym: &Symbolizer,
        value: Vec<i64>,
        labels: &[(&str, &str)],
    ) {
        let mut location_id = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let key = (addr, i > 0);
            let id = match self.location_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = self.locations.len() as u64 + 1;
                    let mut line = Vec::new();
                    for f in frames_at(sym, addr, i).iter() {
                        let fkey = (f.function.clone(), f.file.clone());
                        let function_id = match self.function_ids.get(&fkey) {
                            Some(&fid) => fid,
                            None => {
                                let fid = self.functions.len() as u64 + 1;
                                let name = self.strings.intern(&f.function);
                                let filename = self.strings.intern(f.file.as_deref().unwrap_or(""));
                                self.functions.push(Function {
                                    id: fid,
                                    name,
                                    system_name: name,
                                    filename,
                                    start_line: 0,
                                });
                                self.function_ids.insert(fkey, fid);
                                fid
                            }
                        };
                        line.push(Line {
                            function_id,
                            line: i64::from(f.line),
                            column: 0,
                        });
                    }
                    let mapping_id = self.mapping_of(addr);
                    self.locations.push(Location {
                        id,
                        mapping_id,
                        address: addr,
                        line,
                        is_folded: false,
                    });
                    self.location_ids.insert(key, id);
                    id
                }
            };
            location_id.push(id);
        }
        let label = labels
            .iter()
            .map(|(k, v)| Label {
                key: self.strings.intern(k),
                str: self.strings.intern(v),
                num: 0,
                num_unit: 0,
            })
            .collect();
        self.samples.push(Sample {
            location_id,
            value,
            label,
        });
    }

    /// The finished profile. `period_type` is a `(type, unit)` pair; `comments` are
    /// free-form lines (`go tool pprof -comments`).
    pub fn finish(
        mut self,
        period_type: (&str, &str),
        period: i64,
        time_unix_ns: u64,
        duration_ns: u64,
        comments: &[String],
    ) -> Profile {
        let period_type = ValueType {
            r#type: self.strings.intern(period_type.0),
            unit: self.strings.intern(period_type.1),
        };
        let comment = comments.iter().map(|c| self.strings.intern(c)).collect();
        Profile {
            sample_type: self.sample_type,
            sample: self.samples,
            mapping: self.mapping,
            location: self.locations,
            function: self.functions,
            string_table: self.strings.table,
            drop_frames: 0,
            keep_frames: 0,
            time_nanos: i64::try_from(time_unix_ns).unwrap_or(i64::MAX),
            duration_nanos: i64::try_from(duration_ns).unwrap_or(i64::MAX),
            period_type: Some(period_type),
            period,
            comment,
            default_sample_type: 0,
        }
    }
}

/// Build the profile message (not yet encoded).
pub fn build_profile(snapshot: &Snapshot, sym: &mut Symbolizer) -> Profile {
    let groups = group_tasks(snapshot);
    symbolize_stacks(snapshot, sym, groups.iter().map(|g| g.stack));
    let mut b = ProfileBuilder::new(&[("goroutine", "count")], &snapshot.modules);
    for g in &groups {
        b.add_sample(
            &snapshot.stacks.get(g.stack).addrs,
            sym,
            vec![i64::try_from(g.count).unwrap_or(i64::MAX)],
            &g.labels,
        );
    }
    b.finish(("goroutine", "count"), 1, snapshot.time_unix_ns, 0, &[])
}

/// Gzip and write an encoded profile.
pub fn write_profile(profile: &Profile, w: impl Write) -> io::Result<()> {
    let bytes = profile.encode_to_vec();
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}

/// Write the gzip-compressed pprof profile of `snapshot` to `w`.
pub fn write_pprof(snapshot: &Snapshot, sym: &mut Symbolizer, w: impl Write) -> io::Result<()> {
    write_profile(&build_profile(snapshot, sym), w)
}
