//! Lowercase hex, as used for key ids, signatures, digests and nonces.

/// Lowercase hex of `bytes`.
#[must_use]
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    ::hex::encode(bytes)
}

/// Decodes exactly `N` bytes from `2 * N` hex digits; with `lowercase_only`, uppercase digits
/// are refused (canonical forms such as content names).
#[must_use]
pub fn decode_array<const N: usize>(s: &str, lowercase_only: bool) -> Option<[u8; N]> {
    if lowercase_only && s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    ::hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(encode([0x01, 0xab]), "01ab");
        assert_eq!(decode_array::<2>("01ab", true), Some([0x01, 0xab]));
        assert_eq!(decode_array::<2>("01AB", false), Some([0x01, 0xab]));
        assert_eq!(decode_array::<2>("01AB", true), None);
        assert_eq!(decode_array::<2>("01a", false), None);
        assert_eq!(decode_array::<2>("01abcd", false), None);
        assert_eq!(decode_array::<1>("x1", false), None);
    }
}
