//! The two value types every layer of subvol shares: [`Uuid`] and [`Timespec`].

use std::fmt;
use std::str::FromStr;

/// A btrfs UUID: the 16 raw bytes stored on disk and carried by send streams.
///
/// Displayed and parsed in the `8-4-4-4-12` lowercase hex form of libuuid's `uuid_unparse`,
/// in byte order.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

/// A string that is not an `8-4-4-4-12` hex UUID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a UUID (expected 8-4-4-4-12 hex digits)")]
pub struct ParseUuidError(pub String);

impl Uuid {
    /// All zero: "no UUID".
    pub const NIL: Uuid = Uuid([0; 16]);

    /// True for the all-zero UUID.
    #[must_use]
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses the `8-4-4-4-12` hex form (either case).
    #[must_use]
    pub fn parse(s: &str) -> Option<Uuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut out = [0u8; 16];
        let mut pos = 0;
        for (i, byte) in out.iter_mut().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                if b[pos] != b'-' {
                    return None;
                }
                pos += 1;
            }
            let hi = char::from(b[pos]).to_digit(16)?;
            let lo = char::from(b[pos + 1]).to_digit(16)?;
            *byte = u8::try_from(hi * 16 + lo).ok()?;
            pos += 2;
        }
        Some(Uuid(out))
    }
}

impl From<[u8; 16]> for Uuid {
    fn from(bytes: [u8; 16]) -> Uuid {
        Uuid(bytes)
    }
}

impl FromStr for Uuid {
    type Err = ParseUuidError;
    fn from_str(s: &str) -> Result<Uuid, ParseUuidError> {
        Uuid::parse(s).ok_or_else(|| ParseUuidError(s.to_string()))
    }
}

impl fmt::Display for Uuid {
    /// `8-4-4-4-12` lowercase hex in byte order, as libuuid's `uuid_unparse`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Uuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Uuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A timestamp as btrfs and send streams carry it (CTIME/MTIME/ATIME/OTIME, subvolume times).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds since the epoch; negative before 1970.
    pub sec: i64,
    /// Nanoseconds.
    pub nsec: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_round_trip() {
        let s = "01234567-89ab-cdef-0123-456789abcdef";
        let u: Uuid = s.parse().unwrap();
        assert_eq!(u.to_string(), s);
        assert_eq!(Uuid::parse(&s.to_uppercase()), Some(u));
        for bad in [
            "",
            "0123456789abcdef0123456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdeg",
            "0123456-789ab-cdef-0123-456789abcdef",
            "01234567-89ab-cdef-0123-456789abcdef0",
            "+1234567-89ab-cdef-0123-456789abcdef",
        ] {
            assert!(Uuid::parse(bad).is_none(), "{bad:?}");
        }
        assert!(Uuid::NIL.is_nil());
    }
}
