//! Opening a CUDA device without a panic. The CUDA binary (`make cuda`) loads libcuda, cuBLAS and cuRAND
//! with dlopen() when a device is created, and cudarc *panics* (it returns no error) when one of them is
//! missing; a plain build has no CUDA backend at all. Both become errors that say what to do.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use candle_core::Device;

use crate::{ModelError, Result};

// The plain release profile aborts on panic (Cargo.toml): a CUDA binary built with it could not catch
// cudarc's panic below.
#[cfg(all(feature = "cuda", panic = "abort"))]
compile_error!(
    "the CUDA build must unwind on panic: build it with scripts/cuda-build.sh (`make cuda`), or set CARGO_PROFILE_RELEASE_PANIC=unwind"
);

thread_local! {
    // Set while this thread opens a device: its panic is turned into an error, so the hook stays quiet.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Installs (once) a panic hook that is silent for the thread opening a device and otherwise defers to
/// the hook that was there before; per thread, so a test panicking elsewhere still prints.
fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// `Device::new_cuda(ordinal)`, with every way it can fail turned into an error naming the fix.
pub fn open_cuda(ordinal: usize) -> Result<Device> {
    if !candle_core::utils::cuda_is_available() {
        return Err(ModelError::Invalid(format!(
            "device cuda:{ordinal}: this crossfeed binary was built without CUDA support; build the CUDA one with \
             `make cuda` (writes target/cuda/release/crossfeed, see README \"CUDA\"), or use --device cpu"
        )));
    }
    install_quiet_hook();
    QUIET.with(|q| q.set(true));
    let opened = panic::catch_unwind(AssertUnwindSafe(|| Device::new_cuda(ordinal)));
    QUIET.with(|q| q.set(false));
    let why = match opened {
        Ok(Ok(device)) => return Ok(device),
        Ok(Err(e)) => e.to_string(),
        Err(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the CUDA libraries could not be loaded".into()),
    };
    Err(ModelError::Invalid(format!(
        "no CUDA device could be opened (cuda:{ordinal}): {}\n\
         The CUDA binary loads libcuda.so.1 (NVIDIA driver, CUDA 13.0 = driver >= 580) and libcublas.so.13, \
         libcublasLt.so.13, libcurand.so.10 at run time: put their directory first on LD_LIBRARY_PATH \
         (README \"CUDA\"), or use --device cpu",
        // cudarc appends every file name it tried; the first clause names the library that is missing.
        why.lines().next().unwrap_or("").split(" - searched for").next().unwrap_or("").trim()
    )))
}
