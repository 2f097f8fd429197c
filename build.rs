//! Builds the freestanding `rkube-monitor` (see src/bin/rkube-monitor/main.rs).
//!
//! A `no_std` executable needs `panic=abort`: with the dev profile's unwinding, rustc refuses it
//! ("unwinding panics are not supported without std"), and the panic strategy cannot be set per
//! binary without rebuilding every dependency. So instead of a Cargo `[[bin]]`, this script
//! compiles it with the same rustc (and clippy, when run under `cargo clippy`), optimised for
//! size, static and not position-independent, and places it next to the crate's binaries in
//! `target/<profile>/`. On other targets it is skipped and the runtime supervises in-process.

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = "src/bin/rkube-monitor/main.rs";
const SOURCES: [&str; 3] =
    ["src/bin/rkube-monitor", "src/runtime/logfmt/cri.rs", "src/runtime/exit_report.rs"];
const LINK_ARGS: [&str; 5] = ["-nostartfiles", "-nostdlib", "-static", "-no-pie", "-Wl,--gc-sections"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for source in SOURCES {
        println!("cargo::rerun-if-changed={source}");
    }
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    if env("CARGO_CFG_TARGET_ARCH") != "x86_64" || env("CARGO_CFG_TARGET_OS") != "linux" {
        println!("cargo::warning=rkube-monitor is x86_64 Linux only; the runtime will supervise in-process");
        return;
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let built = out_dir.join("rkube-monitor");
    if let Err(message) = compile(&built) {
        fail(&format!("building rkube-monitor failed:\n{message}"));
    }
    match profile_dir(&out_dir) {
        Some(dir) => {
            install(&built, &dir.join("rkube-monitor"));
        }
        None => println!("cargo::warning=rkube-monitor built at {} but not installed", built.display()),
    }
}

/// Compiles the monitor into `output`; returns the compiler's messages on failure.
fn compile(output: &Path) -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // Under `cargo clippy` the workspace wrapper is clippy-driver: lint the monitor too.
    let mut command = match std::env::var("RUSTC_WORKSPACE_WRAPPER") {
        Ok(wrapper) if !wrapper.is_empty() => {
            let mut c = Command::new(wrapper);
            c.arg(&rustc);
            c
        }
        _ => Command::new(&rustc),
    };
    command
        .args(["--edition=2024", "--crate-type=bin", "--crate-name=rkube_monitor"])
        .args(["--target", &std::env::var("TARGET").unwrap_or_default()])
        .args(["-C", "panic=abort", "-C", "opt-level=s", "-C", "codegen-units=1", "-C", "debuginfo=0"])
        .args(["-C", "strip=symbols", "-C", "relocation-model=static"])
        .args(LINK_ARGS.iter().flat_map(|arg| ["-C".to_string(), format!("link-arg={arg}")]))
        .arg("-o")
        .arg(output)
        .arg(ROOT);
    let result = command.output().map_err(|e| format!("run {rustc}: {e}"))?;
    if result.status.success() {
        for line in String::from_utf8_lossy(&result.stderr).lines().filter(|l| !l.trim().is_empty()) {
            println!("cargo::warning=rkube-monitor: {line}");
        }
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&result.stderr).into_owned())
    }
}

/// `target/<profile>` (or `target/<triple>/<profile>`), from `<that>/build/<pkg>-<hash>/out`.
fn profile_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(Path::to_path_buf))?
}

/// Copies the monitor into place through a temp file and a rename, so a running copy is never
/// overwritten in place (ETXTBSY) and readers never see half a file.
fn install(built: &Path, target: &Path) {
    let tmp = target.with_extension("tmp-build");
    let result = std::fs::copy(built, &tmp).and_then(|_| std::fs::rename(&tmp, target));
    if let Err(e) = result {
        fail(&format!("install rkube-monitor at {}: {e}", target.display()));
    }
}

/// Stops the build with one clear message.
fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1)
}
