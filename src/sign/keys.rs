//! Key files: generation, the text formats, OpenSSH `ssh-ed25519` public key lines, key ids.
//!
//! Secret key file (mode 0600), one key line plus comments:
//!
//! ```text
//! # subvol ed25519 secret key, key id 0123456789abcdef. Keep it private.
//! subvol-ed25519-secret-key <64 hex digits: the 32-byte seed>
//! ```
//!
//! Public key file (`PATH.pub`), one key per line, optional comment after the key:
//!
//! ```text
//! subvol-ed25519-public-key <64 hex digits: the 32-byte public key> key-id=0123456789abcdef
//! ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... user@host
//! ```
//!
//! Blank lines and lines starting with `#` are ignored. A public key file may hold several keys.

use super::SignError;
use crate::util::fs::AtomicFile;
use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// First word of a secret key line.
pub const SECRET_TAG: &str = "subvol-ed25519-secret-key";
/// First word of a public key line.
pub const PUBLIC_TAG: &str = "subvol-ed25519-public-key";
/// First word of an OpenSSH public key line.
pub const SSH_TAG: &str = "ssh-ed25519";

/// Identifies a public key: the first 8 bytes of SHA-256 of its 32 bytes. Shown as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    /// The id of a public key.
    #[must_use]
    pub fn of(key: &VerifyingKey) -> KeyId {
        let d = Sha256::digest(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&d[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A public key and its id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    /// From the 32 bytes of an ed25519 public key.
    ///
    /// # Errors
    /// The bytes are not a valid curve point.
    pub fn from_bytes(b: &[u8; 32]) -> Result<PublicKey, String> {
        let key = VerifyingKey::from_bytes(b).map_err(|_| "not a valid ed25519 public key")?;
        if key.is_weak() {
            return Err("weak (small-order) ed25519 public key".into());
        }
        Ok(PublicKey {
            id: KeyId::of(&key),
            key,
        })
    }

    /// The key id.
    #[must_use]
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The dalek key.
    #[must_use]
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The public key line of the native format (with the key id as comment).
    #[must_use]
    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} key-id={}",
            hex(self.key.as_bytes()),
            self.id
        )
    }

    /// Parses one public key line: native or OpenSSH `ssh-ed25519`.
    ///
    /// # Errors
    /// What is wrong with the line.
    pub fn parse_line(line: &str) -> Result<PublicKey, String> {
        let mut words = line.split_whitespace();
        let tag = words.next().unwrap_or("");
        let val = words.next().ok_or("key line has no key after its type")?;
        match tag {
            PUBLIC_TAG => PublicKey::from_bytes(&unhex32(val)?),
            SSH_TAG => PublicKey::from_bytes(&ssh_wire_key(val)?),
            SECRET_TAG => {
                Err("this is a secret key; pass the public key (PATH.pub) instead".into())
            }
            t if t.starts_with("ssh-") || t.starts_with("ecdsa-") => Err(format!(
                "OpenSSH key type {t} is not supported (only ssh-ed25519)"
            )),
            _ => Err(format!(
                "not a public key line (expected `{PUBLIC_TAG} HEX` or `{SSH_TAG} BASE64`)"
            )),
        }
    }
}

/// A secret key (the 32-byte ed25519 seed) with its public half.
pub struct SecretKey {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public.id)
    }
}

impl SecretKey {
    /// From a 32-byte seed.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        let key = SigningKey::from_bytes(seed);
        let vk = key.verifying_key();
        SecretKey {
            public: PublicKey {
                id: KeyId::of(&vk),
                key: vk,
            },
            key,
        }
    }

    /// A new random key (seed from the OS random source).
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn generate() -> Result<SecretKey, SignError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
        let k = SecretKey::from_seed(&seed);
        seed.fill(0);
        Ok(k)
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The dalek signing key.
    #[must_use]
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The secret key file text.
    #[must_use]
    pub fn to_file_text(&self) -> String {
        format!(
            "# subvol ed25519 secret key, key id {}. Keep it private.\n{SECRET_TAG} {}\n",
            self.public.id,
            hex(&self.key.to_bytes())
        )
    }

    /// Parses secret key file text.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let mut found = None;
        for line in key_lines(text) {
            let mut words = line.split_whitespace();
            match words.next() {
                Some(SECRET_TAG) => {
                    if found.is_some() {
                        return Err("more than one secret key in the file".into());
                    }
                    let seed = unhex32(words.next().ok_or("secret key line has no key")?)?;
                    found = Some(SecretKey::from_seed(&seed));
                }
                Some(PUBLIC_TAG | SSH_TAG) => {
                    return Err("this is a public key; signing needs the secret key file".into());
                }
                _ => {
                    return Err(format!(
                        "not a secret key line (expected `{SECRET_TAG} HEX`)"
                    ));
                }
            }
        }
        found.ok_or_else(|| "no key in the file".into())
    }

    /// Loads a secret key file, refusing one that group or others may read (as ssh does).
    ///
    /// # Errors
    /// Unreadable, a public key, too open, or malformed.
    pub fn load(path: &Path) -> Result<SecretKey, SignError> {
        let (text, meta) = read_key_file(path)?;
        // A public key is the likeliest mistake, and its mode is 0644: say what it is before
        // talking about permissions.
        if key_lines(&text)
            .next()
            .and_then(|l| l.split_whitespace().next())
            .is_some_and(|tag| tag == PUBLIC_TAG || tag == SSH_TAG)
        {
            return Err(SignError::PublicKeyGiven(path.into()));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SignError::KeyFile {
                path: path.into(),
                reason: format!(
                    "secret key file permissions {:04o} are too open (group or others may read \
                     it); run `chmod 600 {}`",
                    meta.permissions().mode() & 0o7777,
                    path.display()
                ),
            });
        }
        SecretKey::parse(&text).map_err(|reason| SignError::KeyFile {
            path: path.into(),
            reason,
        })
    }
}

/// Key files are small: a longer file is not one (and `/dev/zero` must not be read forever).
const MAX_KEY_FILE: u64 = 64 << 10;

/// Reads a key file (at most [`MAX_KEY_FILE`] bytes) and its metadata.
fn read_key_file(path: &Path) -> Result<(String, std::fs::Metadata), SignError> {
    let io = |e| SignError::key_io(path, e);
    let f = std::fs::File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.is_dir() {
        return Err(io(std::io::Error::from_raw_os_error(
            rustix::io::Errno::ISDIR.raw_os_error(),
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(SignError::KeyFile {
            path: path.into(),
            reason: format!("larger than {MAX_KEY_FILE} bytes: not a key file"),
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| SignError::KeyFile {
        path: path.into(),
        reason: "not text (invalid UTF-8): not a key file".into(),
    })?;
    Ok((text, meta))
}

/// The set of accepted public keys (several for key rotation).
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<PublicKey>,
}

impl KeySet {
    /// An empty set.
    #[must_use]
    pub fn new() -> KeySet {
        KeySet::default()
    }

    /// Adds a key (a duplicate is ignored).
    pub fn add(&mut self, k: PublicKey) {
        if !self.keys.iter().any(|x| x.id == k.id) {
            self.keys.push(k);
        }
    }

    /// Loads every key of every file (native or OpenSSH lines).
    ///
    /// # Errors
    /// A file is unreadable, malformed, or holds no key.
    pub fn load(paths: &[PathBuf]) -> Result<KeySet, SignError> {
        let mut set = KeySet::new();
        for p in paths {
            let (text, _) = read_key_file(p)?;
            let mut n = 0;
            for (i, line) in key_lines(&text).enumerate() {
                let k = PublicKey::parse_line(line).map_err(|reason| SignError::KeyFile {
                    path: p.clone(),
                    reason: format!("key {}: {reason}", i + 1),
                })?;
                set.add(k);
                n += 1;
            }
            if n == 0 {
                return Err(SignError::KeyFile {
                    path: p.clone(),
                    reason: "no key in the file".into(),
                });
            }
        }
        Ok(set)
    }

    /// The key with this id.
    #[must_use]
    pub fn get(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The ids of all keys.
    #[must_use]
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// True when no key was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Writes a new key pair: `path` (secret, mode 0600) and `path.pub`. Refuses to overwrite: each
/// file is written in full under no name and linked into place only where no file exists.
///
/// # Errors
/// A file exists or cannot be written, or the random source failed.
pub fn keygen(path: &Path) -> Result<(SecretKey, PathBuf), SignError> {
    let pub_path = pub_path(path);
    for p in [path, pub_path.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(SignError::KeyExists(p.into()));
        }
    }
    let key = SecretKey::generate()?;
    let prepare = |p: &Path, mode: u32, text: &str| -> Result<AtomicFile, SignError> {
        let mut f = AtomicFile::create(p, mode).map_err(|e| SignError::key_io(p, e.source))?;
        // The mode given to open is masked by the umask; make sure of it.
        f.file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .and_then(|()| f.write_all(text.as_bytes()))
            .map_err(|e| SignError::key_io(p, e))?;
        Ok(f)
    };
    let secret = prepare(path, 0o600, &key.to_file_text())?;
    let public = prepare(&pub_path, 0o644, &format!("{}\n", key.public.to_line()))?;
    let link = |f: AtomicFile, p: &Path| {
        f.commit_new().map_err(|e| {
            if e.source.kind() == std::io::ErrorKind::AlreadyExists {
                SignError::KeyExists(p.into())
            } else {
                SignError::key_io(p, e.source)
            }
        })
    };
    link(secret, path)?;
    if let Err(e) = link(public, &pub_path) {
        // This run created the secret key a moment ago: without its public half it is useless.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok((key, pub_path))
}

/// `PATH.pub` for a secret key file `PATH`.
#[must_use]
pub fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

fn key_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Lowercase hex.
#[must_use]
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn unhex32(s: &str) -> Result<[u8; 32], String> {
    if s.len() != 64 {
        return Err(format!(
            "expected 64 hex digits, found {} characters",
            s.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks_exact(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16).ok_or("invalid hex digit");
        out[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Ok(out)
}

/// Decodes standard base64 (with optional `=` padding).
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err("invalid base64".into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if bits >= 6 {
        return Err("invalid base64 length".into());
    }
    Ok(out)
}

/// The key of an OpenSSH ed25519 public key blob: string "ssh-ed25519", string key (32 bytes),
/// each string a big-endian u32 length and bytes.
fn ssh_wire_key(b64: &str) -> Result<[u8; 32], String> {
    let blob = base64_decode(b64)?;
    let mut rest = blob.as_slice();
    let mut take = || -> Result<&[u8], String> {
        if rest.len() < 4 {
            return Err("truncated ssh-ed25519 key blob".into());
        }
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if rest.len() - 4 < n {
            return Err("truncated ssh-ed25519 key blob".into());
        }
        let (v, r) = rest[4..].split_at(n);
        rest = r;
        Ok(v)
    };
    if take()? != SSH_TAG.as_bytes() {
        return Err("key blob is not of type ssh-ed25519".into());
    }
    let key: [u8; 32] = take()?
        .try_into()
        .map_err(|_| "ssh-ed25519 key is not 32 bytes")?;
    if !rest.is_empty() {
        return Err("trailing bytes in ssh-ed25519 key blob".into());
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_round_trip_and_id() {
        let k = SecretKey::from_seed(&[7; 32]);
        let back = SecretKey::parse(&k.to_file_text()).unwrap();
        assert_eq!(back.public(), k.public());
        let p = PublicKey::parse_line(&k.public().to_line()).unwrap();
        assert_eq!(p.id(), k.public().id());
        assert_eq!(p.id().to_string().len(), 16);
    }

    #[test]
    fn openssh_line() {
        // A blob built by hand from a known key, and a truncated one.
        let k = SecretKey::from_seed(&[9; 32]);
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(k.public().key().as_bytes());
        let line = format!("ssh-ed25519 {} me@host", b64(&blob));
        assert_eq!(PublicKey::parse_line(&line).unwrap().id(), k.public().id());
        let bad = format!("ssh-ed25519 {} me@host", b64(&blob[..blob.len() - 1]));
        assert!(PublicKey::parse_line(&bad).is_err());
        assert!(PublicKey::parse_line("ssh-rsa AAAAB3NzaC1yc2E x").is_err());
        assert!(PublicKey::parse_line(k.to_file_text().lines().nth(1).unwrap()).is_err());
    }

    fn b64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for ch in b.chunks(3) {
            let n = ch
                .iter()
                .enumerate()
                .fold(0u32, |a, (i, &x)| a | u32::from(x) << (16 - 8 * i));
            for i in 0..4 {
                if i <= ch.len() {
                    s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    #[test]
    fn known_openssh_key() {
        // A real `ssh-keygen -t ed25519` public key line; the key bytes decoded independently.
        let line =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBYPksBV6q+DCpKdEUM5vJbD0jQHK6fw+a1tHWtW472r test";
        let k = PublicKey::parse_line(line).unwrap();
        assert_eq!(
            hex(k.key().as_bytes()),
            "160f92c055eaaf830a929d114339bc96c3d234072ba7f0f9ad6d1d6b56e3bdab"
        );
        let native = PublicKey::parse_line(&k.to_line()).unwrap();
        assert_eq!(native, k);
    }
}
