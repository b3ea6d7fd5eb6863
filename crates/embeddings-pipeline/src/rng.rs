//! Seeded, platform-independent pseudo-random numbers (SplitMix64).
//!
//! Every "random" table of the pipeline (HDC token hypervectors, the
//! Johnson–Lindenstrauss projections, the late-interaction projection, the
//! sparse feature hashing) is derived from a `u64` seed through this
//! generator, so a given configuration produces bit-identical vectors on every
//! machine and every run.

/// SplitMix64 (Steele, Lea & Flood, 2014): a 64-bit state advanced by the
/// golden-ratio increment, then finalised with two xor-shift-multiply rounds.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        finalize(self.0)
    }
}

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
pub(crate) fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Combines a seed with a stream id into an independent seed.
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    finalize(seed ^ finalize(stream.wrapping_add(0x632B_E59B_D9B4_E019)))
}

/// `len` values of ±`scale`, one bit each from the stream seeded by `seed`.
pub(crate) fn rademacher(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let bits = rng.next_u64();
        for b in 0..64 {
            if out.len() == len {
                break;
            }
            out.push(if (bits >> b) & 1 == 1 { scale } else { -scale });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_balanced() {
        let a = rademacher(7, 10_000, 1.0);
        assert_eq!(a, rademacher(7, 10_000, 1.0));
        assert_ne!(a, rademacher(8, 10_000, 1.0));
        let sum: f32 = a.iter().sum();
        assert!(sum.abs() < 400.0, "sum {sum}");
    }
}
