//! Device selection.
//!
//! The CUDA build (`cargo xtask cuda-build`, see `xtask/src/cuda.rs`) puts
//! cudarc in its run-time loading mode: the binary links no CUDA library
//! and starts on any machine, and the driver (`libcuda.so.1`), cuBLAS,
//! cuRAND and NVRTC are opened with `dlopen` on first use. cudarc *panics*
//! when a library cannot be opened, so the driver library is looked for
//! first and a missing one is reported as [`LoadError::DeviceUnavailable`];
//! any other panic while opening the device is caught and reported the same
//! way. (A plain `cargo build --features cuda` gets candle's default, link-time
//! binding instead: that binary needs the driver to start at all.)

use std::path::Path;

use candle_core::Device;

use crate::config::DeviceKind;
use crate::error::LoadError;

/// Whether the NVIDIA driver library (`libcuda.so.1`) can be found by the
/// dynamic loader: `LD_LIBRARY_PATH`, the usual library folders, and the
/// loader cache `/etc/ld.so.cache`.
#[must_use]
pub fn cuda_driver_present() -> bool {
    const NAMES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];
    const DIRS: [&str; 6] = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/nvidia/lib64",
        "/usr/lib/wsl/lib",
    ];
    let env_dirs: Vec<String> = std::env::var("LD_LIBRARY_PATH")
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let in_dirs = env_dirs
        .iter()
        .map(String::as_str)
        .chain(DIRS)
        .any(|d| NAMES.iter().any(|n| Path::new(d).join(n).exists()));
    in_dirs
        || std::fs::read("/etc/ld.so.cache")
            .map(|cache| {
                cache
                    .windows(NAMES[0].len())
                    .any(|w| w == NAMES[0].as_bytes())
            })
            .unwrap_or(false)
}

/// Opens the requested device.
pub(crate) fn open(kind: DeviceKind) -> Result<Device, LoadError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda => open_cuda(),
    }
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Device, LoadError> {
    if !cuda_driver_present() {
        return Err(LoadError::DeviceUnavailable(
            "libcuda.so.1 (the NVIDIA driver library) was not found; install the NVIDIA driver, \
             add its folder to LD_LIBRARY_PATH, or set `device = \"cpu\"`"
                .into(),
        ));
    }
    std::panic::catch_unwind(|| Device::new_cuda(0))
        .map_err(|panic| {
            let what = crate::error::panic_message(panic.as_ref());
            LoadError::DeviceUnavailable(format!(
                "the CUDA runtime panicked while opening device 0 ({what}); check the driver \
                 installation (`nvidia-smi`) or set `device = \"cpu\"`"
            ))
        })?
        .map_err(|e| {
            LoadError::DeviceUnavailable(format!(
                "CUDA device 0 could not be opened: {e}; set `device = \"cpu\"` to run on the CPU"
            ))
        })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Device, LoadError> {
    Err(LoadError::DeviceUnavailable(
        "this build has no CUDA support; rebuild with `--features cuda` or set `device = \"cpu\"`"
            .into(),
    ))
}

/// What the health evaluation is told about the GPU: nothing expected on
/// the CPU; on CUDA, used and total memory as the driver reports them (never
/// invented: a failed read is `Unreadable` with the driver's reason).
pub(crate) fn gpu_observation(device: &Device) -> embeddings_health::GpuObservation {
    use embeddings_health::GpuObservation;
    if device.is_cpu() {
        GpuObservation::NotExpected
    } else if device.is_cuda() {
        read_cuda_memory(device)
    } else {
        GpuObservation::Unreadable {
            reason: "reading this accelerator's memory is not supported".into(),
        }
    }
}

#[cfg(feature = "cuda")]
fn read_cuda_memory(device: &Device) -> embeddings_health::GpuObservation {
    use embeddings_health::GpuObservation;
    let read = device
        .as_cuda_device()
        .map_err(|e| e.to_string())
        .and_then(|d| {
            d.cuda_stream()
                .context()
                .mem_get_info()
                .map_err(|e| e.to_string())
        });
    match read {
        Ok((free, total)) => GpuObservation::Reading {
            used_bytes: total.saturating_sub(free) as u64,
            total_bytes: total as u64,
        },
        Err(reason) => GpuObservation::Unreadable {
            reason: format!("cuMemGetInfo failed: {reason}"),
        },
    }
}

#[cfg(not(feature = "cuda"))]
fn read_cuda_memory(_device: &Device) -> embeddings_health::GpuObservation {
    embeddings_health::GpuObservation::Unreadable {
        reason: "this build has no CUDA support, so GPU memory cannot be read".into(),
    }
}
