//! A linear layer of the CPU encoder (`bert.rs`), its product split across
//! the pass's thread team (`team.rs`), with its weight in the layout this
//! CPU's kernel reads: packed panels (`packed.rs`) with AVX-512F or
//! AVX2/FMA, plain for `gemm` (`matmul.rs`) without.

use candle_core::Result;
use candle_nn::VarBuilder;

use crate::matmul::{Mat, matmul_columns};
use crate::packed::{PANEL, PackedWeight};
use crate::team::{Shared, Team, split};

/// A product with at least this many rows is split by rows across the
/// team (each thread reads all of the weight, half of the input); smaller
/// ones by columns (kernel-tile aligned), so a 16-row product still splits.
const ROW_SPLIT_MIN_ROWS: usize = 128;
/// Column blocks are multiples of this (the packed kernel's panel, and the
/// `gemm` f32 kernel's tile).
const COL_ALIGN: usize = PANEL;

/// A weight in the layout this CPU's kernel reads, chosen once at load.
enum Weight {
    /// Panels for the AVX-512 or AVX2/FMA kernel (`packed.rs`), packed at
    /// load.
    Packed(PackedWeight),
    /// Row-major `[in, out]` for `gemm` (CPUs with neither).
    Plain(Vec<f32>),
}

/// A linear layer: `x · w` (weight `[in, out]`, i.e. PyTorch's transposed);
/// the bias is added by the pass after it.
pub(crate) struct Dense {
    w: Weight,
    /// The bias, `[out]`: added by the pass after the product.
    pub(crate) b: Vec<f32>,
    inp: usize,
    out: usize,
}

impl Dense {
    /// `w`: row-major `[inp, out]`; packed when `packed`.
    pub(crate) fn new(
        w: Vec<f32>,
        b: Vec<f32>,
        inp: usize,
        out: usize,
        packed: bool,
    ) -> Result<Self> {
        let w = if packed {
            Weight::Packed(PackedWeight::pack(&w, inp, out)?)
        } else {
            Weight::Plain(w)
        };
        Ok(Self { w, b, inp, out })
    }

    /// Loads `weight` (`[out, inp]`, PyTorch's layout) and `bias` from `vb`.
    pub(crate) fn load(vb: VarBuilder<'_>, inp: usize, out: usize, packed: bool) -> Result<Self> {
        let w = vb
            .get((out, inp), "weight")?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        Self::new(w, vb.get(out, "bias")?.to_vec1()?, inp, out, packed)
    }

    /// `dst[rows, out] = x[rows, inp] · w` (no bias) on one thread.
    fn product(&self, x: &[f32], rows: usize, dst: &mut [f32]) -> Result<()> {
        let dst = Shared::new(dst);
        // SAFETY: `dst` is borrowed mutably for this call alone.
        unsafe { self.columns(x, rows, &dst, 0..self.out) }
    }

    /// `dst[:, cols] = x · w[:, cols]` (row stride `out`, no bias), with
    /// the kernel of this weight's layout.
    ///
    /// # Safety
    /// While this runs, no other thread may read or write columns `cols` of
    /// `dst`'s first `rows` rows.
    unsafe fn columns(
        &self,
        x: &[f32],
        rows: usize,
        dst: &Shared<'_>,
        cols: std::ops::Range<usize>,
    ) -> Result<()> {
        // SAFETY (both): the caller's contract, passed on.
        unsafe {
            match &self.w {
                Weight::Packed(w) => w.matmul_columns(x, rows, dst, self.out, cols),
                Weight::Plain(w) => matmul_columns(
                    dst,
                    self.out,
                    cols,
                    Mat::rows(x, rows, self.inp),
                    Mat::rows(w, self.inp, self.out),
                ),
            }
        }
    }

    /// `dst[rows, out] = x[rows, inp] · w` (no bias), split across the
    /// team.
    pub(crate) fn apply(&self, team: &Team, x: &[f32], rows: usize, dst: &mut [f32]) -> Result<()> {
        let chunks = team.chunks();
        if chunks == 1 {
            return self.product(x, rows, dst);
        }
        let shared = Shared::new(dst);
        if rows >= ROW_SPLIT_MIN_ROWS {
            team.try_phase(&|piece| {
                let r = split(rows, chunks, piece, 1);
                let x = &x[r.start * self.inp..r.end * self.inp];
                // SAFETY: `split` gives each piece its own rows.
                match unsafe { shared.block(r.start * self.out..r.end * self.out) } {
                    Some(block) => self.product(x, r.len(), block),
                    None => Err(candle_core::Error::Msg(
                        "dense: rows past the output".into(),
                    )),
                }
            })
        } else {
            team.try_phase(&|piece| {
                let cols = split(self.out, chunks, piece, COL_ALIGN);
                // SAFETY: `split` gives each piece its own columns.
                unsafe { self.columns(x, rows, &shared, cols) }
            })
        }
    }
}
