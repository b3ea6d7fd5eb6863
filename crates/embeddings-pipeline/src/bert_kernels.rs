//! The row kernels of the CPU encoder (`bert.rs`): layer norm, exact GELU,
//! the masked softmax, and the branch-free `erf` / `exp` they use, written
//! over plain slices so loops vectorise (the crate is built for baseline
//! x86-64, where `libm` calls block that).

/// One layer norm's parameters.
pub(crate) struct Norm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
    pub(crate) eps: f32,
}

/// Sum of a slice with eight independent accumulators (vectorises).
pub(crate) fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// In-place layer norm of one row (`row` already holds the pre-norm sum).
pub(crate) fn layer_norm_row(row: &mut [f32], n: &Norm) {
    let inv = 1.0 / row.len() as f32;
    let mean = sum8(row) * inv;
    for v in row.iter_mut() {
        *v -= mean;
    }
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let var = (acc.iter().sum::<f32>() + rest) * inv;
    let r = 1.0 / (var + n.eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&n.gamma).zip(&n.beta) {
        *v = *v * r * g + b;
    }
}

/// Exact GELU, `x · ½ (1 + erf(x / √2))`, elementwise.
pub(crate) fn gelu_erf_in_place(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        let x = *v;
        *v = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf` as a rational approximation on `[-4, 4]` (Eigen / XLA's
/// `generic_fast_erf_float`; |error| below 5e-7, exactly ±1 past ±3.8325).
/// Branch-free, so loops over it vectorise. Plain `a * b + c`, not
/// `mul_add`: without a compile-time FMA target that is a libm call.
#[inline]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_6e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329e-3;
    q = x2 * q + -1.426_474e-2;
    let y = p / q;
    // Past ±3.8325 erf rounds to ±1 in f32; the rational form drifts there.
    if x.abs() > 3.832_507 { x.signum() } else { y }
}

/// `e^x` for the shifted scores of a softmax (`x ≤ 0`; larger inputs are
/// not supported), branch-free so loops over it vectorise (the `libm` call
/// does not). Range reduction `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, the
/// degree-6 Taylor polynomial of `e^r` (truncation below 1.3e-7 relative),
/// and `2^n` built from its exponent bits. `n` is rounded with the
/// `1.5 · 2^23` trick, whose low mantissa bits then hold `n` itself. Inputs
/// below −87 are clamped there (e^−87 ≈ 1.6e-38: a probability that vanishes
/// next to the row's maximum, whose own term is 1).
#[inline]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND; // round(x · log2 e), an integer in [−126, 0]
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = r * (1.0 / 720.0) + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    // t's bits are ROUND's plus n (same binade), so this is n as an integer;
    // n + 127 ≥ 1 keeps 2^n a normal float.
    let n_int = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_int.wrapping_add(127) << 23);
    p * scale
}

/// `GELU` with the tanh approximation, elementwise.
pub(crate) fn gelu_tanh_in_place(xs: &mut [f32]) {
    for v in xs.iter_mut() {
        let x = *v;
        *v = 0.5
            * x
            * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044_715 * x * x * x)).tanh());
    }
}

/// Softmax of `scores` into `probs` (same length, at least 1).
pub(crate) fn softmax_into(scores: &[f32], probs: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (o, s) in probs.iter_mut().zip(scores) {
        *o = exp_nonpositive(s - max);
    }
    let inv = 1.0 / sum8(probs);
    for o in probs.iter_mut() {
        *o *= inv;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn fast_gelu_matches_candle_gelu_erf() {
        let xs: Vec<f32> = (-80_000..80_000).map(|i| i as f32 * 1e-4).collect();
        let reference = Tensor::new(xs.as_slice(), &Device::Cpu)
            .unwrap()
            .gelu_erf()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut ours = xs.clone();
        gelu_erf_in_place(&mut ours);
        // Within 1e-6 absolute (relative above 1): erf's own error is
        // below 5e-7, amplified by x/2 in the negative tail.
        let worst = reference
            .iter()
            .zip(&ours)
            .map(|(a, b)| (a - b).abs() / a.abs().max(1.0))
            .fold(0f32, f32::max);
        let at = reference
            .iter()
            .zip(&ours)
            .zip(&xs)
            .map(|((a, b), x)| ((a - b).abs() / a.abs().max(1.0), *x, *a, *b))
            .fold(
                (0f32, 0f32, 0f32, 0f32),
                |m, v| if v.0 > m.0 { v } else { m },
            );
        assert!(worst < 1e-6, "max relative gelu diff {worst} at {at:?}");
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn fast_exp_matches_libm_on_softmax_inputs() {
        let mut worst = (0f64, 0f32);
        for i in 0..=2_000_000 {
            let x = -87.0 * i as f32 / 2_000_000.0;
            let reference = f64::from(x).exp();
            let ours = f64::from(exp_nonpositive(x));
            let rel = (ours - reference).abs() / reference;
            if rel > worst.0 {
                worst = (rel, x);
            }
        }
        assert!(worst.0 < 4e-7, "max relative exp error {worst:?}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        // Clamped, never 0 / NaN / garbage past the range.
        assert!(exp_nonpositive(-1e30) > 0.0 && exp_nonpositive(-1e30) < 1e-37);
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }
}
