//! Which kernels run: the hand-written CPU fast paths, or their device-generic twins (the composed candle
//! ops that CUDA and Metal run). Every fast path asks [`cpu_fast`] before taking the CPU route, so a test
//! can run the generic twin on CPU and compare it with the fast path — the math a GPU will run is then
//! math that was checked here.
//!
//! The switch is per thread ([`with_generic`]), so tests running in parallel in one process do not see
//! each other's choice; `CROSSFEED_GENERIC_KERNELS=1` forces the generic path for a whole process.

use std::cell::Cell;
use std::sync::OnceLock;

use candle_core::Device;

thread_local! {
    static FORCE_GENERIC: Cell<bool> = const { Cell::new(false) };
}

fn generic_from_env() -> bool {
    static ENV: OnceLock<bool> = OnceLock::new();
    *ENV.get_or_init(|| {
        std::env::var("CROSSFEED_GENERIC_KERNELS").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"))
    })
}

/// True when the generic twin is forced on this thread or process (tests then also check CUDA's rules,
/// see [`crate::cuda_rules`]).
pub fn generic_forced() -> bool {
    FORCE_GENERIC.with(Cell::get) || generic_from_env()
}

/// True when a CPU fast path may run on `device`: the device is the CPU and the generic twin is not forced.
pub fn cpu_fast(device: &Device) -> bool {
    device.is_cpu() && !FORCE_GENERIC.with(Cell::get) && !generic_from_env()
}

/// Runs `f` with every fast path on this thread replaced by its device-generic twin.
pub fn with_generic<R>(f: impl FnOnce() -> R) -> R {
    let before = FORCE_GENERIC.with(|c| c.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCE_GENERIC.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}
