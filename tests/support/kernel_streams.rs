//! Real kernel send streams, made once per test process by `tests/fixtures/make-streams.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Keeps the generated directory alive for the whole test process.
struct Generated {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

static STREAMS: OnceLock<Option<Generated>> = OnceLock::new();

/// The directory holding `<name>.stream` and `<name>.dump` files (see the script for names),
/// or None (after a SKIP line, or a panic in CI) when root/btrfs are unavailable.
pub fn kernel_streams() -> Option<&'static Path> {
    STREAMS
        .get_or_init(|| {
            if !super::btrfs_fixture::btrfs_available_or_skip() {
                return None;
            }
            let dir = tempfile::Builder::new()
                .prefix("subvol-kstreams.")
                .tempdir()
                .expect("tempdir");
            let script = super::repo_root().join("tests/fixtures/make-streams.sh");
            let out = Command::new("bash")
                .arg(&script)
                .arg(dir.path())
                .output()
                .expect("run make-streams.sh");
            assert!(
                out.status.success(),
                "make-streams.sh failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let path = dir.path().to_path_buf();
            Some(Generated { _dir: dir, path })
        })
        .as_ref()
        .map(|g| g.path.as_path())
}
