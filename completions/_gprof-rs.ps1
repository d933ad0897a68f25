
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
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Run the bundled demo service (thousands of tasks), snapshot it, write demo.pb.gz')
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
            [CompletionResult]::new('--stats', '--stats', [CompletionResultType]::ParameterName, 'Print the pause lengths, task counts and bytes copied to standard error')
            [CompletionResult]::new('--system', '--system', [CompletionResultType]::ParameterName, 'Include the runtime''s own system tasks')
            [CompletionResult]::new('--all-frames', '--all-frames', [CompletionResultType]::ParameterName, 'Keep the runtime''s context-switch and task-entry frames, which are hidden by default because every task has them')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            break
        }
        'gprof-rs;demo' {
            [CompletionResult]::new('--out-dir', '--out-dir', [CompletionResultType]::ParameterName, 'Directory to write demo.pb.gz into')
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
            [CompletionResult]::new('demo', 'demo', [CompletionResultType]::ParameterValue, 'Run the bundled demo service (thousands of tasks), snapshot it, write demo.pb.gz')
            [CompletionResult]::new('generate', 'generate', [CompletionResultType]::ParameterValue, 'Write the man page and shell completions (for packagers; `man/` and `completions/` in the repository are generated with this)')
            [CompletionResult]::new('demo-service', 'demo-service', [CompletionResultType]::ParameterValue, 'The demo''s target service (started by `gprof-rs demo`)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'gprof-rs;help;attach' {
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
