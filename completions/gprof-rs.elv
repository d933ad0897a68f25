
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
            cand demo 'Run the bundled demo service (thousands of tasks), snapshot it, write demo.pb.gz'
            cand generate 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
            cand demo-service 'The demo''s target service (started by `gprof-rs demo`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gprof-rs;attach'= {
            cand -o 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)'
            cand --output 'Write the profile to FILE instead of standard output. With -o the default format is pprof (gzip''d profile.proto that `go tool pprof` reads)'
            cand --format 'Output format: `pprof` (binary, needs -o), `text` (counts per distinct stack with labels, like Go''s debug=1) or `tasks` (one block per task with its state, wait time and creator, like Go''s debug=2). Default: text, or pprof with -o'
            cand --mode '`concurrent`: two short stops, tasks recorded while the target runs (default). `stw`: everything inside one stop, like Go''s old synchronous profile; the pause then grows with the number of tasks'
            cand --stats 'Print the pause lengths, task counts and bytes copied to standard error'
            cand --system 'Include the runtime''s own system tasks'
            cand --all-frames 'Keep the runtime''s context-switch and task-entry frames, which are hidden by default because every task has them'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
        }
        &'gprof-rs;demo'= {
            cand --out-dir 'Directory to write demo.pb.gz into'
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
            cand demo 'Run the bundled demo service (thousands of tasks), snapshot it, write demo.pb.gz'
            cand generate 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)'
            cand demo-service 'The demo''s target service (started by `gprof-rs demo`)'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'gprof-rs;help;attach'= {
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
