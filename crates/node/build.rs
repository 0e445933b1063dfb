//! Build script: rpath to the venv's libtorch, and force-link libtorch_cuda when present.

include!("../model/torch_rpath.rs");

fn main() {
    emit_torch_link_args();
}
