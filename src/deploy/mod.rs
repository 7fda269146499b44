//! Deployments: a version of a pool made the current one at a path, switched atomically, with
//! the previous one a rollback away.
//!
//! For a target `PARENT/NAME` (say `/var/lib/app/current`):
//!
//! ```text
//! PARENT/NAME                          symbolic link -> NAME.deployments/<id>
//! PARENT/NAME.deployments/<id>         one deployment: a snapshot of POOL/VERSION,
//!                                      <id> = <serial>-<version>
//! PARENT/NAME.deployments/deploy.json  current, previous, history (see [`DeployState`])
//! POOL/.subvol/pins/<hash>.json        the versions a target uses (see [`pinned_versions`])
//! ```
//!
//! `NAME.deployments` must be on the pool's btrfs file system (a snapshot cannot cross file
//! systems). The link text is relative, so the layout also works seen from a chroot or a
//! bind mount of `PARENT`.
//!
//! **Atomicity.** A switch writes a new symbolic link under a temporary name beside the target
//! and renames it over the target: `rename(2)` replaces the name in one step, so every path
//! lookup through `NAME` resolves to the old deployment or to the new one, never to a mix.
//! A program that must see one version across several opens opens `NAME` once (a directory
//! file descriptor, or `chdir`) and opens its files relative to it. The state file is written
//! with a pending deployment before the switch and completed after it; a crash in between is
//! repaired on the next call from what the link points to.
//!
//! **Hooks.** A pre-hook runs after the new deployment is made and before the switch; when it
//! fails, the new deployment is deleted and the old one stays, untouched. A post-hook runs
//! after the switch; its failure is reported, the switch stays (use [`rollback`]).
//!
//! **Writable deployments** start as a fresh snapshot of the pool's version: nothing is carried
//! over from the previous deployment. Its changes stay in it while it is the previous one
//! (a rollback returns to it, changes included) and go when a later deploy retires it. State
//! that must outlive versions belongs outside the target.
//!
//! **Retention.** Two deployments are kept: the current and the previous. The pool keeps the
//! versions they came from, whatever `pull --keep` says ([`pinned_versions`]).

use crate::ExitCode;
use crate::mirror::{MirrorError, PullState};
use crate::pool::{self, META_DIR, PoolError};
use crate::stream::Uuid;
use crate::util::fs::{LockError, PathError, lock_dir, sync_dir, write_atomic};
use crate::util::{nonce, unix_now};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

/// The state file inside a target's deployments directory.
pub const STATE_FILE: &str = "deploy.json";

/// The directory in `POOL/.subvol` holding one pin file per target.
pub const PINS_DIR: &str = "pins";

/// How many history entries the state file keeps.
const HISTORY_MAX: usize = 50;

/// Errors of deployments.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// A file-system operation failed.
    #[error(transparent)]
    Io(#[from] PathError),
    /// A subvolume operation failed.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The pool's pull records cannot be read.
    #[error(transparent)]
    Mirror(Box<MirrorError>),
    /// The target path has no parent or no final name.
    #[error("{}: not a usable target path (give PARENT/NAME)", .0.display())]
    BadTarget(PathBuf),
    /// The target exists and is not a symbolic link this module made.
    #[error(
        "{} exists and is not a symbolic link: subvol manages the target as a link to its deployments; move it away first",
        .0.display()
    )]
    TargetNotLink(PathBuf),
    /// The version is not in the pool.
    #[error("version {version} is not in the pool {} (versions: {})", pool.display(), known.join(", "))]
    UnknownVersion {
        /// The pool.
        pool: PathBuf,
        /// The version asked for.
        version: String,
        /// The pulled versions the pool holds.
        known: Vec<String>,
    },
    /// Nothing is deployed at the target.
    #[error("nothing is deployed at {}", .0.display())]
    NotDeployed(PathBuf),
    /// There is no previous deployment to go back to.
    #[error("{} has no previous deployment to roll back to", .0.display())]
    NoPrevious(PathBuf),
    /// The previous deployment's subvolume is gone.
    #[error("the previous deployment {} is gone", .0.display())]
    PreviousGone(PathBuf),
    /// Another deploy or rollback of the target is running.
    #[error("{} is busy: another deploy or rollback of this target is running", .0.display())]
    Busy(PathBuf),
    /// The state file cannot be parsed.
    #[error("{}: invalid deployment state", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A hook could not be started.
    #[error("cannot run the {which} hook {cmd:?}")]
    HookSpawn {
        /// "pre" or "post".
        which: &'static str,
        /// The command.
        cmd: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The pre-hook failed: nothing was switched, the new deployment was removed.
    #[error("the pre hook {cmd:?} failed ({status}): {} is left as it was", target.display())]
    PreHookFailed {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// The target.
        target: PathBuf,
    },
    /// The post-hook failed after the switch: the new deployment is current.
    #[error("{} now runs version {version}, but the post hook {cmd:?} failed ({status}); `subvol rollback` goes back", target.display())]
    PostHookFailed {
        /// The command.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// The target.
        target: PathBuf,
        /// The version now deployed.
        version: String,
    },
    /// An internal invariant broke (a value that cannot fail to encode did).
    #[error("internal error: {0}")]
    Bug(String),
}

impl DeployError {
    /// The exit code for this error.
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        match self {
            DeployError::Io(_) => ExitCode::Io,
            DeployError::Pool(e) => e.exit_code(),
            DeployError::Mirror(e) => e.exit_code(),
            DeployError::BadTarget(_)
            | DeployError::TargetNotLink(_)
            | DeployError::UnknownVersion { .. }
            | DeployError::NotDeployed(_)
            | DeployError::NoPrevious(_)
            | DeployError::PreviousGone(_)
            | DeployError::Busy(_)
            | DeployError::State { .. }
            | DeployError::HookSpawn { .. }
            | DeployError::PreHookFailed { .. }
            | DeployError::PostHookFailed { .. }
            | DeployError::Bug(_) => ExitCode::Failure,
        }
    }
}

impl From<MirrorError> for DeployError {
    fn from(e: MirrorError) -> DeployError {
        DeployError::Mirror(Box::new(e))
    }
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> DeployError {
    move |e| PathError::new(op, path, e).into()
}

/// One deployment: a snapshot of a pool's version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Its name in the deployments directory (`<serial>-<version>`).
    pub id: String,
    /// Its path.
    pub path: PathBuf,
    /// The pool it came from.
    pub pool: PathBuf,
    /// The version (subvolume name in the pool).
    pub version: String,
    /// The deployment subvolume's UUID.
    pub uuid: Uuid,
    /// The pool version's received UUID (the mirror's version UUID), if it was received.
    pub version_uuid: Option<Uuid>,
    /// Where the pool pulled the version from, when it records it.
    pub remote: Option<String>,
    /// Writable snapshot (else read-only).
    pub writable: bool,
    /// When it was made (Unix seconds).
    pub deployed: u64,
}

/// One entry of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When (Unix seconds).
    pub time: u64,
    /// "deploy" or "rollback".
    pub action: String,
    /// The deployment made current.
    pub id: String,
    /// Its version.
    pub version: String,
}

/// `NAME.deployments/deploy.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DeployState {
    /// The deployment the target points to.
    pub current: Option<Deployment>,
    /// The one before it (a rollback target).
    pub previous: Option<Deployment>,
    /// Made but not yet switched to (set only between the two writes of a deploy).
    #[serde(default)]
    pub pending: Option<Deployment>,
    /// Newest last, at most 50 entries.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// Serial of the next deployment's id.
    #[serde(default)]
    pub next: u64,
}

/// What to do around a switch.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Run (`sh -c`) after the new deployment is made, before the switch; failure aborts.
    pub pre: Option<String>,
    /// Run after the switch.
    pub post: Option<String>,
}

/// How to deploy.
#[derive(Clone, Debug, Default)]
pub struct DeployOptions {
    /// A writable snapshot (default read-only).
    pub writable: bool,
    /// Hooks around the switch.
    pub hooks: Hooks,
}

/// What a deploy or rollback did.
#[derive(Clone, Debug, Serialize)]
pub struct DeployReport {
    /// The target.
    pub target: PathBuf,
    /// The deployment now current.
    pub current: Deployment,
    /// The one before it.
    pub previous: Option<Deployment>,
    /// Deployments deleted (retired beyond the previous one).
    pub removed: Vec<String>,
}

/// A pulled version of the pool, as [`status`] lists it.
#[derive(Clone, Debug, Serialize)]
pub struct PulledEntry {
    /// Version name.
    pub name: String,
    /// Received UUID.
    pub uuid: Uuid,
    /// When pulled (Unix seconds; 0 if the pool has no record).
    pub pulled: u64,
    /// Where from, when recorded.
    pub remote: Option<String>,
    /// The current deployment came from it.
    pub deployed: bool,
    /// The previous deployment came from it.
    pub previous: bool,
}

/// `subvol status`.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// The target.
    pub target: PathBuf,
    /// The deployments directory.
    pub deployments: PathBuf,
    /// What the target points to.
    pub current: Option<Deployment>,
    /// The rollback target.
    pub previous: Option<Deployment>,
    /// The pool (of the current deployment, or the one asked about).
    pub pool: Option<PathBuf>,
    /// Versions the pool holds, oldest pull first.
    pub pulled: Vec<PulledEntry>,
    /// The newest pulled version when it is neither the current nor the previous deployment's
    /// (rolled back from): an update to deploy.
    pub pending: Option<String>,
    /// Newest last.
    pub history: Vec<HistoryEntry>,
}

/// Where a target's pieces are.
#[derive(Clone, Debug)]
struct Layout {
    /// `PARENT/NAME` with PARENT canonical.
    target: PathBuf,
    parent: PathBuf,
    name: OsString,
    /// `PARENT/NAME.deployments`.
    dir: PathBuf,
}

impl Layout {
    fn new(target: &Path) -> Result<Layout, DeployError> {
        let bad = || DeployError::BadTarget(target.to_path_buf());
        let name = target.file_name().ok_or_else(bad)?.to_os_string();
        if name == ".." {
            return Err(bad());
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent = fs::canonicalize(parent).map_err(io_err("resolve", parent))?;
        let mut dir_name = name.clone();
        dir_name.push(".deployments");
        Ok(Layout {
            target: parent.join(&name),
            dir: parent.join(dir_name),
            parent,
            name,
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The link text for deployment `id` (relative to PARENT).
    fn link_text(&self, id: &str) -> PathBuf {
        let mut t = self.name.clone();
        t.push(".deployments");
        PathBuf::from(t).join(id)
    }

    /// The deployment id the target link names, if it is such a link.
    fn linked_id(&self) -> Result<Option<String>, DeployError> {
        match fs::symlink_metadata(&self.target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PathError::new("stat", &self.target, e).into()),
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(DeployError::TargetNotLink(self.target.clone()));
            }
            Ok(_) => {}
        }
        let text = fs::read_link(&self.target).map_err(io_err("read link", &self.target))?;
        Ok(text
            .strip_prefix(self.link_text(""))
            .ok()
            .and_then(|id| id.to_str())
            .map(str::to_string))
    }

    fn load(&self) -> Result<DeployState, DeployError> {
        let p = self.state_path();
        match fs::read(&p) {
            Ok(b) => {
                serde_json::from_slice(&b).map_err(|source| DeployError::State { path: p, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(DeployState::default()),
            Err(e) => Err(PathError::new("read", p, e).into()),
        }
    }

    fn save(&self, state: &DeployState) -> Result<(), DeployError> {
        let text = serde_json::to_string_pretty(state)
            .map_err(|e| DeployError::Bug(format!("encoding the deployment state: {e}")))?;
        Ok(write_atomic(&self.dir, STATE_FILE, text.as_bytes())?)
    }

    /// Loads the state and repairs a deploy cut between its two writes: the link is the truth.
    fn load_repaired(&self) -> Result<DeployState, DeployError> {
        let mut state = self.load()?;
        let Some(pending) = state.pending.take() else {
            return Ok(state);
        };
        if self.linked_id()?.as_deref() == Some(pending.id.as_str()) {
            // Switched, not recorded: finish the record.
            state.history.push(HistoryEntry {
                time: pending.deployed,
                action: "deploy".into(),
                id: pending.id.clone(),
                version: pending.version.clone(),
            });
            state.previous = state.current.take();
            state.current = Some(pending);
        } else {
            // Made, never switched to: nothing uses it.
            pool::remove_tree(&self.dir, &pending.id)?;
        }
        self.save(&state)?;
        write_pins(self, &state)?;
        Ok(state)
    }

    /// Points the target at deployment `id` in one rename, and makes it durable.
    fn switch(&self, id: &str) -> Result<(), DeployError> {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(&self.name);
        tmp_name.push(format!(".switch-{}", nonce()));
        let tmp = self.parent.join(tmp_name);
        std::os::unix::fs::symlink(self.link_text(id), &tmp)
            .map_err(io_err("create link", &tmp))?;
        if let Err(e) = fs::rename(&tmp, &self.target) {
            let _ = fs::remove_file(&tmp);
            return Err(PathError::new("rename over", &self.target, e).into());
        }
        Ok(sync_dir(&self.parent)?)
    }

    fn lock(&self) -> Result<crate::util::fs::DirLock, DeployError> {
        lock_dir(&self.dir).map_err(|e| match e {
            LockError::Busy(p) => DeployError::Busy(p),
            LockError::Io(e) => DeployError::Io(e),
        })
    }
}

fn push_history(state: &mut DeployState, action: &str, d: &Deployment) {
    state.history.push(HistoryEntry {
        time: unix_now(),
        action: action.into(),
        id: d.id.clone(),
        version: d.version.clone(),
    });
    let excess = state.history.len().saturating_sub(HISTORY_MAX);
    state.history.drain(..excess);
}

/// The pin file of a target in its pool.
#[derive(Debug, Serialize, Deserialize)]
struct Pin {
    target: PathBuf,
    versions: BTreeSet<String>,
}

fn pin_name(target: &Path) -> String {
    let d = Sha256::digest(target.as_os_str().as_encoded_bytes());
    format!("{}.json", crate::util::hex::encode(&d[..16]))
}

/// Records, in each pool the target's deployments came from, the versions they use.
fn write_pins(l: &Layout, state: &DeployState) -> Result<(), DeployError> {
    let all = [&state.current, &state.previous, &state.pending];
    let pools: BTreeSet<&Path> = all
        .iter()
        .filter_map(|d| d.as_ref())
        .map(|d| d.pool.as_path())
        .collect();
    for p in pools {
        let versions = all
            .iter()
            .filter_map(|d| d.as_ref())
            .filter(|d| d.pool == p)
            .map(|d| d.version.clone())
            .collect();
        let pin = Pin {
            target: l.target.clone(),
            versions,
        };
        let dir = p.join(META_DIR).join(PINS_DIR);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let text = serde_json::to_string_pretty(&pin)
            .map_err(|e| DeployError::Bug(format!("encoding a pin: {e}")))?;
        write_atomic(&dir, &pin_name(&l.target), text.as_bytes())?;
    }
    Ok(())
}

/// The versions of `pool` that a deployment uses as its current, previous or pending one:
/// retention must not delete them. A pin file is written by every deploy and rollback; a
/// target removed by hand leaves its pin (`POOL/.subvol/pins/*.json`, delete it to unpin).
///
/// # Errors
/// The pins directory or a pin file cannot be read or parsed.
pub fn pinned_versions(pool: &Path) -> Result<BTreeSet<String>, DeployError> {
    let dir = pool.join(META_DIR).join(PINS_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(PathError::new("read directory", dir, e).into()),
    };
    let mut out = BTreeSet::new();
    for e in rd {
        let e = e.map_err(io_err("read directory", &dir))?;
        let p = e.path();
        if p.extension() != Some(OsStr::new("json")) {
            continue;
        }
        let b = fs::read(&p).map_err(io_err("read", &p))?;
        let pin: Pin =
            serde_json::from_slice(&b).map_err(|source| DeployError::State { path: p, source })?;
        out.extend(pin.versions);
    }
    Ok(out)
}

/// Runs a hook with `sh -c`: stdin empty, stdout and stderr to this process's stderr (so
/// `--json` output stays clean and the journal gets both). The environment names the
/// action, the target, the version, the deployment switched to and the version it replaces.
fn run_hook(
    which: &'static str,
    cmd: &str,
    env: &[(&str, &OsStr)],
) -> Result<ExitStatus, DeployError> {
    let spawn_err = |source| DeployError::HookSpawn {
        which,
        cmd: cmd.to_string(),
        source,
    };
    let out = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(spawn_err)?;
    let err = io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(spawn_err)?;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        c.env(k, v);
    }
    c.status().map_err(spawn_err)
}

fn hook_env<'a>(
    action: &'a str,
    l: &'a Layout,
    new: &'a Deployment,
    old: Option<&'a Deployment>,
) -> Vec<(&'static str, &'a OsStr)> {
    vec![
        ("SUBVOL_ACTION", OsStr::new(action)),
        ("SUBVOL_TARGET", l.target.as_os_str()),
        ("SUBVOL_VERSION", OsStr::new(&new.version)),
        ("SUBVOL_DEPLOYMENT", new.path.as_os_str()),
        (
            "SUBVOL_PREVIOUS_VERSION",
            OsStr::new(old.map_or("", |d| d.version.as_str())),
        ),
    ]
}

/// The pool's record of a version: (received UUID, pull time, source).
fn pulled_record(
    pool: &Path,
    version: &str,
) -> Result<Option<(Uuid, u64, Option<String>)>, DeployError> {
    let state = PullState::load(pool)?;
    Ok(state
        .versions
        .iter()
        .find(|v| v.name == version)
        .map(|v| (v.uuid, v.pulled, v.source.clone())))
}

/// Makes `POOL/VERSION` the current deployment at `target`: a snapshot beside the target
/// (read-only unless `opts.writable`), the pre-hook, one atomic switch of the target link, the
/// state recorded, older deployments beyond the previous one deleted, then the post-hook.
///
/// # Errors
/// The target exists and is no link; the version is not in the pool; the deployments directory
/// is not on the pool's file system; a hook fails ([`DeployError::PreHookFailed`] leaves
/// everything as it was; [`DeployError::PostHookFailed`] comes after the switch).
pub fn deploy(
    pool: &Path,
    version: &str,
    target: &Path,
    opts: &DeployOptions,
) -> Result<DeployReport, DeployError> {
    let l = Layout::new(target)?;
    l.linked_id()?;
    let pool = fs::canonicalize(pool).map_err(io_err("resolve", pool))?;
    let source = pool.join(version);
    if version.is_empty()
        || version.starts_with('.')
        || version.contains('/')
        || !crate::util::fs::is_subvolume(&source)
    {
        let known = pool::received_in(&pool)?.into_iter().map(|r| r.0).collect();
        return Err(DeployError::UnknownVersion {
            pool,
            version: version.to_string(),
            known,
        });
    }
    match fs::create_dir(&l.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(PathError::new("create", &l.dir, e).into()),
    }
    let _lock = l.lock()?;
    let mut state = l.load_repaired()?;

    let id = format!("{}-{version}", state.next);
    state.next += 1;
    let path = l.dir.join(&id);
    // Ids in the state are all below `next`: one here is a snapshot a crash left unrecorded.
    pool::remove_tree(&l.dir, &id)?;
    let made = pool::snapshot(&source, &path, !opts.writable)?;
    let record = pulled_record(&pool, version)?;
    let new = Deployment {
        id: id.clone(),
        path: path.clone(),
        pool: pool.clone(),
        version: version.to_string(),
        uuid: made.uuid,
        version_uuid: record.as_ref().map(|r| r.0),
        remote: record.and_then(|r| r.2),
        writable: opts.writable,
        deployed: unix_now(),
    };
    let undo = |l: &Layout, state: &mut DeployState| {
        let _ = pool::remove_tree(&l.dir, &id);
        state.pending = None;
        let _ = l.save(state);
        let _ = write_pins(l, state);
    };
    state.pending = Some(new.clone());
    if let Err(e) = l.save(&state).and_then(|()| write_pins(&l, &state)) {
        undo(&l, &mut state);
        return Err(e);
    }
    if let Some(cmd) = &opts.hooks.pre {
        let status = run_hook(
            "pre",
            cmd,
            &hook_env("deploy", &l, &new, state.current.as_ref()),
        );
        match status {
            Ok(s) if s.success() => {}
            Ok(status) => {
                undo(&l, &mut state);
                return Err(DeployError::PreHookFailed {
                    cmd: cmd.clone(),
                    status,
                    target: l.target.clone(),
                });
            }
            Err(e) => {
                undo(&l, &mut state);
                return Err(e);
            }
        }
    }
    if let Err(e) = l.switch(&id) {
        undo(&l, &mut state);
        return Err(e);
    }
    state.pending = None;
    let retired = state.previous.take();
    state.previous = state.current.take();
    state.current = Some(new.clone());
    push_history(&mut state, "deploy", &new);
    l.save(&state)?;
    write_pins(&l, &state)?;
    let mut removed = Vec::new();
    if let Some(r) = retired
        && Some(&r.id) != state.previous.as_ref().map(|d| &d.id)
        && r.id != id
    {
        // A reader still inside it keeps its open files; new lookups go elsewhere already.
        pool::remove_tree(&l.dir, &r.id)?;
        removed.push(r.id);
    }
    let report = DeployReport {
        target: l.target.clone(),
        current: new.clone(),
        previous: state.previous.clone(),
        removed,
    };
    if let Some(cmd) = &opts.hooks.post {
        let s = run_hook(
            "post",
            cmd,
            &hook_env("deploy", &l, &new, state.previous.as_ref()),
        )?;
        if !s.success() {
            return Err(DeployError::PostHookFailed {
                cmd: cmd.clone(),
                status: s,
                target: l.target,
                version: new.version,
            });
        }
    }
    Ok(report)
}

/// Switches `target` back to its previous deployment (which becomes current; the current one
/// becomes previous, so a second rollback undoes the first). Hooks run as for [`deploy`].
///
/// # Errors
/// Nothing deployed, no previous deployment, or it is gone; a hook fails (the pre-hook leaves
/// everything as it was).
pub fn rollback(target: &Path, hooks: &Hooks) -> Result<DeployReport, DeployError> {
    let l = Layout::new(target)?;
    if fs::symlink_metadata(&l.dir).is_err() {
        return Err(DeployError::NotDeployed(l.target));
    }
    let _lock = l.lock()?;
    let mut state = l.load_repaired()?;
    let Some(current) = state.current.clone() else {
        return Err(DeployError::NotDeployed(l.target));
    };
    let Some(back) = state.previous.clone() else {
        return Err(DeployError::NoPrevious(l.target));
    };
    if !crate::util::fs::is_subvolume(&back.path) {
        return Err(DeployError::PreviousGone(back.path));
    }
    if let Some(cmd) = &hooks.pre {
        let s = run_hook("pre", cmd, &hook_env("rollback", &l, &back, Some(&current)))?;
        if !s.success() {
            return Err(DeployError::PreHookFailed {
                cmd: cmd.clone(),
                status: s,
                target: l.target,
            });
        }
    }
    l.switch(&back.id)?;
    state.current = Some(back.clone());
    state.previous = Some(current.clone());
    push_history(&mut state, "rollback", &back);
    l.save(&state)?;
    write_pins(&l, &state)?;
    if let Some(cmd) = &hooks.post {
        let s = run_hook(
            "post",
            cmd,
            &hook_env("rollback", &l, &back, Some(&current)),
        )?;
        if !s.success() {
            return Err(DeployError::PostHookFailed {
                cmd: cmd.clone(),
                status: s,
                target: l.target,
                version: back.version,
            });
        }
    }
    Ok(DeployReport {
        target: l.target,
        current: back,
        previous: Some(current),
        removed: Vec::new(),
    })
}

/// What is deployed at `target`, its previous deployment, and the versions the pool holds
/// (`pool`, or the current deployment's pool). Reads only: a deploy cut short is reported as
/// the link shows it, and repaired by the next deploy or rollback.
///
/// # Errors
/// The state or the pool's records cannot be read.
pub fn status(target: &Path, pool: Option<&Path>) -> Result<Status, DeployError> {
    let l = Layout::new(target)?;
    let mut state = l.load()?;
    if let Some(p) = state.pending.take()
        && l.linked_id()?.as_deref() == Some(p.id.as_str())
    {
        state.previous = state.current.take();
        state.current = Some(p);
    }
    let pool = match pool {
        Some(p) => Some(fs::canonicalize(p).map_err(io_err("resolve", p))?),
        None => state.current.as_ref().map(|d| d.pool.clone()),
    };
    let mut pulled = Vec::new();
    let mut pending = None;
    if let Some(pool) = &pool {
        let records = PullState::load(pool)?;
        let uses = |d: &Option<Deployment>, name: &str| {
            d.as_ref()
                .is_some_and(|d| d.pool == *pool && d.version == name)
        };
        let mut held = pool::received_in(pool)?;
        let when = |name: &str| records.versions.iter().find(|v| v.name == name);
        held.sort_by_key(|h| (when(&h.0).map_or(0, |v| v.pulled), h.0.clone()));
        for (name, uuid, _) in held {
            let rec = when(&name);
            pulled.push(PulledEntry {
                deployed: uses(&state.current, &name),
                previous: uses(&state.previous, &name),
                pulled: rec.map_or(0, |v| v.pulled),
                remote: rec.and_then(|v| v.source.clone()),
                name,
                uuid,
            });
        }
        // Rolled back from is not pending: an automatic deploy must not undo a rollback.
        pending = pulled
            .iter()
            .rfind(|p| p.pulled != 0)
            .filter(|p| !p.deployed && !p.previous)
            .map(|p| p.name.clone());
    }
    Ok(Status {
        target: l.target,
        deployments: l.dir,
        current: state.current,
        previous: state.previous,
        pool,
        pulled,
        pending,
        history: state.history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_link_text() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(&dir.path().join("current")).unwrap();
        assert_eq!(
            l.dir,
            fs::canonicalize(dir.path())
                .unwrap()
                .join("current.deployments")
        );
        assert_eq!(l.link_text("3-v2"), Path::new("current.deployments/3-v2"));
        assert_eq!(l.linked_id().unwrap(), None);
        std::os::unix::fs::symlink("current.deployments/3-v2", &l.target).unwrap();
        assert_eq!(l.linked_id().unwrap().as_deref(), Some("3-v2"));
        l.switch("4-v3").unwrap();
        assert_eq!(l.linked_id().unwrap().as_deref(), Some("4-v3"));
        // Only the link remains: the temporary name was renamed away.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::remove_file(&l.target).unwrap();
        fs::create_dir(&l.target).unwrap();
        assert!(matches!(l.linked_id(), Err(DeployError::TargetNotLink(_))));
        assert!(matches!(
            Layout::new(Path::new("/")),
            Err(DeployError::BadTarget(_))
        ));
    }

    #[test]
    fn pins_are_the_union_over_targets() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool");
        fs::create_dir(&pool).unwrap();
        assert!(pinned_versions(&pool).unwrap().is_empty());
        let d = |v: &str| Deployment {
            id: format!("0-{v}"),
            path: PathBuf::new(),
            pool: pool.clone(),
            version: v.into(),
            uuid: Uuid::default(),
            version_uuid: None,
            remote: None,
            writable: false,
            deployed: 0,
        };
        for (t, cur, prev) in [("a", "3", Some("2")), ("b", "1", None)] {
            let l = Layout::new(&dir.path().join(t)).unwrap();
            let state = DeployState {
                current: Some(d(cur)),
                previous: prev.map(d),
                ..Default::default()
            };
            write_pins(&l, &state).unwrap();
        }
        let got: Vec<String> = pinned_versions(&pool).unwrap().into_iter().collect();
        assert_eq!(got, ["1", "2", "3"]);
    }
}
