
use builtin;
use str;

set edit:completion:arg-completer[gprof-rs] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'gprof-rs'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'gprof-rs'= {
            cand -h 'Print help'
            cand --help 'Print help'
            cand attach 'Take one consistent snapshot of every task of a running process'
            cand record 'Sample every task of a process periodically and write one aggregated profile'
            cand top 'A live view of what the tasks of a process are doing, refreshed every second'
            cand demo 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)'
            cand generate 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
            cand demo-service 'The demo''s target service (started by `gprof-rs demo`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gprof-rs;attach'= {
            cand -o 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)'
            cand --output 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)'
            cand --format 'Output format: `pprof` (binary, needs -o), `text` (counts per distinct stack with labels, like Go''s debug=1) or `tasks` (one block per task with its state, wait time and creator, like Go''s debug=2). Default: text, or pprof with -o'
            cand --mode '`concurrent`: two short stops, tasks recorded while the target runs (default). `stw`: everything inside one stop, like Go''s old synchronous profile; the pause then grows with the number of tasks'
            cand --blocked-longer-than 'Leak hunting: keep only the tasks that have been waiting (on a channel, a lock, a sleep, I/O, ...) for longer than DUR, e.g. `10m`, `1h`, `0s` for every waiting task. The text format then shows each group''s oldest wait, as `# oldest wait: 3m12s (task 42)`'
            cand --wait 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`'
            cand --stats 'Print the pause lengths, how long the session between them lasted, task counts, bytes copied and the tool''s own memory to standard error'
            cand --system 'Include the runtime''s own system tasks'
            cand --all-frames 'Keep the runtime''s context-switch and task-entry frames, which are hidden by default because every task has them'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'gprof-rs;record'= {
            cand -o 'Write the profile to FILE (`-` for standard output)'
            cand --output 'Write the profile to FILE (`-` for standard output)'
            cand --format 'Output format: `pprof` (gzip''d profile.proto for `go tool pprof`, with sample values samples/count and wall/nanoseconds and a `state` label), `flamegraph` (SVG), `folded` (collapsed stacks `root;...;leaf count`, for flamegraph.pl or inferno) or `speedscope` (JSON: one profile for all tasks, then one per state). Default: from FILE''s extension (.svg, .folded/.txt, .json), else pprof; folded for `-o -`'
            cand -r 'Snapshots per second [default: 20]. Each snapshot pauses the target twice for a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates above ~100 Hz rarely pay off'
            cand --rate 'Snapshots per second [default: 20]. Each snapshot pauses the target twice for a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates above ~100 Hz rarely pay off'
            cand -i 'Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`'
            cand --interval 'Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`'
            cand -d 'Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds). Without --duration or --samples, record until Ctrl-C or until the target exits'
            cand --duration 'Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds). Without --duration or --samples, record until Ctrl-C or until the target exits'
            cand -n 'Stop after N snapshots'
            cand --samples 'Stop after N snapshots'
            cand --mode '`concurrent`: two short stops per snapshot, tasks recorded while the target runs (default). `stw`: each snapshot inside one stop that grows with the task count'
            cand --wait 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`'
            cand --system 'Include the runtime''s own system tasks'
            cand --all-frames 'Keep the runtime''s context-switch and task-entry frames (hidden by default)'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'gprof-rs;top'= {
            cand -i 'Time between refreshes, e.g. `1s`, `500ms`, `5s`'
            cand --interval 'Time between refreshes, e.g. `1s`, `500ms`, `5s`'
            cand -n 'Without a terminal: stop after N views (with a terminal, q quits)'
            cand --iterations 'Without a terminal: stop after N views (with a terminal, q quits)'
            cand --mode '`concurrent` (default) or `stw`, as for `attach`'
            cand --system 'Include the runtime''s own system tasks'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'gprof-rs;demo'= {
            cand --out-dir 'Directory to write demo.pb.gz and demo.svg into'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'gprof-rs;generate'= {
            cand --man-dir 'Directory for the man page'
            cand --completions-dir 'Directory for the completions'
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'gprof-rs;demo-service'= {
            cand -h 'Print help'
            cand --help 'Print help'
        }
        &'gprof-rs;help'= {
            cand attach 'Take one consistent snapshot of every task of a running process'
            cand record 'Sample every task of a process periodically and write one aggregated profile'
            cand top 'A live view of what the tasks of a process are doing, refreshed every second'
            cand demo 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)'
            cand generate 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
            cand demo-service 'The demo''s target service (started by `gprof-rs demo`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gprof-rs;help;attach'= {
        }
        &'gprof-rs;help;record'= {
        }
        &'gprof-rs;help;top'= {
        }
        &'gprof-rs;help;demo'= {
        }
        &'gprof-rs;help;generate'= {
        }
        &'gprof-rs;help;demo-service'= {
        }
        &'gprof-rs;help;help'= {
        }
    ]
    $completions[$command]
}
