use std::process::ExitCode;

fn main() -> ExitCode {
    alertmanager_wecom::cli::main()
}
