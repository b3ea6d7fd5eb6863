//! The built-in slots: temporal, hyperdimensional and sparse.
#![doc = include_str!("../docs/builtin.md")]

use candle_core::{DType, Device, Tensor};

use crate::output::SparseVector;
use crate::rng;

/// Seconds in a day, a week and a mean Gregorian year.
pub(crate) const PERIODS: [f64; 3] = [86_400.0, 604_800.0, 365.2425 * 86_400.0];
/// Offsets that put phase 0 at midnight, Monday midnight and 1970-01-01.
const OFFSETS: [f64; 3] = [0.0, 4.0 * 86_400.0, 0.0];

fn interleave_and_scale(a: &Tensor, b: &Tensor, scale: f64) -> candle_core::Result<Vec<Vec<f32>>> {
    let (batch, n) = a.dims2()?;
    let x = Tensor::stack(&[a, b], 2)?.reshape((batch, 2 * n))?;
    (x * scale)?.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// `TemporalRecent` for ages in seconds (negative ages count as 0).
pub(crate) fn temporal_recent(
    ages: &[f64],
    half_lives_s: &[f64],
    device: &Device,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let batch = ages.len();
    let n = half_lives_s.len();
    let ages: Vec<f64> = ages.iter().map(|a| a.max(0.0)).collect();
    let age = Tensor::from_vec(ages, (batch, 1), device)?;
    let hl = Tensor::from_vec(half_lives_s.to_vec(), (1, n), device)?;
    let decay = (age.broadcast_div(&hl)? * -std::f64::consts::LN_2)?.exp()?;
    let rest = (1.0 - decay.sqr()?)?.clamp(0.0, 1.0)?.sqrt()?;
    interleave_and_scale(&decay, &rest, 1.0 / (n as f64).sqrt())
}

/// The phases (in `[0, 1)`) of `t` (Unix seconds) for day, week and year.
pub(crate) fn phases(t: f64) -> [f64; 3] {
    let mut out = [0.0; 3];
    for ((o, p), off) in out.iter_mut().zip(PERIODS).zip(OFFSETS) {
        *o = (t - off).rem_euclid(p) / p;
    }
    out
}

/// `TemporalPeriodic` for Unix times in seconds.
pub(crate) fn temporal_periodic(
    times: &[f64],
    harmonics: usize,
    device: &Device,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let batch = times.len();
    let mut angles = Vec::with_capacity(batch * 3 * harmonics);
    for &t in times {
        for phase in phases(t) {
            for k in 1..=harmonics {
                angles.push(std::f64::consts::TAU * k as f64 * phase);
            }
        }
    }
    let angles = Tensor::from_vec(angles, (batch, 3 * harmonics), device)?;
    interleave_and_scale(
        &angles.sin()?,
        &angles.cos()?,
        1.0 / ((3 * harmonics) as f64).sqrt(),
    )
}

/// `TemporalPositional` for sequence positions.
pub(crate) fn temporal_positional(
    positions: &[u64],
    dim: usize,
    base: f64,
    device: &Device,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let half = dim / 2;
    let batch = positions.len();
    let pos: Vec<f64> = positions.iter().map(|&p| p as f64).collect();
    let inv: Vec<f64> = (0..half)
        .map(|i| base.powf(-2.0 * i as f64 / dim as f64))
        .collect();
    let pos = Tensor::from_vec(pos, (batch, 1), device)?;
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let angles = pos.broadcast_mul(&inv)?;
    interleave_and_scale(&angles.sin()?, &angles.cos()?, 1.0 / (half as f64).sqrt())
}

/// The seeded bipolar hypervector of token `id`.
/// The "negative" bits of token `id`'s hypervector, one byte per component
/// (1 where the component is −1): bit `b` of the `k`-th SplitMix64 word of
/// stream `derive(seed, id)` is component `64k + b`, +1 when set (the same
/// stream and order as [`rng::rademacher`]).
fn token_negative_bits(seed: u64, id: u32, dim: usize, out: &mut [u8]) {
    let mut rng = rng::SplitMix64::new(rng::derive(seed, u64::from(id)));
    for chunk in out[..dim].chunks_mut(64) {
        let word = rng.next_u64();
        for (b, o) in chunk.iter_mut().enumerate() {
            *o = u8::from((word >> b) & 1 == 0);
        }
    }
}

/// The `Hdc` slot (see the module docs for the math).
///
/// Bipolar algebra on bits: with one "negative" bit per component, binding
/// (`⊙`) is XOR, the permutation `ρ^r` is a rotation, and the bundle's sign
/// in component `d` is that of `N − 2·neg[d]` over the `N` bundled n-grams.
/// Sums of ±1 are exact in `f32` too, so this is bit-identical to the
/// tensor formulation (`tests::hdc_matches_the_tensor_formulation`) at a
/// fraction of its cost: no `f32` tables, one contiguous XOR-and-count pass
/// per n-gram over byte rows that vectorises.
pub(crate) fn hdc(ids: &[u32], dim: usize, seed: u64, max_ngram: usize) -> Vec<f32> {
    if dim == 0 {
        return Vec::new(); // rejected by config validation; never a panic here
    }
    let n = ids.len();
    let grams = max_ngram.min(n);
    // rotated[(r · n + i) · dim ..][..dim] = ρ^r of token i's negative bits.
    let mut rotated = vec![0u8; grams * n * dim];
    if grams > 0 {
        let (base, rest) = rotated.split_at_mut(n * dim);
        for (row, &id) in base.chunks_exact_mut(dim).zip(ids) {
            token_negative_bits(seed, id, dim, row);
        }
        for (r, block) in rest.chunks_exact_mut(n * dim).enumerate() {
            let shift = (r + 1) % dim.max(1);
            for (dst, src) in block.chunks_exact_mut(dim).zip(base.chunks_exact(dim)) {
                // ρ^shift: out[d] = x[(d − shift) mod dim].
                dst[shift..].copy_from_slice(&src[..dim - shift]);
                dst[..shift].copy_from_slice(&src[dim - shift..]);
            }
        }
    }
    let row = |r: usize, i: usize| &rotated[(r * n + i) * dim..(r * n + i + 1) * dim];
    let mut negatives = vec![0u32; dim];
    let mut bundled = 0u32;
    let mut gram = vec![0u8; dim];
    for g in 1..=grams {
        for start in 0..=(n - g) {
            // ρ^(g−1) H_start ⊙ … ⊙ ρ^0 H_(start+g−1)
            gram.copy_from_slice(row(g - 1, start));
            for j in 1..g {
                for (a, b) in gram.iter_mut().zip(row(g - 1 - j, start + j)) {
                    *a ^= b;
                }
            }
            for (count, bit) in negatives.iter_mut().zip(&gram) {
                *count += u32::from(*bit);
            }
            bundled += 1;
        }
    }
    let tie = rng::rademacher(rng::derive(seed, u64::MAX), dim, 1.0);
    let scale = 1.0 / (dim as f32).sqrt();
    negatives
        .iter()
        .zip(tie)
        .map(|(&neg, t)| {
            let sign = match (2 * neg).cmp(&bundled) {
                std::cmp::Ordering::Less => 1.0,
                std::cmp::Ordering::Greater => -1.0,
                std::cmp::Ordering::Equal => t,
            };
            sign * scale
        })
        .collect()
}

pub(crate) fn sparse(
    ids: &[u32],
    vocab: usize,
    device: &Device,
) -> candle_core::Result<SparseVector> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut indices: Vec<u32> = Vec::new();
    let mut tf: Vec<f32> = Vec::new();
    for id in sorted {
        if indices.last() == Some(&id) {
            if let Some(c) = tf.last_mut() {
                *c += 1.0;
            }
        } else {
            indices.push(id);
            tf.push(1.0);
        }
    }
    let values = if tf.is_empty() {
        Vec::new()
    } else {
        let n = tf.len();
        let w = (Tensor::from_vec(tf, n, device)? + 1.0)?.log()?;
        let norm = w.sqr()?.sum_all()?.sqrt()?;
        w.broadcast_div(&norm)?.to_vec1::<f32>()?
    };
    Ok(SparseVector {
        dim: vocab.max(indices.last().map_or(0, |&i| i as usize + 1)),
        indices,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dot(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn recent_is_unit_and_decays() {
        let hl = [3600.0, 86_400.0];
        let v = temporal_recent(&[0.0, 3600.0, 1e9], &hl, &Device::Cpu).unwrap();
        for row in &v {
            assert!((dot(row, row) - 1.0).abs() < 1e-5);
        }
        let s = (2f32).sqrt();
        assert!((v[0][0] * s - 1.0).abs() < 1e-6);
        assert!((v[1][0] * s - 0.5).abs() < 1e-6);
        assert!(v[2][0].abs() < 1e-6);
    }

    #[test]
    fn periodic_day_block_repeats() {
        let t = 1_700_000_123.5;
        let v = temporal_periodic(&[t, t + 86_400.0], 2, &Device::Cpu).unwrap();
        assert!((dot(&v[0], &v[0]) - 1.0).abs() < 1e-5);
        for (a, b) in v[0].iter().zip(&v[1]).take(4) {
            assert!((a - b).abs() < 1e-6);
        }
        assert!((v[0][4] - v[1][4]).abs() > 1e-3, "week block moved");
    }

    #[test]
    fn hdc_empty_is_tie_vector_and_unit() {
        let v = hdc(&[], 256, 1, 3);
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn sparse_counts() {
        let s = sparse(&[5, 3, 5, 5], 10, &Device::Cpu).unwrap();
        assert_eq!(s.indices, vec![3, 5]);
        assert!(s.values[1] > s.values[0]);
        assert!((dot(&s.values, &s.values) - 1.0).abs() < 1e-5);
    }
    /// The tensor formulation of the `Hdc` math (the module docs), kept as
    /// the oracle of the bit implementation.
    fn hdc_tensor(ids: &[u32], dim: usize, seed: u64, max_ngram: usize) -> Vec<f32> {
        let device = &Device::Cpu;
        let n = ids.len();
        let mut bundle = Tensor::zeros(dim, DType::F32, device).unwrap();
        if n > 0 {
            let table: Vec<f32> = ids
                .iter()
                .flat_map(|&t| rng::rademacher(rng::derive(seed, u64::from(t)), dim, 1.0))
                .collect();
            let table = Tensor::from_vec(table, (n, dim), device).unwrap();
            for g in 1..=max_ngram.min(n) {
                let count = n - g + 1;
                let mut acc = table
                    .narrow(0, 0, count)
                    .unwrap()
                    .roll(g as i32 - 1, 1)
                    .unwrap();
                for j in 1..g {
                    let part = table
                        .narrow(0, j, count)
                        .unwrap()
                        .roll((g - 1 - j) as i32, 1)
                        .unwrap();
                    acc = (acc * part).unwrap();
                }
                bundle = (bundle + acc.sum(0).unwrap()).unwrap();
            }
        }
        let tie = rng::rademacher(rng::derive(seed, u64::MAX), dim, 1.0);
        let scale = 1.0 / (dim as f32).sqrt();
        bundle
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .zip(tie)
            .map(|(&s, t)| {
                let sign = if s > 0.0 {
                    1.0
                } else if s < 0.0 {
                    -1.0
                } else {
                    t
                };
                sign * scale
            })
            .collect()
    }

    #[test]
    fn hdc_matches_the_tensor_formulation() {
        for (n, dim, grams) in [
            (0, 1024, 3),
            (1, 1024, 3),
            (2, 64, 3),
            (7, 100, 1),
            (16, 1024, 3),
            (40, 257, 4),
            (115, 1024, 3),
            (5, 3, 5),
            (3, 1, 2),
        ] {
            let ids: Vec<u32> = (0..n).map(|i| (i * 7919 % 30_522) as u32).collect();
            for seed in [0, 42] {
                assert_eq!(
                    hdc(&ids, dim, seed, grams),
                    hdc_tensor(&ids, dim, seed, grams),
                    "n {n}, dim {dim}, max_ngram {grams}, seed {seed}"
                );
            }
        }
    }
}
