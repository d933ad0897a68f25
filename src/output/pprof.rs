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
use crate::model::Snapshot;
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

/// Build the profile message (not yet encoded).
pub fn build_profile(snapshot: &Snapshot, sym: &mut Symbolizer) -> Profile {
    let groups = group_tasks(snapshot);
    symbolize_stacks(snapshot, sym, groups.iter().map(|g| g.stack));
    let sym: &Symbolizer = sym;

    let mut strings = Strings::new();
    let goroutine = strings.intern("goroutine");
    let count = strings.intern("count");

    let mapping: Vec<Mapping> = snapshot
        .modules
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
    let mapping_of = |addr: u64| -> u64 {
        snapshot
            .modules
            .iter()
            .position(|m| m.start <= addr && addr < m.end)
            .map_or(0, |i| i as u64 + 1)
    };

    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(String, Option<String>), u64> = HashMap::new();
    let mut locations: Vec<Location> = Vec::new();
    // Keyed by (address, is_return_address): the same address is looked up at
    // `addr` as an instruction pointer but at `addr - 1` as a return address.
    let mut location_ids: HashMap<(u64, bool), u64> = HashMap::new();
    let mut samples = Vec::with_capacity(groups.len());

    for g in &groups {
        let stack = snapshot.stacks.get(g.stack);
        let mut location_id = Vec::with_capacity(stack.addrs.len());
        for (i, &addr) in stack.addrs.iter().enumerate() {
            let key = (addr, i > 0);
            let id = match location_ids.get(&key) {
                Some(&id) => id,
                None => {
                    let id = locations.len() as u64 + 1;
                    let mut line = Vec::new();
                    for f in frames_at(sym, addr, i).iter() {
                        let fkey = (f.function.clone(), f.file.clone());
                        let function_id = match function_ids.get(&fkey) {
                            Some(&fid) => fid,
                            None => {
                                let fid = functions.len() as u64 + 1;
                                let name = strings.intern(&f.function);
                                functions.push(Function {
                                    id: fid,
                                    name,
                                    system_name: name,
                                    filename: strings.intern(f.file.as_deref().unwrap_or("")),
                                    start_line: 0,
                                });
                                function_ids.insert(fkey, fid);
                                fid
                            }
                        };
                        line.push(Line {
                            function_id,
                            line: i64::from(f.line),
                            column: 0,
                        });
                    }
                    locations.push(Location {
                        id,
                        mapping_id: mapping_of(addr),
                        address: addr,
                        line,
                        is_folded: false,
                    });
                    location_ids.insert(key, id);
                    id
                }
            };
            location_id.push(id);
        }
        let label = g
            .labels
            .iter()
            .map(|(k, v)| Label {
                key: strings.intern(k),
                str: strings.intern(v),
                num: 0,
                num_unit: 0,
            })
            .collect();
        samples.push(Sample {
            location_id,
            value: vec![i64::try_from(g.count).unwrap_or(i64::MAX)],
            label,
        });
    }

    Profile {
        sample_type: vec![ValueType {
            r#type: goroutine,
            unit: count,
        }],
        sample: samples,
        mapping,
        location: locations,
        function: functions,
        string_table: strings.table,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: i64::try_from(snapshot.time_unix_ns).unwrap_or(i64::MAX),
        duration_nanos: 0,
        period_type: Some(ValueType {
            r#type: goroutine,
            unit: count,
        }),
        period: 1,
        comment: Vec::new(),
        default_sample_type: 0,
    }
}

/// Write the gzip-compressed pprof profile of `snapshot` to `w`.
pub fn write_pprof(snapshot: &Snapshot, sym: &mut Symbolizer, w: impl Write) -> io::Result<()> {
    let profile = build_profile(snapshot, sym);
    let bytes = profile.encode_to_vec();
    let mut gz = GzEncoder::new(w, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?.flush()
}
