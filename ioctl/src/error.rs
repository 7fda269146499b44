//! The crate's error type.

use std::io;

use nix::errno::Errno;

/// Result alias used by every function of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a btrfs ioctl wrapper.
///
/// Every variant names the operation (usually the ioctl's kernel name, e.g.
/// `BTRFS_IOC_SUBVOL_CREATE_V2`), and [`Error::errno`] gives an errno value
/// for every variant so that callers can branch on `ENOSPC`, `ENOTTY`,
/// `EINVAL`, `EEXIST`, … without matching variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel rejected the call. Displays as e.g. `BTRFS_IOC_SUBVOL_CREATE_V2 failed`;
    /// the OS error (`File exists (os error 17)`) is the source.
    #[error("{op} failed")]
    Ioctl {
        /// The ioctl (or operation) that failed.
        op: &'static str,
        /// The OS error; `source.raw_os_error()` is always `Some`.
        #[source]
        source: io::Error,
    },

    /// An argument was rejected before calling the kernel (a name that is
    /// empty, `.`/`..`, or contains `/` or NUL; an oversized buffer; …).
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operation the argument was meant for.
        op: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A subvolume or file name is longer than btrfs allows (255 bytes).
    #[error("{op}: name is {len} bytes long, the btrfs limit is {max}")]
    NameTooLong {
        /// The operation the name was meant for.
        op: &'static str,
        /// Length of the rejected name in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// `FIDEDUPERANGE` compared the two ranges and found different data
    /// (`FILE_DEDUPE_RANGE_DIFFERS`); nothing was deduplicated.
    #[error("{op}: the source and destination ranges differ")]
    DedupeDiffers {
        /// Always `FIDEDUPERANGE`.
        op: &'static str,
    },

    /// A subvolume (or one of its ancestors) has no entry in the root tree:
    /// it does not exist or is being deleted.
    #[error("{op}: subvolume {id} not found")]
    SubvolNotFound {
        /// The operation that looked it up.
        op: &'static str,
        /// The missing subvolume id.
        id: u64,
    },

    /// The kernel returned data this crate could not parse (truncated
    /// search results, a cycle in subvolume back references, …).
    #[error("{op}: malformed data from the kernel: {reason}")]
    Malformed {
        /// The operation whose result was malformed.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// Wraps a kernel errno for operation `op`.
    pub(crate) fn sys(op: &'static str, errno: Errno) -> Self {
        Error::Ioctl {
            op,
            source: io::Error::from_raw_os_error(errno as i32),
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            op,
            reason: reason.into(),
        }
    }

    /// The operation (ioctl name) that failed.
    pub fn op(&self) -> &'static str {
        match self {
            Error::Ioctl { op, .. }
            | Error::InvalidArgument { op, .. }
            | Error::NameTooLong { op, .. }
            | Error::DedupeDiffers { op }
            | Error::SubvolNotFound { op, .. }
            | Error::Malformed { op, .. } => op,
        }
    }

    /// The errno describing this error.
    ///
    /// For [`Error::Ioctl`] this is exactly what the kernel returned. The
    /// other variants map to the errno the kernel would most plausibly have
    /// given: `InvalidArgument` → `EINVAL`, `NameTooLong` → `ENAMETOOLONG`,
    /// `SubvolNotFound` → `ENOENT`, `Malformed` → `EIO`, and `DedupeDiffers`
    /// (which has no errno of its own) → `EBADE`.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Ioctl { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::InvalidArgument { .. } => libc::EINVAL,
            Error::NameTooLong { .. } => libc::ENAMETOOLONG,
            Error::DedupeDiffers { .. } => libc::EBADE,
            Error::SubvolNotFound { .. } => libc::ENOENT,
            Error::Malformed { .. } => libc::EIO,
        }
    }

    /// The errno the kernel returned, or `None` if the error was detected in
    /// user space (invalid argument, differing dedupe ranges, …).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Ioctl { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

impl From<Error> for io::Error {
    /// Converts to an [`io::Error`] whose kind matches [`Error::errno`] and
    /// whose message keeps the operation name.
    fn from(err: Error) -> io::Error {
        let kind = io::Error::from_raw_os_error(err.errno()).kind();
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_errno() {
        let e = Error::sys("BTRFS_IOC_SUBVOL_CREATE_V2", Errno::EEXIST);
        assert_eq!(e.to_string(), "BTRFS_IOC_SUBVOL_CREATE_V2 failed");
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("File exists (os error 17)".to_string())
        );
        assert_eq!(e.errno(), libc::EEXIST);
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        assert_eq!(e.op(), "BTRFS_IOC_SUBVOL_CREATE_V2");

        let e = Error::invalid("BTRFS_IOC_SNAP_DESTROY_V2", "name contains '/'");
        assert_eq!(e.errno(), libc::EINVAL);
        assert_eq!(e.raw_os_error(), None);
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidInput);
        assert!(io.to_string().contains("BTRFS_IOC_SNAP_DESTROY_V2"));
    }
}
