//! Nix's base32 ("nix32"): the encoding of store path hashes and of the
//! hashes nix writes into narinfo files.
//!
//! It is not RFC 4648: the alphabet drops `e o u t`, and it reads the bytes
//! from the least-significant end, so the first character holds the top bits
//! of the last byte.

use crate::error::{excerpt, Error};

/// The 32 digits, in value order.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Length of the encoding of `byte_len` bytes: `ceil(8 * byte_len / 5)`.
pub fn encoded_len(byte_len: usize) -> usize {
    (byte_len * 8).div_ceil(5)
}

/// Encodes `bytes` the way nix prints hashes.
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = u16::from(bytes[i]) >> j;
        let high = bytes.get(i + 1).map_or(0, |&next| u16::from(next) << (8 - j));
        out.push(char::from(ALPHABET[usize::from((low | high) & 31)]));
    }
    out
}

/// Value of one nix32 digit, or `None` for a character outside the alphabet.
fn digit_value(c: u8) -> Option<u8> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u8)
}

/// Decodes a nix32 string. Like nix, it rejects characters outside the
/// alphabet and a first digit whose bits do not fit in the output, so every
/// byte string has exactly one accepted encoding.
pub fn decode(s: &str) -> Result<Vec<u8>, Error> {
    let chars = s.as_bytes();
    let byte_len = chars.len() * 5 / 8;
    if encoded_len(byte_len) != chars.len() {
        return Err(Error::Nix32(format!("length {} is not the encoding of any byte length", chars.len())));
    }
    let mut out = vec![0u8; byte_len];
    for (n, &c) in chars.iter().rev().enumerate() {
        let digit = digit_value(c)
            .ok_or_else(|| Error::Nix32(format!("invalid character '{}' in '{}'", char::from(c).escape_default(), excerpt(s))))?;
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let digit = u16::from(digit);
        out[i] |= (digit << j) as u8;
        let carry = (digit >> (8 - j)) as u8;
        if i + 1 < byte_len {
            out[i + 1] |= carry;
        } else if carry != 0 {
            return Err(Error::Nix32(format!("'{}' has non-zero bits beyond the last byte", excerpt(s))));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        assert_eq!(encoded_len(0), 0);
        assert_eq!(encoded_len(1), 2);
        assert_eq!(encoded_len(20), 32);
        assert_eq!(encoded_len(32), 52);
        assert_eq!(encoded_len(64), 103);
    }

    #[test]
    fn known_vectors() {
        // sha256("") as printed by `nix hash to-base32`.
        let empty = hex::decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").unwrap();
        assert_eq!(encode(&empty), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        // 16 bytes 00..0f, checked with `nix hash to-base32 --type md5`.
        let ramp: Vec<u8> = (0..16).collect();
        assert_eq!(encode(&ramp), "0g1q6hq2qa1440f1h50h1h4080");
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0]), "00");
        assert_eq!(encode(&[1]), "01");
        assert_eq!(encode(&[0x1f]), "0z");
        assert_eq!(encode(&[0xff]), "7z");
        assert_eq!(encode(&[0, 1]), "0080");
    }

    #[test]
    fn round_trips() {
        for len in 0..70usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + len * 11) as u8 ^ 0xa5).collect();
            let text = encode(&bytes);
            assert_eq!(text.len(), encoded_len(len));
            assert_eq!(decode(&text).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn rejects_bad_characters() {
        for bad in ["e0", "0o", "u0", "0t", "0A", "0-", "0 "] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_overflow_bits() {
        // Two digits carry 10 bits for one byte: the top two must be zero.
        assert_eq!(decode("7z").unwrap(), vec![0xff]);
        assert!(decode("8z").is_err());
        assert!(decode("z0").is_err());
    }

    #[test]
    fn rejects_impossible_lengths() {
        // 8 bytes -> 13 chars and 7 -> 12, so no byte length encodes to 3.
        assert!(decode("000").is_err());
        assert!(decode("0").is_err());
        assert_eq!(decode("").unwrap(), Vec::<u8>::new());
    }
}
