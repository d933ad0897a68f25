//! Writers for a [`Recording`] (`gprof-rs record`): pprof with two sample values and a
//! `state` label, collapsed stacks, a flame graph SVG (inferno) and speedscope JSON.
//!
//! Every writer reads symbols from the [`Symbolizer`]'s cache: call
//! [`Recording::symbolize_all`] first (the writers here do it themselves).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use serde::Serialize;

use super::frames_at;
use super::pprof::{write_profile, ProfileBuilder};
use super::pprof_proto::Profile;
use crate::record::agg::{Recording, STATE_LABEL};
use crate::symbolize::Symbolizer;

/// Sample types of the recorded pprof, in order.
pub const SAMPLE_TYPES: [(&str, &str); 2] = [("samples", "count"), ("wall", "nanoseconds")];

/// Comment lines describing the recording (pprof comments, flame graph subtitle).
pub fn describe(rec: &Recording) -> Vec<String> {
    vec![
        format!(
            "gprof-rs record of PID {}: {} snapshots every {:.3} ms ({:.1} Hz)",
            rec.pid,
            rec.snapshots,
            rec.interval_ns as f64 / 1e6,
            1e9 / rec.interval_ns.max(1) as f64
        ),
        "each snapshot counts every task once: samples = tasks x snapshots, wall = samples x interval"
            .to_string(),
    ]
}

/// The pprof profile of a recording: values `samples/count` and `wall/nanoseconds`,
/// period type `wall/nanoseconds` with the interval as period, labels `state` plus the
/// task's own.
pub fn build_pprof(rec: &Recording, sym: &mut Symbolizer) -> Profile {
    rec.symbolize_all(sym);
    let sym: &Symbolizer = sym;
    let mut b = ProfileBuilder::new(&SAMPLE_TYPES, &rec.modules);
    for e in rec.entries() {
        let labels: Vec<(&str, &str)> = e
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        b.add_sample(
            &rec.stacks.get(e.stack).addrs,
            sym,
            vec![
                i64::try_from(e.counts.samples).unwrap_or(i64::MAX),
                i64::try_from(e.counts.wall_ns).unwrap_or(i64::MAX),
            ],
            &labels,
        );
    }
    b.finish(
        SAMPLE_TYPES[1],
        i64::try_from(rec.interval_ns).unwrap_or(i64::MAX),
        rec.start_unix_ns,
        rec.duration_ns,
        &describe(rec),
    )
}

/// Write the gzip'd pprof of a recording.
pub fn write_pprof(rec: &Recording, sym: &mut Symbolizer, w: impl Write) -> io::Result<()> {
    write_profile(&build_pprof(rec, sym), w)
}

/// Function names of a stack, root first, inlined frames expanded.
fn names_root_first(rec: &Recording, sym: &Symbolizer, stack: u32) -> Vec<String> {
    let addrs = &rec.stacks.get(stack).addrs;
    let mut out = Vec::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate().rev() {
        for f in frames_at(sym, addr, i).iter().rev() {
            out.push(f.function.clone());
        }
    }
    if out.is_empty() {
        out.push("[unknown]".to_string());
    }
    out
}

/// Collapsed stacks: `(root;...;leaf, samples)`, merged by name, sorted by stack.
/// `;` in a name becomes `:` and line breaks become spaces, so every line parses.
pub fn folded(rec: &Recording, sym: &mut Symbolizer) -> Vec<(String, u64)> {
    rec.symbolize_all(sym);
    let sym: &Symbolizer = sym;
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for e in rec.entries() {
        let line = names.entry(e.stack).or_insert_with(|| {
            names_root_first(rec, sym, e.stack)
                .iter()
                .map(|n| n.replace(';', ":").replace(['\n', '\r'], " "))
                .collect::<Vec<_>>()
                .join(";")
        });
        *lines.entry(line.clone()).or_default() += e.counts.samples;
    }
    lines.into_iter().collect()
}

/// Write collapsed stacks, one `root;...;leaf count` line each.
pub fn write_folded(rec: &Recording, sym: &mut Symbolizer, mut w: impl Write) -> io::Result<()> {
    for (stack, n) in folded(rec, sym) {
        writeln!(w, "{stack} {n}")?;
    }
    w.flush()
}

/// Write a flame graph SVG (inferno) of the collapsed stacks: width = task samples.
pub fn write_flamegraph(rec: &Recording, sym: &mut Symbolizer, w: impl Write) -> io::Result<()> {
    let lines: Vec<String> = folded(rec, sym)
        .into_iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let mut opt = inferno::flamegraph::Options::default();
    opt.title = format!("gprof-rs: tasks of PID {}", rec.pid);
    opt.subtitle = Some(describe(rec).remove(0));
    opt.count_name = "task samples".to_string();
    opt.hash = true;
    let r = inferno::flamegraph::from_lines(&mut opt, lines.iter().map(String::as_str), w);
    match r {
        // An empty recording still gets its (message-only) SVG.
        Err(_) if lines.is_empty() => Ok(()),
        r => r,
    }
}

#[derive(Serialize)]
struct SpeedscopeFile<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<SampledProfile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: usize,
    exporter: &'a str,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<Frame>,
}

#[derive(Serialize)]
struct Frame {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

#[derive(Serialize)]
struct SampledProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<Vec<usize>>,
    weights: Vec<u64>,
}

/// Write speedscope JSON (<https://www.speedscope.app/file-format-schema.json>): a
/// sampled profile `all tasks`, then one per task state (`state=chan receive`, ...),
/// most time first;
/// stacks root first; weights are wall nanoseconds (samples × interval).
pub fn write_speedscope(
    rec: &Recording,
    sym: &mut Symbolizer,
    mut w: impl Write,
) -> io::Result<()> {
    rec.symbolize_all(sym);
    let sym: &Symbolizer = sym;
    let mut frames: Vec<Frame> = Vec::new();
    let mut frame_ids: HashMap<(String, Option<String>), usize> = HashMap::new();
    let mut stack_frames: HashMap<u32, Vec<usize>> = HashMap::new();
    // state -> (stack -> weight), merged over the other labels; and over every state.
    let mut all: BTreeMap<Vec<usize>, u64> = BTreeMap::new();
    let mut by_state: BTreeMap<String, BTreeMap<Vec<usize>, u64>> = BTreeMap::new();
    for e in rec.entries() {
        let ids = stack_frames
            .entry(e.stack)
            .or_insert_with(|| {
                let addrs = &rec.stacks.get(e.stack).addrs;
                let mut ids = Vec::new();
                for (i, &addr) in addrs.iter().enumerate().rev() {
                    for f in frames_at(sym, addr, i).iter().rev() {
                        let key = (f.function.clone(), f.file.clone());
                        let id = *frame_ids.entry(key).or_insert_with(|| {
                            frames.push(Frame {
                                name: f.function.clone(),
                                file: f.file.clone(),
                            });
                            frames.len() - 1
                        });
                        ids.push(id);
                    }
                }
                ids
            })
            .clone();
        *all.entry(ids.clone()).or_default() += e.counts.wall_ns;
        *by_state
            .entry(e.state().to_string())
            .or_default()
            .entry(ids)
            .or_default() += e.counts.wall_ns;
    }
    let profile = |name: String, stacks: BTreeMap<Vec<usize>, u64>| {
        let (samples, weights): (Vec<Vec<usize>>, Vec<u64>) = stacks.into_iter().unzip();
        SampledProfile {
            kind: "sampled",
            name,
            unit: "nanoseconds",
            start_value: 0,
            end_value: weights.iter().sum(),
            samples,
            weights,
        }
    };
    let mut profiles: Vec<SampledProfile> = by_state
        .into_iter()
        .map(|(state, stacks)| profile(format!("{STATE_LABEL}={state}"), stacks))
        .collect();
    profiles.sort_by(|a, b| b.end_value.cmp(&a.end_value).then(a.name.cmp(&b.name)));
    profiles.insert(0, profile("all tasks".to_string(), all));
    let exporter = concat!("gprof-rs ", env!("CARGO_PKG_VERSION"));
    let file = SpeedscopeFile {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles,
        name: format!("gprof-rs record of PID {}", rec.pid),
        active_profile_index: 0,
        exporter,
    };
    serde_json::to_writer(&mut w, &file).map_err(io::Error::other)?;
    w.flush()
}
