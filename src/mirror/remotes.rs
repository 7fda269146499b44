//! Remotes as configuration (as OSTree and Flatpak keep them): a named list of mirror URLs and
//! the trust to pull from them with, one file per remote.
//!
//! ```text
//! CONFIG/remotes.d/NAME.conf            URL=, VERIFY=, ROOT= lines (below)
//! CONFIG/remotes.d/NAME.d/<key-id>.pub  each accepted public key, copied at `remote add`
//! CONFIG/remotes.d/NAME.d/root-<h>.json the trusted root metadata file, copied at `remote add`
//! ```
//!
//! `CONFIG` is `/etc/subvol` for the system ([`SYSTEM_CONFIG_DIR`]). Key and root files are
//! copied, so a remote never depends on a path that may vanish; the root file's name carries the
//! first 16 hex digits of its SHA-256, so replacing a remote (`--force`) never changes a file the
//! old configuration names: the new files are written first, the `.conf` replaced in one rename,
//! and only then are files the new configuration does not name removed.
//!
//! The `.conf` file is `KEY=VALUE` lines (a systemd `EnvironmentFile` would read it too),
//! `#` comments and blank lines ignored: `URL=` once per mirror in the order they are tried,
//! `VERIFY=` once per key file and `ROOT=` at most once, both relative to `remotes.d/`.
//! `add` and `remove` hold an exclusive `flock` on `remotes.d` (a concurrent one fails as busy).

use super::MirrorError;
use crate::sign::{KeySet, PublicKey};
use crate::util::fs::{LockError, lock_dir, write_atomic};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The system configuration directory.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/subvol";

/// The directory of remote files under a configuration directory.
pub const REMOTES_DIR: &str = "remotes.d";

/// Longest remote name.
const MAX_NAME: usize = 64;

/// Largest root metadata file accepted at `remote add`.
const MAX_ROOT_BYTES: u64 = 1 << 20;

/// One configured remote.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RemoteConfig {
    /// Its name.
    pub name: String,
    /// Mirror URLs (or directories), in the order they are tried.
    pub urls: Vec<String>,
    /// The stored public key files (absolute paths).
    pub keys: Vec<PathBuf>,
    /// The stored trusted root metadata file (absolute path).
    pub root: Option<PathBuf>,
    /// The `.conf` file.
    pub file: PathBuf,
}

/// What `subvol remote add` stores.
#[derive(Clone, Debug, Default)]
pub struct AddRemote {
    /// The name.
    pub name: String,
    /// Mirror URLs, in order.
    pub urls: Vec<String>,
    /// Public key files to copy.
    pub keys: Vec<PathBuf>,
    /// Root metadata file to copy.
    pub root: Option<PathBuf>,
    /// Replace a remote of that name.
    pub force: bool,
}

/// True for a usable remote name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or
/// `-` (it becomes a file name, and must never look like a path or an option).
#[must_use]
pub fn valid_remote_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_NAME
        && !n.starts_with(['.', '-'])
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a mirror location: `http://HOST...`, `https://HOST...`, `oci://...`,
/// `oci+http://...`, `file:///abs` or an absolute directory; no whitespace or control
/// characters (one per line in the file).
///
/// # Errors
/// [`MirrorError::InvalidUrl`] saying why.
pub fn check_url(url: &str) -> Result<(), MirrorError> {
    let bad = |reason: &str| MirrorError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains white space or control characters"));
    }
    for scheme in ["http://", "https://", "oci://", "oci+http://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() || host.contains('@') {
                return Err(bad("it names no host (or carries credentials)"));
            }
            return Ok(());
        }
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.starts_with('/') {
        return Ok(());
    }
    Err(bad(
        "use http://, https://, oci://, oci+http://, file:// or an absolute directory",
    ))
}

/// `CONFIG/remotes.d`.
#[must_use]
pub fn remotes_dir(config: &Path) -> PathBuf {
    config.join(REMOTES_DIR)
}

fn conf_name(name: &str) -> String {
    format!("{name}.conf")
}

fn trust_dir_name(name: &str) -> String {
    format!("{name}.d")
}

fn check_name(name: &str) -> Result<(), MirrorError> {
    if valid_remote_name(name) {
        Ok(())
    } else {
        Err(MirrorError::InvalidRemoteName(name.to_string()))
    }
}

/// Stores a remote (see the module docs).
///
/// # Errors
/// An invalid name or URL, no URL, no key and no root, unreadable or malformed key or root
/// files, a remote of that name without `force`, I/O errors. Nothing is changed then.
pub fn add(config: &Path, a: &AddRemote) -> Result<RemoteConfig, MirrorError> {
    check_name(&a.name)?;
    if a.urls.is_empty() {
        return Err(MirrorError::RemoteNoUrl(a.name.clone()));
    }
    for u in &a.urls {
        check_url(u)?;
    }
    if a.keys.is_empty() && a.root.is_none() {
        return Err(MirrorError::RemoteNoTrust(a.name.clone()));
    }
    // Everything is read and checked before anything is written.
    let keys = KeySet::load(&a.keys).map_err(|e| MirrorError::RemoteKey(Box::new(e)))?;
    let root = match &a.root {
        Some(p) => Some(read_root(p)?),
        None => None,
    };
    let dir = remotes_dir(config);
    fs::create_dir_all(&dir).map_err(|e| MirrorError::io("create", &dir, e))?;
    let _lock = lock_dir(&dir).map_err(|e| MirrorError::lock(e, "remote add or remove"))?;
    let conf = dir.join(conf_name(&a.name));
    if !a.force && conf.exists() {
        return Err(MirrorError::RemoteExists {
            name: a.name.clone(),
            file: conf,
        });
    }
    let trust = dir.join(trust_dir_name(&a.name));
    let existed = conf.exists();
    fs::create_dir_all(&trust).map_err(|e| MirrorError::io("create", &trust, e))?;
    let r = write_remote(&dir, &trust, a, &keys, root.as_deref());
    if r.is_err() && !existed {
        // A new remote that could not be written completely leaves nothing behind.
        let _ = fs::remove_dir_all(&trust);
    }
    r
}

/// Writes the key and root files into `trust`, then the `.conf` (see [`add`]).
fn write_remote(
    dir: &Path,
    trust: &Path,
    a: &AddRemote,
    keys: &KeySet,
    root: Option<&[u8]>,
) -> Result<RemoteConfig, MirrorError> {
    let mut text = format!(
        "# subvol remote {}: written by `subvol remote add`; see docs/mirrors.md\n",
        a.name
    );
    for u in &a.urls {
        text.push_str(&format!("URL={u}\n"));
    }
    let mut written: Vec<String> = Vec::new();
    for k in keys.ids() {
        let Some(key) = keys.get(k) else { continue };
        let file = format!("{k}.pub");
        write_atomic(trust, &file, format!("{}\n", key.to_line()).as_bytes())?;
        text.push_str(&format!("VERIFY={}/{file}\n", trust_dir_name(&a.name)));
        written.push(file);
    }
    if let Some(bytes) = root {
        let h = hex::encode(Sha256::digest(bytes));
        let file = format!("root-{}.json", &h[..16]);
        write_atomic(trust, &file, bytes)?;
        text.push_str(&format!("ROOT={}/{file}\n", trust_dir_name(&a.name)));
        written.push(file);
    }
    write_atomic(dir, &conf_name(&a.name), text.as_bytes())?;
    // Files of a replaced configuration that this one does not name.
    if let Ok(rd) = fs::read_dir(trust) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !written.contains(&n) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    parse(dir, &a.name, &text)
}

fn read_root(p: &Path) -> Result<Vec<u8>, MirrorError> {
    let meta = fs::metadata(p).map_err(|e| MirrorError::io("open", p, e))?;
    if !meta.is_file() || meta.len() > MAX_ROOT_BYTES {
        return Err(MirrorError::RemoteRoot {
            path: p.to_path_buf(),
            reason: format!("not a regular file of at most {MAX_ROOT_BYTES} bytes"),
        });
    }
    let bytes = fs::read(p).map_err(|e| MirrorError::io("read", p, e))?;
    if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
        return Err(MirrorError::RemoteRoot {
            path: p.to_path_buf(),
            reason: "not JSON (root metadata is a JSON file)".into(),
        });
    }
    Ok(bytes)
}

/// Parses the `.conf` text of remote `name` in `dir` (`remotes.d`).
fn parse(dir: &Path, name: &str, text: &str) -> Result<RemoteConfig, MirrorError> {
    let file = dir.join(conf_name(name));
    let bad = |line: usize, reason: String| MirrorError::RemoteFile {
        file: file.clone(),
        line,
        reason,
    };
    let mut c = RemoteConfig {
        name: name.to_string(),
        urls: Vec::new(),
        keys: Vec::new(),
        root: None,
        file: file.clone(),
    };
    // A stored file must stay inside this remote's directory.
    let stored = |line: usize, v: &str| -> Result<PathBuf, MirrorError> {
        let prefix = format!("{}/", trust_dir_name(name));
        match v.strip_prefix(&prefix) {
            Some(f) if !f.is_empty() && !f.contains('/') && !f.starts_with('.') => Ok(dir.join(v)),
            _ => Err(bad(
                line,
                format!("{v:?} is not a file in {}", trust_dir_name(name)),
            )),
        }
    };
    for (i, l) in text.lines().enumerate() {
        let n = i + 1;
        let l = l.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            return Err(bad(n, "not a KEY=VALUE line".into()));
        };
        match k {
            "URL" => {
                check_url(v).map_err(|e| bad(n, e.to_string()))?;
                c.urls.push(v.to_string());
            }
            "VERIFY" => c.keys.push(stored(n, v)?),
            "ROOT" if c.root.is_none() => c.root = Some(stored(n, v)?),
            "ROOT" => return Err(bad(n, "ROOT is given twice".into())),
            k => return Err(bad(n, format!("unknown key {k:?} (URL, VERIFY, ROOT)"))),
        }
    }
    if c.urls.is_empty() {
        return Err(bad(0, "no URL= line".into()));
    }
    if c.keys.is_empty() && c.root.is_none() {
        return Err(bad(0, "neither VERIFY= nor ROOT=".into()));
    }
    Ok(c)
}

/// The remote `name`.
///
/// # Errors
/// An invalid name, no such remote, an unreadable or malformed file.
pub fn show(config: &Path, name: &str) -> Result<RemoteConfig, MirrorError> {
    check_name(name)?;
    let dir = remotes_dir(config);
    let file = dir.join(conf_name(name));
    match fs::read_to_string(&file) {
        Ok(text) => parse(&dir, name, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(MirrorError::NoSuchRemote {
            name: name.to_string(),
            dir,
        }),
        Err(e) => Err(MirrorError::io("read", file, e)),
    }
}

/// True when `name` is a valid remote name and `CONFIG/remotes.d/name.conf` exists.
#[must_use]
pub fn exists(config: &Path, name: &str) -> bool {
    valid_remote_name(name) && remotes_dir(config).join(conf_name(name)).is_file()
}

/// Every remote, by name.
///
/// # Errors
/// An unreadable directory or a malformed file (named).
pub fn list(config: &Path) -> Result<Vec<RemoteConfig>, MirrorError> {
    let dir = remotes_dir(config);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(MirrorError::io("read", dir, e)),
    };
    let mut names: Vec<String> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| MirrorError::io("read", &dir, e))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if let Some(name) = n.strip_suffix(".conf")
            && valid_remote_name(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    names.iter().map(|n| show(config, n)).collect()
}

/// Removes remote `name`: its `.conf` first (the remote is gone in one step), then its stored
/// key and root files.
///
/// # Errors
/// An invalid name, no such remote, I/O errors.
pub fn remove(config: &Path, name: &str) -> Result<RemoteConfig, MirrorError> {
    check_name(name)?;
    let dir = remotes_dir(config);
    let _lock = match lock_dir(&dir) {
        Err(LockError::Io(e)) if e.source.kind() == io::ErrorKind::NotFound => {
            return Err(MirrorError::NoSuchRemote {
                name: name.to_string(),
                dir,
            });
        }
        r => r.map_err(|e| MirrorError::lock(e, "remote add or remove"))?,
    };
    let c = match show(config, name) {
        // A malformed file can still be removed.
        Err(MirrorError::RemoteFile { file, .. }) => RemoteConfig {
            name: name.to_string(),
            urls: Vec::new(),
            keys: Vec::new(),
            root: None,
            file,
        },
        r => r?,
    };
    fs::remove_file(&c.file).map_err(|e| MirrorError::io("remove", &c.file, e))?;
    let trust = remotes_dir(config).join(trust_dir_name(name));
    match fs::remove_dir_all(&trust) {
        Ok(()) => Ok(c),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(c),
        Err(e) => Err(MirrorError::io("remove", trust, e)),
    }
}

/// The keys a remote stores.
///
/// # Errors
/// A stored key file is unreadable or malformed.
pub fn load_keys(c: &RemoteConfig) -> Result<Vec<PublicKey>, MirrorError> {
    let set = KeySet::load(&c.keys).map_err(|e| MirrorError::RemoteKey(Box::new(e)))?;
    Ok(set
        .ids()
        .into_iter()
        .filter_map(|k| set.get(k).cloned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        for ok in ["vendor", "a", "os-stable_2.x", &"n".repeat(64)] {
            assert!(valid_remote_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".hidden",
            "-opt",
            "a/b",
            "..",
            "sp ace",
            "é",
            &"n".repeat(65),
        ] {
            assert!(!valid_remote_name(bad), "{bad}");
        }
        for ok in [
            "http://127.0.0.1:8080/",
            "https://m.example/repo",
            "oci://r.example/os:stable",
            "/srv/repo",
            "file:///srv/repo",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ftp://x/",
            "http:///x",
            "http://user:pw@host/",
            "repo",
            "http://a/ b",
            "http://a/\nURL=http://evil/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_conf_line_may_not_reach_outside_its_directory() {
        let dir = Path::new("/etc/subvol/remotes.d");
        for v in [
            "../x.pub",
            "v.d/../../x",
            "/etc/shadow",
            "v.d/",
            "v.d/.hidden",
        ] {
            let text = format!("URL=http://a/\nVERIFY={v}\n");
            let e = parse(dir, "v", &text).unwrap_err();
            assert!(
                matches!(e, MirrorError::RemoteFile { line: 2, .. }),
                "{v}: {e}"
            );
        }
        let c = parse(dir, "v", "# c\n\nURL=http://a/\nVERIFY=v.d/k.pub\n").unwrap();
        assert_eq!(c.keys, vec![dir.join("v.d/k.pub")]);
        let e = parse(dir, "v", "URL=http://a/\nMIRROR=x\n").unwrap_err();
        assert!(e.to_string().contains("unknown key"), "{e}");
    }
}
