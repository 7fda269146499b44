//! Shared test fixture: a throw-away btrfs filesystem on a loop device.
//!
//! Used by the `subvol-ioctl` tests and by the root crate's integration
//! tests; include it with
//!
//! ```ignore
//! #[path = "../../tests/support/btrfs_fixture.rs"] // from ioctl/tests/
//! mod btrfs_fixture;
//! ```
//!
//! It depends on `std` only and shells out to the usual tools: `mkfs.btrfs`
//! (btrfs-progs), `losetup`, `mount`, `umount` (util-linux) and `sync`.
//!
//! [`BtrfsFs`] is an RAII guard. Creating one makes a unique directory under
//! `$SUBVOL_TEST_DIR`, `/var/tmp` or the temp dir, a sparse image file in it,
//! runs `mkfs.btrfs -q`, attaches the image with `losetup --find --show` and
//! mounts it on a unique mount point. Dropping it (on every exit path,
//! including panics) unmounts (with retries, then `umount -l`), detaches the
//! loop device and removes the files. Every path is unique, so tests can run
//! in parallel.
//!
//! # Skipping and CI
//!
//! These tests need root, `mkfs.btrfs`, loop devices and btrfs support in
//! the kernel. When something is missing, the `*_or_skip` functions print a
//! line starting with `SKIP` to stderr and return `None`/`false`, so the
//! test can return early. **When the environment variable `CI` is `true`
//! (or `1`) they panic instead**: privileged tests must never be skipped
//! silently in CI.
//!
//! ```ignore
//! #[test]
//! fn snapshot_works() {
//!     let Some(fs) = BtrfsFs::new_or_skip() else { return };
//!     let dir = fs.path(); // the mounted top-level subvolume
//!     // ...
//! }
//! ```

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default image size: 512 MiB (sparse, so it costs only what is written).
pub const DEFAULT_SIZE: u64 = 512 * 1024 * 1024;

/// How a [`BtrfsFs`] is created.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Size of the sparse image file in bytes (mkfs.btrfs needs ≥ ~114 MiB).
    pub size: u64,
    /// Extra arguments for `mkfs.btrfs`, e.g. `["-O", "quota"]` or
    /// `["--nodesize", "4096"]`.
    pub mkfs_args: Vec<String>,
    /// Mount options joined with `,` for `mount -o`, e.g. `compress=zstd`.
    pub mount_options: Vec<String>,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            size: DEFAULT_SIZE,
            mkfs_args: Vec::new(),
            mount_options: Vec::new(),
        }
    }
}

impl FsOptions {
    /// Sets the image size in bytes.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// Adds arguments for `mkfs.btrfs`.
    pub fn mkfs_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.mkfs_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a mount option (`-o`), e.g. `"compress=zstd"`.
    pub fn mount_option(mut self, option: impl Into<String>) -> Self {
        self.mount_options.push(option.into());
        self
    }
}

/// True when running in CI (`CI=true` or `CI=1`), where tests must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
        .unwrap_or(false)
}

/// Name of the running test (libtest names each test's thread after it).
fn test_name() -> String {
    thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Reports that the current test cannot run here: prints `SKIP <test>:
/// <reason>` to stderr, or panics when [`in_ci`].
pub fn skip_or_panic(reason: &str) {
    let name = test_name();
    if in_ci() {
        panic!(
            "{name}: privileged btrfs test cannot run: {reason}. CI=true, so this is a \
             failure, not a skip (CI must run as root with btrfs-progs and loop devices)."
        );
    }
    // Written to the stderr handle directly rather than with `eprintln!`,
    // which libtest captures (and hides for passing tests): a skip must be
    // visible in the test log.
    let _ = writeln!(std::io::stderr(), "SKIP {name}: {reason}");
}

/// Whether the effective user id is 0 (read from `/proc/self/status`, so no
/// libc dependency is needed).
pub fn is_root() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Returns true when running as root; otherwise prints a SKIP line and
/// returns false (or panics when [`in_ci`]).
pub fn require_root_or_skip() -> bool {
    if is_root() {
        return true;
    }
    skip_or_panic("needs root (euid 0)");
    false
}

/// Finds an executable in `$PATH`, `/usr/sbin` or `/sbin` (root's tools
/// are not always in the test's `$PATH`).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

fn kernel_has_btrfs() -> bool {
    let listed = || {
        fs::read_to_string("/proc/filesystems")
            .map(|s| {
                s.lines()
                    .any(|l| l.split_whitespace().last() == Some("btrfs"))
            })
            .unwrap_or(false)
    };
    if listed() {
        return true;
    }
    // The module may just not be loaded yet.
    if let Some(modprobe) = find_tool("modprobe") {
        let _ = Command::new(modprobe).args(["-q", "btrfs"]).status();
    }
    listed()
}

/// Tools found by [`check_prerequisites`].
struct Tools {
    mkfs: PathBuf,
    losetup: PathBuf,
    mount: PathBuf,
    umount: PathBuf,
}

/// Checks everything a loop-mounted btrfs needs; `Err` says what is missing.
fn check_prerequisites() -> Result<Tools, String> {
    if !is_root() {
        return Err("needs root (euid 0)".into());
    }
    let tool = |name: &str, package: &str| {
        find_tool(name).ok_or_else(|| format!("`{name}` not found (install {package})"))
    };
    let tools = Tools {
        mkfs: tool("mkfs.btrfs", "btrfs-progs")?,
        losetup: tool("losetup", "util-linux")?,
        mount: tool("mount", "mount")?,
        umount: tool("umount", "mount")?,
    };
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control is missing (no loop device support)".into());
    }
    if !kernel_has_btrfs() {
        return Err("the kernel does not support btrfs (not in /proc/filesystems)".into());
    }
    Ok(tools)
}

/// Like [`require_root_or_skip`], but checks everything [`BtrfsFs`] needs.
pub fn btrfs_available_or_skip() -> bool {
    match check_prerequisites() {
        Ok(_) => true,
        Err(reason) => {
            skip_or_panic(&reason);
            false
        }
    }
}

/// Runs a command; `Ok(stdout)` on exit status 0, otherwise an error
/// message with the command line, status and stderr.
fn run(program: &Path, args: &[&OsStr]) -> Result<String, String> {
    let describe = || {
        let mut s = program.display().to_string();
        for a in args {
            let _ = write!(s, " {}", a.to_string_lossy());
        }
        s
    };
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("`{}` could not be started: {e}", describe()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            describe(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Serialises `losetup --find` within this process: parallel test threads
/// would otherwise race for the same free device (util-linux retries, but
/// one lock is cheaper than relying on that).
static LOSETUP_LOCK: Mutex<()> = Mutex::new(());

/// Makes a fresh, uniquely named directory for one filesystem.
fn unique_dir() -> std::io::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = std::env::var_os("SUBVOL_TEST_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/var/tmp")).filter(|p| p.is_dir()))
        .unwrap_or_else(std::env::temp_dir);
    // Keep a readable hint of the test name in the path for debugging.
    let hint: String = test_name()
        .chars()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "subvol-btrfs-{}-{}-{nanos:08x}-{hint}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A mounted, throw-away btrfs filesystem; everything is undone on drop.
#[derive(Debug)]
pub struct BtrfsFs {
    /// The unique directory holding the image and the mount point.
    dir: PathBuf,
    image: PathBuf,
    mountpoint: PathBuf,
    loop_device: Option<PathBuf>,
    mounted: bool,
    umount: PathBuf,
    losetup: PathBuf,
}

impl BtrfsFs {
    /// A 512 MiB filesystem with default mkfs and mount options, or `None`
    /// (after printing a SKIP line) if this machine cannot provide one.
    /// Panics instead of returning `None` when `CI=true`.
    pub fn new_or_skip() -> Option<BtrfsFs> {
        Self::with_options_or_skip(FsOptions::default())
    }

    /// Like [`BtrfsFs::new_or_skip`] with a non-default size.
    pub fn with_size_or_skip(size: u64) -> Option<BtrfsFs> {
        Self::with_options_or_skip(FsOptions::default().size(size))
    }

    /// Like [`BtrfsFs::new_or_skip`] with explicit options.
    ///
    /// Missing prerequisites (not root, no `mkfs.btrfs`, no loop devices, no
    /// btrfs in the kernel, `losetup` or a `mount` refused for lack of
    /// permission) skip, or panic in CI. Any other failure (mkfs rejecting
    /// its arguments, a bad mount option) panics: it is a bug in the test.
    pub fn with_options_or_skip(options: FsOptions) -> Option<BtrfsFs> {
        let tools = match check_prerequisites() {
            Ok(tools) => tools,
            Err(reason) => {
                skip_or_panic(&reason);
                return None;
            }
        };
        match Self::create(&tools, &options) {
            Ok(fs) => Some(fs),
            Err(SetupError::Unavailable(reason)) => {
                skip_or_panic(&reason);
                None
            }
            Err(SetupError::Failed(reason)) => panic!("btrfs test fixture: {reason}"),
        }
    }

    fn create(tools: &Tools, options: &FsOptions) -> Result<BtrfsFs, SetupError> {
        let dir = unique_dir()
            .map_err(|e| SetupError::Failed(format!("cannot create a scratch directory: {e}")))?;
        // From here on, `fs` owns everything created; an early return or a
        // panic drops it, which undoes whatever was done so far.
        let mut fs = BtrfsFs {
            image: dir.join("btrfs.img"),
            mountpoint: dir.join("mnt"),
            dir,
            loop_device: None,
            mounted: false,
            umount: tools.umount.clone(),
            losetup: tools.losetup.clone(),
        };
        let failed =
            |what: &str, e: &dyn std::fmt::Display| SetupError::Failed(format!("{what}: {e}"));

        File::create(&fs.image)
            .and_then(|f| f.set_len(options.size))
            .map_err(|e| failed("cannot create the sparse image", &e))?;
        fs::create_dir(&fs.mountpoint).map_err(|e| failed("cannot create the mount point", &e))?;

        let mut mkfs_args: Vec<&OsStr> = vec![OsStr::new("-q")];
        mkfs_args.extend(options.mkfs_args.iter().map(OsStr::new));
        mkfs_args.push(fs.image.as_os_str());
        run(&tools.mkfs, &mkfs_args).map_err(|e| failed("mkfs.btrfs failed", &e))?;

        let loop_device = {
            let _guard = LOSETUP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let mut last_err = String::new();
            let mut dev = None;
            for attempt in 0..3 {
                if attempt > 0 {
                    thread::sleep(Duration::from_millis(200));
                }
                let args = [
                    OsStr::new("--find"),
                    OsStr::new("--show"),
                    fs.image.as_os_str(),
                ];
                match run(&tools.losetup, &args) {
                    Ok(out) => {
                        dev = Some(PathBuf::from(out.trim()));
                        break;
                    }
                    Err(e) => last_err = e,
                }
            }
            dev.ok_or_else(|| {
                SetupError::Unavailable(format!("no usable loop device: {last_err}"))
            })?
        };
        if !loop_device.starts_with("/dev") {
            return Err(SetupError::Failed(format!(
                "losetup printed an unexpected device name {loop_device:?}"
            )));
        }
        fs.loop_device = Some(loop_device.clone());

        let opts = options.mount_options.join(",");
        let mut mount_args: Vec<&OsStr> = vec![OsStr::new("-t"), OsStr::new("btrfs")];
        if !opts.is_empty() {
            mount_args.extend([OsStr::new("-o"), OsStr::new(&opts)]);
        }
        mount_args.extend([loop_device.as_os_str(), fs.mountpoint.as_os_str()]);
        if let Err(e) = run(&tools.mount, &mount_args) {
            let lower = e.to_lowercase();
            return Err(
                if lower.contains("permission denied")
                    || lower.contains("operation not permitted")
                    || lower.contains("must be superuser")
                {
                    SetupError::Unavailable(format!("mounting is not permitted here: {e}"))
                } else {
                    SetupError::Failed(format!("mount failed: {e}"))
                },
            );
        }
        fs.mounted = true;
        Ok(fs)
    }

    /// The mount point: the filesystem's top-level subvolume (id 5), unless
    /// a `subvol=` mount option was given.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// The loop device (e.g. `/dev/loop3`).
    pub fn loop_device(&self) -> &Path {
        self.loop_device
            .as_deref()
            .expect("a constructed BtrfsFs always has a loop device")
    }

    /// Commits everything written so far (`sync -f` on the mount point, i.e.
    /// `syncfs`, which commits the btrfs transaction). Panics on failure.
    pub fn sync(&self) {
        let sync = find_tool("sync").unwrap_or_else(|| PathBuf::from("sync"));
        if let Err(e) = run(&sync, &[OsStr::new("-f"), self.mountpoint.as_os_str()]) {
            panic!("btrfs test fixture: sync failed: {e}");
        }
    }

    /// Unmounts: several plain attempts (something may still hold a file
    /// open for a moment, e.g. a thread of a panicking test), then a lazy
    /// unmount. Returns whether the mount is gone from the namespace.
    fn unmount(&mut self) -> bool {
        let mnt = self.mountpoint.as_os_str();
        let mut last_err = String::new();
        for attempt in 0..8u64 {
            match run(&self.umount, &[mnt]) {
                Ok(_) => {
                    self.mounted = false;
                    return true;
                }
                Err(e) => last_err = e,
            }
            thread::sleep(Duration::from_millis(100 * (attempt + 1)));
        }
        eprintln!("btrfs test fixture: umount keeps failing ({last_err}); using umount -l");
        match run(&self.umount, &[OsStr::new("-l"), mnt]) {
            Ok(_) => {
                self.mounted = false;
                true
            }
            Err(e) => {
                eprintln!("btrfs test fixture: umount -l failed too: {e}");
                false
            }
        }
    }
}

impl Drop for BtrfsFs {
    /// Undoes the setup in reverse order. Never panics (it may run while a
    /// test panics); problems are reported on stderr. Nothing under the
    /// mount point is deleted unless the filesystem is really unmounted.
    fn drop(&mut self) {
        if self.mounted && !self.unmount() {
            eprintln!(
                "btrfs test fixture: leaving {} mounted and {} in place",
                self.mountpoint.display(),
                self.dir.display()
            );
            return;
        }
        if let Some(dev) = self.loop_device.take() {
            let mut detached = false;
            for attempt in 0..5u64 {
                // After a lazy unmount the device may still be busy; detaching
                // then sets autoclear, so it goes away once the fs lets go.
                if run(&self.losetup, &[OsStr::new("-d"), dev.as_os_str()]).is_ok() {
                    detached = true;
                    break;
                }
                thread::sleep(Duration::from_millis(100 * (attempt + 1)));
            }
            if !detached {
                eprintln!("btrfs test fixture: could not detach {}", dev.display());
            }
        }
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.mountpoint);
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!(
                "btrfs test fixture: could not remove {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// Why [`BtrfsFs::create`] failed.
enum SetupError {
    /// The environment cannot provide a loop-mounted btrfs (skip, or fail in CI).
    Unavailable(String),
    /// Setup went wrong in a way that points at a bug (always fails).
    Failed(String),
}
