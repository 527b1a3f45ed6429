//! vm-run: run KVM virtual machines and manage their lifecycle.

use clap::Parser;

fn main() {
    // One malloc arena: the VM's threads allocate little, and an arena per
    // thread would add its first pages to the VMM's resident set.
    // SAFETY: mallopt only tunes the allocator; called before any thread.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    let cli = match vm_run::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(vm_run::run(&cli));
}
