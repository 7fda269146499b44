//! Escaping of stream-derived bytes (paths, names) for human output: a hostile name must not
//! move the cursor, clear the screen or fake a line of output.

use std::fmt::Write as _;

/// `bytes` as text for a person: printable ASCII and valid UTF-8 as is, backslash as `\\\\`,
/// control characters (C0, DEL, C1) and bytes of invalid UTF-8 as octal `\ooo` (the form
/// btrfs-progs uses for escaped bytes).
#[must_use]
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\{b:03o}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_invalid_utf8() {
        assert_eq!(escape(b"a/b c"), "a/b c");
        assert_eq!(escape("é".as_bytes()), "é");
        assert_eq!(escape(b"a\nb\x1b[2J"), "a\\012b\\033[2J");
        assert_eq!(escape(b"\\x"), "\\\\x");
        assert_eq!(escape(b"\xff\x7f"), "\\377\\177");
        assert_eq!(escape("\u{85}".as_bytes()), "\\302\\205");
    }
}
