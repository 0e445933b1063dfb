//! Build script: rpath to the venv's libtorch (the binary links `model`, which names tch).

include!("../model/torch_rpath.rs");

fn main() {
    emit_torch_link_args();
}
