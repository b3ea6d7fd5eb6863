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
fn token_hv(seed: u64, id: u32, dim: usize) -> Vec<f32> {
    rng::rademacher(rng::derive(seed, u64::from(id)), dim, 1.0)
}

/// `Hdc` for one text's content token ids.
pub(crate) fn hdc(
    ids: &[u32],
    dim: usize,
    seed: u64,
    max_ngram: usize,
    device: &Device,
) -> candle_core::Result<Vec<f32>> {
    let n = ids.len();
    let mut bundle = Tensor::zeros(dim, DType::F32, device)?;
    if n > 0 {
        let table: Vec<f32> = ids.iter().flat_map(|&t| token_hv(seed, t, dim)).collect();
        let table = Tensor::from_vec(table, (n, dim), device)?;
        for g in 1..=max_ngram.min(n) {
            let count = n - g + 1;
            // rho^(g-1-j) applied to the j-th token of each n-gram.
            let mut acc = table.narrow(0, 0, count)?.roll(g as i32 - 1, 1)?;
            for j in 1..g {
                let part = table.narrow(0, j, count)?.roll((g - 1 - j) as i32, 1)?;
                acc = (acc * part)?;
            }
            bundle = (bundle + acc.sum(0)?)?;
        }
    }
    let tie = rng::rademacher(rng::derive(seed, u64::MAX), dim, 1.0);
    let scale = 1.0 / (dim as f32).sqrt();
    let sums = bundle.to_vec1::<f32>()?;
    Ok(sums
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
        .collect())
}

/// `Sparse` for one text's content token ids.
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
        let v = hdc(&[], 256, 1, 3, &Device::Cpu).unwrap();
        assert!((dot(&v, &v) - 1.0).abs() < 1e-5);
    }

    #[test]
    fn sparse_counts() {
        let s = sparse(&[5, 3, 5, 5], 10, &Device::Cpu).unwrap();
        assert_eq!(s.indices, vec![3, 5]);
        assert!(s.values[1] > s.values[0]);
        assert!((dot(&s.values, &s.values) - 1.0).abs() < 1e-5);
    }
}
