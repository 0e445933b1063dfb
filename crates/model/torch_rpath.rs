// Build-script helper: point the rpath at libtorch and keep libtorch_cuda linked.
// (Plain `//` comments: this file is `include!`d into build scripts, where `//!` is not allowed.)
//
// Other crates' `build.rs` pull this in with `include!("../model/torch_rpath.rs")` and call
// `emit_torch_link_args()`. It is an include, not a crate, because `cargo:rustc-link-arg` only
// applies to the package whose build script prints it (its own bins, tests and examples).
//
// What it does:
// 1. Finds libtorch's lib dir the way torch-sys 0.24 does: `$LIBTORCH/lib` if `LIBTORCH` is set,
//    else it asks the interpreter torch-sys uses (`python` when `VIRTUAL_ENV` is set, else
//    `python3`, found on PATH) where the `torch` package lives; `$PYTHON_SYS_EXECUTABLE` is
//    tried after that (torch-sys 0.24 itself ignores it).
// 2. Emits `-Wl,-rpath,<libdir>` so binaries and tests run with no `LD_LIBRARY_PATH`.
// 3. When `libtorch_cuda.so` is there, emits `-Wl,--no-as-needed -ltorch_cuda -Wl,--as-needed`:
//    no Rust code references a symbol in libtorch_cuda, so `--as-needed` would drop it and CUDA
//    would silently be unavailable (tch-rs issue 980).
// If no lib dir is found it prints a cargo warning and emits nothing; torch-sys then fails with
// its own, clearer error.

#[allow(dead_code)]
fn torch_lib_dir_from(python: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    let output = std::process::Command::new(python)
        .args(["-c", "import torch, os; print(os.path.dirname(torch.__file__))"])
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let root = String::from_utf8(output.stdout).ok()?;
    let lib = std::path::PathBuf::from(root.trim()).join("lib");
    lib.is_dir().then_some(lib)
}

#[allow(dead_code)]
fn torch_lib_dir() -> Option<std::path::PathBuf> {
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH", "PYTHON_SYS_EXECUTABLE", "VIRTUAL_ENV", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(root) = std::env::var_os("LIBTORCH") {
        let lib = std::path::PathBuf::from(root).join("lib");
        if lib.is_dir() {
            return Some(lib);
        }
    }
    let torch_sys_python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let mut candidates = vec![std::ffi::OsString::from(torch_sys_python)];
    if let Some(python) = std::env::var_os("PYTHON_SYS_EXECUTABLE") {
        candidates.push(python);
    }
    candidates.iter().find_map(|python| torch_lib_dir_from(python))
}

#[allow(dead_code)]
fn emit_torch_link_args() {
    let Some(lib) = torch_lib_dir() else {
        println!("cargo:warning=libtorch lib dir not found (set LIBTORCH or put the venv on PATH); no rpath set");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let is_linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    if is_linux && lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
