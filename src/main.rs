//! The `chute` binary: parse, run, map the result to an exit status.

fn main() {
    // argh takes UTF-8; a path that is not UTF-8 gets a clear error instead of a panic.
    let args: Result<Vec<String>, _> = std::env::args_os().map(|a| a.into_string()).collect();
    let code = match args {
        Ok(args) => chute::cli::main_with_args(args),
        Err(bad) => {
            eprintln!("chute: argument {bad:?} is not valid UTF-8");
            2
        }
    };
    std::process::exit(code);
}
