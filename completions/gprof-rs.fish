# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_gprof_rs_global_optspecs
    string join \n h/help
end

function __fish_gprof_rs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_gprof_rs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_gprof_rs_using_subcommand
    set -l cmd (__fish_gprof_rs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -s h -l help -d 'Print help'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "attach" -d 'Take one consistent snapshot of every task of a running process'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "record" -d 'Sample every task of a process periodically and write one aggregated profile'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "top" -d 'A live view of what the tasks of a process are doing, refreshed every second'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "demo" -d 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "generate" -d 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "demo-service" -d 'The demo\'s target service (started by `gprof-rs demo`)'
complete -c gprof-rs -n "__fish_gprof_rs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -s o -l output -d 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip\'d profile.proto that `go tool pprof` reads)' -r -F
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l format -d 'Output format: `pprof` (binary, needs -o), `text` (counts per distinct stack with labels, like Go\'s debug=1) or `tasks` (one block per task with its state, wait time and creator, like Go\'s debug=2). Default: text, or pprof with -o' -r -f -a "pprof\t'gzip\'d pprof profile.proto'
text\t'Counts per distinct stack (Go\'s debug=1)'
tasks\t'One block per task (Go\'s debug=2)'"
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l mode -d '`concurrent`: two short stops, tasks recorded while the target runs (default). `stw`: everything inside one stop, like Go\'s old synchronous profile; the pause then grows with the number of tasks' -r -f -a "concurrent\t'Two short stops; tasks recorded while the target runs'
stw\t'One stop for the whole snapshot'"
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l blocked-longer-than -d 'Leak hunting: keep only the tasks that have been waiting (on a channel, a lock, a sleep, I/O, ...) for longer than DUR, e.g. `10m`, `1h`, `0s` for every waiting task. The text format then shows each group\'s oldest wait, as `# oldest wait: 3m12s (task 42)`' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l wait -d 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l stats -d 'Print the pause lengths, how long the session between them lasted, task counts, bytes copied and the tool\'s own memory to standard error'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l system -d 'Include the runtime\'s own system tasks'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -l all-frames -d 'Keep the runtime\'s context-switch and task-entry frames, which are hidden by default because every task has them'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand attach" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s o -l output -d 'Write the profile to FILE (`-` for standard output)' -r -F
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -l format -d 'Output format: `pprof` (gzip\'d profile.proto for `go tool pprof`, with sample values samples/count and wall/nanoseconds and a `state` label), `flamegraph` (SVG), `folded` (collapsed stacks `root;...;leaf count`, for flamegraph.pl or inferno) or `speedscope` (JSON: one profile for all tasks, then one per state). Default: from FILE\'s extension (.svg, .folded/.txt, .json), else pprof; folded for `-o -`' -r -f -a "pprof\t'gzip\'d pprof profile.proto'
flamegraph\t'Flame graph SVG'
folded\t'Collapsed stacks, one `root;...;leaf count` line each'
speedscope\t'speedscope JSON'"
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s r -l rate -d 'Snapshots per second [default: 20]. Each snapshot pauses the target twice for a fraction of a millisecond; walking thousands of tasks takes milliseconds, so rates above ~100 Hz rarely pay off' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s i -l interval -d 'Time between snapshots instead of --rate, e.g. `50ms`, `1s`, `2m`' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s d -l duration -d 'Stop after this long, e.g. `10s`, `500ms`, `2m`, `1h` (a bare number is seconds). Without --duration or --samples, record until Ctrl-C or until the target exits' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s n -l samples -d 'Stop after N snapshots' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -l mode -d '`concurrent`: two short stops per snapshot, tasks recorded while the target runs (default). `stw`: each snapshot inside one stop that grows with the task count' -r -f -a "concurrent\t'Two short stops; tasks recorded while the target runs'
stw\t'One stop for the whole snapshot'"
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -l wait -d 'If another profiler is attached to the target, wait for it to finish (at most DUR; 10s if no DUR is given) instead of failing with exit status 7. Give it after the PID, or as `--wait=DUR`' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -l system -d 'Include the runtime\'s own system tasks'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -l all-frames -d 'Keep the runtime\'s context-switch and task-entry frames (hidden by default)'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand record" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand top" -s i -l interval -d 'Time between refreshes, e.g. `1s`, `500ms`, `5s`' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand top" -s n -l iterations -d 'Without a terminal: stop after N views (with a terminal, q quits)' -r
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand top" -l mode -d '`concurrent` (default) or `stw`, as for `attach`' -r -f -a "concurrent\t'Two short stops; tasks recorded while the target runs'
stw\t'One stop for the whole snapshot'"
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand top" -l system -d 'Include the runtime\'s own system tasks'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand demo" -l out-dir -d 'Directory to write demo.pb.gz and demo.svg into' -r -F
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand demo" -s h -l help -d 'Print help'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand generate" -l man-dir -d 'Directory for the man page' -r -F
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand generate" -l completions-dir -d 'Directory for the completions' -r -F
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand generate" -s h -l help -d 'Print help'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand demo-service" -s h -l help -d 'Print help'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "attach" -d 'Take one consistent snapshot of every task of a running process'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "record" -d 'Sample every task of a process periodically and write one aggregated profile'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "top" -d 'A live view of what the tasks of a process are doing, refreshed every second'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "demo" -d 'Run the bundled demo service (thousands of tasks), snapshot it (demo.pb.gz) and record it for 3 s (demo.svg, a flame graph)'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "generate" -d 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "demo-service" -d 'The demo\'s target service (started by `gprof-rs demo`)'
complete -c gprof-rs -n "__fish_gprof_rs_using_subcommand help; and not __fish_seen_subcommand_from attach record top demo generate demo-service help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
