//! A checked, safe front for the `gemm` crate's f32 matrix product, the
//! kernel candle itself calls on the CPU.
//!
//! Called directly rather than through `Tensor::matmul` because candle 0.11
//! asks `num_cpus::get_physical()` for its thread count on every matmul,
//! which reads and parses `/proc/cpuinfo`: 36 reads per MiniLM forward pass,
//! measured at ~30 % of the wall time of a one-sentence call on the project
//! machine (`BENCHMARKS.md`, "CPU against ONNX Runtime"). Here the
//! products run on the calling thread and `team.rs` splits them across
//! threads.

use std::ops::Range;

use candle_core::Result;

use crate::team::Shared;

/// A matrix view over a slice: `rows × cols`, element `(r, c)` at
/// `r * rs + c * cs`. Strides are in elements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    /// Row-major `rows × cols` (row stride `cols`).
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// The transpose of a row-major `cols × rows` matrix, without copying.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, 1, rows)
    }

    /// Any strides (rows `rs` apart, columns `cs` apart).
    pub(crate) fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// Whether every element lies inside the slice.
    fn in_bounds(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.rs)
            .and_then(|a| (self.cols - 1).checked_mul(self.cs).map(|b| (a, b)))
            .and_then(|(a, b)| a.checked_add(b));
        last.is_some_and(|i| i < self.data.len())
    }
}

/// `dst = lhs · rhs` on the calling thread, with `dst` row-major
/// `lhs.rows × rhs.cols` and row stride `dst_rs` (≥ `rhs.cols`, so rows never overlap). Errors, instead of
/// touching memory, when the shapes disagree or a view leaves its slice.
pub(crate) fn matmul(dst: &mut [f32], dst_rs: usize, lhs: Mat<'_>, rhs: Mat<'_>) -> Result<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k {
        candle_core::bail!("matmul: {m}x{k} times {}x{n}", rhs.rows);
    }
    let dst_ok = m == 0
        || n == 0
        || (dst_rs >= n
            && (m - 1)
                .checked_mul(dst_rs)
                .and_then(|a| a.checked_add(n))
                .is_some_and(|end| end <= dst.len()));
    if !dst_ok || !lhs.in_bounds() || !rhs.in_bounds() {
        candle_core::bail!("matmul: a {m}x{k} · {k}x{n} view leaves its buffer");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for r in 0..m {
            dst[r * dst_rs..r * dst_rs + n].fill(0.0);
        }
        return Ok(());
    }
    // SAFETY: `in_bounds` checked the largest index of each view against
    // its slice (strides are non-negative, so it is the largest), and
    // `dst_ok` that of `dst`, with `dst_rs ≥ n` so the written rows are
    // disjoint; `dst` is a `&mut` borrow, so nothing else touches it.
    unsafe { gemm_into(dst.as_mut_ptr(), dst_rs, lhs, rhs) }
}

/// `dst[:, cols] = lhs · rhs[:, cols]`: one piece of a product whose other
/// column blocks other threads write at the same time (`team.rs`). `dst` is
/// row-major with row stride `dst_rs`; the checks are `matmul`'s.
///
/// # Safety
/// While this runs, no other thread may read or write columns `cols` of
/// `dst`'s first `lhs.rows` rows.
pub(crate) unsafe fn matmul_columns(
    dst: &Shared<'_>,
    dst_rs: usize,
    cols: Range<usize>,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
) -> Result<()> {
    let (m, k) = (lhs.rows, lhs.cols);
    if rhs.rows != k || cols.start > cols.end || cols.end > rhs.cols {
        candle_core::bail!(
            "matmul_columns: {m}x{k} times {}x{} at columns {cols:?}",
            rhs.rows,
            rhs.cols
        );
    }
    let n = cols.len();
    let sub = rhs
        .data
        .get(cols.start.saturating_mul(rhs.cs).min(rhs.data.len())..)
        .map(|data| Mat::strided(data, k, n, rhs.rs, rhs.cs));
    let dst_ok = m == 0
        || n == 0
        || (dst_rs >= cols.end
            && (m - 1)
                .checked_mul(dst_rs)
                .and_then(|a| a.checked_add(cols.end))
                .is_some_and(|end| end <= dst.len()));
    let Some(sub) = sub.filter(|v| v.in_bounds()) else {
        candle_core::bail!("matmul_columns: columns {cols:?} leave the right-hand matrix");
    };
    if !dst_ok || !lhs.in_bounds() {
        candle_core::bail!("matmul_columns: a {m}x{k} · {k}x{n} view leaves its buffer");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        for r in 0..m {
            // SAFETY: in bounds (`dst_ok`); these columns are this piece's.
            unsafe { dst.block(r * dst_rs + cols.start..r * dst_rs + cols.end) }
                .ok_or_else(|| candle_core::Error::Msg("matmul_columns: out of bounds".into()))?
                .fill(0.0);
        }
        return Ok(());
    }
    // SAFETY: the views were checked as in `matmul`; the written elements
    // `r·dst_rs + c`, r < m, c in `cols`, are inside `dst` (`dst_ok`) and
    // belong to this piece alone (the caller's promise).
    unsafe { gemm_into(dst.as_ptr().add(cols.start), dst_rs, lhs, sub) }
}

/// The `gemm` call: `dst = lhs · rhs`, `dst` row-major from `dst` with row
/// stride `dst_rs`, shapes non-empty.
///
/// # Safety
/// `lhs` and `rhs` in bounds (`Mat::in_bounds`), `lhs.cols == rhs.rows`,
/// and every `dst + r·dst_rs + c` (r < lhs.rows, c < rhs.cols) valid for
/// writes and not accessed by anyone else meanwhile.
unsafe fn gemm_into(dst: *mut f32, dst_rs: usize, lhs: Mat<'_>, rhs: Mat<'_>) -> Result<()> {
    let isize_of = |x: usize| {
        isize::try_from(x).map_err(|_| candle_core::Error::Msg("matmul: stride overflow".into()))
    };
    let (dst_rs, lhs_cs, lhs_rs, rhs_cs, rhs_rs) = (
        isize_of(dst_rs)?,
        isize_of(lhs.cs)?,
        isize_of(lhs.rs)?,
        isize_of(rhs.cs)?,
        isize_of(rhs.rs)?,
    );
    // SAFETY: `gemm` reads `lhs` at `r·lhs.rs + c·lhs.cs` (r < m, c < k),
    // `rhs` at `r·rhs.rs + c·rhs.cs` (r < k, c < n), all in bounds by the
    // caller's contract, and writes `dst + r·dst_rs + c` (r < m, c < n),
    // valid and exclusive by the same contract. With `read_dst = false` the
    // old contents of `dst` are never read (`alpha` is ignored) and
    // `dst = 1 · lhs·rhs`.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            1,
            dst_rs,
            false,
            lhs.data.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.data.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            // The caller's thread only: `team.rs` splits the work.
            gemm::Parallelism::None,
        );
    }
    Ok(())
}

/// Helpers shared by the tests of the product kernels (`matmul.rs`,
/// `packed.rs`).
#[cfg(test)]
pub(crate) mod check {
    use super::Mat;

    /// `n` values in `[-1, 1)`, a fixed function of `seed`.
    pub(crate) fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    /// `a · b`, row-major `[a.rows, b.cols]`, summed in `f64`.
    pub(crate) fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                let mut s = 0f64;
                for i in 0..a.cols {
                    s += f64::from(a.data[r * a.rs + i * a.cs])
                        * f64::from(b.data[i * b.rs + c * b.cs]);
                }
                out[r * b.cols + c] = s as f32;
            }
        }
        out
    }

    /// An `m × n` output with two extra columns per row (row stride
    /// `n + 2`), every value 7: a product must leave the extra ones alone.
    pub(crate) fn padded_output(m: usize, n: usize) -> Vec<f32> {
        vec![7f32; m * (n + 2)]
    }

    /// `got` (from `padded_output`) holds `want` (`[m, n]`) to f32
    /// accuracy, and its extra columns are still 7.
    pub(crate) fn assert_product(got: &[f32], want: &[f32], m: usize, k: usize, n: usize) {
        for r in 0..m {
            for c in 0..n {
                let (g, w) = (got[r * (n + 2) + c], want[r * n + c]);
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{m}x{k}x{n} ({r},{c}): {g} vs {w}"
                );
            }
            assert_eq!(&got[r * (n + 2) + n..(r + 1) * (n + 2)], &[7.0, 7.0]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::check::{assert_product, data, naive, padded_output};
    use super::*;

    #[test]
    fn matches_a_naive_product_for_every_layout() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (3, 5, 7),
            (16, 384, 96),
            (130, 64, 33),
            (5, 0, 4),
        ] {
            let a = data(m * k, 1);
            let b = data(k * n, 2);
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
            {
                for rhs in [Mat::rows(&b, k, n), Mat::transposed(&bt, k, n)] {
                    let lhs = Mat::rows(&a, m, k);
                    let mut got = padded_output(m, n);
                    matmul(&mut got, n + 2, lhs, rhs).unwrap();
                    assert_product(&got, &naive(lhs, rhs), m, k, n);
                }
            }
        }
    }

    #[test]
    fn column_pieces_written_by_a_team_equal_one_product() {
        let (m, k, n) = (16, 384, 1152);
        let a = data(m * k, 3);
        let b = data(k * n, 4);
        let mut whole = vec![0f32; m * n];
        matmul(&mut whole, n, Mat::rows(&a, m, k), Mat::rows(&b, k, n)).unwrap();
        for threads in [1, 2, 3] {
            let mut pieces = vec![f32::NAN; m * n];
            crate::team::Team::run(threads, |team| {
                let dst = Shared::new(&mut pieces);
                let chunks = team.chunks();
                team.phase(&|p| {
                    let cols = crate::team::split(n, chunks, p, 16);
                    // SAFETY: `split` gives each piece its own columns.
                    unsafe {
                        matmul_columns(&dst, n, cols, Mat::rows(&a, m, k), Mat::rows(&b, k, n))
                    }
                    .unwrap();
                });
            });
            assert_eq!(pieces, whole, "{threads} threads");
        }
        // Columns past the matrix are refused.
        let mut small = vec![0f32; m * n];
        let dst = Shared::new(&mut small);
        // SAFETY: one thread.
        assert!(
            unsafe { matmul_columns(&dst, n, 0..n + 1, Mat::rows(&a, m, k), Mat::rows(&b, k, n)) }
                .is_err()
        );
    }

    #[test]
    fn refuses_views_that_leave_their_buffers() {
        let a = vec![1f32; 6];
        let mut d = vec![0f32; 4];
        // Shapes that disagree.
        assert!(matmul(&mut d, 2, Mat::rows(&a, 2, 3), Mat::rows(&a, 2, 3)).is_err());
        // A view larger than its slice.
        assert!(matmul(&mut d, 2, Mat::rows(&a, 2, 4), Mat::rows(&a, 4, 2)).is_err());
        // A destination too small, or rows that would overlap.
        assert!(matmul(&mut d[..3], 2, Mat::rows(&a, 2, 3), Mat::rows(&a, 3, 2)).is_err());
        assert!(matmul(&mut d, 1, Mat::rows(&a, 2, 3), Mat::rows(&a, 3, 2)).is_err());
        assert!(matmul(&mut d, 2, Mat::rows(&a, 2, 3), Mat::rows(&a, 3, 2)).is_ok());
        assert_eq!(d, vec![3.0; 4]);
    }
}
