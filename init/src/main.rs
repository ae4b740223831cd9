//! berth's PID 1. Until the real init lands (issue #4) this only announces
//! itself, so that images can already carry the binary built from this tree.

fn main() {
    println!("berth-init {}", env!("CARGO_PKG_VERSION"));
}
