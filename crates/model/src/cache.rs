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
    let x = x.narrow(2, 0, len)?;
    if capacity == len {
        return x.contiguous();
    }
    let mut dims = x.dims().to_vec();
    dims[2] = capacity - len;
    Tensor::cat(&[&x, &Tensor::zeros(dims, x.dtype(), x.device())?], 2)
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
        match slot {
            None => *slot = Some(Layer::with_capacity(k, v, t, t + GROW)?),
            Some(l) => {
                if l.len + t > l.capacity() {
                    *l = Layer::with_capacity(&l.k, &l.v, l.len, l.len + t + GROW)?;
                }
                l.k.slice_set(&k.contiguous()?, 2, l.len)?;
                l.v.slice_set(&v.contiguous()?, 2, l.len)?;
                l.len += t;
            }
        }
        match slot {
            Some(l) => l.views(),
            None => unreachable!("the slot was filled above"),
        }
    }

    /// Keeps only the batch rows in `rows` (sequences still running), for continuous batching.
    pub fn select_rows(&mut self, rows: &Tensor) -> Result<()> {
        for l in self.layers.iter_mut().flatten() {
            l.k = l.k.index_select(rows, 0)?;
            l.v = l.v.index_select(rows, 0)?;
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
        let left_pad = |x: &Tensor, by: usize| -> Result<Tensor> {
            if by == 0 {
                return Ok(x.clone());
            }
            let mut dims = x.dims().to_vec();
            dims[2] = by;
            Tensor::cat(&[&Tensor::zeros(dims, x.dtype(), x.device())?, x], 2)
        };
        for (mine, theirs) in self.layers.iter_mut().zip(&other.layers) {
            if let (Some(a), Some(b)) = (mine.as_mut(), theirs.as_ref()) {
                let ((ak, av), (bk, bv)) = (a.views()?, b.views()?);
                let (pa, pb) = (len - a.len, len - b.len);
                let k = Tensor::cat(&[&left_pad(&ak, pa)?, &left_pad(&bk, pb)?], 0)?;
                let v = Tensor::cat(&[&left_pad(&av, pa)?, &left_pad(&bv, pb)?], 0)?;
                *a = Layer::with_capacity(&k, &v, len, len + GROW)?;
            }
        }
        Ok(())
    }

    /// The filled `(k, v)` of each layer (None for a layer not yet run).
    pub fn layers(&self) -> Result<Vec<Option<(Tensor, Tensor)>>> {
        self.layers.iter().map(|l| l.as_ref().map(Layer::views).transpose()).collect()
    }
}
