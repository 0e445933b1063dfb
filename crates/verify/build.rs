//! Build script: rpath to libtorch for verify's tests only (the tch-backed step executor test links `model` as a
//! dev-dependency); the library and the bin never link libtorch.

include!("../model/torch_rpath.rs");

fn main() {
    let Some(lib) = torch_lib_dir() else {
        println!("cargo:warning=libtorch lib dir not found; the tch executor test will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg-tests=-Wl,-rpath,{}", lib.display());
    let is_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if is_linux && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg-tests=-ltorch_cuda");
        println!("cargo:rustc-link-arg-tests=-Wl,--as-needed");
    }
}
