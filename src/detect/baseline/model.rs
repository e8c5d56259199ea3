//! The statistics behind baseline rules, free of Arrow and of rule syntax.
//!
//! In: one numeric sample at a time (univariate) or one row of features (multivariate).
//! Out: scores and alarm states. Every state here is a fixed-size struct (or a few vectors
//! whose length is fixed by the rule), so state per entity is bounded by construction; the
//! byte sizes are reported by `benches/baseline.rs`.

/// Exponentially weighted mean and variance of one series.
///
/// During warm-up (the first `1/alpha` samples) the weight is `1/n`, so the estimate is the
/// plain mean and population variance of what was seen; afterwards each sample weighs
/// `alpha`, so the baseline forgets at that rate and follows slow drift.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ewma {
    /// Samples seen (saturating).
    pub n: u32,
    /// The weighted mean.
    pub mean: f64,
    /// The weighted variance.
    pub var: f64,
}

impl Ewma {
    /// Adds a sample with weight `max(alpha, 1/n)`.
    #[inline]
    pub fn update(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        let a = alpha.max(1.0 / f64::from(self.n));
        let d = x - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }

    /// Standard score of `x`, the deviation at least `min_std` (a flat series would otherwise
    /// make any change infinitely surprising).
    #[inline]
    pub fn z(&self, x: f64, min_std: f64) -> f64 {
        (x - self.mean) / self.var.sqrt().max(min_std).max(f64::MIN_POSITIVE)
    }
}

/// Fan-out of one entity: the distinct values (hashes) it touched in the current window, and
/// the baseline of that count over its past active windows.
///
/// Why only active windows: an entity idle most of the time (a maintenance laptop) would
/// otherwise have a baseline near zero and every working hour would look like a scan; what
/// matters is how wide it reaches *when* it works.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FanOut {
    /// Start of the current window (ms, aligned to the window length).
    pub window_ms: i64,
    /// Hashes of the distinct values of the current window, sorted (binary search); at most
    /// the rule's `max_distinct`, beyond which the count saturates.
    pub distinct: Vec<u64>,
    /// Baseline of the per-window distinct count.
    pub stats: Ewma,
    /// The current window has alerted (one alert per window).
    pub alerted: bool,
    /// The first window's start, for the baseline's age.
    pub first_ms: i64,
}

impl FanOut {
    /// Adds `h` to the current window; true when it was new.
    #[inline]
    pub fn insert(&mut self, h: u64, max_distinct: usize) -> bool {
        match self.distinct.binary_search(&h) {
            Ok(_) => false,
            Err(_) if self.distinct.len() >= max_distinct => false,
            Err(i) => {
                self.distinct.insert(i, h);
                true
            }
        }
    }

    /// Closes the current window into the baseline and opens the one starting at `start`.
    /// A window that alerted moves the mean only as far as a count at the threshold would
    /// and leaves the variance alone, so a scan does not teach the baseline that scans are
    /// normal (the same robust learning as the univariate model).
    pub fn roll(&mut self, start: i64, alpha: f64, z: f64, min_std: f64) {
        let count = self.distinct.len() as f64;
        if self.alerted && self.stats.n > 0 {
            let std = self.stats.var.sqrt().max(min_std);
            let d = (count - self.stats.mean).clamp(-z * std, z * std);
            self.stats.mean += alpha * d;
            self.stats.n = self.stats.n.saturating_add(1);
        } else {
            self.stats.update(count, alpha);
        }
        // clear() keeps the capacity: no allocation per window once the entity is warm.
        self.distinct.clear();
        self.alerted = false;
        self.window_ms = start;
    }
}

/// Multivariate baseline of one asset: mean and covariance of its features learnt over a
/// warm-up, then a smoothed Mahalanobis distance with an alarm that has hysteresis.
///
/// Why this shape: the sensors of one asset move together (a pump's current, pressure and
/// flow), so the covariance catches a row whose features are each plausible but disagree
/// (flow low for the current drawn), which per-feature z-scores miss. Slow thermal drift is
/// not an anomaly, but a covariance learnt over minutes cannot know it: a per-feature drift
/// prior (a standard deviation added to the diagonal) says how far the level may wander.
/// Faults are sustained, single samples are noisy: the distance is smoothed (EWMA) and the
/// alarm switches on above `threshold` and off below `threshold * clear`, so one state
/// change gives one alarm rather than a flicker.
#[derive(Debug, Clone, PartialEq)]
pub struct Multivariate {
    /// Rows learnt from (warm-up) or scored since.
    pub n: u32,
    /// Whether warm-up is over and `inv` holds the inverse covariance.
    pub trained: bool,
    /// Alarm on.
    pub alarm: bool,
    /// Smoothed distance.
    pub smooth: f64,
    /// Event time of the first row (the baseline's age is measured from it).
    pub first_ms: i64,
    /// Event time of the last alert, `i64::MIN` when none.
    pub last_alert_ms: i64,
    /// Feature means.
    pub mean: Vec<f64>,
    /// Per feature: standard deviation learnt over warm-up (for the expected range).
    pub std: Vec<f64>,
    /// Warm-up: the co-moment matrix (Welford); trained: the inverse covariance. Row-major
    /// `k * k`.
    pub mat: Vec<f64>,
}

/// Settings of a [`Multivariate`] model.
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariateParams {
    /// Rows of warm-up before scoring.
    pub warmup: u32,
    /// Alarm when the smoothed distance exceeds this.
    pub threshold: f64,
    /// Alarm ends when the smoothed distance falls below `threshold * clear`.
    pub clear: f64,
    /// EWMA weight of each new distance.
    pub smoothing: f64,
    /// A single row's distance is capped here before smoothing, so one wild sample cannot
    /// hold the alarm on for long.
    pub cap: f64,
    /// Rate at which the means follow the data while no alarm is on (0: fixed baseline). An
    /// alarm freezes them, so an anomaly does not become the baseline.
    pub adapt: f64,
    /// Per feature: standard deviation of the drift expected after warm-up.
    pub drift: Vec<f64>,
}

/// The outcome of scoring one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MvScore {
    /// Mahalanobis distance (squared) of this row.
    pub d2: f64,
    /// Smoothed distance, compared with the threshold.
    pub smooth: f64,
    /// The alarm went on at this row.
    pub onset: bool,
}

impl Multivariate {
    /// An untrained model of `k` features.
    pub fn new(k: usize, first_ms: i64) -> Multivariate {
        Multivariate {
            n: 0,
            trained: false,
            alarm: false,
            smooth: 0.0,
            first_ms,
            last_alert_ms: i64::MIN,
            mean: vec![0.0; k],
            std: vec![0.0; k],
            mat: vec![0.0; k * k],
        }
    }

    /// Number of features.
    pub fn k(&self) -> usize {
        self.mean.len()
    }

    /// Learns from or scores one row. `r` and `y` are scratch of length `k` (no allocation
    /// per row); after a scored row `r` holds the deviation and `y` the inverse covariance
    /// times it, so `r[j] * y[j]` is feature `j`'s share of `d2`. `None` during warm-up.
    pub fn update(
        &mut self,
        x: &[f64],
        p: &MultivariateParams,
        r: &mut [f64],
        y: &mut [f64],
    ) -> Option<MvScore> {
        let k = self.k();
        if !self.trained {
            self.n += 1;
            let n = f64::from(self.n);
            for j in 0..k {
                r[j] = x[j] - self.mean[j];
                self.mean[j] += r[j] / n;
            }
            for (i, &ri) in r.iter().enumerate().take(k) {
                let row = &mut self.mat[i * k..(i + 1) * k];
                for ((m, &xj), &mean) in row.iter_mut().zip(x).zip(&self.mean) {
                    *m += ri * (xj - mean);
                }
            }
            if self.n >= p.warmup.max(2) {
                self.finish_warmup(p);
            }
            return None;
        }
        self.n = self.n.saturating_add(1);
        for j in 0..k {
            r[j] = x[j] - self.mean[j];
        }
        let mut d2 = 0.0;
        for i in 0..k {
            let row = &self.mat[i * k..(i + 1) * k];
            let mut s = 0.0;
            for j in 0..k {
                s += row[j] * r[j];
            }
            y[i] = s;
            d2 += r[i] * s;
        }
        let d2 = if d2.is_finite() { d2.max(0.0) } else { p.cap };
        self.smooth = p.smoothing * d2.min(p.cap) + (1.0 - p.smoothing) * self.smooth;
        let mut onset = false;
        if !self.alarm && self.smooth > p.threshold {
            self.alarm = true;
            onset = true;
        } else if self.alarm && self.smooth < p.threshold * p.clear {
            self.alarm = false;
        }
        if !self.alarm && p.adapt > 0.0 {
            for (mean, &xj) in self.mean.iter_mut().zip(x) {
                *mean += p.adapt * (xj - *mean);
            }
        }
        Some(MvScore {
            d2,
            smooth: self.smooth,
            onset,
        })
    }

    /// Covariance from the co-moments, plus the drift prior and a tiny ridge, inverted.
    fn finish_warmup(&mut self, p: &MultivariateParams) {
        let k = self.k();
        let n = f64::from(self.n);
        let mut cov = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                cov[i * k + j] = self.mat[i * k + j] / (n - 1.0);
            }
        }
        for j in 0..k {
            self.std[j] = cov[j * k + j].max(0.0).sqrt();
            let drift = p.drift.get(j).copied().unwrap_or(0.0);
            // The ridge keeps a constant feature (a valve that never moved during warm-up)
            // from making the matrix singular; scaled to the feature's magnitude.
            cov[j * k + j] += drift * drift + 1e-9 + 1e-12 * self.mean[j] * self.mean[j];
        }
        let mut ridge = 0.0;
        loop {
            let mut m = cov.clone();
            for j in 0..k {
                m[j * k + j] += ridge;
            }
            if let Some(inv) = invert_spd(&m, k) {
                self.mat = inv;
                break;
            }
            ridge = if ridge == 0.0 { 1e-6 } else { ridge * 10.0 };
        }
        self.trained = true;
        self.n = 0;
    }
}

/// Inverse of a symmetric positive-definite `k * k` matrix by Cholesky decomposition; `None`
/// when it is not positive definite (numerically).
pub fn invert_spd(a: &[f64], k: usize) -> Option<Vec<f64>> {
    // L with A = L L^T.
    let mut l = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let mut s = a[i * k + j];
            for m in 0..j {
                s -= l[i * k + m] * l[j * k + m];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * k + i] = s.sqrt();
            } else {
                l[i * k + j] = s / l[j * k + j];
            }
        }
    }
    // Solve L L^T X = I, one column at a time.
    let mut inv = vec![0.0; k * k];
    let mut col = vec![0.0; k];
    for c in 0..k {
        for i in 0..k {
            let mut s = if i == c { 1.0 } else { 0.0 };
            for m in 0..i {
                s -= l[i * k + m] * col[m];
            }
            col[i] = s / l[i * k + i];
        }
        for i in (0..k).rev() {
            let mut s = col[i];
            for m in i + 1..k {
                s -= l[m * k + i] * inv[m * k + c];
            }
            inv[i * k + c] = s / l[i * k + i];
        }
    }
    Some(inv)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn ewma_warms_up_as_plain_mean_and_variance() {
        let mut e = Ewma::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            e.update(x, 0.01);
        }
        assert!((e.mean - 2.5).abs() < 1e-12);
        assert!((e.var - 1.25).abs() < 1e-12, "{}", e.var);
        assert!((e.z(4.5, 0.0) - 2.0 / 1.25f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn inverse_times_matrix_is_identity() {
        let a = [4.0, 2.0, 0.6, 2.0, 2.0, 0.5, 0.6, 0.5, 3.0];
        let inv = invert_spd(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|m| a[i * 3 + m] * inv[m * 3 + j]).sum();
                assert!(
                    (s - f64::from(u8::from(i == j))).abs() < 1e-12,
                    "{i},{j}: {s}"
                );
            }
        }
        assert!(invert_spd(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
    }

    /// A small deterministic generator (xorshift) for test data.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }

        /// Uniform in [0, 1).
        pub(crate) fn f64(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn params() -> MultivariateParams {
        MultivariateParams {
            warmup: 200,
            threshold: 15.0,
            clear: 0.7,
            smoothing: 0.2,
            cap: 200.0,
            adapt: 0.0,
            drift: vec![0.0, 0.0],
        }
    }

    /// Flow that follows current; a row with the usual current but no flow is anomalous
    /// although each value alone is within its usual range.
    #[test]
    fn multivariate_catches_broken_correlation_and_names_the_feature() {
        let p = params();
        let mut m = Multivariate::new(2, 0);
        let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
        let mut rng = Rng::new(3);
        let row = |rng: &mut Rng, broken: bool| {
            let current = 2.0 + rng.f64();
            let flow = if broken { 2.0 } else { 3.0 * current } + 0.05 * rng.f64();
            [current, flow]
        };
        for _ in 0..200 {
            assert!(
                m.update(&row(&mut rng, false), &p, &mut r, &mut y)
                    .is_none()
            );
        }
        for _ in 0..100 {
            let s = m.update(&row(&mut rng, false), &p, &mut r, &mut y).unwrap();
            assert!(!m.alarm, "false alarm at {s:?}");
        }
        let mut onset = 0;
        for i in 0..50 {
            let s = m.update(&row(&mut rng, true), &p, &mut r, &mut y).unwrap();
            if s.onset {
                onset = i + 1;
                // Flow drives the score.
                assert!(r[1] * y[1] > r[0] * y[0]);
                assert!(((r[0] * y[0] + r[1] * y[1]) - s.d2).abs() < 1e-6 * s.d2);
            }
        }
        assert!(onset > 0 && onset < 10, "onset after {onset} rows");
        for _ in 0..100 {
            m.update(&row(&mut rng, false), &p, &mut r, &mut y);
        }
        assert!(!m.alarm, "alarm clears once the pump is healthy again");
    }

    #[test]
    fn drift_prior_tolerates_slow_level_change() {
        let mut with = params();
        with.drift = vec![0.0, 1.0];
        for (p, expect_alarm) in [(params(), true), (with, false)] {
            let mut m = Multivariate::new(2, 0);
            let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
            let mut rng = Rng::new(5);
            let mut alarmed = false;
            for i in 0..600 {
                // The second feature creeps up by 0.5 over the run (temperature).
                let x = [rng.f64(), 20.0 + 0.1 * rng.f64() + f64::from(i) / 1200.0];
                m.update(&x, &p, &mut r, &mut y);
                alarmed |= m.alarm;
            }
            assert_eq!(alarmed, expect_alarm);
        }
    }
}
