//! Pseudonymisation of personal fields in everything that leaves palisade.
//!
//! A personal value (a user name, a badge holder) is replaced by `ps:` and 16 hex digits of
//! HMAC-SHA256 under a key the operator holds. The same value always maps to the same
//! pseudonym, so alerts about one person still group together, but the name cannot be read
//! back without the key (a holder of the key can re-compute the pseudonym of a suspect).

use sha2::{Digest, Sha256};

/// The key used when none is configured: fine for the demo city, never for real data.
const DEMO_KEY: &[u8] = b"palisade-demo-key-not-for-production";

/// Keyed pseudonymisation (HMAC-SHA256).
#[derive(Clone)]
pub struct Pseudonymiser {
    /// Key XOR ipad, ready to hash.
    inner_pad: [u8; 64],
    /// Key XOR opad.
    outer_pad: [u8; 64],
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(<key>)")
    }
}

impl Pseudonymiser {
    /// A pseudonymiser with `key`.
    pub fn new(key: &[u8]) -> Pseudonymiser {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner_pad = [0x36u8; 64];
        let mut outer_pad = [0x5cu8; 64];
        for i in 0..64 {
            inner_pad[i] ^= block[i];
            outer_pad[i] ^= block[i];
        }
        Pseudonymiser {
            inner_pad,
            outer_pad,
        }
    }

    /// Reads the key from the environment variable `var`; falls back to the demo key, and
    /// says so in the second value.
    pub fn from_env(var: &str) -> (Pseudonymiser, bool) {
        match std::env::var(var) {
            Ok(key) if !key.is_empty() => (Pseudonymiser::new(key.as_bytes()), false),
            _ => (Pseudonymiser::new(DEMO_KEY), true),
        }
    }

    /// The pseudonym of `value`.
    pub fn pseudonym(&self, value: &str) -> String {
        let inner = Sha256::new()
            .chain_update(self.inner_pad)
            .chain_update(value.as_bytes())
            .finalize();
        let mac = Sha256::new()
            .chain_update(self.outer_pad)
            .chain_update(inner)
            .finalize();
        let mut out = String::with_capacity(19);
        out.push_str("ps:");
        for byte in &mac[..8] {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let p = Pseudonymiser::new(b"Jefe");
        assert_eq!(
            p.pseudonym("what do ya want for nothing?"),
            "ps:5bdcc146bf60754e"
        );
    }

    #[test]
    fn stable_per_key_and_different_across_keys() {
        let a = Pseudonymiser::new(b"k1");
        let b = Pseudonymiser::new(b"k2");
        assert_eq!(a.pseudonym("m.gagnon"), a.pseudonym("m.gagnon"));
        assert_ne!(a.pseudonym("m.gagnon"), a.pseudonym("m.gagnen"));
        assert_ne!(a.pseudonym("m.gagnon"), b.pseudonym("m.gagnon"));
    }
}
