//! vm-img: disk images, compatible with qemu-img.

fn main() {
    let cli = match vm_img::parse(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // qemu-img exits 1 on usage errors; help and version exit 0.
            let code = i32::from(e.use_stderr());
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(vm_img::run(&cli));
}
