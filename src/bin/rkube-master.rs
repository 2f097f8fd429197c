//! `rkube-master`: the thin control plane.
fn main() {
    println!("rkube-master {}", env!("CARGO_PKG_VERSION"));
}
