use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = turnstone::cli::Cli::parse();
    match turnstone::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
