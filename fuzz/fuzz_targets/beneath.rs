//! Stream path checking and resolution (`recv::beneath`): `split` and `is_within` on arbitrary
//! bytes, and every accepted parent opened with `open_dir` beneath a temporary root that holds
//! symlinks pointing out of it: a handle is either refused or a directory inside the root.

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use subvol::recv::beneath::{NAME_MAX, PATH_MAX, PathRefusal, is_within, open_dir, split};

/// A root directory with a subdirectory, a regular file and symlinks to `/`, `..` and a file.
fn root() -> &'static (PathBuf, OwnedFd) {
    static ROOT: OnceLock<(PathBuf, OwnedFd)> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("subvol-fuzz-beneath-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/", dir.join("l")).unwrap();
        std::os::unix::fs::symlink("..", dir.join("a/up")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join("a/p")).unwrap();
        let fd = std::fs::File::open(&dir).unwrap().into();
        (dir.canonicalize().unwrap(), fd)
    })
}

fuzz_target!(|input: &[u8]| {
    // The input is `path`, or `path 0xFF prefix` to also try `is_within` with a prefix.
    let (path, prefix) = match input.iter().position(|&b| b == 0xff) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &b""[..]),
    };
    check_within(path, prefix);
    match split(path) {
        Ok(None) => assert!(path.is_empty()),
        Ok(Some((parent, name))) => {
            assert!(path.len() < PATH_MAX && path[0] != b'/' && !path.contains(&0));
            assert!(!name.is_empty() && name.len() <= NAME_MAX && !name.contains(&b'/'));
            assert!(name != b"." && name != b"..");
            match parent {
                None => assert_eq!(name, path),
                Some(p) => {
                    assert_eq!([p, b"/", name].concat(), path);
                    // The parent of an accepted path is itself accepted.
                    assert!(matches!(split(p), Ok(Some(_))));
                    assert!(is_within(path, p));
                    resolve(p);
                }
            }
        }
        Err(refusal) => {
            let why_ok = match refusal {
                PathRefusal::Absolute => path.first() == Some(&b'/'),
                PathRefusal::Nul => path.contains(&0),
                PathRefusal::TooLong => {
                    path.len() >= PATH_MAX || path.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX)
                }
                PathRefusal::DotDot => path.split(|&b| b == b'/').any(|c| c == b".."),
                PathRefusal::Dot => path.split(|&b| b == b'/').any(|c| c == b"."),
                PathRefusal::EmptyComponent => path.split(|&b| b == b'/').any(<[u8]>::is_empty),
                PathRefusal::Root => true,
            };
            assert!(why_ok, "{refusal} for {path:?}");
        }
    }
});

/// `is_within` agrees with a component-wise prefix test.
fn check_within(path: &[u8], prefix: &[u8]) {
    let expected =
        path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'));
    assert_eq!(is_within(path, prefix), expected);
}

/// Opening an accepted parent never leaves the root.
fn resolve(parent: &[u8]) {
    let (dir, fd) = root();
    if let Ok(h) = open_dir(fd.as_fd(), parent) {
        let at = std::fs::read_link(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            h.as_raw_fd()
        }))
        .unwrap();
        assert!(
            at.starts_with(dir),
            "{parent:?} resolved to {}",
            at.display()
        );
        assert!(Path::new(&at).is_dir());
    }
}
