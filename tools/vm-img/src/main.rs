//! vm-img: disk images, compatible with qemu-img.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match vm_img::parse(args.clone()) {
        Ok(c) => c,
        Err(e) => {
            // qemu-img exits 1 on usage errors; help and version exit 0.
            let code = i32::from(e.use_stderr());
            match vm_img::usage_error(&e, &args) {
                Some(text) => eprint!("{text}"),
                None => {
                    let _ = e.print();
                }
            }
            std::process::exit(code);
        }
    };
    std::process::exit(vm_img::run(&cli));
}
