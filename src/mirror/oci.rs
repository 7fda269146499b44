//! OCI registries as repositories: `oci://HOST[:PORT]/NAME[:TAG|@sha256:HEX]` (`oci+http://` for
//! a registry without TLS, such as one on 127.0.0.1).
//!
//! A directory repository maps onto a registry repository as:
//!
//! * every file becomes a blob: `streams/<sha256>.zst` and `.map` are already named by their
//!   SHA-256, which is the blob digest; `index.json` is a blob too;
//! * one OCI image manifest with `artifactType` [`ARTIFACT_TYPE`] lists every blob as a layer
//!   (title annotation = the file's path; the index has [`INDEX_MEDIA_TYPE`]), so the
//!   registry's garbage collector keeps every blob the live index names;
//! * the manifest is tagged `serial-N` (never moved) and with the channel tag (default
//!   `latest`).
//!
//! [`push`] mirrors a directory repository (the format of record): missing blobs first (HEAD,
//! then a monolithic POST + PUT upload), then the manifest under `serial-N`, then the channel
//! tag, so no tag ever names a manifest whose blobs are missing. Pulls read the manifest by tag
//! (or digest), the index blob, then stream and map blobs as over HTTP (Range resume, ranges),
//! all checked against the signed index exactly as from any mirror: the registry is untrusted.
//!
//! Authentication: anonymous, basic, or the bearer-token flow (a `WWW-Authenticate: Bearer`
//! challenge names a token endpoint, asked with the basic credentials if any). Credentials come
//! from the standard files only ([`credential_files`]), never from the command line.
//!
//! The protocol is a handful of endpoints written with the blocking `ureq` client the project
//! already uses: the maintained Rust clients (`oci-client`, formerly `oci-distribution`) are
//! async over tokio/reqwest and would bring a second HTTP and TLS stack.

use super::MirrorError;
use super::fetch::{RateGuard, StallLimits, no_response};
use super::index::{INDEX_FILE, Index, Sha256Digest};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The manifest's `artifactType`.
pub const ARTIFACT_TYPE: &str = "application/vnd.subvol.repository.v1";
/// Media type of the manifest's config blob (`{}`), for registries predating `artifactType`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.subvol.repository.config.v1+json";
/// Media type of the layer holding `index.json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.subvol.index.v1+json";
/// Media type of stream file layers.
pub const STREAM_MEDIA_TYPE: &str = "application/vnd.subvol.stream.v1+zstd";
/// Media type of content map layers.
pub const MAP_MEDIA_TYPE: &str = "application/vnd.subvol.map.v1";
/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The layer annotation naming the file.
pub const TITLE: &str = "org.opencontainers.image.title";
/// The manifest annotation carrying the index's serial.
pub const SERIAL_ANNOTATION: &str = "dev.subvol.serial";
/// Largest manifest accepted (distribution's own limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The config blob.
const CONFIG: &[u8] = b"{}";

/// Errors particular to registries.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference cannot be parsed.
    #[error(
        "invalid registry reference {0:?}: expected oci://HOST[:PORT]/NAME[:TAG] or NAME@sha256:HEX (oci+http:// for plain HTTP)"
    )]
    Reference(String),
    /// The registry refused the credentials, or wants some and none are stored.
    #[error("{registry}: authentication failed: {detail}")]
    Unauthorized {
        /// `HOST[:PORT]`.
        registry: String,
        /// What happened.
        detail: String,
    },
    /// The manifest is not a subvol repository manifest, or malformed.
    #[error("{location}: {reason}")]
    Manifest {
        /// Manifest URL.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The registry has no manifest under that tag or digest (like a 404 on an HTTP
    /// mirror's index).
    #[error("{0}: no such manifest in the registry: nothing was pushed there (`subvol push`)")]
    NoManifest(String),
    /// A credentials file cannot be read or parsed.
    #[error("{}: {reason}", path.display())]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential helper named in a credentials file failed.
    #[error("credential helper docker-credential-{helper} (named in {}): {reason}", config.display())]
    CredentialHelper {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// The credentials file naming it.
        config: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The `--ca` file holds no usable certificate.
    #[error("{}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry answered against the protocol.
    #[error("{url}: {reason}")]
    Protocol {
        /// The request.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// A serial tag already names another manifest.
    #[error(
        "{reference}: tag {tag} already names manifest {have}, not {want}; serial tags are never moved"
    )]
    TagTaken {
        /// The repository.
        reference: String,
        /// The tag.
        tag: String,
        /// The digest it names.
        have: String,
        /// The digest of this push.
        want: String,
    },
    /// The directory repository's files do not match its index.
    #[error("{}: {reason}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed `oci://` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `oci+http://`: plain HTTP.
    pub plain_http: bool,
    /// `HOST[:PORT]`.
    pub host: String,
    /// The repository name (`NAMESPACE/REPO`).
    pub name: String,
    /// The tag (default `latest`), or `sha256:HEX` for a digest.
    pub reference: String,
}

impl Reference {
    /// True for a source that names a registry.
    #[must_use]
    pub fn is_oci(s: &str) -> bool {
        s.starts_with("oci://") || s.starts_with("oci+http://")
    }

    /// Parses `oci://HOST[:PORT]/NAME[:TAG|@sha256:HEX]`.
    ///
    /// # Errors
    /// [`OciError::Reference`].
    pub fn parse(s: &str) -> Result<Reference, OciError> {
        let bad = || OciError::Reference(s.to_string());
        let (plain_http, rest) = if let Some(r) = s.strip_prefix("oci+http://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("oci://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let (host, path) = rest.split_once('/').ok_or_else(bad)?;
        let (name, reference) = if let Some((n, d)) = path.split_once('@') {
            let hex = d.strip_prefix("sha256:").ok_or_else(bad)?;
            hex.parse::<Sha256Digest>().map_err(|_| bad())?;
            (n, d.to_string())
        } else {
            match path.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (path, "latest".to_string()),
            }
        };
        let host_ok = !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        let name_ok = !name.is_empty()
            && name.split('/').all(|c| {
                !c.is_empty()
                    && c.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        let tag_ok = reference.starts_with("sha256:") || valid_tag(&reference);
        if !(host_ok && name_ok && tag_ok) {
            return Err(bad());
        }
        Ok(Reference {
            plain_http,
            host: host.to_string(),
            name: name.to_string(),
            reference,
        })
    }

    /// `http(s)://HOST/v2/NAME/`.
    #[must_use]
    pub fn base(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}/", self.host, self.name)
    }

    /// The reference as written, for messages and pull bookkeeping.
    #[must_use]
    pub fn display(&self) -> String {
        let scheme = if self.plain_http { "oci+http" } else { "oci" };
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!(
            "{scheme}://{}/{}{sep}{}",
            self.host, self.name, self.reference
        )
    }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
#[must_use]
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The files credentials are read from, in order: `$REGISTRY_AUTH_FILE` alone when set, else
/// `${XDG_RUNTIME_DIR}/containers/auth.json`, `~/.config/containers/auth.json` and
/// `${DOCKER_CONFIG:-~/.docker}/config.json` (containers-auth.json(5)).
#[must_use]
pub fn credential_files() -> Vec<PathBuf> {
    if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return vec![PathBuf::from(f)];
    }
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    if let Some(h) = &home {
        v.push(h.join(".config/containers/auth.json"));
    }
    match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => v.push(Path::new(&d).join("config.json")),
        None => {
            if let Some(h) = &home {
                v.push(h.join(".docker/config.json"));
            }
        }
    }
    v
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Registry host → credential helper name (`docker-credential-NAME`) for that registry.
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    /// The credential helper for every registry without an `auths` entry.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
}

/// User and password for a registry, and where they came from (a file, or a credential helper
/// a file names).
#[derive(Clone)]
struct Credentials {
    user: String,
    password: String,
    origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "credentials of {} from {}", self.user, self.origin)
    }
}

/// How long a credential helper may take (it may ask a keyring or a cloud metadata service).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a credential helper may print.
const HELPER_OUTPUT_MAX: u64 = 64 << 10;

/// The credentials for `host`/`name` in the first file that has any: a credential helper the
/// file names for the host (`credHelpers`), else the `auths` entry whose key (scheme and
/// trailing `/` ignored) is the host or the longest `host/namespace` prefix, else the file's
/// default helper (`credsStore`). Helpers (`docker-credential-NAME`) are looked up in `$PATH`.
fn find_credentials(host: &str, name: &str) -> Result<Option<Credentials>, OciError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    find_credentials_in(credential_files(), host, name, &path)
}

/// Runs credential helper `helper` (`docker-credential-<helper> get`, the docker credential
/// helper protocol: the registry on stdin, `{"Username", "Secret"}` JSON on stdout), found in
/// the directories of `search`. None when it has no credentials for `host`.
fn run_helper(
    helper: &str,
    host: &str,
    search: &std::ffi::OsStr,
    config: &Path,
) -> Result<Option<Credentials>, OciError> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let bad = |reason: String| OciError::CredentialHelper {
        helper: helper.to_string(),
        config: config.to_path_buf(),
        reason,
    };
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(bad("not a valid helper name".into()));
    }
    let program = format!("docker-credential-{helper}");
    // Only absolute directories: an empty or relative $PATH entry would run a helper from
    // wherever the update service happens to be.
    let exe = std::env::split_paths(search)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(&program))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| bad(format!("{program} is not in $PATH")))?;
    let mut child = Command::new(&exe)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| bad(format!("cannot run {}: {e}", exe.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading its input is not an error here.
        let _ = stdin.write_all(host.as_bytes());
    }
    let mut out = Vec::new();
    let reader = child.stdout.take().map(|o| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let r = o.take(HELPER_OUTPUT_MAX + 1).read_to_end(&mut buf);
            r.map(|_| buf)
        })
    });
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(bad(format!(
                    "no answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(bad(format!("waiting for it: {e}"))),
        }
    };
    if let Some(Ok(Ok(b))) = reader.map(std::thread::JoinHandle::join) {
        out = b;
    }
    if out.len() as u64 > HELPER_OUTPUT_MAX {
        return Err(bad(format!("printed more than {HELPER_OUTPUT_MAX} bytes")));
    }
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        // The protocol's answer for a registry it holds nothing for.
        if text.contains("credentials not found") {
            return Ok(None);
        }
        return Err(bad(format!("failed ({status}): {}", text.trim())));
    }
    #[derive(Deserialize)]
    struct Answer {
        #[serde(rename = "Username")]
        username: String,
        #[serde(rename = "Secret")]
        secret: String,
    }
    let a: Answer = serde_json::from_str(&text)
        .map_err(|e| bad(format!("answer is not credentials JSON: {e}")))?;
    if a.username == "<token>" {
        return Err(bad(
            "it returned an identity token, which subvol does not support (use user and password)"
                .into(),
        ));
    }
    Ok(Some(Credentials {
        user: a.username,
        password: a.secret,
        origin: format!("{program} (named in {})", config.display()),
    }))
}

fn find_credentials_in(
    files: Vec<PathBuf>,
    host: &str,
    name: &str,
    search: &std::ffi::OsStr,
) -> Result<Option<Credentials>, OciError> {
    let full = format!("{host}/{name}");
    for path in files {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(OciError::AuthFile {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let parsed: AuthFile = serde_json::from_slice(&text).map_err(|e| OciError::AuthFile {
            path: path.clone(),
            reason: format!("not a credentials file: {e}"),
        })?;
        if let Some(helper) = parsed.cred_helpers.get(host) {
            match run_helper(helper, host, search, &path)? {
                Some(c) => return Ok(Some(c)),
                None => continue,
            }
        }
        let best = parsed
            .auths
            .iter()
            .filter_map(|(k, v)| {
                let k = k
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                let k = k.strip_suffix("/v1/").unwrap_or(k).trim_end_matches('/');
                let hit = k == host || full == k || full.starts_with(&format!("{k}/"));
                hit.then_some((k.len(), v))
            })
            .max_by_key(|(len, _)| *len);
        let entry = best.and_then(|(_, e)| e.auth.as_ref());
        let Some(auth) = entry else {
            if let Some(store) = &parsed.creds_store
                && let Some(c) = run_helper(store, host, search, &path)?
            {
                return Ok(Some(c));
            }
            continue;
        };
        let bad = |reason: &str| OciError::AuthFile {
            path: path.clone(),
            reason: format!("auths entry for {host}: {reason}"),
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad("auth is not base64"))?;
        let text = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
        let (user, password) = text
            .split_once(':')
            .ok_or_else(|| bad("auth is not user:password"))?;
        return Ok(Some(Credentials {
            user: user.to_string(),
            password: password.to_string(),
            origin: path.display().to_string(),
        }));
    }
    Ok(None)
}

/// Reads the PEM certificates of `--ca`.
///
/// # Errors
/// [`OciError::Ca`], or reading the file.
pub fn tls_roots(ca: &Path) -> Result<ureq::tls::RootCerts, MirrorError> {
    let pem = std::fs::read(ca).map_err(|e| MirrorError::io("read", ca, e))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => {
                return Err(OciError::Ca {
                    path: ca.to_path_buf(),
                    reason: e.to_string(),
                }
                .into());
            }
        }
    }
    if certs.is_empty() {
        return Err(OciError::Ca {
            path: ca.to_path_buf(),
            reason: "no PEM certificate in it".to_string(),
        }
        .into());
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

/// The HTTP client for a registry or mirror: stall limits as [`StallLimits`] say, HTTP status
/// codes as values, the roots of `ca` instead of the bundled Mozilla roots when given.
///
/// # Errors
/// The CA file.
pub fn agent(limits: StallLimits, ca: Option<&Path>) -> Result<ureq::Agent, MirrorError> {
    let mut b = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(limits.timeout))
        .timeout_recv_response(Some(limits.timeout))
        .timeout_per_read(Some(limits.timeout))
        .user_agent(concat!("subvol/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca {
        b = b.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(tls_roots(ca)?)
                .build(),
        );
    }
    Ok(b.build().into())
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, params) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    // key="value" pairs; values may contain commas (scope lists) inside quotes.
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// The `Authorization` header in use, and when a bearer token runs out.
#[derive(Default)]
struct AuthState {
    header: Option<String>,
    /// A bearer token's challenge and expiry, to renew it.
    bearer: Option<(Challenge, Instant)>,
}

impl std::fmt::Debug for AuthState {
    /// Without the header: it holds the password (basic) or a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = self
            .header
            .as_deref()
            .and_then(|h| h.split(' ').next())
            .unwrap_or("anonymous");
        write!(f, "AuthState({scheme})")
    }
}

/// The manifest's content, as far as subvol reads it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact_type: Option<String>,
    config: Descriptor,
    layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// An OCI content descriptor.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// A registry repository, with its client and credentials.
#[derive(Debug)]
pub struct Registry {
    /// What was asked for.
    pub reference: Reference,
    agent: ureq::Agent,
    limits: StallLimits,
    credentials: Option<Credentials>,
    /// `pull` or `pull,push`.
    actions: &'static str,
    auth: Mutex<AuthState>,
    /// The index blob's digest, once the manifest was read.
    index_digest: OnceLock<String>,
}

impl Registry {
    /// Connects to the registry of `source` (`oci://...`): reads the stored credentials and
    /// authenticates for pulling (and pushing, with `push`).
    ///
    /// # Errors
    /// A bad reference, credentials file or CA file, refused credentials, network errors.
    pub fn connect(
        source: &str,
        limits: StallLimits,
        ca: Option<&Path>,
        push: bool,
    ) -> Result<Registry, MirrorError> {
        let reference = Reference::parse(source)?;
        let credentials = find_credentials(&reference.host, &reference.name)?;
        let r = Registry {
            agent: agent(limits, ca)?,
            limits,
            credentials,
            actions: if push { "pull,push" } else { "pull" },
            auth: Mutex::new(AuthState::default()),
            index_digest: OnceLock::new(),
            reference,
        };
        // The version check: a 401 names how to authenticate.
        let url = format!(
            "{}://{}/v2/",
            if r.reference.plain_http {
                "http"
            } else {
                "https"
            },
            r.reference.host
        );
        let resp = r.send(&url, |a| a.req(a.agent.get(&url)).call())?;
        match resp.status().as_u16() {
            200 => Ok(r),
            401 | 403 => Err(r.unauthorized(&resp)),
            404 => Err(OciError::Protocol {
                url,
                reason: "not an OCI registry (no /v2/ API)".to_string(),
            }
            .into()),
            status => Err(MirrorError::HttpStatus { url, status }),
        }
    }

    /// The stall limits of transfers.
    #[must_use]
    pub fn limits(&self) -> StallLimits {
        self.limits
    }

    fn registry(&self) -> String {
        self.reference.host.clone()
    }

    fn unauthorized(&self, resp: &ureq::http::Response<ureq::Body>) -> MirrorError {
        let detail = match &self.credentials {
            None => format!(
                "HTTP {}: the registry wants credentials and none are stored for {} in {}",
                resp.status().as_u16(),
                self.reference.host,
                credential_files()
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(c) => format!(
                "HTTP {}: the registry refused the credentials of {} from {}",
                resp.status().as_u16(),
                c.user,
                c.origin
            ),
        };
        OciError::Unauthorized {
            registry: self.registry(),
            detail,
        }
        .into()
    }

    fn basic(&self) -> Option<String> {
        self.credentials.as_ref().map(|c| {
            let raw = format!("{}:{}", c.user, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        })
    }

    /// The `Authorization` header to send now (a bearer token about to run out is renewed).
    ///
    /// # Errors
    /// Renewing the token failed.
    pub fn authorization(&self) -> Result<Option<String>, MirrorError> {
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ch, until)) = &st.bearer
            && Instant::now() + Duration::from_secs(15) >= *until
            && let Challenge::Bearer { realm, service } = ch
        {
            let (h, until) = self.token(realm, service.as_deref())?;
            st.header = Some(h);
            if let Some(b) = st.bearer.as_mut() {
                b.1 = until;
            }
        }
        Ok(st.header.clone())
    }

    /// Answers a challenge: basic credentials, or a bearer token from the realm.
    fn answer(&self, ch: Challenge) -> Result<bool, MirrorError> {
        let mut st = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        match ch {
            Challenge::Basic => {
                let Some(h) = self.basic() else {
                    return Ok(false);
                };
                if st.header.as_deref() == Some(&h) {
                    return Ok(false);
                }
                st.header = Some(h);
                Ok(true)
            }
            Challenge::Bearer { realm, service } => {
                if st.bearer.is_some() {
                    // A fresh token was refused: the credentials lack the rights.
                    return Ok(false);
                }
                let (h, until) = self.token(&realm, service.as_deref())?;
                st.header = Some(h);
                st.bearer = Some((Challenge::Bearer { realm, service }, until));
                Ok(true)
            }
        }
    }

    /// Asks the token endpoint for a token for this repository.
    fn token(&self, realm: &str, service: Option<&str>) -> Result<(String, Instant), MirrorError> {
        let scope = format!("repository:{}:{}", self.reference.name, self.actions);
        let mut req = self.agent.get(realm).query("scope", &scope);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if let Some(b) = self.basic() {
            req = req.header("Authorization", &b);
        }
        let resp = req.call().map_err(|e| self.http_error(realm, e))?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Err(self.unauthorized(&resp)),
            status => {
                return Err(MirrorError::HttpStatus {
                    url: realm.to_string(),
                    status,
                });
            }
        }
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let body = self.read_limited(realm, resp, 1 << 20)?;
        let t: Token = serde_json::from_slice(&body).map_err(|e| OciError::Protocol {
            url: realm.to_string(),
            reason: format!("not a token answer: {e}"),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| OciError::Protocol {
                url: realm.to_string(),
                reason: "the answer has no token".to_string(),
            })?;
        // The spec's default lifetime is 60 s.
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(20, 86400));
        Ok((format!("Bearer {token}"), Instant::now() + life))
    }

    fn http_error(&self, url: &str, e: ureq::Error) -> MirrorError {
        match e {
            ureq::Error::Timeout(_) => MirrorError::Stalled {
                url: url.to_string(),
                reason: no_response(&self.limits),
            },
            e => MirrorError::Http {
                url: url.to_string(),
                source: Box::new(e),
            },
        }
    }

    /// Sends a request built by `call` with the current credentials; a 401 with a challenge
    /// this client can answer is answered and the request sent once more.
    fn send(
        &self,
        url: &str,
        call: impl Fn(&Authorized<'_>) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, MirrorError> {
        for _ in 0..2 {
            let a = Authorized {
                agent: &self.agent,
                header: self.authorization()?,
            };
            let resp = call(&a).map_err(|e| self.http_error(url, e))?;
            if resp.status().as_u16() != 401 {
                return Ok(resp);
            }
            let ch = resp
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_challenge);
            let Some(ch) = ch else { return Ok(resp) };
            if !self.answer(ch)? {
                return Ok(resp);
            }
        }
        let a = Authorized {
            agent: &self.agent,
            header: self.authorization()?,
        };
        call(&a).map_err(|e| self.http_error(url, e))
    }

    fn read_limited(
        &self,
        url: &str,
        resp: ureq::http::Response<ureq::Body>,
        max: u64,
    ) -> Result<Vec<u8>, MirrorError> {
        let mut buf = Vec::new();
        RateGuard::new(resp.into_body().into_reader(), self.limits)
            .take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|source| MirrorError::HttpBody {
                url: url.to_string(),
                source,
            })?;
        if buf.len() as u64 > max {
            return Err(OciError::Protocol {
                url: url.to_string(),
                reason: format!("answer larger than {max} bytes"),
            }
            .into());
        }
        Ok(buf)
    }

    /// The URL of the blob with this digest (`sha256:HEX`).
    #[must_use]
    pub fn blob_url(&self, digest: &str) -> String {
        format!("{}blobs/{digest}", self.reference.base())
    }

    fn manifest_url(&self, reference: &str) -> String {
        format!("{}manifests/{reference}", self.reference.base())
    }

    /// The digest of repository file `rel`: stream and map files are named by it, the index's
    /// is read from the manifest (once).
    ///
    /// # Errors
    /// Reading or checking the manifest.
    pub fn digest_of(&self, rel: &str) -> Result<Option<String>, MirrorError> {
        if rel == INDEX_FILE {
            if let Some(d) = self.index_digest.get() {
                return Ok(Some(d.clone()));
            }
            let d = self.read_manifest()?;
            return Ok(Some(self.index_digest.get_or_init(|| d).clone()));
        }
        let name = rel
            .strip_prefix("streams/")
            .and_then(|n| n.strip_suffix(".zst").or_else(|| n.strip_suffix(".map")));
        Ok(name
            .and_then(|hex| hex.parse::<Sha256Digest>().ok())
            .map(|d| format!("sha256:{d}")))
    }

    /// Reads the manifest the reference names and returns its index layer's digest.
    fn read_manifest(&self) -> Result<String, MirrorError> {
        let url = self.manifest_url(&self.reference.reference);
        let resp = self.send(&url, |a| {
            a.req(a.agent.get(&url))
                .header("Accept", MANIFEST_MEDIA_TYPE)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {}
            401 | 403 => return Err(self.unauthorized(&resp)),
            404 => return Err(OciError::NoManifest(self.reference.display()).into()),
            status => return Err(MirrorError::HttpStatus { url, status }),
        }
        let body = self.read_limited(&url, resp, MAX_MANIFEST_BYTES)?;
        let bad = |reason: String| OciError::Manifest {
            location: url.clone(),
            reason,
        };
        if let Some(hex) = self.reference.reference.strip_prefix("sha256:") {
            let got = Sha256Digest(Sha256::digest(&body).into()).to_string();
            if got != hex {
                return Err(bad(format!(
                    "the registry sent a manifest with digest sha256:{got}"
                ))
                .into());
            }
        }
        let m: Manifest = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("not an OCI image manifest: {e}")))?;
        let ours = m.artifact_type.as_deref() == Some(ARTIFACT_TYPE)
            || m.config.media_type == CONFIG_MEDIA_TYPE;
        if !ours {
            return Err(bad(format!(
                "not a subvol repository (artifactType {:?}, config {}; expected {ARTIFACT_TYPE})",
                m.artifact_type.as_deref().unwrap_or("none"),
                m.config.media_type
            ))
            .into());
        }
        let mut index = m.layers.iter().filter(|l| l.media_type == INDEX_MEDIA_TYPE);
        match (index.next(), index.next()) {
            (Some(l), None) => {
                let hex = l.digest.strip_prefix("sha256:").unwrap_or("");
                if hex.parse::<Sha256Digest>().is_err() {
                    return Err(
                        bad(format!("index layer digest {:?} is not sha256", l.digest)).into(),
                    );
                }
                Ok(l.digest.clone())
            }
            _ => Err(bad(format!(
                "the manifest must have exactly one {INDEX_MEDIA_TYPE} layer"
            ))
            .into()),
        }
    }

    /// A GET request for the blob of `rel`, with credentials.
    ///
    /// # Errors
    /// Reading the manifest (for the index), renewing a token, a name that is no blob.
    pub fn get(
        &self,
        rel: &str,
    ) -> Result<ureq::RequestBuilder<ureq::typestate::WithoutBody>, MirrorError> {
        let digest = self.digest_of(rel)?.ok_or_else(|| OciError::Protocol {
            url: self.reference.display(),
            reason: format!("{rel} is not a file a registry holds"),
        })?;
        let a = Authorized {
            agent: &self.agent,
            header: self.authorization()?,
        };
        Ok(a.req(self.agent.get(self.blob_url(&digest))))
    }

    /// The location of `rel` for messages: its blob URL when known.
    #[must_use]
    pub fn location(&self, rel: &str) -> String {
        match self.digest_of(rel) {
            Ok(Some(d)) => self.blob_url(&d),
            _ => format!("{}/{rel}", self.reference.display()),
        }
    }

    /// True when the registry has the blob.
    fn has_blob(&self, digest: &str) -> Result<bool, MirrorError> {
        let url = self.blob_url(digest);
        let resp = self.send(&url, |a| a.req(a.agent.head(&url)).call())?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            401 | 403 => Err(self.unauthorized(&resp)),
            status => Err(MirrorError::HttpStatus { url, status }),
        }
    }

    /// Uploads a blob in one request (POST for an upload URL, then PUT with the digest).
    fn upload(&self, digest: &str, body: Body<'_>) -> Result<(), MirrorError> {
        let start = format!("{}blobs/uploads/", self.reference.base());
        let resp = self.send(&start, |a| a.req(a.agent.post(&start)).send_empty())?;
        let status = resp.status().as_u16();
        match status {
            202 => {}
            401 | 403 => return Err(self.unauthorized(&resp)),
            _ => return Err(MirrorError::HttpStatus { url: start, status }),
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| OciError::Protocol {
                url: start.clone(),
                reason: "upload started without a Location".to_string(),
            })?;
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            let scheme = if self.reference.plain_http {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{}{location}", self.reference.host)
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let a = Authorized {
            agent: &self.agent,
            header: self.authorization()?,
        };
        let req = a
            .req(self.agent.put(&url))
            .header("Content-Type", "application/octet-stream");
        let resp = match body {
            Body::Bytes(b) => req.send(b),
            Body::File(f, len) => req
                .header("Content-Length", &len.to_string())
                .send(ureq::SendBody::from_reader(f)),
        }
        .map_err(|e| self.http_error(&url, e))?;
        match resp.status().as_u16() {
            201 => Ok(()),
            401 | 403 => Err(self.unauthorized(&resp)),
            400 => Err(OciError::Protocol {
                url,
                reason: format!(
                    "the registry refused blob {digest} (HTTP 400: its bytes do not have that digest?)"
                ),
            }
            .into()),
            status => Err(MirrorError::HttpStatus { url, status }),
        }
    }

    /// The digest a tag names, if it exists.
    fn tag_digest(&self, tag: &str) -> Result<Option<String>, MirrorError> {
        let url = self.manifest_url(tag);
        let resp = self.send(&url, |a| {
            a.req(a.agent.head(&url))
                .header("Accept", MANIFEST_MEDIA_TYPE)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)),
            404 => Ok(None),
            401 | 403 => Err(self.unauthorized(&resp)),
            status => Err(MirrorError::HttpStatus { url, status }),
        }
    }

    /// Stores `manifest` under `tag`.
    fn put_manifest(&self, tag: &str, manifest: &[u8]) -> Result<(), MirrorError> {
        let url = self.manifest_url(tag);
        let resp = self.send(&url, |a| {
            a.req(a.agent.put(&url))
                .header("Content-Type", MANIFEST_MEDIA_TYPE)
                .send(manifest)
        })?;
        match resp.status().as_u16() {
            201 | 200 => Ok(()),
            401 | 403 => Err(self.unauthorized(&resp)),
            status => {
                let body = self.read_limited(&url, resp, 64 << 10).unwrap_or_default();
                Err(OciError::Protocol {
                    url,
                    reason: format!(
                        "HTTP {status}: manifest refused: {}",
                        String::from_utf8_lossy(&body).trim()
                    ),
                }
                .into())
            }
        }
    }
}

/// An agent and the `Authorization` header to add.
struct Authorized<'a> {
    agent: &'a ureq::Agent,
    header: Option<String>,
}

impl Authorized<'_> {
    fn req<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.header {
            Some(h) => r.header("Authorization", h),
            None => r,
        }
    }
}

enum Body<'a> {
    Bytes(&'a [u8]),
    File(&'a mut File, u64),
}

/// Progress of a push.
#[derive(Debug)]
pub enum PushEvent<'a> {
    /// A blob is being uploaded.
    Upload {
        /// Its file in the repository.
        path: &'a str,
        /// Its size.
        size: u64,
    },
    /// A blob is already in the registry.
    Present {
        /// Its file in the repository.
        path: &'a str,
    },
    /// A tag now names the manifest.
    Tagged(&'a str),
}

/// What a push did.
#[derive(Debug, Serialize)]
pub struct PushReport {
    /// The registry repository (`oci://HOST/NAME:TAG`).
    pub reference: String,
    /// The index's serial.
    pub serial: u64,
    /// The manifest's digest.
    pub manifest: String,
    /// Blobs uploaded, and their bytes.
    pub uploaded: usize,
    /// Bytes uploaded.
    pub uploaded_bytes: u64,
    /// Blobs the registry had already.
    pub present: usize,
    /// The tags set, in order.
    pub tags: Vec<String>,
}

/// Mirrors the directory repository `dir` to the registry repository `dest`
/// (`oci://HOST/NAME[:CHANNEL]`, default channel `latest`): blobs the registry lacks, then the
/// manifest under `serial-N` (refused if that tag names another manifest), then the channel tag.
///
/// # Errors
/// A directory whose files do not match its index, registry, network and credential errors.
pub fn push(
    dir: &Path,
    dest: &str,
    ca: Option<&Path>,
    limits: StallLimits,
    on_event: &mut dyn FnMut(PushEvent<'_>),
) -> Result<PushReport, MirrorError> {
    let reg = Registry::connect(dest, limits, ca, true)?;
    if reg.reference.reference.starts_with("sha256:") {
        return Err(OciError::Reference(format!(
            "{dest} (push needs a tag, the channel, not a digest)"
        ))
        .into());
    }
    let index_path = dir.join(INDEX_FILE);
    let index_bytes =
        std::fs::read(&index_path).map_err(|e| MirrorError::io("read", &index_path, e))?;
    // The publisher's own repository: its signature is checked by every pull, not here.
    let index = Index::open_unverified(&index_bytes)?;
    let mut layers: Vec<Descriptor> = Vec::new();
    let layer = |media: &str, digest: String, size: u64, path: &str| Descriptor {
        media_type: media.to_string(),
        digest,
        size,
        annotations: BTreeMap::from([(TITLE.to_string(), path.to_string())]),
    };
    let mut files: Vec<(&str, &str, Sha256Digest, u64)> = Vec::new();
    for s in &index.streams {
        files.push((STREAM_MEDIA_TYPE, &s.path, s.sha256, s.size));
        if let Some(m) = &s.map {
            files.push((MAP_MEDIA_TYPE, &m.path, m.sha256, m.size));
        }
    }
    let mut report = PushReport {
        reference: reg.reference.display(),
        serial: index.serial,
        manifest: String::new(),
        uploaded: 0,
        uploaded_bytes: 0,
        present: 0,
        tags: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for (media, path, sha, size) in files {
        let digest = format!("sha256:{sha}");
        if !seen.insert(digest.clone()) {
            continue;
        }
        layers.push(layer(media, digest.clone(), size, path));
        if reg.has_blob(&digest)? {
            report.present += 1;
            on_event(PushEvent::Present { path });
            continue;
        }
        let p = dir.join(path);
        let mut f = super::fetch::open_regular(&p).map_err(|e| MirrorError::io("open", &p, e))?;
        let len = f
            .metadata()
            .map_err(|e| MirrorError::io("stat", &p, e))?
            .len();
        if len != size {
            return Err(OciError::Source {
                path: p,
                reason: format!("{len} bytes, the index says {size}"),
            }
            .into());
        }
        on_event(PushEvent::Upload { path, size });
        // The registry checks the digest of what it receives: a file that changed is refused.
        reg.upload(&digest, Body::File(&mut f, len))?;
        report.uploaded += 1;
        report.uploaded_bytes += size;
    }
    let index_digest = format!(
        "sha256:{}",
        Sha256Digest(Sha256::digest(&index_bytes).into())
    );
    let config_digest = format!("sha256:{}", Sha256Digest(Sha256::digest(CONFIG).into()));
    for (digest, bytes, path) in [
        (&index_digest, &index_bytes[..], INDEX_FILE),
        (&config_digest, CONFIG, "config"),
    ] {
        if reg.has_blob(digest)? {
            report.present += 1;
            on_event(PushEvent::Present { path });
        } else {
            on_event(PushEvent::Upload {
                path,
                size: bytes.len() as u64,
            });
            reg.upload(digest, Body::Bytes(bytes))?;
            report.uploaded += 1;
            report.uploaded_bytes += bytes.len() as u64;
        }
    }
    layers.push(layer(
        INDEX_MEDIA_TYPE,
        index_digest,
        index_bytes.len() as u64,
        INDEX_FILE,
    ));
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MANIFEST_MEDIA_TYPE.to_string()),
        artifact_type: Some(ARTIFACT_TYPE.to_string()),
        config: Descriptor {
            media_type: CONFIG_MEDIA_TYPE.to_string(),
            digest: config_digest,
            size: CONFIG.len() as u64,
            annotations: BTreeMap::new(),
        },
        layers,
        annotations: BTreeMap::from([(SERIAL_ANNOTATION.to_string(), index.serial.to_string())]),
    };
    let body = serde_json::to_vec(&manifest).map_err(|e| MirrorError::Bug(e.to_string()))?;
    let digest = format!("sha256:{}", Sha256Digest(Sha256::digest(&body).into()));
    let serial_tag = format!("serial-{}", index.serial);
    match reg.tag_digest(&serial_tag)? {
        Some(have) if have != digest => {
            return Err(OciError::TagTaken {
                reference: reg.reference.display(),
                tag: serial_tag,
                have,
                want: digest,
            }
            .into());
        }
        Some(_) => {}
        None => reg.put_manifest(&serial_tag, &body)?,
    }
    on_event(PushEvent::Tagged(&serial_tag));
    report.tags.push(serial_tag);
    let channel = reg.reference.reference.clone();
    reg.put_manifest(&channel, &body)?;
    on_event(PushEvent::Tagged(&channel));
    report.tags.push(channel);
    report.manifest = digest;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("oci://reg.example:5000/ns/repo:stable").unwrap();
        assert_eq!(r.host, "reg.example:5000");
        assert_eq!(r.name, "ns/repo");
        assert_eq!(r.reference, "stable");
        assert!(!r.plain_http);
        assert_eq!(r.base(), "https://reg.example:5000/v2/ns/repo/");
        let r = Reference::parse("oci+http://127.0.0.1:5000/a/b").unwrap();
        assert!(r.plain_http);
        assert_eq!(r.reference, "latest");
        assert_eq!(r.display(), "oci+http://127.0.0.1:5000/a/b:latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("oci://h/a@{d}")).unwrap();
        assert_eq!(r.reference, d);
        for bad in [
            "oci://h",
            "oci://h/",
            "oci://h/A",
            "oci://h/a:-x",
            "oci://h/a@sha256:12",
            "http://h/a",
            "oci://h/a//b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    /// Writes an executable `docker-credential-NAME` into `dir` running `body` (sh).
    fn helper(dir: &Path, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt as _;
        let p = dir.join(format!("docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn credentials_from_credential_helpers() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // Answers with the registry it was asked about (read from stdin) as the user.
        helper(
            &bin,
            "echo",
            r#"[ "$1" = get ] || exit 3; read -r host; printf '{"ServerURL":"%s","Username":"u-%s","Secret":"s3cret"}' "$host" "$host""#,
        );
        helper(
            &bin,
            "empty",
            "echo 'credentials not found in native keychain'; exit 1",
        );
        helper(&bin, "broken", "echo 'keyring locked' >&1; exit 2");
        helper(&bin, "garbage", "echo not-json");
        helper(
            &bin,
            "token",
            r#"printf '{"Username":"<token>","Secret":"t"}'"#,
        );
        let cfg = d.path().join("config.json");
        let path = bin.as_os_str();
        let find = |json: &str, host: &str| {
            std::fs::write(&cfg, json).unwrap();
            find_credentials_in(vec![cfg.clone()], host, "vendor/os", path)
        };
        // credHelpers for the host comes first, before an auths entry.
        let c = find(
            r#"{"credHelpers":{"reg:5000":"echo"},"auths":{"reg:5000":{"auth":"YTpi"}}}"#,
            "reg:5000",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("u-reg:5000", "s3cret")
        );
        assert!(c.origin.contains("docker-credential-echo"), "{}", c.origin);
        // credsStore only for hosts without an auths entry.
        let json = r#"{"credsStore":"echo","auths":{"other":{"auth":"YTpi"}}}"#;
        assert_eq!(find(json, "reg").unwrap().unwrap().user, "u-reg");
        assert_eq!(find(json, "other").unwrap().unwrap().user, "a");
        // "Not found" is no credentials; a failing, silent-garbage or token helper is an error
        // naming the helper, the file and the reason.
        assert!(find(r#"{"credsStore":"empty"}"#, "reg").unwrap().is_none());
        for (name, why) in [
            ("broken", "keyring locked"),
            ("garbage", "not credentials JSON"),
            ("token", "identity token"),
            ("missing", "not in $PATH"),
            ("../x", "not a valid helper name"),
        ] {
            let json = format!(r#"{{"credHelpers":{{"reg":"{name}"}}}}"#);
            let e = find(&json, "reg").unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
            assert!(e.contains(&cfg.display().to_string()), "{name}: {e}");
        }
    }

    #[test]
    fn credentials_from_the_first_file_with_an_entry() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.json");
        let b = d.path().join("b.json");
        // vendor:pw, other:x, ns:y
        std::fs::write(&a, r#"{"auths":{"other.example":{"auth":"b3RoZXI6eA=="}}}"#).unwrap();
        std::fs::write(
            &b,
            r#"{"auths":{"https://reg.example:5000/v1/":{"auth":"dmVuZG9yOnB3"},
                "reg.example:5000/ns":{"auth":"bnM6eQ=="}}}"#,
        )
        .unwrap();
        let files = vec![d.path().join("missing.json"), a.clone(), b.clone()];
        let no_path = std::ffi::OsStr::new("");
        let c = find_credentials_in(files.clone(), "reg.example:5000", "top/os", no_path)
            .unwrap()
            .unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("vendor", "pw"));
        assert_eq!(c.origin, b.display().to_string());
        // The longest HOST/NAMESPACE prefix wins.
        let c = find_credentials_in(files.clone(), "reg.example:5000", "ns/os", no_path)
            .unwrap()
            .unwrap();
        assert_eq!(c.user, "ns");
        assert!(
            find_credentials_in(files, "none.example", "a", no_path)
                .unwrap()
                .is_none()
        );
        std::fs::write(&a, "{").unwrap();
        assert!(find_credentials_in(vec![a], "x", "y", no_path).is_err());
        // Never shown by Debug.
        let st = AuthState {
            header: Some("Basic dmVuZG9yOnB3".to_string()),
            bearer: None,
        };
        assert_eq!(format!("{st:?}"), "AuthState(Basic)");
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".to_string(),
                service: Some("reg".to_string())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
