//! Output writers: pprof (decoded back, and read by the real `go tool pprof`), and
//! golden tests of the Go-style text (`debug=1`) and task dump (`debug=2`) forms.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use gprof_rs::model::{ModuleInfo, RecordedBy, Snapshot, SpawnSite, Stack, TaskExtra, TaskRecord};
use gprof_rs::output::pprof_proto::Profile;
use gprof_rs::output::{build_profile, write_pprof, write_tasks, write_text};
use gprof_rs::symbolize::{SymFrame, Symbolizer};
use gprof_rs::unwind::file::{parse_proc_maps, read_build_id};
use gprof_rs::unwind::LocalFiles;
use prost::Message;

// ---------------------------------------------------------------------------
// Real functions of this test binary, used as stack addresses.

#[inline(never)]
fn out_leaf_wait() -> u64 {
    std::hint::black_box(1)
}

#[inline(never)]
fn out_middle() -> u64 {
    std::hint::black_box(out_leaf_wait()) + 1
}

#[inline(always)]
fn out_inlined_helper(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3) ^ std::hint::black_box(out_middle())
}

#[inline(never)]
fn out_outer_with_inline(x: u64) -> u64 {
    out_inlined_helper(x) + 7
}

#[inline(never)]
fn out_root() -> u64 {
    std::hint::black_box(out_outer_with_inline(std::hint::black_box(5)))
}

fn fn_addr(f: fn() -> u64) -> u64 {
    f as usize as u64
}

fn own_modules() -> Vec<ModuleInfo> {
    let mut modules = parse_proc_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    for m in &mut modules {
        m.build_id = std::fs::read(&m.path).ok().and_then(|b| read_build_id(&b));
    }
    modules
}

fn task(id: u64, stack: u32, labels: &[(&str, &str)]) -> TaskRecord {
    TaskRecord {
        id,
        slot: id as u32,
        state: gprof_abi::TaskState::WAITING,
        wait_reason: gprof_abi::WaitReason::CHAN_RECV,
        wait_ns: 0,
        parent_id: 1,
        spawn: SpawnSite::default().into(),
        extra: TaskExtra::new(
            None,
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        system: false,
        stack,
        recorded_by: RecordedBy::Tool,
    }
}

/// An address inside `out_outer_with_inline` whose frames include the inlined helper.
fn inlined_address(sym: &mut Symbolizer) -> u64 {
    let start = out_outer_with_inline as fn(u64) -> u64 as usize as u64;
    for off in 0..4096 {
        let frames = sym.lookup(start + off, false);
        if frames.len() >= 2
            && frames[0].function.ends_with("out_inlined_helper")
            && frames[1].function.ends_with("out_outer_with_inline")
        {
            return start + off;
        }
        if !frames
            .iter()
            .any(|f| f.function.ends_with("out_outer_with_inline"))
        {
            break;
        }
    }
    panic!("no inlined frame found in out_outer_with_inline");
}

struct RealSnapshot {
    snapshot: Snapshot,
    sym: Symbolizer,
}

/// Six tasks over two stacks of real functions: stack A (leaf, middle, inlined helper
/// in outer, root) three times with a label and twice without; stack B once with two
/// labels.
fn real_snapshot() -> RealSnapshot {
    assert_eq!(out_root(), out_root()); // keep the functions alive
    let modules = own_modules();
    let mut sym = Symbolizer::new(LocalFiles);
    sym.set_modules(&modules);
    let inl = inlined_address(&mut sym);
    let mut snapshot = Snapshot {
        pid: std::process::id(),
        modules,
        time_unix_ns: 1_700_000_000_000_000_000,
        ..Default::default()
    };
    // Return addresses are stored as "address after the call": +1 so that the lookup
    // at `addr - 1` lands on the instruction we chose.
    let a = snapshot.stacks.intern(Stack {
        addrs: vec![
            fn_addr(out_leaf_wait),
            fn_addr(out_middle) + 1,
            inl + 1,
            fn_addr(out_root) + 1,
        ],
        incomplete: false,
    });
    let b = snapshot.stacks.intern(Stack {
        addrs: vec![fn_addr(out_middle), fn_addr(out_root) + 1],
        incomplete: false,
    });
    let mut id = 1;
    let mut push = |stack, labels: &[(&str, &str)]| {
        snapshot.tasks.push(task(id, stack, labels));
        id += 1;
    };
    for _ in 0..3 {
        push(a, &[("worker", "alpha")]);
    }
    for _ in 0..2 {
        push(a, &[]);
    }
    push(b, &[("region", "eu"), ("kind", "io")]);
    RealSnapshot { snapshot, sym }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn s(p: &Profile, i: i64) -> &str {
    &p.string_table[i as usize]
}

fn function_name(p: &Profile, id: u64) -> &str {
    let f = p.function.iter().find(|f| f.id == id).unwrap();
    s(p, f.name)
}

#[test]
fn pprof_round_trip() {
    let RealSnapshot { snapshot, mut sym } = real_snapshot();
    let mut gz = Vec::new();
    write_pprof(&snapshot, &mut sym, &mut gz).unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let p = Profile::decode(&gunzip(&gz)[..]).unwrap();
    assert_eq!(p, build_profile(&snapshot, &mut sym));

    assert_eq!(p.string_table[0], "");
    assert_eq!(p.sample_type.len(), 1);
    assert_eq!(s(&p, p.sample_type[0].r#type), "goroutine");
    assert_eq!(s(&p, p.sample_type[0].unit), "count");
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!((s(&p, pt.r#type), s(&p, pt.unit)), ("goroutine", "count"));
    assert_eq!(p.period, 1);
    assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);

    // Three samples: (A, worker=alpha) x3, (A, no labels) x2, (B, two labels) x1.
    assert_eq!(p.sample.len(), 3);
    let values: Vec<i64> = p.sample.iter().map(|x| x.value[0]).collect();
    assert_eq!(values, vec![3, 2, 1]);
    let labels = |i: usize| -> Vec<(String, String)> {
        p.sample[i]
            .label
            .iter()
            .map(|l| (s(&p, l.key).to_string(), s(&p, l.str).to_string()))
            .collect()
    };
    assert_eq!(labels(0), vec![("worker".into(), "alpha".into())]);
    assert!(labels(1).is_empty());
    assert_eq!(
        labels(2),
        vec![("kind".into(), "io".into()), ("region".into(), "eu".into())]
    );

    // Locations: one per distinct (address, kind); stack A has 4, stack B adds 2
    // (out_middle as an instruction pointer differs from out_middle+1 as a return
    // address; out_root+1 is shared).
    assert_eq!(p.sample[0].location_id.len(), 4);
    assert_eq!(p.sample[0].location_id, p.sample[1].location_id);
    assert_eq!(p.location.len(), 5);
    let loc = |id: u64| p.location.iter().find(|l| l.id == id).unwrap();
    let leaf = loc(p.sample[0].location_id[0]);
    assert!(function_name(&p, leaf.line[0].function_id).ends_with("out_leaf_wait"));
    assert!(leaf.line[0].line > 0);
    let inl = loc(p.sample[0].location_id[2]);
    assert_eq!(inl.line.len(), 2, "inlined frames as two lines");
    assert!(function_name(&p, inl.line[0].function_id).ends_with("out_inlined_helper"));
    assert!(function_name(&p, inl.line[1].function_id).ends_with("out_outer_with_inline"));

    // Functions deduplicated.
    let mut names: Vec<&str> = p.function.iter().map(|f| s(&p, f.name)).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);

    // Mappings: file name and build id; every location points at its mapping.
    let exe = std::env::current_exe().unwrap();
    let own_build_id = read_build_id(&std::fs::read(&exe).unwrap()).unwrap();
    let m = p
        .mapping
        .iter()
        .find(|m| m.memory_start <= leaf.address && leaf.address < m.memory_limit)
        .unwrap();
    assert_eq!(leaf.mapping_id, m.id);
    assert_eq!(Path::new(s(&p, m.filename)), exe.as_path());
    assert_eq!(s(&p, m.build_id), own_build_id);
    assert!(m.has_functions && m.has_filenames && m.has_line_numbers);
}

fn go_available() -> bool {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipping `go tool pprof` checks: `go` is not installed");
            false
        }
    }
}

fn go_pprof(file: &Path, flag: &str) -> String {
    let tmp = std::env::temp_dir();
    let out = Command::new("go")
        .args(["tool", "pprof", flag])
        .arg(file)
        .env("HOME", &tmp)
        .env("PPROF_TMPDIR", &tmp)
        .env("PPROF_BINARY_PATH", "/nonexistent")
        .output()
        .expect("run go tool pprof");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {flag} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gprof-rs-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn go_tool_pprof_reads_our_profile() {
    if !go_available() {
        return;
    }
    let RealSnapshot { snapshot, mut sym } = real_snapshot();
    let path = temp_file("goroutine.pb.gz");
    let mut f = std::fs::File::create(&path).unwrap();
    write_pprof(&snapshot, &mut sym, &mut f).unwrap();
    drop(f);

    let top = go_pprof(&path, "-top");
    assert!(top.contains("Type: goroutine"), "{top}");
    assert!(top.contains("out_leaf_wait"), "{top}");
    assert!(top.contains("out_middle"), "{top}");
    // 5 tasks sit in out_leaf_wait, 1 in out_middle, of 6.
    let leaf_line = top.lines().find(|l| l.contains("out_leaf_wait")).unwrap();
    assert!(leaf_line.trim_start().starts_with("5 "), "{top}");
    assert!(top.contains("of 6 total"), "{top}");

    let traces = go_pprof(&path, "-traces");
    for needle in [
        "out_leaf_wait",
        "out_middle",
        "out_inlined_helper",
        "out_outer_with_inline",
        "out_root",
        "out_inlined_helper (inline)",
    ] {
        assert!(traces.contains(needle), "{needle} missing from:\n{traces}");
    }
    // Labels are printed as `key:  value` above the sample's count.
    for (k, v) in [("worker", "alpha"), ("region", "eu"), ("kind", "io")] {
        assert!(
            traces
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{k}:")) && l.trim_end().ends_with(v)),
            "{k}:{v} missing from:\n{traces}"
        );
    }
    let three = traces.find("worker:").unwrap();
    assert!(
        traces[three..].trim_start()[..].contains("3   "),
        "{traces}"
    );
    // The inlined helper comes right before the function it was inlined into.
    let helper = traces.find("out_inlined_helper").unwrap();
    let outer = traces.find("out_outer_with_inline").unwrap();
    assert!(helper < outer, "{traces}");

    let tags = go_pprof(&path, "-tags");
    for needle in ["worker", "alpha", "region", "eu", "kind", "io"] {
        assert!(tags.contains(needle), "{needle} missing from:\n{tags}");
    }
    std::fs::remove_dir_all(path.parent().unwrap()).ok();
}

#[test]
fn text_formats_with_real_symbols() {
    let RealSnapshot {
        mut snapshot,
        mut sym,
    } = real_snapshot();
    let mut out = Vec::new();
    write_text(&snapshot, &mut sym, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let norm = normalize(&text);
    assert!(norm.starts_with("goroutine profile: total 6\n3 @ 0xADDR 0xADDR 0xADDR 0xADDR\n# labels: {\"worker\":\"alpha\"}\n#\t0xADDR\t"), "{text}");
    assert!(text.contains("out_leaf_wait+0x0\t"), "{text}");
    assert!(text.contains("output.rs:"), "{text}");

    snapshot.tasks[0].set_name("first");
    snapshot.tasks[0].wait_ns = 125 * 1_000_000_000;
    let mut out = Vec::new();
    write_tasks(&snapshot, &mut sym, &mut out).unwrap();
    let tasks = String::from_utf8(out).unwrap();
    assert!(
        tasks.starts_with("task 1 (\"first\") [chan receive, 2 minutes]:\n"),
        "{tasks}"
    );
    assert!(tasks.contains("\ntask 2 [chan receive]:\n"), "{tasks}");
    assert_eq!(tasks.matches("out_leaf_wait(...)\n").count(), 5, "{tasks}");
}

/// Replace every `0x<hex>` with `0xADDR`.
fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("0x") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 2..];
        let n = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        if n == 0 {
            out.push_str("0x");
        } else {
            out.push_str("0xADDR");
        }
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------
// Golden tests on a fully synthetic snapshot: fixed addresses, a symbolizer seeded
// with known frames (inlined frames, a frame without file, an unknown address).

fn frame(function: &str, file: Option<&str>, line: u32, entry: Option<u64>) -> SymFrame {
    SymFrame {
        function: function.into(),
        file: file.map(Into::into),
        line,
        entry,
    }
}

fn synthetic() -> (Snapshot, Symbolizer) {
    let mut sym = Symbolizer::new(LocalFiles);
    // Stack A: chan recv park (ip) <- inlined recv helper in worker <- task entry.
    sym.insert(
        0x401010,
        false,
        vec![frame(
            "target_runtime::park",
            Some("/rt/src/park.rs"),
            42,
            Some(0x401000),
        )],
    );
    sym.insert(
        0x402035,
        true,
        vec![
            frame(
                "app::Chan<T>::recv",
                Some("/app/src/chan.rs"),
                17,
                Some(0x402000),
            ),
            frame("app::worker", Some("/app/src/main.rs"), 30, Some(0x402000)),
        ],
    );
    sym.insert(
        0x403008,
        true,
        vec![frame("task_entry_trampoline", None, 0, Some(0x403000))],
    );
    // Stack B: sleeping in a C function with no debug info, caller unknown.
    sym.insert(
        0x7f0000001234,
        false,
        vec![frame("libc.so.6+0x1234", None, 0, None)],
    );
    sym.insert(
        0x404100,
        true,
        vec![frame(
            "app::sleeper",
            Some("/app/src/main.rs"),
            55,
            Some(0x404000),
        )],
    );
    // Spawn sites.
    sym.insert(
        0x405020,
        false,
        vec![frame(
            "app::main",
            Some("/app/src/main.rs"),
            12,
            Some(0x405000),
        )],
    );

    let mut snapshot = Snapshot {
        pid: 4242,
        time_unix_ns: 1,
        ..Default::default()
    };
    let a = snapshot.stacks.intern(Stack {
        addrs: vec![0x401010, 0x402035, 0x403008],
        incomplete: false,
    });
    let b = snapshot.stacks.intern(Stack {
        addrs: vec![0x7f0000001234, 0x404100],
        incomplete: true,
    });
    let spawn = std::sync::Arc::new(SpawnSite {
        file: Some("/app/src/main.rs".into()),
        line: 20,
        pc: 0x405020,
    });
    let t =
        |id: u64, stack: u32, state: u32, reason: u32, wait_ns: u64, labels: &[(&str, &str)]| {
            TaskRecord {
                state,
                wait_reason: reason,
                wait_ns,
                spawn: spawn.clone(),
                ..task(id, stack, labels)
            }
        };
    use gprof_abi::{TaskState as S, WaitReason as W};
    let mut root = t(1, a, S::RUNNING, W::NONE, 0, &[]);
    root.parent_id = 0;
    root.spawn = SpawnSite::default().into();
    root.set_name("main");
    let mut named = t(
        2,
        a,
        S::WAITING,
        W::CHAN_RECV,
        3 * 60_000_000_000 + 5,
        &[("shard", "7"), ("job", "ingest \"q\"")],
    );
    named.set_name("worker-2");
    snapshot.tasks = vec![
        root,
        named,
        t(
            3,
            a,
            S::WAITING,
            W::CHAN_RECV,
            59_000_000_000,
            &[("job", "ingest \"q\""), ("shard", "7")],
        ),
        t(4, b, S::WAITING, W::SLEEP, 0, &[]),
        t(5, a, S::RUNNABLE, W::NONE, 0, &[]),
    ];
    (snapshot, sym)
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/golden")
        .join(name)
}

/// Compare with the golden file; `GPROF_UPDATE_GOLDEN=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("GPROF_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (GPROF_UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "output differs from {} (GPROF_UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[test]
fn golden_text_debug1() {
    let (snapshot, mut sym) = synthetic();
    let mut out = Vec::new();
    write_text(&snapshot, &mut sym, &mut out).unwrap();
    check_golden("text.txt", &String::from_utf8(out).unwrap());
}

#[test]
fn golden_tasks_debug2() {
    let (snapshot, mut sym) = synthetic();
    let mut out = Vec::new();
    write_tasks(&snapshot, &mut sym, &mut out).unwrap();
    check_golden("tasks.txt", &String::from_utf8(out).unwrap());
}

#[test]
fn pprof_of_synthetic_snapshot() {
    let (snapshot, mut sym) = synthetic();
    let p = build_profile(&snapshot, &mut sym);
    // (A, job+shard) x2, (A, none) x2, (B, none) x1.
    let values: Vec<i64> = p.sample.iter().map(|x| x.value[0]).collect();
    assert_eq!(values, vec![2, 2, 1]);
    // Equal counts and stacks: the unlabelled group sorts first.
    assert_eq!(p.sample[0].label.len(), 0);
    assert_eq!(p.sample[1].label.len(), 2);
    assert_eq!(p.sample[0].location_id, p.sample[1].location_id);
    // No modules: locations without mapping, still symbolized.
    assert!(p.mapping.is_empty());
    assert!(p
        .location
        .iter()
        .all(|l| l.mapping_id == 0 && !l.line.is_empty()));
    let inl = p.location.iter().find(|l| l.address == 0x402035).unwrap();
    assert_eq!(inl.line.len(), 2);
    assert_eq!(inl.line[0].line, 17);
    assert_eq!(inl.line[1].line, 30);
}
