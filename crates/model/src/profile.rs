//! Where a step's time goes: wall time per CPU fast-path op and per training phase, for
//! `crossfeed bench train --profile` (the per-op side of the comparison with torch's profiler in
//! `scripts/bench_train.py --profile`). Off unless [`enable`]d: then each op costs one relaxed atomic
//! load. Spans do not nest by design: ops are leaves, phases (`phase.*`) enclose them and are reported
//! apart, and time in a phase not covered by any op is candle's own kernels (element-wise ops, copies,
//! casts, embedding lookups) and allocation.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<BTreeMap<&'static str, Entry>> = Mutex::new(BTreeMap::new());

/// Totals of one op or phase since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Entry {
    pub calls: u64,
    pub secs: f64,
    /// Matmul FLOPs the op did (0 where it does none), for GFLOP/s per op.
    pub flops: f64,
}

/// Turns recording on or off for the whole process.
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// A running span; its time is added to its name's entry when dropped.
pub struct Span {
    name: &'static str,
    flops: f64,
    start: Instant,
}

/// Starts timing `name` (with the matmul FLOPs it will do) when profiling is on.
pub fn span(name: &'static str, flops: f64) -> Option<Span> {
    ON.load(Ordering::Relaxed).then(|| Span { name, flops, start: Instant::now() })
}

impl Drop for Span {
    fn drop(&mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        // A poisoned table only loses profile numbers, never a result.
        if let Ok(mut t) = TABLE.lock() {
            let e = t.entry(self.name).or_default();
            e.calls += 1;
            e.secs += secs;
            e.flops += self.flops;
        }
    }
}

/// The totals recorded so far, by name; clears them.
pub fn take() -> BTreeMap<&'static str, Entry> {
    TABLE.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_record_only_when_enabled() {
        enable(false);
        drop(span("t.off", 1.0));
        enable(true);
        drop(span("t.on", 2.0));
        drop(span("t.on", 3.0));
        enable(false);
        let t = take();
        assert!(!t.contains_key("t.off"));
        let e = t["t.on"];
        assert_eq!((e.calls, e.flops), (2, 5.0));
        assert!(take().is_empty());
    }
}
