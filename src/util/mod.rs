//! Small helpers every layer uses, each written once: hex, human-readable sizes, random nonces,
//! atomic file writes and directory locks, file-system checks and reads, pipe sizing, and
//! escaping for human output.

pub mod escape;
pub mod fs;
pub mod fsread;
pub mod hex;
pub mod pipe;
pub mod size;

pub use escape::escape;
pub use size::human_size;

/// A random 12-hex-digit nonce for temporary names (unique enough next to the process id).
#[must_use]
pub fn nonce() -> String {
    let mut b = [0u8; 6];
    // Without randomness the process id and the exclusive create still keep names apart.
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Seconds since the Unix epoch (0 if the clock is before it).
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An error and its `source()` chain on one line, `outer: cause: root cause` (for reports that
/// keep one string per failure, such as the files a pull gave up).
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}
