//! Key/value cache for incremental decoding: per layer a `[B, H, capacity, Dh]` buffer for keys and one
//! for values, of which the first `len` columns are filled. A decode step writes its column in place
//! (`slice_set`) instead of concatenating, which would copy the whole cache of every layer at every
//! step; the views handed to attention are narrowed buffers, which candle's matmul reads as they are.
//!
//! The buffers are written in place, so a cache must only be used with a model whose forward records
//! no autograd graph ([`crate::CausalLm::frozen`]): a recorded graph would point into memory that the
//! next step overwrites.

use candle_core::{Result, Tensor};

/// Columns added whenever a buffer is full (amortises the copy that growing costs).
const GROW: usize = 128;

#[derive(Debug, Clone)]
struct Layer {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl Layer {
    fn with_capacity(k: &Tensor, v: &Tensor, len: usize, capacity: usize) -> Result<Self> {
        Ok(Self { k: reserve(k, len, capacity)?, v: reserve(v, len, capacity)?, len })
    }

    fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    fn views(&self) -> Result<(Tensor, Tensor)> {
        Ok((self.k.narrow(2, 0, self.len)?, self.v.narrow(2, 0, self.len)?))
    }
}

/// A contiguous `[B, H, capacity, Dh]` buffer whose first `len` columns are `x`'s first `len` columns.
fn reserve(x: &Tensor, len: usize, capacity: usize) -> Result<Tensor> {
    pad_columns(&x.narrow(2, 0, len)?, 0, capacity - len)
}

/// `x: [B, H, T, Dh]` with `before` zero columns in front and `after` behind, as one contiguous tensor.
fn pad_columns(x: &Tensor, before: usize, after: usize) -> Result<Tensor> {
    let zeros = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[2] = n;
        Tensor::zeros(dims, x.dtype(), x.device())
    };
    match (before, after) {
        (0, 0) => x.contiguous(),
        (0, a) => Tensor::cat(&[x, &zeros(a)?], 2),
        (b, 0) => Tensor::cat(&[&zeros(b)?, x], 2),
        (b, a) => Tensor::cat(&[&zeros(b)?, x, &zeros(a)?], 2),
    }
}

#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<Layer>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> Self {
        Self { layers: vec![None; n_layers] }
    }

    /// Number of cached positions (0 when empty).
    pub fn past_len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |l| l.len)
    }

    /// Rows (sequences) in the cache (0 when empty).
    pub fn batch_size(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |l| l.k.dims()[0])
    }

    /// Appends this step's keys/values `[B, H, t, Dh]` for `layer` and returns views of the full
    /// `(k, v)` to attend over.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let t = k.dims()[2];
        let slot = &mut self.layers[layer];
        let l = match slot {
            None => slot.insert(Layer::with_capacity(k, v, t, t + GROW)?),
            Some(l) => {
                if l.len + t > l.capacity() {
                    *l = Layer::with_capacity(&l.k, &l.v, l.len, l.len + t + GROW)?;
                }
                crate::cuda_rules::slice_set(&l.k, &k.contiguous()?, 2, l.len)?;
                crate::cuda_rules::slice_set(&l.v, &v.contiguous()?, 2, l.len)?;
                l.len += t;
                l
            }
        };
        l.views()
    }

    /// Keeps only the batch rows in `rows` (sequences still running), for continuous batching.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            l.k = crate::cuda_rules::index_select(&l.k, rows, 0)?;
            l.v = crate::cuda_rules::index_select(&l.v, rows, 0)?;
        }
        Ok(())
    }

    /// Drops the first `n` cached columns of every row (columns that every row masks out).
    pub fn trim_front(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        for l in self.layers.iter_mut().flatten() {
            let len = l.len - n;
            let (k, v) = (l.k.narrow(2, n, len)?, l.v.narrow(2, n, len)?);
            *l = Layer::with_capacity(&k, &v, len, l.capacity() - n)?;
        }
        Ok(())
    }

    /// Stacks `other`'s rows under this cache's. The shorter of the two is left-padded with zero
    /// columns so both end at the same column (the caller masks the padding out). An empty cache
    /// becomes `other`.
    pub fn extend_rows(&mut self, other: &KvCache) -> Result<()> {
        if self.batch_size() == 0 {
            *self = other.clone();
            return Ok(());
        }
        let len = self.past_len().max(other.past_len());
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            if let (Some(a), Some(b)) = (mine.as_mut(), theirs.as_ref()) {
                let ((ak, av), (bk, bv)) = (a.views()?, b.views()?);
                let (pa, pb) = (len - a.len, len - b.len);
                let stack = |x: &Tensor, y: &Tensor| -> Result<Tensor> {
                    Tensor::cat(&[&pad_columns(x, pa, GROW)?, &pad_columns(y, pb, GROW)?], 0)
                };
                *a = Layer { k: stack(&ak, &bk)?, v: stack(&av, &bv)?, len };
            }
        }
        Ok(())
    }

    /// The filled `(k, v)` of each layer (None for a layer not yet run).
    pub fn layers(&self) -> Result<Vec<Option<(Tensor, Tensor)>>> {
        self.layers.iter().map(|l| l.as_ref().map(Layer::views).transpose()).collect()
    }
}
