//! The CUDA toolkit from PyPI, and the CUDA build of the server.
//!
//! NVIDIA publishes the CUDA compiler toolchain as Python wheels; installed
//! with `pip install --target`, they unpack to one `nvidia/cu13/` folder laid
//! out like a CUDA installation (`bin/nvcc`, `nvvm/`, `include/`, `lib/`),
//! which serves as `CUDA_ROOT`. So any machine with Python and access to
//! PyPI can compile the `cuda` feature, with or without a GPU. The versions
//! are pinned below; they live under `target/cuda-toolkit/` (git-ignored).
//!
//! # Linking without the driver
//!
//! candle-core 0.11 asks `cudarc` for `dynamic-linking`: the binary would
//! name `libcuda.so.1` (the driver), cuBLAS, cuRAND and NVRTC as `NEEDED`,
//! and could not even start on a machine without them. cudarc can instead
//! resolve every CUDA symbol at run time with `libloading` (its
//! `dynamic-loading` mode), but cargo features only add up, and its build
//! script refuses both at once. The CUDA build therefore sets
//! `--cfg feature="dynamic-loading"` through `RUSTFLAGS` with an explicit
//! `--target`, under which `RUSTFLAGS` reach the compiled crates and not
//! build scripts: cudarc's library code loads the libraries at run time,
//! while its build script still asks the linker for `-lcuda`, `-lcublas`, ...
//! Those are satisfied by empty stub libraries in `lib/stubs/` (where cudarc
//! looks), and since nothing references them, the linker's `--as-needed`
//! (rustc's default) drops them. candle's kernels library needs the CUDA
//! runtime, which is linked statically (`libcudart_static.a` from the
//! runtime wheel, offered as `lib/stubs/libcudart.a`); it loads the driver
//! itself on first use. The result starts anywhere; opening the device
//! without a driver is a clean `DeviceUnavailable` (see the pipeline's
//! `device.rs`), and `cargo xtask ci` checks both the `NEEDED` list and that
//! behaviour.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::{Result, project_root, run_checked};

/// What compiling the `cuda` feature needs: nvcc, ptxas and fatbinary;
/// cicc and libdevice; the CUDA headers and the runtime (static, for the
/// link); CCCL's headers. CUDA 13.4: the newest release `cudarc` 0.19
/// knows (its build script refuses newer ones).
const BUILD_WHEELS: [&str; 5] = [
    "nvidia-cuda-nvcc==13.4.92",
    "nvidia-nvvm==13.4.92",
    "nvidia-cuda-crt==13.4.92",
    "nvidia-cuda-runtime==13.4.92",
    "nvidia-cuda-cccl==13.3.5.0.6",
];

/// What running on a GPU needs besides the driver: the libraries cudarc
/// loads at run time, as released with CUDA 13.4 (cuBLAS and cuBLASLt are
/// one wheel).
const RUNTIME_WHEELS: [&str; 3] = [
    "nvidia-cublas==13.8.0.4",
    "nvidia-curand==10.4.4.72",
    "nvidia-cuda-nvrtc==13.4.92",
];

/// The GPU architecture the kernels are compiled for when
/// `CUDA_COMPUTE_CAP` is not set: 90, Hopper (H100 / H200). One
/// architecture keeps the build to minutes.
const DEFAULT_COMPUTE_CAP: &str = "90";

/// The libraries cudarc's build script names for the linker; each gets an
/// empty stub (see the module documentation).
const STUBBED: [&str; 5] = ["cuda", "nvrtc", "curand", "cublas", "cublasLt"];

/// Files whose absence means the install is broken, relative to the root.
const EXPECTED: [&str; 8] = [
    "bin/nvcc",
    "bin/ptxas",
    "bin/fatbinary",
    "nvvm/bin/cicc",
    "nvvm/libdevice/libdevice.10.bc",
    "include/cuda_runtime.h",
    "include/cccl/cub/cub.cuh",
    "lib/libcudart_static.a",
];

/// An installed toolkit.
pub(crate) struct Toolkit {
    /// The `nvidia/cu13` folder: `CUDA_ROOT`.
    pub(crate) root: PathBuf,
    /// Whether the run-time libraries are installed too.
    runtime: bool,
}

/// Where the toolkit is kept.
fn cache_dir() -> PathBuf {
    project_root().join("target").join("cuda-toolkit")
}

/// Installs the pinned toolkit (and, with `runtime`, the run-time
/// libraries) when missing or different; checks it either way.
pub(crate) fn ensure(runtime: bool) -> Result<Toolkit> {
    let dir = cache_dir();
    let site = dir.join("site");
    let root = site.join("nvidia").join("cu13");
    let mut wanted: Vec<&str> = BUILD_WHEELS.to_vec();
    if runtime {
        wanted.extend(RUNTIME_WHEELS);
    }
    let stamp = dir.join("installed.txt");
    let stamp_text = format!("{}\nstubs: {}\n", wanted.join("\n"), STUBBED.join(" "));
    let installed = std::fs::read_to_string(&stamp).ok();
    // An install with the run-time libraries also serves a build.
    let current = installed
        .as_deref()
        .is_some_and(|t| t == stamp_text || (!runtime && has_all(t, &wanted)));
    if !current {
        let started = Instant::now();
        println!(
            "xtask: installing the CUDA toolkit from PyPI into {}",
            site.display()
        );
        let python = find_pip()?;
        let wheels = dir.join("wheels");
        std::fs::create_dir_all(&wheels)
            .map_err(|e| format!("cannot create {}: {e}", wheels.display()))?;
        run_checked(
            Command::new(&python)
                .args(["-m", "pip", "download", "--no-deps", "--quiet", "--dest"])
                .arg(&wheels)
                .args(&wanted),
            "pip download of the CUDA wheels",
            "check that PyPI (pypi.org, files.pythonhosted.org) can be reached",
        )?;
        forget_install(&stamp, &site)?;
        run_checked(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--no-deps",
                    "--no-index",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--root-user-action=ignore",
                ])
                .arg("--find-links")
                .arg(&wheels)
                .arg("--target")
                .arg(&site)
                .args(&wanted),
            "pip install of the CUDA wheels",
            "the downloaded wheels are in target/cuda-toolkit/wheels; delete them to fetch again",
        )?;
        make_stubs(&root)?;
        std::fs::write(&stamp, &stamp_text)
            .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
        println!("xtask: CUDA toolkit installed in {:.1?}", started.elapsed());
    }
    let toolkit = Toolkit { root, runtime };
    toolkit.check()?;
    Ok(toolkit)
}

/// Removes the stamp, then the old install. The stamp goes first: an
/// install interrupted from here on is reinstalled by the next call, never
/// taken for the old one.
fn forget_install(stamp: &Path, site: &Path) -> Result<()> {
    if stamp.exists() {
        std::fs::remove_file(stamp)
            .map_err(|e| format!("cannot remove {}: {e}", stamp.display()))?;
    }
    if site.exists() {
        std::fs::remove_dir_all(site)
            .map_err(|e| format!("cannot remove {}: {e}", site.display()))?;
    }
    Ok(())
}

/// Whether the stamp `text` lists every wheel of `wanted`.
fn has_all(text: &str, wanted: &[&str]) -> bool {
    wanted.iter().all(|w| text.lines().any(|l| l == *w))
}

/// A Python with pip.
fn find_pip() -> Result<String> {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.to_owned());
        }
    }
    Err(
        "the CUDA toolkit is installed from PyPI with pip, and no `python3 -m pip` works here; \
         on Debian: apt-get install python3-pip"
            .to_owned(),
    )
}

/// Empty shared libraries for the names in [`STUBBED`], and the static
/// runtime as `libcudart.a`, in `lib/stubs/`.
fn make_stubs(root: &Path) -> Result {
    let stubs = root.join("lib").join("stubs");
    std::fs::create_dir_all(&stubs)
        .map_err(|e| format!("cannot create {}: {e}", stubs.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    for name in STUBBED {
        let out = stubs.join(format!("lib{name}.so"));
        run_checked(
            Command::new(&cc)
                .args(["-shared", "-x", "c", "/dev/null", "-o"])
                .arg(&out),
            &format!("`{cc}` (making the link stub {})", out.display()),
            "a C compiler is needed (nvcc uses it as the host compiler too)",
        )?;
    }
    let cudart = stubs.join("libcudart.a");
    std::fs::copy(root.join("lib").join("libcudart_static.a"), &cudart)
        .map_err(|e| format!("cannot write {}: {e}", cudart.display()))?;
    Ok(())
}

impl Toolkit {
    /// Checks the files a build needs and that nvcc runs and is 13.4.
    fn check(&self) -> Result {
        let mut expected: Vec<String> = EXPECTED.iter().map(|&p| p.to_owned()).collect();
        expected.extend(STUBBED.iter().map(|n| format!("lib/stubs/lib{n}.so")));
        expected.push("lib/stubs/libcudart.a".to_owned());
        if self.runtime {
            expected.extend(
                [
                    "libcublas.so.13",
                    "libcublasLt.so.13",
                    "libcurand.so.10",
                    "libnvrtc.so.13",
                ]
                .iter()
                .map(|l| format!("lib/{l}")),
            );
        }
        let missing: Vec<&String> = expected
            .iter()
            .filter(|p| !self.root.join(p).exists())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the CUDA toolkit in {} lacks {missing:?}; delete target/cuda-toolkit and run again",
                self.root.display()
            ));
        }
        let out = Command::new(self.root.join("bin").join("nvcc"))
            .arg("--version")
            .output()
            .map_err(|e| format!("could not run nvcc: {e}"))?;
        let version = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !version.contains("release 13.4") {
            return Err(format!(
                "nvcc --version did not report CUDA 13.4 ({}): {version}",
                out.status
            ));
        }
        Ok(())
    }

    /// The environment for cargo (and anything it runs) to build the `cuda`
    /// feature with this toolkit. Warnings are denied always (as CI's clippy
    /// step does for the CPU build), not only in CI: a change of `RUSTFLAGS`
    /// rebuilds every crate, candle's kernels included (a quarter of an hour
    /// on two cores), so the CUDA build has one set of flags.
    pub(crate) fn build_env(&self) -> Vec<(&'static str, OsString)> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.root.join("bin")];
        dirs.extend(std::env::split_paths(&path));
        let path = std::env::join_paths(dirs).unwrap_or(path);
        // Space-separated, as `RUSTFLAGS` is read: no flag here has a space.
        let mut flags: Vec<String> = ["--cfg", "feature=\"dynamic-loading\"", "-D", "warnings"]
            .map(str::to_owned)
            .into();
        if let Ok(user) = std::env::var("RUSTFLAGS") {
            flags.extend(user.split_whitespace().map(str::to_owned));
        }
        vec![
            ("PATH", path),
            ("CUDA_ROOT", self.root.clone().into_os_string()),
            (
                "CUDA_COMPUTE_CAP",
                std::env::var_os("CUDA_COMPUTE_CAP").unwrap_or_else(|| DEFAULT_COMPUTE_CAP.into()),
            ),
            ("RUSTFLAGS", flags.join(" ").into()),
        ]
    }

    /// The folder with the run-time libraries, for `LD_LIBRARY_PATH`.
    pub(crate) fn lib_dir(&self) -> PathBuf {
        self.root.join("lib")
    }
}

/// The target triple of this machine (`rustc -vV`); the CUDA build names it
/// with `--target` so that `RUSTFLAGS` skip build scripts.
pub(crate) fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .map_err(|e| format!("could not run rustc -vV: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "rustc -vV printed no `host:` line".to_owned())
}

/// The CUDA build's own target folder: its `RUSTFLAGS` differ from the CPU
/// build's, so sharing `target/` would rebuild one or the other each time.
fn target_dir() -> PathBuf {
    project_root().join("target").join("cuda")
}

/// Whether `args` is `[flag]` (true) or empty (false); anything else is a
/// usage error.
fn only_flag(args: &[String], flag: &str, usage: &str) -> Result<bool> {
    match args {
        [] => Ok(false),
        [given] if given == flag => Ok(true),
        _ => Err(format!("usage: {usage}")),
    }
}

/// The cargo arguments that build the server with CUDA into
/// `target/cuda/`: `cargo <verb> <these>`.
pub(crate) fn cargo_args(release: bool) -> Result<Vec<String>> {
    let mut args = vec![
        "-p".to_owned(),
        "embeddings-server".to_owned(),
        "--features".to_owned(),
        "cuda".to_owned(),
        "--target".to_owned(),
        host_triple()?,
        "--target-dir".to_owned(),
        target_dir().to_string_lossy().into_owned(),
    ];
    if release {
        args.push("--release".to_owned());
    }
    Ok(args)
}

/// Where [`cargo_args`] puts the server binary.
pub(crate) fn server_binary(release: bool) -> Result<PathBuf> {
    Ok(target_dir()
        .join(host_triple()?)
        .join(if release { "release" } else { "debug" })
        .join("embeddings-server"))
}

/// `cargo xtask cuda-toolkit [--runtime]`: installs and checks the toolkit
/// and prints how to use it.
pub(crate) fn run_toolkit(args: &[String]) -> Result {
    let runtime = only_flag(args, "--runtime", "cargo xtask cuda-toolkit [--runtime]")?;
    let toolkit = ensure(runtime)?;
    println!("xtask: CUDA toolkit ready: {}", toolkit.root.display());
    println!("# the environment of the CUDA build (`cargo xtask cuda-build` sets it):");
    for (name, value) in toolkit.build_env() {
        if name == "PATH" {
            println!(
                "export PATH=\"{}:$PATH\"",
                toolkit.root.join("bin").display()
            );
        } else {
            println!("export {name}='{}'", value.to_string_lossy());
        }
    }
    println!("# then: cargo build {}", cargo_args(true)?.join(" "));
    if runtime {
        println!(
            "# to run on a GPU: LD_LIBRARY_PATH={} {}",
            toolkit.lib_dir().display(),
            server_binary(true)?.display()
        );
    }
    Ok(())
}

/// `cargo xtask cuda-build [--release]`: builds the server with CUDA.
pub(crate) fn run_build(args: &[String]) -> Result {
    let release = only_flag(args, "--release", "cargo xtask cuda-build [--release]")?;
    let binary = build(release)?;
    println!("xtask: {}", binary.display());
    Ok(())
}

/// Builds the server with CUDA; returns the binary.
pub(crate) fn build(release: bool) -> Result<PathBuf> {
    let toolkit = ensure(false)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let args = cargo_args(release)?;
    println!("xtask: cargo build {}", args.join(" "));
    run_checked(
        Command::new(cargo)
            .arg("build")
            .args(&args)
            .envs(toolkit.build_env())
            .current_dir(project_root()),
        "the CUDA build",
        "see the compiler's messages above",
    )?;
    server_binary(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_install_that_fails_to_clear_leaves_no_stamp() {
        let dir = std::env::temp_dir().join(format!("xtask-forget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (stamp, site) = (dir.join("installed.txt"), dir.join("site"));
        std::fs::write(&stamp, "old").unwrap();
        // A file where the install folder should be: removing it fails.
        std::fs::write(&site, "not a folder").unwrap();
        assert!(forget_install(&stamp, &site).is_err());
        assert!(!stamp.exists(), "the next call must reinstall");
        std::fs::remove_file(&site).unwrap();
        std::fs::create_dir_all(site.join("nvidia")).unwrap();
        std::fs::write(&stamp, "old").unwrap();
        forget_install(&stamp, &site).unwrap();
        assert!(!stamp.exists() && !site.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stamp_with_the_runtime_serves_a_build() {
        let mut all: Vec<&str> = BUILD_WHEELS.to_vec();
        all.extend(RUNTIME_WHEELS);
        let text = all.join("\n");
        assert!(has_all(&text, &BUILD_WHEELS));
        assert!(!has_all(&BUILD_WHEELS.join("\n"), &RUNTIME_WHEELS));
    }

    #[test]
    fn only_flag_takes_the_flag_or_nothing() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(only_flag(&args(&[]), "--release", "u"), Ok(false));
        assert_eq!(only_flag(&args(&["--release"]), "--release", "u"), Ok(true));
        assert!(only_flag(&args(&["--relase"]), "--release", "u").is_err());
        assert!(only_flag(&args(&["--release", "x"]), "--release", "u").is_err());
    }

    #[test]
    fn every_wheel_is_pinned_exactly() {
        for w in BUILD_WHEELS.iter().chain(&RUNTIME_WHEELS) {
            let (name, version) = w.split_once("==").expect("pinned with ==");
            assert!(name.starts_with("nvidia-"), "{w}");
            assert!(version.split('.').all(|p| p.parse::<u32>().is_ok()), "{w}");
        }
    }
}
