//! JSON writing for simulated events: timestamps, numbers and IPv4 addresses written by hand
//! into a reused buffer.
//!
//! In: field values (static strings, integers, floats, `u32` addresses). Out: the bytes of one
//! JSON object, fields in the order of the stream's schema, `label` last when present.
//! Guarantees: `ts` is RFC 3339 UTC with exactly three fractional digits and a `Z`; every
//! string written comes from the simulator's own tables, which hold no character that JSON
//! would need escaped (checked in debug builds); floats use fixed precision, whose output is
//! exactly defined by the value, so the bytes are reproducible.

use std::io::Write as _;

/// Writes `ts_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 bytes). Years outside 0..=9999 are not
/// representable in this format; the simulator never gets near them.
pub(crate) fn push_ts(buf: &mut Vec<u8>, ts_ms: i64) {
    let days = ts_ms.div_euclid(86_400_000);
    let ms_of_day = ts_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put_digits(&mut out[0..4], y.clamp(0, 9999) as u64);
    put_digits(&mut out[5..7], u64::from(m));
    put_digits(&mut out[8..10], u64::from(d));
    put_digits(&mut out[11..13], (secs / 3600) as u64);
    put_digits(&mut out[14..16], (secs / 60 % 60) as u64);
    put_digits(&mut out[17..19], (secs % 60) as u64);
    put_digits(&mut out[20..23], (ms_of_day % 1000) as u64);
    buf.extend_from_slice(&out);
}

/// Fills `dst` with the low decimal digits of `v`, zero padded.
fn put_digits(dst: &mut [u8], mut v: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`): integer only, exact for every `i64` day we use.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Decimal digits of `v` into the end of a stack buffer; returns the used tail.
fn itoa(v: u64, tmp: &mut [u8; 20]) -> &[u8] {
    let mut i = tmp.len();
    let mut v = v;
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &tmp[i..]
}

pub(crate) fn push_u64(buf: &mut Vec<u8>, v: u64) {
    let mut tmp = [0u8; 20];
    buf.extend_from_slice(itoa(v, &mut tmp));
}

pub(crate) fn push_i64(buf: &mut Vec<u8>, v: i64) {
    if v < 0 {
        buf.push(b'-');
    }
    push_u64(buf, v.unsigned_abs());
}

/// Dotted-quad text of an IPv4 address held as a `u32` (most significant octet first).
pub(crate) fn push_ip(buf: &mut Vec<u8>, ip: u32) {
    for (i, octet) in ip.to_be_bytes().into_iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        push_u64(buf, u64::from(octet));
    }
}

/// Builds one JSON object in a caller-owned buffer. Starts with `ts`, as every stream does.
pub(crate) struct Obj<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>, ts_ms: i64) -> Obj<'a> {
        buf.clear();
        buf.extend_from_slice(b"{\"ts\":\"");
        push_ts(buf, ts_ms);
        buf.push(b'"');
        Obj { buf }
    }

    fn key(&mut self, k: &str) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        debug_assert!(
            !v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20),
            "string needs JSON escaping: {v:?}"
        );
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(v.as_bytes());
        self.buf.push(b'"');
        self
    }

    /// A string field whose value is the text `v` (an address already rendered elsewhere).
    pub(crate) fn raw_str(&mut self, k: &str, v: &[u8]) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        self.buf.extend_from_slice(v);
        self.buf.push(b'"');
        self
    }

    pub(crate) fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        push_i64(self.buf, v);
        self
    }

    /// A float with a fixed number of decimals (always with a fraction part, so a reader
    /// that infers types sees a float).
    pub(crate) fn float(&mut self, k: &str, v: f64, decimals: usize) -> &mut Self {
        debug_assert!(v.is_finite() && decimals > 0);
        self.key(k);
        // Writing to a Vec cannot fail.
        let _ = write!(self.buf, "{v:.decimals$}");
        self
    }

    pub(crate) fn ip(&mut self, k: &str, ip: u32) -> &mut Self {
        self.key(k);
        self.buf.push(b'"');
        push_ip(self.buf, ip);
        self.buf.push(b'"');
        self
    }

    pub(crate) fn geo(&mut self, country: &str, city: &str) -> &mut Self {
        self.key("geo");
        self.buf.extend_from_slice(b"{\"country\":\"");
        self.buf.extend_from_slice(country.as_bytes());
        self.buf.extend_from_slice(b"\",\"city\":\"");
        self.buf.extend_from_slice(city.as_bytes());
        self.buf.extend_from_slice(b"\"}");
        self
    }

    /// Closes the object, adding the ground-truth `label` of injected events.
    pub(crate) fn finish(&mut self, label: Option<&str>) {
        if let Some(l) = label {
            self.str("label", l);
        }
        self.buf.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> String {
        let mut b = Vec::new();
        push_ts(&mut b, ms);
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn timestamps_match_chrono() {
        // Leap days, year ends, the epoch, and a spread of ordinary instants.
        let mut cases = vec![0, 951_782_400_000, 1_709_164_800_123, 1_767_225_599_999];
        let mut x: i64 = 1;
        for _ in 0..2000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793)
                .wrapping_add(1_442_695_040_888_963)
                & ((1 << 42) - 1);
            cases.push(x);
        }
        for ms in cases {
            let want = chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string();
            assert_eq!(ts(ms), want, "ms = {ms}");
        }
        assert_eq!(ts(1_767_580_380_123), "2026-01-05T02:33:00.123Z");
    }

    #[test]
    fn object_is_valid_json_in_field_order() {
        let mut b = Vec::new();
        Obj::new(&mut b, 1_767_580_380_123)
            .ip("src_ip", 0x0A28_0107)
            .int("n", -42)
            .int("big", 600_000_000)
            .float("v", 1.005, 2)
            .geo("CA", "Ottawa")
            .finish(Some("port_scan"));
        let s = std::str::from_utf8(&b).unwrap();
        assert_eq!(
            s,
            r#"{"ts":"2026-01-05T02:33:00.123Z","src_ip":"10.40.1.7","n":-42,"big":600000000,"v":1.00,"geo":{"country":"CA","city":"Ottawa"},"label":"port_scan"}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["geo"]["country"], "CA");
    }
}
