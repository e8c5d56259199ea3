//! The checkpoint encoding of one entity's baseline state: compact little-endian binary,
//! versioned by its first byte. Metric names are written as text (interned ids are not
//! stable across restarts); a series whose metric the rule no longer reads is dropped on
//! restore.

use super::model::{Ewma, FanOut, Multivariate};
use super::{Command, Entity, Series};

/// 2 added the fan-out, travel and command sections; 3 the multivariate model's smoothed row,
/// PCA, calibration, hold counter and warm-up rows. Versions 1 and 2 still decode (their
/// multivariate state is a Mahalanobis model without those).
const VERSION: u8 = 3;

/// Most warm-up rows a multivariate state may keep for calibration (the rule's limit).
pub(super) const MAX_CALIBRATION_ROWS: usize = 20_000;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("truncated state".into());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "state holds invalid UTF-8".into())
    }
    fn f64s(&mut self, n: usize) -> Result<Vec<f64>, String> {
        (0..n).map(|_| self.f64()).collect()
    }
}

/// Encodes `e`; `name` gives each series' metric name, `place` each place's name (written as
/// text: the rule's list of places may be edited between runs).
pub(super) fn encode<'a>(
    e: &Entity,
    name: impl Fn(u16) -> &'a str,
    place: impl Fn(u16) -> &'a str,
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    w.u8(VERSION);
    w.i64(e.first_ms);
    w.i64(e.last_ms);
    w.u32(e.series.len() as u32);
    for s in &e.series {
        w.str(name(s.metric));
        w.u32(s.stats.n);
        w.f64(s.stats.mean);
        w.f64(s.stats.var);
        w.u32(s.profile.len() as u32);
        for p in &s.profile {
            w.u32(p.n);
            w.f64(p.mean);
            w.f64(p.var);
        }
        w.f64(s.last);
        w.i64(s.last_ms);
        w.i64(s.first_ms);
        w.i64(s.changed_ms);
        w.u8(s.alarms);
        w.i64(s.last_alert_ms);
        w.u32(s.recent.len() as u32);
        w.u32(u32::from(s.recent_pos));
        for v in &s.recent {
            w.f64(*v);
        }
    }
    match &e.mv {
        None => w.u8(0),
        Some(m) => {
            w.u8(1);
            w.u32(m.k() as u32);
            w.u32(m.n);
            w.u8(u8::from(m.trained) | (u8::from(m.alarm) << 1));
            w.f64(m.smooth);
            w.i64(m.first_ms);
            w.i64(m.last_alert_ms);
            for v in m.mean.iter().chain(&m.std).chain(&m.mat) {
                w.f64(*v);
            }
            for part in [&m.filt, &m.scale, &m.eig, &m.buf] {
                w.u32(part.len() as u32);
                for v in part.iter() {
                    w.f64(*v);
                }
            }
            w.u32(m.comps);
            w.f64(m.norm_t2);
            w.f64(m.norm_q);
            w.u32(m.below);
        }
    }
    w.u32(e.terms.len() as u32);
    for &(h, t) in &e.terms {
        w.u64(h);
        w.i64(t);
    }
    match &e.fan {
        None => w.u8(0),
        Some(f) => {
            w.u8(1 | (u8::from(f.alerted) << 1));
            w.i64(f.window_ms);
            w.i64(f.first_ms);
            w.u32(f.stats.n);
            w.f64(f.stats.mean);
            w.f64(f.stats.var);
            w.u32(f.distinct.len() as u32);
            for &h in &f.distinct {
                w.u64(h);
            }
        }
    }
    match e.travel {
        None => w.u8(0),
        Some((p, t)) => {
            w.u8(1);
            w.str(place(p));
            w.i64(t);
        }
    }
    match e.cmd {
        None => w.u8(0),
        Some(c) => {
            w.u8(1 | (u8::from(c.on) << 1) | (u8::from(c.pending_ms.is_some()) << 2));
            w.i64(c.pending_ms.unwrap_or(0));
            w.f64(c.last_response);
        }
    }
    w.0
}

/// Decodes what [`encode`] wrote; `id` maps a metric name to the rule's id for it (`None`:
/// the series is dropped), `place` a place name to its index (`None`: forgotten).
pub(super) fn decode(
    bytes: &[u8],
    mut id: impl FnMut(&str) -> Option<u16>,
    place: impl Fn(&str) -> Option<u16>,
) -> Result<Entity, String> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if !(1..=VERSION).contains(&version) {
        return Err(format!("unknown state version {version}"));
    }
    let mut e = Entity {
        first_ms: r.i64()?,
        last_ms: r.i64()?,
        ..Entity::default()
    };
    let series = r.u32()?;
    for _ in 0..series {
        let name = r.str()?;
        let stats = Ewma {
            n: r.u32()?,
            mean: r.f64()?,
            var: r.f64()?,
        };
        let buckets = r.u32()? as usize;
        if buckets > 168 {
            return Err(format!("{buckets} seasonal buckets (at most 168)"));
        }
        let mut profile = Vec::with_capacity(buckets);
        for _ in 0..buckets {
            profile.push(Ewma {
                n: r.u32()?,
                mean: r.f64()?,
                var: r.f64()?,
            });
        }
        let mut s = Series {
            metric: 0,
            stats,
            profile,
            recent: Vec::new(),
            recent_pos: 0,
            last: r.f64()?,
            last_ms: r.i64()?,
            first_ms: r.i64()?,
            changed_ms: r.i64()?,
            alarms: r.u8()?,
            last_alert_ms: r.i64()?,
        };
        if version >= 2 {
            let n = r.u32()? as usize;
            let pos = r.u32()?;
            if n > 4096 || (pos as usize) >= n.max(1) {
                return Err(format!(
                    "robust window of {n} samples at {pos} (at most 4096)"
                ));
            }
            s.recent_pos = pos as u16;
            s.recent = r.f64s(n)?;
        }
        if let Some(metric) = id(&name) {
            e.series.push(Series { metric, ..s });
        }
    }
    if r.u8()? == 1 {
        let k = r.u32()? as usize;
        if k > 16 {
            return Err(format!("{k} features in a multivariate state (at most 16)"));
        }
        let n = r.u32()?;
        let flags = r.u8()?;
        let smooth = r.f64()?;
        let first_ms = r.i64()?;
        let last_alert_ms = r.i64()?;
        let mut m = Multivariate {
            n,
            trained: flags & 1 != 0,
            alarm: flags & 2 != 0,
            smooth,
            first_ms,
            last_alert_ms,
            mean: r.f64s(k)?,
            std: r.f64s(k)?,
            mat: r.f64s(k * k)?,
            ..Multivariate::new(0, first_ms)
        };
        if version >= 3 {
            // `rows`: a whole number of rows up to `max` values; else none or exactly `max`.
            let mut vec_of = |what: &str, max: usize, rows: bool| -> Result<Vec<f64>, String> {
                let len = r.u32()? as usize;
                let fits = if rows {
                    len <= max && len.is_multiple_of(k.max(1))
                } else {
                    len == 0 || len == max
                };
                if !fits {
                    return Err(format!(
                        "{len} values of {what} in a multivariate state of {k} features"
                    ));
                }
                r.f64s(len)
            };
            m.filt = vec_of("smoothed row", k, false)?;
            m.scale = vec_of("scale", k, false)?;
            m.eig = vec_of("eigenvalues", k, false)?;
            m.buf = vec_of("warm-up rows", k * MAX_CALIBRATION_ROWS, true)?;
            m.comps = r.u32()?;
            if m.comps as usize > k {
                return Err(format!("{} components of {k} features", m.comps));
            }
            m.norm_t2 = r.f64()?;
            m.norm_q = r.f64()?;
            m.below = r.u32()?;
        }
        e.mv = Some(Box::new(m));
    }
    let terms = r.u32()?;
    for _ in 0..terms {
        e.terms.push((r.u64()?, r.i64()?));
    }
    if version >= 2 {
        let flags = r.u8()?;
        if flags & 1 != 0 {
            let window_ms = r.i64()?;
            let first_ms = r.i64()?;
            let stats = Ewma {
                n: r.u32()?,
                mean: r.f64()?,
                var: r.f64()?,
            };
            let n = r.u32()? as usize;
            if n > 65_536 {
                return Err(format!(
                    "{n} distinct values in a fan-out state (at most 65536)"
                ));
            }
            let mut distinct = Vec::with_capacity(n);
            for _ in 0..n {
                distinct.push(r.u64()?);
            }
            if !distinct.is_sorted() {
                // insert() relies on binary search.
                return Err("fan-out values out of order".into());
            }
            e.fan = Some(Box::new(FanOut {
                window_ms,
                distinct,
                stats,
                alerted: flags & 2 != 0,
                first_ms,
            }));
        }
        if r.u8()? == 1 {
            let name = r.str()?;
            let t = r.i64()?;
            e.travel = place(&name).map(|p| (p, t));
        }
        let flags = r.u8()?;
        if flags & 1 != 0 {
            let pending = r.i64()?;
            e.cmd = Some(Command {
                on: flags & 2 != 0,
                pending_ms: (flags & 4 != 0).then_some(pending),
                last_response: r.f64()?,
            });
        }
    }
    if !r.0.is_empty() {
        return Err("trailing bytes after the state".into());
    }
    Ok(e)
}
