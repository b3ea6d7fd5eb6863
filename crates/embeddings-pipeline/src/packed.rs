//! Products against a weight packed once, at load time, for an AVX2/FMA or
//! AVX-512 micro-kernel.
//!
//! `gemm` (what `matmul.rs` calls) packs the right-hand matrix on every
//! call. For the encoder's weights that is pure waste, and at the 16 rows of
//! a one-sentence call it is a large share of the product: measured on the
//! project machine (one core, `16 × 384 · 384 × 1152`), `gemm` ran at
//! 59–66 GFLOP/s and the AVX2 kernel at 94–96, the core's FMA peak; at 3 680
//! rows 80 against 91 (`BENCHMARKS.md`, "CPU against ONNX Runtime").
//!
//! Layout: the `[k, n]` weight is cut into panels of [`PANEL`] columns
//! (the last one zero-padded); panel `p` holds, for each of the `k` rows,
//! its 16 values, contiguous: `data[(p·k + i)·16 + j] = w[i, 16p + j]`.
//!
//! Two micro-kernels read that one layout ([`Isa`]):
//! - AVX2/FMA: a `6 × 16` tile of the output in 12 `ymm` registers; each
//!   step reads one panel row (two registers) and broadcasts one input value
//!   per output row: 12 FMAs per 8 loads.
//! - AVX-512: up to `12 × 32` (two panels side by side) in 24 `zmm`
//!   registers; each step reads two panel rows (one register each) and
//!   broadcasts one value per row: 24 FMAs of 16 lanes per 14 loads. On
//!   CPUs with two 512-bit FMA units (AMD Zen 5, many Intel Xeons) that is
//!   twice the AVX2 kernel's arithmetic per cycle; the encoder takes it
//!   wherever AVX-512F is present.
//!
//! Only on x86-64 CPUs with AVX2 and FMA, or AVX-512F ([`available`]);
//! elsewhere the encoder keeps the plain layout and calls `gemm`, which has
//! kernels for every target.
// Off x86-64 nothing here runs (`available` is false), and the kernel's
// constants and the packed data are never read.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::ops::Range;

use candle_core::Result;

use crate::team::Shared;

/// Columns per panel: two 8-lane registers, or one 16-lane one.
pub(crate) const PANEL: usize = 16;
/// AVX2: output rows per micro-kernel call: 12 accumulators, 2 panel
/// registers and 1 broadcast use 15 of the 16 `ymm` registers.
const TILE_ROWS: usize = 6;
/// AVX-512: at most this many output rows per micro-kernel call: 24
/// accumulators (two panels), 2 panel registers and 1 broadcast use 27 of
/// the 32 `zmm` registers.
const TILE_ROWS_512: usize = 12;
/// Input rows per block: each block's rows (72 × 1 536 × 4 B = 442 KB at
/// MiniLM's widest) stay in L2 while every panel passes over them.
const BLOCK_ROWS: usize = 72;

/// The instruction sets the packed kernels are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 8-lane registers, AVX2 and FMA.
    Avx2,
    /// 16-lane registers, AVX-512F (which implies FMA).
    Avx512,
}

impl Isa {
    /// Whether this CPU has it (`std` caches the detection).
    fn present(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx2 => {
                    std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                }
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// The widest kernel this CPU runs, if any.
    pub(crate) fn best() -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.present())
    }
}

/// Whether this CPU runs a packed kernel (AVX2 and FMA, or AVX-512F, on
/// x86-64).
pub(crate) fn available() -> bool {
    Isa::best().is_some()
}

/// A `[k, n]` weight in panels, and the kernel that multiplies by it
/// (chosen when packed); see the module docs.
pub(crate) struct PackedWeight {
    data: Vec<f32>,
    k: usize,
    n: usize,
    /// `None`: this CPU has no packed kernel, and every product errors.
    isa: Option<Isa>,
}

impl std::fmt::Debug for PackedWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWeight")
            .field("k", &self.k)
            .field("n", &self.n)
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

impl PackedWeight {
    /// Packs the row-major `[k, n]` weight `w` for the widest kernel this
    /// CPU runs.
    pub(crate) fn pack(w: &[f32], k: usize, n: usize) -> Result<Self> {
        Self::pack_for(Isa::best(), w, k, n)
    }

    /// [`pack`](Self::pack) for the kernel `isa` (`None`, or one this CPU
    /// lacks: none, and products error): the tests run every kernel the
    /// CPU has, not only the widest.
    fn pack_for(isa: Option<Isa>, w: &[f32], k: usize, n: usize) -> Result<Self> {
        if k.checked_mul(n) != Some(w.len()) {
            candle_core::bail!("pack: {} values for a {k}x{n} weight", w.len());
        }
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0f32; panels * k * PANEL];
        for (p, panel) in data.chunks_exact_mut((k * PANEL).max(1)).enumerate() {
            let cols = p * PANEL..((p + 1) * PANEL).min(n);
            for (i, dst) in panel.chunks_exact_mut(PANEL).enumerate() {
                dst[..cols.len()].copy_from_slice(&w[i * n + cols.start..i * n + cols.end]);
            }
        }
        Ok(Self {
            data,
            k,
            n,
            isa: isa.filter(|isa| isa.present()),
        })
    }

    /// `dst = x · w`: `x` row-major `[rows, k]`, `dst` row-major with row
    /// stride `dst_rs ≥ n`. Errors, instead of touching memory, when a
    /// buffer is too small or the CPU lacks the kernel. (The encoder calls
    /// [`matmul_columns`](Self::matmul_columns) through `dense.rs`.)
    #[cfg(test)]
    fn matmul(&self, x: &[f32], rows: usize, dst: &mut [f32], dst_rs: usize) -> Result<()> {
        let dst = Shared::new(dst);
        // SAFETY: `dst` is borrowed mutably for this call alone, so no other
        // thread touches any of its columns.
        unsafe { self.matmul_columns(x, rows, &dst, dst_rs, 0..self.n) }
    }

    /// `dst[:, cols] = x · w[:, cols]`: one piece of a product whose other
    /// column blocks other threads write at the same time (`team.rs`).
    /// `cols` must start on a panel boundary and end on one or at `n`.
    ///
    /// # Safety
    /// While this runs, no other thread may read or write columns `cols` of
    /// `dst`'s first `rows` rows.
    pub(crate) unsafe fn matmul_columns(
        &self,
        x: &[f32],
        rows: usize,
        dst: &Shared<'_>,
        dst_rs: usize,
        cols: Range<usize>,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        if cols.start > cols.end
            || cols.end > n
            || !cols.start.is_multiple_of(PANEL)
            || !(cols.end.is_multiple_of(PANEL) || cols.end == n)
        {
            candle_core::bail!("packed matmul: columns {cols:?} of {n} are not whole panels");
        }
        if rows.checked_mul(k).is_none_or(|len| len > x.len()) {
            candle_core::bail!("packed matmul: {} input values for {rows}x{k}", x.len());
        }
        let dst_ok = rows == 0
            || (dst_rs >= n
                && (rows - 1)
                    .checked_mul(dst_rs)
                    .and_then(|a| a.checked_add(n))
                    .is_some_and(|end| end <= dst.len()));
        if !dst_ok {
            candle_core::bail!(
                "packed matmul: the output cannot hold {rows}x{n} at stride {dst_rs}"
            );
        }
        let Some(isa) = self.isa else {
            candle_core::bail!(
                "packed matmul: this CPU lacks the kernel's instructions; use the plain layout"
            );
        };
        if rows == 0 || cols.is_empty() {
            return Ok(());
        }
        let panels = cols.start / PANEL..cols.end.div_ceil(PANEL);
        // SAFETY: checked above: `x` holds `rows·k` values; every panel in
        // `panels` lies inside `data` (`panels.end ≤ ⌈n/16⌉`, `data` holds
        // ⌈n/16⌉ panels of `k·16`); the written elements `r·dst_rs + c`,
        // r < rows, c in `cols` (`cols.end ≤ n`) lie inside `dst`
        // (`(rows−1)·dst_rs + n ≤ len`) and are this piece's alone (the
        // caller's promise); the CPU has `isa`'s instructions (`pack_for`
        // keeps only a kernel it found present).
        unsafe { self.run(isa, x.as_ptr(), rows, dst.as_ptr(), dst_rs, panels) };
        Ok(())
    }

    /// The blocked loops over the micro-kernels: each block of rows stays
    /// in L2 while every panel passes over it; its rows are cut into
    /// near-equal tiles of at most the kernel's height (16 rows on AVX-512:
    /// 8 + 8, not 12 + 4), and the AVX-512 kernel takes two whole panels at
    /// a time where it can, one (a lone or partial last panel) otherwise.
    ///
    /// # Safety
    /// `x` readable for `rows·k` values; `panels.end ≤ ⌈n/16⌉`; for every
    /// `r < rows` and column `c < n` of those panels, `dst + r·dst_rs + c`
    /// valid for writes and not accessed by anyone else meanwhile; the CPU
    /// has `isa`'s instructions.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run(
        &self,
        isa: Isa,
        x: *const f32,
        rows: usize,
        dst: *mut f32,
        dst_rs: usize,
        panels: Range<usize>,
    ) {
        let (k, n) = (self.k, self.n);
        let (tile_rows, pairs) = match isa {
            Isa::Avx2 => (TILE_ROWS, false),
            Isa::Avx512 => (TILE_ROWS_512, true),
        };
        for r0 in (0..rows).step_by(BLOCK_ROWS) {
            let r1 = (r0 + BLOCK_ROWS).min(rows);
            let tiles = (r1 - r0).div_ceil(tile_rows);
            let mut p = panels.start;
            while p < panels.end {
                let col = p * PANEL;
                let width = PANEL.min(n - col);
                let step = if pairs && p + 1 < panels.end && col + 2 * PANEL <= n {
                    2
                } else {
                    1
                };
                // SAFETY: panel `p < ⌈n/16⌉` starts at `p·k·16` in `data`,
                // which holds `⌈n/16⌉·k·16` values; with `step` 2, panel
                // `p + 1 < panels.end` follows it, whole.
                let panel = unsafe { self.data.as_ptr().add(p * k * PANEL) };
                let mut r = r0;
                for t in 0..tiles {
                    // The first `(r1−r0) mod tiles` tiles get one row more;
                    // every tile has 1..=tile_rows rows.
                    let h = (r1 - r0) / tiles + usize::from(t < (r1 - r0) % tiles);
                    // SAFETY (both calls): rows `r..r+h` of `x` are inside
                    // its `rows·k` values; each panel read holds `k·16`
                    // values. Whole panels write `dst + (r+i)·dst_rs + c`,
                    // i < h, for their columns `c < n`: inside, by the
                    // contract. A partial one writes a local tile, and only
                    // its `width` valid columns are copied out.
                    unsafe {
                        let a = x.add(r * k);
                        if width == PANEL {
                            tile(isa, step, h, a, k, panel, dst.add(r * dst_rs + col), dst_rs);
                        } else {
                            let mut local = [0f32; TILE_ROWS_512 * PANEL];
                            tile(isa, 1, h, a, k, panel, local.as_mut_ptr(), PANEL);
                            for (i, row) in local.chunks_exact(PANEL).take(h).enumerate() {
                                std::ptr::copy_nonoverlapping(
                                    row.as_ptr(),
                                    dst.add((r + i) * dst_rs + col),
                                    width,
                                );
                            }
                        }
                    }
                    r += h;
                }
                p += step;
            }
        }
    }

    /// Never called: [`available`] is false off x86-64, and
    /// `matmul_columns` checks it first.
    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run(&self, _: Isa, _: *const f32, _: usize, _: *mut f32, _: usize, _: Range<usize>) {}
}

/// `match h { 1 => call::<1>, 2 => call::<2>, … }` over the listed row
/// counts (`R` names the constant in `call`), anything else a no-op.
#[cfg(target_arch = "x86_64")]
macro_rules! by_rows {
    ($h:expr, $R:ident in [$($r:literal),*] => $call:expr) => {
        match $h {
            $($r => {
                const $R: usize = $r;
                $call
            })*
            _ => {}
        }
    };
}

/// One tile of `h` rows (at most the kernel's height) and `panels` panels
/// (2 only on AVX-512), the row count made a constant so that each version
/// keeps its accumulators in registers.
///
/// # Safety
/// As [`kernel`]'s (AVX2) or [`kernel_512`]'s, for `R = h` and
/// `P = panels`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    isa: Isa,
    panels: usize,
    h: usize,
    a: *const f32,
    k: usize,
    panel: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    // SAFETY: the caller's contract, with the kernel and row count
    // dispatched.
    unsafe {
        match (isa, panels) {
            (Isa::Avx2, _) => {
                by_rows!(h, R in [1, 2, 3, 4, 5, 6] => kernel::<R>(a, panel, k, out, ldo))
            }
            (Isa::Avx512, 2) => by_rows!(
                h, R in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                    => kernel_512::<R, 2>(a, panel, k, out, ldo)
            ),
            (Isa::Avx512, _) => by_rows!(
                h, R in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
                    => kernel_512::<R, 1>(a, panel, k, out, ldo)
            ),
        }
    }
}

/// `out[i, 0..16] = Σ_s a[i·k + s] · panel[s·16 .. s·16+16]`, i < R.
///
/// # Safety
/// `a + i·k + s` readable for i < R, s < k; `panel` readable for `k·16`
/// values; `out + i·ldo + j` writable for i < R, j < 16; AVX2 and FMA
/// present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize>(
    a: *const f32,
    panel: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::{
        _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for s in 0..k {
        // SAFETY: `s < k`, so `panel + s·16 + 0..16` and `a + i·k + s`
        // (i < R) are readable by the contract.
        unsafe {
            let b0 = _mm256_loadu_ps(panel.add(s * PANEL));
            let b1 = _mm256_loadu_ps(panel.add(s * PANEL + 8));
            for (i, acc) in acc.iter_mut().enumerate() {
                let v = _mm256_broadcast_ss(&*a.add(i * k + s));
                acc[0] = _mm256_fmadd_ps(v, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(v, b1, acc[1]);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: `out + i·ldo + 0..16` is writable for i < R.
        unsafe {
            _mm256_storeu_ps(out.add(i * ldo), acc[0]);
            _mm256_storeu_ps(out.add(i * ldo + 8), acc[1]);
        }
    }
}

/// `out[i, 16q .. 16q+16] = Σ_s a[i·k + s] · panel_q[s·16 .. s·16+16]`,
/// i < R, q < P, where panel `q` starts `q·k·16` values after `panel`.
///
/// # Safety
/// `a + i·k + s` readable for i < R, s < k; `panel` readable for
/// `P·k·16` values; `out + i·ldo + j` writable for i < R, j < 16·P;
/// AVX-512F present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_512<const R: usize, const P: usize>(
    a: *const f32,
    panel: *const f32,
    k: usize,
    out: *mut f32,
    ldo: usize,
) {
    use std::arch::x86_64::{
        _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
    };
    let mut acc = [[_mm512_setzero_ps(); P]; R];
    for s in 0..k {
        // SAFETY: `s < k` and `q < P`, so `panel + q·k·16 + s·16 + 0..16`
        // and `a + i·k + s` (i < R) are readable by the contract.
        unsafe {
            let mut b = [_mm512_setzero_ps(); P];
            for (q, b) in b.iter_mut().enumerate() {
                *b = _mm512_loadu_ps(panel.add(q * k * PANEL + s * PANEL));
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let v = _mm512_set1_ps(*a.add(i * k + s));
                for (acc, b) in acc.iter_mut().zip(&b) {
                    *acc = _mm512_fmadd_ps(v, *b, *acc);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (q, acc) in acc.iter().enumerate() {
            // SAFETY: `out + i·ldo + 16q + 0..16` is writable for i < R,
            // q < P.
            unsafe { _mm512_storeu_ps(out.add(i * ldo + q * PANEL), *acc) };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::matmul::Mat;
    use crate::matmul::check::{self, assert_product, data, padded_output};
    use crate::team::{Team, split};

    /// `a · w` for row-major `a` `[m, k]` and `w` `[k, n]`.
    fn naive(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        check::naive(Mat::rows(a, m, k), Mat::rows(w, k, n))
    }

    /// The kernels this CPU runs. The CI machines have AVX2 and FMA; some
    /// have AVX-512 too. Elsewhere the encoder never packs, and the test
    /// says what did not run.
    fn kernels_here() -> Vec<Isa> {
        let here: Vec<Isa> = [Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|isa| isa.present())
            .collect();
        for isa in [Isa::Avx2, Isa::Avx512] {
            if !here.contains(&isa) {
                eprintln!("this CPU lacks {isa:?}: that packed kernel is not tested here");
            }
        }
        here
    }

    fn kernel_here() -> bool {
        !kernels_here().is_empty()
    }

    #[test]
    fn matches_a_naive_product_at_every_edge() {
        // Rows: partial tiles, a whole block and a partial one, AVX-512's
        // near-equal tiles (16 = 8 + 8, 150 = 72 + 72 + 6); columns: whole
        // panels, pairs of panels with a lone one after them, a partial last
        // panel alone or after a pair; k of 1 and 0.
        for isa in kernels_here() {
            eprintln!("kernel {isa:?}");
            for &(m, k, n) in &[
                (1, 1, 1),
                (5, 7, 3),
                (16, 384, 96),
                (13, 20, 48),
                (6, 33, 40),
                (25, 9, 50),
                (150, 64, 33),
                (3, 0, 17),
            ] {
                let a = data(m * k, 1);
                let w = data(k * n, 2);
                let packed = PackedWeight::pack_for(Some(isa), &w, k, n).unwrap();
                let mut got = padded_output(m, n);
                packed.matmul(&a, m, &mut got, n + 2).unwrap();
                let want = naive(&a, &w, m, k, n);
                assert_product(&got, &want, m, k, n);
            }
        }
    }

    #[test]
    fn column_pieces_written_by_a_team_equal_one_product() {
        if !kernel_here() {
            return;
        }
        let (m, k, n) = (16, 384, 1160);
        let a = data(m * k, 3);
        let packed = PackedWeight::pack(&data(k * n, 4), k, n).unwrap();
        let mut whole = vec![0f32; m * n];
        packed.matmul(&a, m, &mut whole, n).unwrap();
        for threads in [1, 2, 3] {
            let mut pieces = vec![f32::NAN; m * n];
            Team::run(threads, |team| {
                let dst = Shared::new(&mut pieces);
                let chunks = team.chunks();
                team.phase(&|p| {
                    let cols = split(n, chunks, p, PANEL);
                    // SAFETY: `split` gives each piece its own columns.
                    unsafe { packed.matmul_columns(&a, m, &dst, n, cols) }.unwrap();
                });
            });
            assert_eq!(pieces, whole, "{threads} threads");
        }
    }

    #[test]
    fn refuses_what_it_cannot_do_safely() {
        let w = data(12, 5);
        assert!(
            PackedWeight::pack(&w, 3, 5).is_err(),
            "12 values are not 3x5"
        );
        let packed = PackedWeight::pack(&w, 3, 4).unwrap();
        let a = data(6, 6);
        let mut d = vec![0f32; 8];
        // Too little input, too small an output, rows that would overlap.
        assert!(packed.matmul(&a[..5], 2, &mut d, 4).is_err());
        assert!(packed.matmul(&a, 2, &mut d[..7], 4).is_err());
        assert!(packed.matmul(&a, 2, &mut d, 3).is_err());
        let dst = Shared::new(&mut d);
        // Columns that are not whole panels, or past the weight.
        // SAFETY: one thread.
        unsafe {
            assert!(packed.matmul_columns(&a, 2, &dst, 4, 1..4).is_err());
            assert!(packed.matmul_columns(&a, 2, &dst, 4, 0..5).is_err());
        }
        if kernel_here() {
            assert!(packed.matmul(&a, 2, &mut d, 4).is_ok());
            for (g, w) in d.iter().zip(naive(&a, &w, 2, 3, 4)) {
                assert!((g - w).abs() <= 1e-5, "{g} vs {w}");
            }
        }
    }
}
