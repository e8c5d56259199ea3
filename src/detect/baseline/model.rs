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
/// warm-up, then a distance from them (Mahalanobis, or PCA's T² and Q) with an alarm that has
/// hysteresis.
///
/// Why this shape: the sensors of one asset move together (a pump's current, pressure and
/// flow), so the covariance catches a row whose features are each plausible but disagree
/// (flow low for the current drawn), which per-feature z-scores miss. Slow thermal drift is
/// not an anomaly, but a covariance learnt over minutes cannot know it: a per-feature drift
/// prior (a standard deviation added to the diagonal) says how far the level may wander.
/// Faults are sustained, single samples are noisy: the rows may be smoothed before scoring
/// (`row_smoothing`, which averages the noise away and leaves a lasting shift of level), the
/// distance may be smoothed after, and the alarm switches on above `threshold` and off once
/// the score has stayed below `threshold * clear` for `hold` rows, so one state change gives
/// one alarm rather than a flicker.
///
/// With `Statistic::Pca` the warm-up's correlation matrix is decomposed: T² is the
/// Mahalanobis distance within the principal components that explain `variance` of it (a
/// larger than usual excursion along the ways the sensors usually move), Q the squared
/// residual outside them (the sensors no longer move together). Each is divided by its own
/// quantile over the warm-up rows (`calibrate`), and the score is the larger ratio: a
/// threshold of 10 means ten times the warm-up's 99th percentile, whatever the asset.
#[derive(Debug, Clone, PartialEq)]
pub struct Multivariate {
    /// Rows learnt from (warm-up) or scored since.
    pub n: u32,
    /// Whether warm-up is over and `mat` holds the fitted model.
    pub trained: bool,
    /// Alarm on.
    pub alarm: bool,
    /// Smoothed score.
    pub smooth: f64,
    /// Event time of the first row (the baseline's age is measured from it).
    pub first_ms: i64,
    /// Event time of the last alert, `i64::MIN` when none.
    pub last_alert_ms: i64,
    /// Feature means.
    pub mean: Vec<f64>,
    /// Per feature: standard deviation learnt over warm-up (for the expected range).
    pub std: Vec<f64>,
    /// Warm-up: the co-moment matrix (Welford). Trained: the inverse covariance
    /// (Mahalanobis) or the eigenvectors of the correlation matrix, one per row (contiguous
    /// for the projections), by decreasing eigenvalue (PCA). Row-major `k * k`.
    pub mat: Vec<f64>,
    /// The smoothed row (`row_smoothing` < 1); empty before the first row or when rows are
    /// scored as they come.
    pub filt: Vec<f64>,
    /// PCA: each feature's scale (standard deviation with the drift prior), `k`; else empty.
    pub scale: Vec<f64>,
    /// PCA: the eigenvalues, decreasing, `k`; else empty.
    pub eig: Vec<f64>,
    /// PCA: principal components kept for T² (the rest make Q); 0 for Mahalanobis.
    pub comps: u32,
    /// Calibration: the warm-up quantile of T² (or of the Mahalanobis distance) the score
    /// is divided by; 0 when scores are not calibrated.
    pub norm_t2: f64,
    /// Calibration: the warm-up quantile of Q.
    pub norm_q: f64,
    /// Rows in a row the score has been below the clearing level while the alarm is on.
    pub below: u32,
    /// Warm-up rows kept for calibration (row-major, `k` per row), dropped once trained;
    /// at most `warmup * k` values.
    pub buf: Vec<f64>,
}

impl Multivariate {
    /// Bytes it owns on the heap (its vectors and matrices), for the per-rule state gauge.
    pub fn heap_bytes(&self) -> usize {
        [
            &self.mean,
            &self.std,
            &self.mat,
            &self.filt,
            &self.scale,
            &self.eig,
            &self.buf,
        ]
        .iter()
        .map(|v| v.capacity() * std::mem::size_of::<f64>())
        .sum()
    }
}

/// The distance a [`Multivariate`] model scores rows by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    /// Mahalanobis distance (squared) under the warm-up covariance.
    Mahalanobis,
    /// Hotelling's T² in the principal components explaining this share of the warm-up's
    /// variance (of the standardised features), and Q (squared prediction error) outside.
    Pca {
        /// Share of the variance the kept components explain, in (0, 1].
        variance: f64,
    },
}

/// Settings of a [`Multivariate`] model.
#[derive(Debug, Clone, PartialEq)]
pub struct MultivariateParams {
    /// Rows of warm-up before scoring.
    pub warmup: u32,
    /// Alarm when the smoothed score exceeds this.
    pub threshold: f64,
    /// Alarm ends when the smoothed score falls below `threshold * clear`...
    pub clear: f64,
    /// ...and has stayed there for this many rows.
    pub hold: u32,
    /// EWMA weight of each new score.
    pub smoothing: f64,
    /// A single row's score is capped here before smoothing, so one wild sample cannot
    /// hold the alarm on for long.
    pub cap: f64,
    /// Rate at which the means follow the data while no alarm is on (0: fixed baseline). An
    /// alarm freezes them, so an anomaly does not become the baseline.
    pub adapt: f64,
    /// Per feature: standard deviation of the drift expected after warm-up.
    pub drift: Vec<f64>,
    /// The distance.
    pub statistic: Statistic,
    /// EWMA weight of each new row in the smoothed row that is scored (1: rows as they come).
    pub row_smoothing: f64,
    /// Quantile of the warm-up's own scores that divides every score (0: raw distances).
    pub calibrate: f64,
}

/// The outcome of scoring one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MvScore {
    /// The distance of this row that dominates its score: Mahalanobis (squared), T² or Q.
    /// The scratch `r[j] * y[j]` sum to it.
    pub d2: f64,
    /// Which distance `d2` is.
    pub part: Part,
    /// The row's score before smoothing (`d2`, or `d2` over its warm-up quantile).
    pub raw: f64,
    /// Smoothed score, compared with the threshold.
    pub smooth: f64,
    /// The alarm went on at this row.
    pub onset: bool,
}

/// The distance a row's score comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Mahalanobis distance.
    Mahalanobis,
    /// T² within the principal components.
    T2,
    /// Q outside them.
    Q,
}

impl Part {
    /// Name in evidence.
    pub fn name(self) -> &'static str {
        match self {
            Part::Mahalanobis => "mahalanobis",
            Part::T2 => "t2",
            Part::Q => "q",
        }
    }
}

impl MultivariateParams {
    /// Rows at the start of warm-up not learnt from: the smoothed row still remembers its
    /// first value (five time constants of the row EWMA), at most half the warm-up.
    pub fn burn_in(&self) -> u32 {
        if self.row_smoothing >= 1.0 {
            0
        } else {
            ((5.0 / self.row_smoothing).ceil() as u32).min(self.warmup / 2)
        }
    }
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
            filt: Vec::new(),
            scale: Vec::new(),
            eig: Vec::new(),
            comps: 0,
            norm_t2: 0.0,
            norm_q: 0.0,
            below: 0,
            buf: Vec::new(),
        }
    }

    /// Number of features.
    pub fn k(&self) -> usize {
        self.mean.len()
    }

    /// Whether a trained model was fitted the way `p` says (a state restored after the rule
    /// changed from one statistic to another, or to calibrated scores, is not).
    fn fits(&self, p: &MultivariateParams) -> bool {
        let pca = matches!(p.statistic, Statistic::Pca { .. });
        let shaped = if pca {
            self.comps > 0 && self.scale.len() == self.k() && self.eig.len() == self.k()
        } else {
            self.comps == 0
        };
        shaped && (self.norm_t2 > 0.0) == (p.calibrate > 0.0)
    }

    /// Learns from or scores one row. `r` and `y` are scratch of length `k` (no allocation
    /// per row); after a scored row `r[j] * y[j]` is feature `j`'s share of `d2` (Mahalanobis:
    /// the deviation times the inverse covariance times it; T²: likewise within the kept
    /// components; Q: the squared residual, `r` holding the residual). `None` during warm-up.
    pub fn update(
        &mut self,
        x: &[f64],
        p: &MultivariateParams,
        r: &mut [f64],
        y: &mut [f64],
    ) -> Option<MvScore> {
        let k = self.k();
        let relearn = if self.trained {
            !self.fits(p)
        } else {
            // Calibration needs every warm-up row learnt from (a state from before this
            // rule asked for calibration has none).
            p.calibrate > 0.0 && self.buf.len() != self.n.saturating_sub(p.burn_in()) as usize * k
        };
        if relearn {
            *self = Multivariate::new(k, self.first_ms);
        }
        if p.row_smoothing >= 1.0 {
            return self.step(x, p, r, y);
        }
        // The row scored is the smoothed one; taken out of `self` while `step` borrows it.
        let mut filt = std::mem::take(&mut self.filt);
        if filt.len() == k {
            for (f, &v) in filt.iter_mut().zip(x) {
                *f += p.row_smoothing * (v - *f);
            }
        } else {
            filt = x.to_vec();
        }
        let out = self.step(&filt, p, r, y);
        self.filt = filt;
        out
    }

    /// Learns from or scores the row `x` (smoothed already, if so set).
    fn step(
        &mut self,
        x: &[f64],
        p: &MultivariateParams,
        r: &mut [f64],
        y: &mut [f64],
    ) -> Option<MvScore> {
        let k = self.k();
        if !self.trained {
            self.n += 1;
            let burn = p.burn_in();
            if self.n <= burn {
                return None;
            }
            let n = f64::from(self.n - burn);
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
            if p.calibrate > 0.0 {
                self.buf.extend_from_slice(x);
            }
            if self.n >= p.warmup.max(burn + 2) {
                self.finish_warmup(p, r, y);
            }
            return None;
        }
        self.n = self.n.saturating_add(1);
        let (d2, part, raw) = self.distance(x, r, y);
        let raw = if raw.is_finite() { raw.max(0.0) } else { p.cap };
        let d2 = if d2.is_finite() { d2.max(0.0) } else { p.cap };
        self.smooth = p.smoothing * raw.min(p.cap) + (1.0 - p.smoothing) * self.smooth;
        let mut onset = false;
        if !self.alarm {
            if self.smooth > p.threshold {
                self.alarm = true;
                self.below = 0;
                onset = true;
            }
        } else if self.smooth < p.threshold * p.clear {
            self.below = self.below.saturating_add(1);
            if self.below > p.hold {
                self.alarm = false;
            }
        } else {
            self.below = 0;
        }
        if !self.alarm && p.adapt > 0.0 {
            for (mean, &xj) in self.mean.iter_mut().zip(x) {
                *mean += p.adapt * (xj - *mean);
            }
        }
        Some(MvScore {
            d2,
            part,
            raw,
            smooth: self.smooth,
            onset,
        })
    }

    /// The row's dominant distance, which it is, and its score (calibrated if so set);
    /// fills `r` and `y` with the attribution of the dominant distance.
    fn distance(&self, x: &[f64], r: &mut [f64], y: &mut [f64]) -> (f64, Part, f64) {
        let k = self.k();
        if self.comps == 0 {
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
            let raw = if self.norm_t2 > 0.0 {
                d2 / self.norm_t2
            } else {
                d2
            };
            return (d2, Part::Mahalanobis, raw);
        }
        let (t2, q) = self.pca_parts(x, r, y);
        let (st, sq) = (t2 / self.norm_t2, q / self.norm_q);
        if sq > st {
            // r holds the residual: its square is each feature's share of Q.
            y.copy_from_slice(r);
            (q, Part::Q, sq)
        } else {
            // Recompute the T² attribution into y (pca_parts left the residual in r).
            self.t2_attribution(x, r, y);
            (t2, Part::T2, st)
        }
    }

    /// T² and Q of `x`; leaves the residual (standardised) in `r`.
    fn pca_parts(&self, x: &[f64], r: &mut [f64], y: &mut [f64]) -> (f64, f64) {
        let k = self.k();
        // y: the standardised row.
        for (((z, &xj), &mean), &scale) in y.iter_mut().zip(x).zip(&self.mean).zip(&self.scale) {
            *z = (xj - mean) / scale;
        }
        r.copy_from_slice(y);
        let mut t2 = 0.0;
        for (v, &eig) in self
            .mat
            .chunks_exact(k)
            .zip(&self.eig)
            .take(self.comps as usize)
        {
            let t: f64 = v.iter().zip(&*y).map(|(a, b)| a * b).sum();
            t2 += t * t / eig;
            for (e, &vj) in r.iter_mut().zip(v) {
                *e -= t * vj;
            }
        }
        let q = r.iter().map(|e| e * e).sum();
        (t2, q)
    }

    /// Each feature's share of T²: `r[j]` its standardised deviation, `y[j]` the matching
    /// row of `V Λ⁻¹ Vᵀ` times the deviation (within the kept components).
    fn t2_attribution(&self, x: &[f64], r: &mut [f64], y: &mut [f64]) {
        let k = self.k();
        for (((z, &xj), &mean), &scale) in r.iter_mut().zip(x).zip(&self.mean).zip(&self.scale) {
            *z = (xj - mean) / scale;
        }
        y.fill(0.0);
        for (v, &eig) in self
            .mat
            .chunks_exact(k)
            .zip(&self.eig)
            .take(self.comps as usize)
        {
            let w = v.iter().zip(&*r).map(|(a, b)| a * b).sum::<f64>() / eig;
            for (yj, &vj) in y.iter_mut().zip(v) {
                *yj += w * vj;
            }
        }
    }

    /// Covariance from the co-moments, plus the drift prior and a tiny ridge, then either
    /// inverted (Mahalanobis) or decomposed (PCA); then the warm-up rows, if kept, are scored
    /// to calibrate.
    fn finish_warmup(&mut self, p: &MultivariateParams, r: &mut [f64], y: &mut [f64]) {
        let k = self.k();
        let n = f64::from(self.n - p.burn_in());
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
        match p.statistic {
            Statistic::Mahalanobis => {
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
                self.comps = 0;
            }
            Statistic::Pca { variance } => {
                self.scale = (0..k).map(|j| cov[j * k + j].sqrt()).collect();
                let mut corr = cov;
                for i in 0..k {
                    for j in 0..k {
                        corr[i * k + j] /= self.scale[i] * self.scale[j];
                    }
                }
                let (eig, vecs) = symmetric_eigen(&corr, k);
                let total: f64 = eig.iter().map(|e| e.max(0.0)).sum();
                let mut kept = 0.0;
                let mut m = 0;
                while m < k && (m == 0 || kept < variance * total) {
                    kept += eig[m].max(0.0);
                    m += 1;
                }
                // An eigenvalue of (numerically) zero cannot divide T²: such components
                // belong to Q.
                while m > 1 && eig[m - 1] <= 1e-12 * total.max(f64::MIN_POSITIVE) {
                    m -= 1;
                }
                self.eig = eig;
                for c in 0..k {
                    for j in 0..k {
                        self.mat[c * k + j] = vecs[j * k + c];
                    }
                }
                self.comps = m as u32;
            }
        }
        self.trained = true;
        if p.calibrate > 0.0 {
            let rows = std::mem::take(&mut self.buf);
            let (mut t2s, mut qs) = (Vec::new(), Vec::new());
            for row in rows.chunks_exact(k) {
                if self.comps == 0 {
                    let (d2, _, _) = self.distance(row, r, y);
                    t2s.push(d2);
                } else {
                    let (t2, q) = self.pca_parts(row, r, y);
                    t2s.push(t2);
                    qs.push(q);
                }
            }
            // The floors: a feature set with no residual (every component kept) has Q = 0
            // always; a ratio over zero would be infinite.
            self.norm_t2 = quantile(&mut t2s, p.calibrate).max(1e-9);
            self.norm_q = quantile(&mut qs, p.calibrate).max(1e-9);
        }
        self.n = 0;
    }
}

/// The `q` quantile of `v` (linear between order statistics, as numpy's default); 0 when
/// empty. Sorts `v`.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let at = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = at.floor() as usize;
    let hi = (lo + 1).min(v.len() - 1);
    v[lo] + (at - lo as f64) * (v[hi] - v[lo])
}

/// Eigenvalues (decreasing) and eigenvectors (one per column of the row-major `k * k`
/// result, in the same order) of the symmetric `k * k` matrix `a`, by cyclic Jacobi
/// rotations: simple and exact enough for the at most 16 features of a rule, run once per
/// warm-up.
pub fn symmetric_eigen(a: &[f64], k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; k * k];
    for i in 0..k {
        v[i * k + i] = 1.0;
    }
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..k)
            .flat_map(|i| (0..k).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * k + j] * a[i * k + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * norm.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..k {
            for q in p + 1..k {
                let apq = a[p * k + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * k + q] - a[p * k + p]) / (2.0 * apq);
                // The smaller rotation angle (signum(0) is 1: a 45° turn).
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A <- Jᵀ A J, with J the rotation in the (p, q) plane.
                for i in 0..k {
                    let (aip, aiq) = (a[i * k + p], a[i * k + q]);
                    a[i * k + p] = c * aip - s * aiq;
                    a[i * k + q] = s * aip + c * aiq;
                }
                for j in 0..k {
                    let (apj, aqj) = (a[p * k + j], a[q * k + j]);
                    a[p * k + j] = c * apj - s * aqj;
                    a[q * k + j] = s * apj + c * aqj;
                }
                for i in 0..k {
                    let (vip, viq) = (v[i * k + p], v[i * k + q]);
                    v[i * k + p] = c * vip - s * viq;
                    v[i * k + q] = s * vip + c * viq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| a[j * k + j].total_cmp(&a[i * k + i]));
    let eig = order.iter().map(|&i| a[i * k + i]).collect();
    let mut vecs = vec![0.0; k * k];
    for (c, &i) in order.iter().enumerate() {
        for row in 0..k {
            vecs[row * k + c] = v[row * k + i];
        }
    }
    (eig, vecs)
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
            hold: 0,
            statistic: Statistic::Mahalanobis,
            row_smoothing: 1.0,
            calibrate: 0.0,
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

    /// Straightforward batch statistics of `rows` (each of length k): mean and sample
    /// covariance, two passes, no streaming.
    fn batch_cov(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        let (n, k) = (rows.len() as f64, rows[0].len());
        let mean: Vec<f64> = (0..k)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let mut cov = vec![0.0; k * k];
        for r in rows {
            for i in 0..k {
                for j in 0..k {
                    cov[i * k + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1.0);
                }
            }
        }
        (mean, cov)
    }

    #[test]
    fn eigen_decomposition_matches_closed_form_and_reconstructs() {
        // 2 x 2: eigenvalues (a + c)/2 ± sqrt(((a - c)/2)² + b²).
        let (a, b, c) = (3.0, 1.2, 1.0);
        let (eig, v) = symmetric_eigen(&[a, b, b, c], 2);
        let h = (((a - c) / 2.0f64).powi(2) + b * b).sqrt();
        assert!((eig[0] - ((a + c) / 2.0 + h)).abs() < 1e-12, "{eig:?}");
        assert!((eig[1] - ((a + c) / 2.0 - h)).abs() < 1e-12, "{eig:?}");
        // The first eigenvector is proportional to (b, λ1 - a).
        let cross = v[0] * (eig[0] - a) - v[2] * b;
        assert!(cross.abs() < 1e-12, "{v:?}");
        // 5 x 5: V Λ Vᵀ = A and Vᵀ V = I.
        let mut rng = Rng::new(11);
        let k = 5;
        let g: Vec<f64> = (0..k * k).map(|_| rng.f64() - 0.5).collect();
        let mut m = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                m[i * k + j] = (0..k).map(|l| g[i * k + l] * g[j * k + l]).sum();
            }
        }
        let (eig, v) = symmetric_eigen(&m, k);
        assert!(eig.windows(2).all(|w| w[0] >= w[1]), "{eig:?}");
        for i in 0..k {
            for j in 0..k {
                let back: f64 = (0..k).map(|c| v[i * k + c] * eig[c] * v[j * k + c]).sum();
                assert!((back - m[i * k + j]).abs() < 1e-10, "{i},{j}");
                let dot: f64 = (0..k).map(|r| v[r * k + i] * v[r * k + j]).sum();
                assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-10);
            }
        }
    }

    fn pca_params(variance: f64) -> MultivariateParams {
        MultivariateParams {
            warmup: 300,
            threshold: 10.0,
            clear: 1.0,
            smoothing: 1.0,
            statistic: Statistic::Pca { variance },
            calibrate: 0.99,
            ..params()
        }
    }

    /// Two correlated features: the correlation matrix [[1, ρ], [ρ, 1]] has eigenvectors
    /// (1, 1)/√2 and (1, -1)/√2 with eigenvalues 1 ± ρ, so with one component kept
    /// T² = ((z1 + z2)/√2)² / (1 + ρ) and Q = ((z1 - z2)/√2)², from a batch computation of
    /// the warm-up's mean, covariance and correlation (to 1e-6: the model adds a ridge of
    /// 1e-9 to the variances). The calibration is the batch 99th percentile of each over the
    /// warm-up rows.
    #[test]
    fn pca_t2_and_q_match_a_batch_computation() {
        let p = pca_params(0.6);
        let mut m = Multivariate::new(2, 0);
        let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
        let mut rng = Rng::new(7);
        let mut rows = Vec::new();
        for _ in 0..300 {
            let a = rng.f64();
            let x = vec![a + 0.3 * rng.f64(), 2.0 * a + 0.5 * rng.f64()];
            assert!(m.update(&x, &p, &mut r, &mut y).is_none());
            rows.push(x);
        }
        assert!(m.trained);
        assert_eq!(m.comps, 1);
        let (mean, cov) = batch_cov(&rows);
        let sd = [cov[0].sqrt(), cov[3].sqrt()];
        let rho = cov[1] / (sd[0] * sd[1]);
        let parts = |x: &[f64]| {
            let z = [(x[0] - mean[0]) / sd[0], (x[1] - mean[1]) / sd[1]];
            let s = std::f64::consts::FRAC_1_SQRT_2;
            (
                ((z[0] + z[1]) * s).powi(2) / (1.0 + rho),
                ((z[0] - z[1]) * s).powi(2),
            )
        };
        let pct = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            let at = 0.99 * (v.len() - 1) as f64;
            let lo = at.floor() as usize;
            v[lo] + (at - lo as f64) * (v[lo + 1] - v[lo])
        };
        let norm_t2 = pct(rows.iter().map(|x| parts(x).0).collect());
        let norm_q = pct(rows.iter().map(|x| parts(x).1).collect());
        assert!(
            (m.norm_t2 - norm_t2).abs() < 1e-6 * norm_t2,
            "{} {norm_t2}",
            m.norm_t2
        );
        assert!(
            (m.norm_q - norm_q).abs() < 1e-6 * norm_q,
            "{} {norm_q}",
            m.norm_q
        );
        // Along the correlation: T² dominates; across it: Q does, and the residual's
        // squares are the attribution.
        for (x, part) in [([3.0, 6.0], Part::T2), ([1.5, 0.0], Part::Q)] {
            let s = m.update(&x, &p, &mut r, &mut y).unwrap();
            let (t2, q) = parts(&x);
            assert_eq!(s.part, part, "{x:?}");
            let (d2, raw) = match part {
                Part::T2 => (t2, t2 / norm_t2),
                _ => (q, q / norm_q),
            };
            assert!((s.d2 - d2).abs() < 1e-6 * d2, "{s:?} {d2}");
            assert!((s.raw - raw).abs() < 1e-6 * raw, "{s:?} {raw}");
            assert!((r[0] * y[0] + r[1] * y[1] - d2).abs() < 1e-6 * d2);
        }
    }

    /// Every component kept: T² is the Mahalanobis distance under the batch covariance
    /// (plus the drift prior), whichever way it is computed.
    #[test]
    fn pca_with_every_component_is_mahalanobis() {
        let mut p = pca_params(1.0);
        p.drift = vec![0.1, 0.0, 0.2];
        let mut m = Multivariate::new(3, 0);
        let (mut r, mut y) = ([0.0; 3], [0.0; 3]);
        let mut rng = Rng::new(9);
        let mut rows = Vec::new();
        for _ in 0..300 {
            let a = rng.f64();
            let x = vec![a, a + 0.2 * rng.f64(), rng.f64()];
            m.update(&x, &p, &mut r, &mut y);
            rows.push(x);
        }
        assert_eq!(m.comps, 3);
        let (mean, mut cov) = batch_cov(&rows);
        for j in 0..3 {
            cov[j * 3 + j] += p.drift[j] * p.drift[j];
        }
        let inv = invert_spd(&cov, 3).unwrap();
        let x = [0.9, 0.1, 0.5];
        let d: Vec<f64> = (0..3).map(|j| x[j] - mean[j]).collect();
        let d2: f64 = (0..3)
            .flat_map(|i| (0..3).map(move |j| (i, j)))
            .map(|(i, j)| d[i] * inv[i * 3 + j] * d[j])
            .sum();
        let s = m.update(&x, &p, &mut r, &mut y).unwrap();
        assert_eq!(s.part, Part::T2);
        assert!((s.d2 - d2).abs() < 1e-6 * d2, "{} {d2}", s.d2);
    }

    /// Row smoothing: the model scores the EWMA of the rows, and learns from it only after
    /// the burn-in (five time constants), so its mean is the batch mean of the smoothed rows
    /// past the burn-in. Noise averages away: a shift of one noise amplitude that no single
    /// row shows is plain in the smoothed row.
    #[test]
    fn row_smoothing_learns_the_smoothed_rows_after_burn_in() {
        let mut p = params();
        p.row_smoothing = 0.1;
        p.threshold = 30.0;
        let mut m = Multivariate::new(2, 0);
        let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
        let mut rng = Rng::new(13);
        let mut ewma = [0.0, 0.0];
        let mut learnt = Vec::new();
        for i in 0..200u32 {
            let x = [rng.f64(), 5.0 + rng.f64()];
            for j in 0..2 {
                ewma[j] = if i == 0 {
                    x[j]
                } else {
                    ewma[j] + 0.1 * (x[j] - ewma[j])
                };
            }
            if i >= p.burn_in() {
                learnt.push(ewma.to_vec());
            }
            m.update(&x, &p, &mut r, &mut y);
            assert_eq!(m.filt, ewma.to_vec());
        }
        assert_eq!(p.burn_in(), 50);
        let (mean, _) = batch_cov(&learnt);
        for (got, want) in m.mean.iter().zip(&mean) {
            assert!((got - want).abs() < 1e-12);
        }
        // The first feature shifts by half its noise's range: the smoothed row alarms, the
        // same model scoring raw rows (smoothing of the score alone) does not.
        let mut raw = params();
        raw.threshold = 30.0;
        let mut unsmoothed = Multivariate::new(2, 0);
        let mut rng2 = Rng::new(13);
        for _ in 0..200 {
            unsmoothed.update(&[rng2.f64(), 5.0 + rng2.f64()], &raw, &mut r, &mut y);
        }
        let (mut alarmed, mut alarmed_raw) = (0, 0);
        for _ in 0..100 {
            let x = [0.5 + rng.f64(), 5.0 + rng.f64()];
            m.update(&x, &p, &mut r, &mut y);
            alarmed += usize::from(m.alarm);
            unsmoothed.update(&x, &raw, &mut r, &mut y);
            alarmed_raw += usize::from(unsmoothed.alarm);
        }
        assert!(alarmed > 50, "{alarmed}");
        assert_eq!(alarmed_raw, 0);
    }

    /// `hold`: the alarm outlasts the score by that many rows; without it, it clears at once.
    #[test]
    fn hold_keeps_the_alarm_through_a_dip() {
        for hold in [0, 5] {
            let mut p = params();
            p.hold = hold;
            p.smoothing = 1.0;
            p.clear = 1.0;
            let mut m = Multivariate::new(2, 0);
            let (mut r, mut y) = ([0.0; 2], [0.0; 2]);
            let mut rng = Rng::new(17);
            for _ in 0..200 {
                m.update(&[rng.f64(), rng.f64()], &p, &mut r, &mut y);
            }
            m.update(&[10.0, 10.0], &p, &mut r, &mut y);
            assert!(m.alarm);
            let mut on = 0;
            for _ in 0..20 {
                m.update(&[0.5, 0.5], &p, &mut r, &mut y);
                on += u32::from(m.alarm);
            }
            assert_eq!(on, hold);
        }
    }
}
