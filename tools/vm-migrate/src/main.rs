//! vm-migrate: live migration.

use clap::Parser;

fn main() {
    let cli = match vm_migrate::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(vm_migrate::run(&cli));
}
