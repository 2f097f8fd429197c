//! `rkube-runc`: rkube's runtime under runc's name and argument order, for tools that name a runc
//! binary (`podman --runtime`, containerd's runc shim `BinaryName`, OCI validation suites). It
//! runs the `rkubelet` beside it with `rkube-runc` as its argv[0], which selects that interface.
//! A program of its own rather than a symbolic link, because some callers resolve the path they
//! are given (a link would then run as plain `rkubelet`).

use std::os::unix::process::CommandExt;

fn main() {
    let rkubelet = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("rkubelet"),
        Err(e) => {
            eprintln!("rkube-runc: cannot find this program's path: {e}");
            std::process::exit(127);
        }
    };
    let error =
        std::process::Command::new(&rkubelet).arg0("rkube-runc").args(std::env::args_os().skip(1)).exec();
    eprintln!("rkube-runc: cannot run {} (it belongs beside rkube-runc): {error}", rkubelet.display());
    std::process::exit(127);
}
