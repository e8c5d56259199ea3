//! The simulator's own pseudo-random numbers: SplitMix64 to expand a seed, xoshiro256** to draw.
//!
//! In: a `u64` seed (plus a tag naming the consumer). Out: integers and floats.
//! Guarantee: the sequence depends only on the seed and this file, never on a crate version or
//! the platform: only integer arithmetic and exactly rounded float operations (`*`, `+`, `/`
//! of values built from integers) are used, so the same seed gives the same stream everywhere.

/// One step of SplitMix64 (Steele, Lea, Flood 2014): a good 64-bit mixer on its own, and the
/// seeding procedure the xoshiro authors recommend.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stateless hash of two words to a float in [0, 1): used where a value must be a pure
/// function of (seed, time) rather than of how many draws came before it.
pub(crate) fn hash_unit(seed: u64, x: u64) -> f64 {
    let mut s = seed ^ x.wrapping_mul(0xD1B5_4A32_D192_ED03);
    to_unit(splitmix64(&mut s))
}

fn to_unit(x: u64) -> f64 {
    // The top 53 bits, scaled by 2^-53: every value is exactly representable.
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// xoshiro256** (Blackman, Vigna 2018).
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for one consumer (`tag`) of one simulation (`seed`): consumers draw from
    /// independent streams, so adding draws in one (say, a scenario) never shifts another
    /// (the benign background).
    pub(crate) fn new(seed: u64, tag: u64) -> Rng {
        let mut sm = seed ^ tag.wrapping_mul(0xA076_1D64_78BD_642F);
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for our small `n`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        to_unit(self.next_u64())
    }

    /// Uniform in [lo, hi).
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub(crate) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }

    /// Roughly normal noise with mean 0 and a spread of about 1, bounded to [-2, 2]: the sum of
    /// four uniforms (Irwin–Hall), which needs no `ln`/`cos` whose last bit varies by libm.
    pub(crate) fn noise(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 1.7
    }

    /// Heavy-tailed integer in `lo..=hi`: most draws near `lo`, a few near `hi` (u^3 instead
    /// of a log-normal, again to avoid transcendental functions).
    pub(crate) fn heavy(&mut self, lo: i64, hi: i64) -> i64 {
        let u = self.unit();
        lo + ((hi - lo) as f64 * u * u * u) as i64
    }

    /// A count of events for one second whose mean is `lambda`: jittered by ±25 % and then
    /// stochastically rounded, so that low rates (0.2/s at night) still produce events.
    pub(crate) fn count(&mut self, lambda: f64) -> usize {
        let x = lambda * (1.0 + 0.25 * (self.unit() + self.unit() - 1.0));
        let whole = x.floor();
        whole as usize + usize::from(self.unit() < x - whole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_reference_vector() {
        // Reference: xoshiro256** from the authors' C code with s = {1, 2, 3, 4}.
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn splitmix_matches_reference_vector() {
        // Reference: splitmix64.c seeded with 1234567.
        let mut s = 1234567;
        assert_eq!(splitmix64(&mut s), 6457827717110365317);
        assert_eq!(splitmix64(&mut s), 3203168211198807973);
    }

    #[test]
    fn draws_stay_in_range_and_spread() {
        let mut r = Rng::new(7, 1);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let v = r.range(3, 12);
            assert!((3..=12).contains(&v));
            seen[(v - 3) as usize] += 1;
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            let n = r.noise();
            assert!((-3.5..=3.5).contains(&n));
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn count_has_the_requested_mean() {
        let mut r = Rng::new(9, 2);
        for lambda in [0.2, 3.0, 100.0] {
            let total: usize = (0..20_000).map(|_| r.count(lambda)).sum();
            let mean = total as f64 / 20_000.0;
            assert!(
                (mean - lambda).abs() < lambda * 0.05 + 0.02,
                "{lambda}: {mean}"
            );
        }
    }
}
