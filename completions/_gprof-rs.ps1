
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'gprof-rs' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'gprof-rs'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'gprof-rs' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Take one consistent snapshot of every task of a running process')
            [CompletionResult]::new('record', 'record', [CompletionResultType]::ParameterValue, 'Sample every task of a process periodically and write one aggregated profile')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'A live view of what the tasks of a process are doing, refreshed every second')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)')
            [CompletionResult]::new('demo-service', 'demo-service', [CompletionResultType]::ParameterValue, 'The demo''s target service (started by `gprof-rs demo`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gprof-rs;attach' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format: `pprof` (binary, needs -o), `text` (counts per distinct stack with labels, like Go''s debug=1) or `tasks` (one block per task with its state, wait time and creator, like Go''s debug=2). Default: text, or pprof with -o')
            [CompletionResult]::new('--mode', '--mode', [CompletionResultType]::ParameterName, '`concurrent`: two short stops, tasks recorded while the target runs (default). `stw`: everything inside one stop, like Go''s old synchronous profile; the pause then grows with the number of tasks')
            [CompletionResult]::new('--blocked-longer-than', '--blocked-longer-than', [CompletionResultType]::ParameterName, 'Leak hunting: keep only the tasks that have been waiting (on a channel, a lock, a sleep, I/O, ...) for longer than DUR, e.g. `10m`, `1h`, `0s` for every waiting task. The text format then shows each group''s oldest wait, as `# oldest wait: 3m12s (task 42)`')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`')
            [CompletionResult]::new('--stats', '--stats', [CompletionResultType]::ParameterName, 'Print the pause lengths, how long the session between them lasted, task counts, bytes copied and the tool''s own memory to standard error')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'Include the runtime''s own system tasks')
            [CompletionResult]::new('--all-frames', '--all-frames', [CompletionResultType]::ParameterName, 'Keep the runtime''s context-switch and task-entry frames, which are hidden by default because every task has them')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'gprof-rs;record' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write the profile to FILE (`-` for standard output)')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Write the profile to FILE (`-` for standard output)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format: `pprof` (gzip''d profile.proto for `go tool pprof`, with sample values samples/count and wall/nanoseconds and a `state` label), `flamegraph` (SVG), `folded` (collapsed stacks `root;...;leaf count`, for flamegraph.pl or inferno) or `speedscope` (JSON: one profile for all tasks, then one per state). Default: from FILE''s extension (.svg, .folded/.txt, .json), else pprof; folded for `-o -`')
            [CompletionResult]::new('-r', '-r', [CompletionResultType]::ParameterName, 'Snapshots per second [default: 20]. Each snapshot pauses the target twice for a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates above ~100 Hz rarely pay off')
            [CompletionResult]::new('--rate', '--rate', [CompletionResultType]::ParameterName, 'Snapshots per second [default: 20]. Each snapshot pauses the target twice for a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates above ~100 Hz rarely pay off')
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`')
            [CompletionResult]::new('-d', '-d', [CompletionResultType]::ParameterName, 'Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds). Without --duration or --samples, record until Ctrl-C or until the target exits')
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds). Without --duration or --samples, record until Ctrl-C or until the target exits')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Stop after N snapshots')
            [CompletionResult]::new('--samples', '--samples', [CompletionResultType]::ParameterName, 'Stop after N snapshots')
            [CompletionResult]::new('--mode', '--mode', [CompletionResultType]::ParameterName, '`concurrent`: two short stops per snapshot, tasks recorded while the target runs (default). `stw`: each snapshot inside one stop that grows with the task count')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'Include the runtime''s own system tasks')
            [CompletionResult]::new('--all-frames', '--all-frames', [CompletionResultType]::ParameterName, 'Keep the runtime''s context-switch and task-entry frames (hidden by default)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'gprof-rs;top' {
            [CompletionResult]::new('-i', '-i', [CompletionResultType]::ParameterName, 'Time between refreshes, e.g. `1s`, `500ms`, `5s`')
            [CompletionResult]::new('--interval', '--interval', [CompletionResultType]::ParameterName, 'Time between refreshes, e.g. `1s`, `500ms`, `5s`')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Without a terminal: stop after N views (with a terminal, q quits)')
            [CompletionResult]::new('--iterations', '--iterations', [CompletionResultType]::ParameterName, 'Without a terminal: stop after N views (with a terminal, q quits)')
            [CompletionResult]::new('--mode', '--mode', [CompletionResultType]::ParameterName, '`concurrent` (default) or `stw`, as for `attach`')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'Include the runtime''s own system tasks')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'gprof-rs;demo' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Directory to write demo.pb.gz and demo.svg into')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'gprof-rs;generate' {
            [CompletionResult]::new('--man-dir', '--man-dir', [CompletionResultType]::ParameterName, 'Directory for the man page')
            [CompletionResult]::new('--completions-dir', '--completions-dir', [CompletionResultType]::ParameterName, 'Directory for the completions')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'gprof-rs;demo-service' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            break
        }
        'gprof-rs;help' {
            [CompletionResult]::new('attach', 'attach', [CompletionResultType]::ParameterValue, 'Take one consistent snapshot of every task of a running process')
            [CompletionResult]::new('record', 'record', [CompletionResultType]::ParameterValue, 'Sample every task of a process periodically and write one aggregated profile')
            [CompletionResult]::new('top', 'top', [CompletionResultType]::ParameterValue, 'A live view of what the tasks of a process are doing, refreshed every second')
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)')
            [CompletionResult]::new('demo-service', 'demo-service', [CompletionResultType]::ParameterValue, 'The demo''s target service (started by `gprof-rs demo`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gprof-rs;help;attach' {
            break
        }
        'gprof-rs;help;record' {
            break
        }
        'gprof-rs;help;top' {
            break
        }
        'gprof-rs;help;demo' {
            break
        }
        'gprof-rs;help;generate' {
            break
        }
        'gprof-rs;help;demo-service' {
            break
        }
        'gprof-rs;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
