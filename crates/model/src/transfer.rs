//! Host↔device traffic of the generic (GPU) path, counted. Every device-to-host read the project makes
//! (a host sync: it waits for the device queue) and every host-to-device upload goes through here, so a
//! test can pin how many a decode step and an optimizer step take (`crates/generate/tests/generic_twins.rs`,
//! `crates/train/tests/generic_twins.rs`) and they cannot grow unnoticed. The counts are per thread and
//! count on every device, the CPU included: they are what a GPU would do.

use std::cell::Cell;

use candle_core::{Device, Result, Shape, Tensor, WithDType};

thread_local! {
    static SYNCS: Cell<u64> = const { Cell::new(0) };
    static UPLOADS: Cell<u64> = const { Cell::new(0) };
}

/// (host syncs, uploads) made on this thread so far.
pub fn counts() -> (u64, u64) {
    (SYNCS.with(Cell::get), UPLOADS.with(Cell::get))
}

fn sync() {
    SYNCS.with(|c| c.set(c.get() + 1));
}

/// `Tensor::from_vec` on `dev`, counted as one upload.
pub fn upload<T: WithDType, S: Into<Shape>>(data: Vec<T>, shape: S, dev: &Device) -> Result<Tensor> {
    UPLOADS.with(|c| c.set(c.get() + 1));
    Tensor::from_vec(data, shape, dev)
}

/// `t.to_vec1()`, counted as one sync.
pub fn vec1<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
    sync();
    t.to_vec1()
}

/// `t.to_vec2()`, counted as one sync.
pub fn vec2<T: WithDType>(t: &Tensor) -> Result<Vec<Vec<T>>> {
    sync();
    t.to_vec2()
}

/// `t.to_scalar()`, counted as one sync.
pub fn scalar<T: WithDType>(t: &Tensor) -> Result<T> {
    sync();
    t.to_scalar()
}

/// `0..n` as u32 on `dev`, uploaded once per device and reused (a narrowed view of the longest one
/// asked for so far), so per-step index math (tie-safe argmax, dropout masks) uploads nothing.
pub fn arange_u32(n: usize, dev: &Device) -> Result<Tensor> {
    use std::sync::Mutex;
    static CACHE: Mutex<Vec<(Device, Tensor)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, t)) = cache.iter().find(|(d, t)| d.same_device(dev) && t.dim(0).is_ok_and(|len| len >= n)) {
        return t.narrow(0, 0, n);
    }
    let len = u32::try_from(n.max(1 << 16)).map_err(|_| candle_core::Error::Msg(format!("arange of {n} elements: over u32's range")))?;
    let t = upload((0..len).collect::<Vec<u32>>(), len as usize, dev)?;
    cache.retain(|(d, _)| !d.same_device(dev));
    cache.push((dev.clone(), t.clone()));
    t.narrow(0, 0, n)
}
