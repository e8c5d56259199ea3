//! A compact binary encoding for detector state ([`super::StateEntry`] values): LEB128
//! varints, zigzag for signed numbers, length-prefixed bytes. Written and read field by field
//! by the detector that owns the state; no schema travels with it, so every value starts with
//! a version byte that its reader checks.
//!
//! Why not serde: the state is written every checkpoint interval for every changed key, and
//! restored for a million keys at start; a hand-rolled encoding costs no dependency and no
//! intermediate structures, and keeps the hot loop free of formatting.

/// Appends encoded fields to a buffer.
#[derive(Debug, Default)]
pub struct Enc {
    /// The encoded bytes so far.
    pub buf: Vec<u8>,
}

impl Enc {
    /// An empty encoder.
    pub fn new() -> Enc {
        Enc::default()
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// An unsigned integer, LEB128.
    pub fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// A signed integer, zigzag then LEB128 (small magnitudes stay small).
    pub fn i64(&mut self, v: i64) {
        self.u64(((v << 1) ^ (v >> 63)) as u64);
    }

    /// A float, its 8 bytes (exact, NaN included).
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// Optional bytes: a presence byte, then the bytes.
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.bytes(v);
            }
        }
    }

    /// An optional signed integer.
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
        }
    }
}

/// State that cannot be decoded: written by another version, or damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state entry cannot be decoded: {0}")]
pub struct DecodeError(pub &'static str);

/// Reads fields back in the order they were written.
#[derive(Debug)]
pub struct Dec<'a> {
    rest: &'a [u8],
}

impl<'a> Dec<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Dec<'a> {
        Dec { rest: bytes }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let (&b, rest) = self.rest.split_first().ok_or(DecodeError("truncated"))?;
        self.rest = rest;
        Ok(b)
    }

    /// An unsigned integer.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    /// An unsigned integer that must fit `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.u64()?).map_err(|_| DecodeError("integer out of range"))
    }

    /// A length or count: bounded by the bytes left, so damaged input cannot make a reader
    /// allocate without bound.
    pub fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > self.rest.len() as u64 + 1 {
            return Err(DecodeError("length beyond the end"));
        }
        Ok(n as usize)
    }

    /// A signed integer.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A float.
    pub fn f64(&mut self) -> Result<f64, DecodeError> {
        if self.rest.len() < 8 {
            return Err(DecodeError("truncated"));
        }
        let (b, rest) = self.rest.split_at(8);
        self.rest = rest;
        Ok(f64::from_bits(u64::from_le_bytes(
            b.try_into().expect("8 bytes"),
        )))
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        if self.rest.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (b, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(b)
    }

    /// Optional bytes.
    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            _ => Err(DecodeError("bad presence byte")),
        }
    }

    /// An optional signed integer.
    pub fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.i64().map(Some),
            _ => Err(DecodeError("bad presence byte")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_back_as_written() {
        let mut e = Enc::new();
        e.u8(7);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            e.u64(v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            e.i64(v);
        }
        e.f64(-0.5);
        e.bytes(b"abc");
        e.opt_bytes(None);
        e.opt_bytes(Some(b""));
        e.opt_i64(Some(-9));
        let mut d = Dec::new(&e.buf);
        assert_eq!(d.u8().unwrap(), 7);
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(d.u64().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -300] {
            assert_eq!(d.i64().unwrap(), v);
        }
        assert_eq!(d.f64().unwrap(), -0.5);
        assert_eq!(d.bytes().unwrap(), b"abc");
        assert_eq!(d.opt_bytes().unwrap(), None);
        assert_eq!(d.opt_bytes().unwrap(), Some(&b""[..]));
        assert_eq!(d.opt_i64().unwrap(), Some(-9));
        assert!(d.is_empty());
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic_or_a_huge_allocation() {
        let mut e = Enc::new();
        e.u64(1 << 40); // a length far beyond the input
        assert!(Dec::new(&e.buf).bytes().is_err());
        assert!(Dec::new(&[0x80]).u64().is_err());
        assert!(Dec::new(&[1, 2]).f64().is_err());
        assert!(Dec::new(&[2]).opt_bytes().is_err());
    }
}
