//! PAT secrets in the real 84-character format: 52 random characters, a fixed signature block, the
//! `AZDO` provider signature at zero-based positions 76..80 and a 4-character checksum. Only a SHA-256
//! hash of a secret is ever kept.

use rand::Rng;
use sha2::{Digest, Sha256};

pub const PAT_LEN: usize = 84;
const BASE62: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const CASK_SIGNATURE: &str = "JQQJ99";

/// The SHA-256 of a secret (what the emulator stores and looks up by).
pub type SecretHash = [u8; 32];

pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new PAT value. The caller must hand it out once and keep only [`hash`].
pub fn generate(now_year: i32, now_month: u8) -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(PAT_LEN);
    for _ in 0..52 {
        s.push(BASE62[rng.random_range(0..BASE62.len())] as char);
    }
    s.push_str(CASK_SIGNATURE); // 52..58
    s.push('A'); // 58: format version
    s.push(BASE62[((now_year - 2024).rem_euclid(62)) as usize] as char); // 59: year
    s.push(BASE62[usize::from(now_month.saturating_sub(1)) % 62] as char); // 60: month
    for _ in 61..76 {
        s.push(BASE62[rng.random_range(0..BASE62.len())] as char);
    }
    s.push_str("AZDO"); // 76..80
    let sum = Sha256::digest(s.as_bytes());
    for b in sum.iter().take(4) {
        s.push(BASE62[usize::from(*b) % 62] as char);
    }
    s
}

/// Whether a string has the PAT shape (length, signatures and checksum). Cheap pre-check before lookup.
pub fn looks_like_pat(s: &str) -> bool {
    if s.len() != PAT_LEN || !s.is_ascii() {
        return false;
    }
    if &s[52..58] != CASK_SIGNATURE || &s[76..80] != "AZDO" {
        return false;
    }
    let sum = Sha256::digest(&s.as_bytes()[..80]);
    sum.iter().take(4).zip(s.as_bytes()[80..].iter()).all(|(b, c)| BASE62[usize::from(*b) % 62] == *c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_84_chars_with_azdo_signature_and_checksum() {
        let p = generate(2026, 7);
        assert_eq!(p.len(), 84);
        assert_eq!(&p[76..80], "AZDO");
        assert!(looks_like_pat(&p));
        let mut broken = p.clone().into_bytes();
        broken[3] = if broken[3] == b'A' { b'B' } else { b'A' };
        assert!(!looks_like_pat(&String::from_utf8(broken).unwrap()));
        assert_ne!(generate(2026, 7)[..52], p[..52]);
    }
}
