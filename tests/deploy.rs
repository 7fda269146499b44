//! Tests: deployments (`subvol deploy`, `rollback`, `status`) on loop btrfs, with versions
//! published to a directory repository and pulled into a pool on the same file system.
//!
//! Each version is a set of files whose contents name the version and the file, so a reader can
//! tell whether what it read belongs to exactly one version.

use crate::support::bin;
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::tree::{run, write};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const VERSIONS: usize = 4;
const FILES: usize = 30;

fn subvol() -> Command {
    Command::new(bin("subvol"))
}

fn content(v: usize, name: &str) -> Vec<u8> {
    format!("version {v} file {name}\n")
        .repeat(300)
        .into_bytes()
}

/// The file names of version `v`: `fNN` without `f0V`, and `only-vV`.
fn names(v: usize) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = (0..FILES)
        .filter(|i| *i != v)
        .map(|i| format!("f{i:02}"))
        .collect();
    s.insert(format!("only-v{v}"));
    s
}

/// A pool holding nothing yet, a repository with versions 1..=4, and a target path.
struct Env {
    fs: BtrfsFs,
    repo: PathBuf,
    public: PathBuf,
    pool: PathBuf,
    target: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        let fs = BtrfsFs::new_or_skip()?;
        let root = fs.path().to_path_buf();
        let key = root.join("vendor.key");
        run(subvol().arg("keygen").arg("-o").arg(&key));
        let repo = root.join("repo");
        for v in 1..=VERSIONS {
            let tree = root.join(format!("src/v{v}"));
            for n in names(v) {
                write(&tree.join(&n), &content(v, &n));
            }
            run(subvol()
                .arg("publish")
                .arg("--repo")
                .arg(&repo)
                .arg("--key")
                .arg(&key)
                .arg(&tree)
                .arg("--version")
                .arg(v.to_string()));
        }
        let pool = root.join("pool");
        run(subvol().arg("pool").arg("init").arg(&pool));
        fs::create_dir(root.join("app")).unwrap();
        Some(Env {
            public: root.join("vendor.key.pub"),
            target: root.join("app/current"),
            fs,
            repo,
            pool,
        })
    }

    fn pull(&self, v: usize, extra: &[&str]) {
        run(subvol()
            .arg("pull")
            .arg(&self.repo)
            .arg("--into")
            .arg(&self.pool)
            .arg("--verify")
            .arg(&self.public)
            .arg("--version")
            .arg(v.to_string())
            .args(extra));
    }

    fn deploy(&self, v: usize, extra: &[&str]) -> Output {
        subvol()
            .arg("deploy")
            .arg(&self.pool)
            .arg(v.to_string())
            .arg("--to")
            .arg(&self.target)
            .arg("--json")
            .args(extra)
            .output()
            .unwrap()
    }

    fn deploy_ok(&self, v: usize, extra: &[&str]) -> Value {
        let out = self.deploy(v, extra);
        assert!(
            out.status.success(),
            "deploy {v} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn rollback_ok(&self) -> Value {
        let out = run(subvol()
            .arg("rollback")
            .arg("--to")
            .arg(&self.target)
            .arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn status(&self) -> Value {
        let out = run(subvol()
            .arg("status")
            .arg("--to")
            .arg(&self.target)
            .arg("--json"));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The version the tree at the target is (checked whole: every file of it, nothing else).
    fn deployed_tree(&self) -> usize {
        read_whole_version(&self.target).unwrap_or_else(|e| panic!("{e}"))
    }

    fn pool_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&self.pool)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    }

    fn deployments(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.fs.path().join("app/current.deployments"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Opens `dir` once and reads every file relative to that handle: the version all of them
/// belong to, or what is mixed.
fn read_whole_version(dir: &Path) -> Result<usize, String> {
    let handle = File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    let base = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    let found: BTreeSet<String> = fs::read_dir(&base)
        .map_err(|e| format!("read_dir: {e}"))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let v = (1..=VERSIONS)
        .find(|v| found.contains(&format!("only-v{v}")))
        .ok_or_else(|| format!("no version marker in {found:?}"))?;
    if found != names(v) {
        return Err(format!("file set of version {v} mixed: {found:?}"));
    }
    for n in &found {
        let got = fs::read(base.join(n)).map_err(|e| format!("read {n}: {e}"))?;
        if got != content(v, n) {
            return Err(format!("{n} in version {v}'s tree is not version {v}'s"));
        }
    }
    Ok(v)
}

/// Reads under `target` until told to stop: whole trees through one handle, and single files
/// by their full path (each must be one version's file, whole). Counts reads per version.
struct Reader {
    stop: Arc<AtomicBool>,
    seen: Arc<[AtomicU64; VERSIONS + 1]>,
    thread: Option<thread::JoinHandle<Result<(), String>>>,
}

impl Reader {
    fn start(target: &Path) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<[AtomicU64; VERSIONS + 1]> = Arc::new(Default::default());
        let (s, c, t) = (stop.clone(), seen.clone(), target.to_path_buf());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let v = read_whole_version(&t)?;
                c[v].fetch_add(1, Ordering::Relaxed);
                let f = fs::read(t.join("f00")).map_err(|e| format!("read f00: {e}"))?;
                if !(1..=VERSIONS).any(|v| f == content(v, "f00")) {
                    return Err("f00 is no version's f00".into());
                }
            }
            Ok(())
        });
        Reader {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Waits until the reader read version `v` (so every switch is crossed by reads).
    fn wait_for(&self, v: usize) {
        let start = self.seen[v].load(Ordering::Relaxed);
        let t0 = Instant::now();
        while self.seen[v].load(Ordering::Relaxed) < start + 3 {
            assert!(
                !self.thread.as_ref().unwrap().is_finished(),
                "the reader stopped"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "reader never saw {v}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let r = self.thread.take().unwrap().join().unwrap();
        if let Err(e) = r {
            panic!("the reader saw a mix: {e}");
        }
        self.seen.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn deploy_switch_under_readers_and_rollback() {
    let Some(env) = Env::new() else { return };
    env.pull(1, &[]);
    let r = env.deploy_ok(1, &[]);
    assert_eq!(r["current"]["version"], "1");
    assert_eq!(r["current"]["writable"], false);
    assert!(r["previous"].is_null());
    assert_eq!(
        fs::read_link(&env.target).unwrap(),
        Path::new("current.deployments/0-1")
    );
    assert_eq!(env.deployed_tree(), 1);
    // Read-only by default.
    assert!(fs::write(env.target.join("new"), b"x").is_err());

    env.pull(2, &[]);
    let reader = Reader::start(&env.target);
    reader.wait_for(1);
    let r = env.deploy_ok(2, &[]);
    assert_eq!(r["current"]["version"], "2");
    assert_eq!(r["previous"]["version"], "1");
    reader.wait_for(2);
    env.rollback_ok();
    reader.wait_for(1);
    env.rollback_ok();
    reader.wait_for(2);
    let r = env.rollback_ok();
    assert_eq!(r["current"]["version"], "1");
    assert_eq!(r["previous"]["version"], "2");
    reader.wait_for(1);
    let reads = reader.finish();
    assert!(reads > 10, "{reads} reads");
    assert_eq!(env.deployed_tree(), 1);

    let s = env.status();
    assert_eq!(s["current"]["version"], "1");
    assert_eq!(s["previous"]["version"], "2");
    assert_eq!(s["current"]["remote"], env.repo.to_str().unwrap());
    let pulled: Vec<&str> = s["pulled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(pulled, ["1", "2"]);
    // The newest pulled version was rolled back from: not pending (an update would undo the
    // rollback).
    assert!(s["pending"].is_null());
    let actions: Vec<&str> = s["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["deploy", "deploy", "rollback", "rollback", "rollback"]
    );

    // A writable deployment of 3 retires the oldest deployment (only current + previous stay).
    env.pull(3, &[]);
    let r = env.deploy_ok(3, &["--writable"]);
    assert_eq!(r["removed"], serde_json::json!(["1-2"]));
    assert_eq!(env.deployments(), ["0-1", "2-3", "deploy.json"]);
    assert_eq!(env.deployed_tree(), 3);
    fs::write(env.target.join("only-v3"), b"changed").unwrap();
    // The pool's version is untouched by changes to the writable deployment.
    assert_eq!(
        fs::read(env.pool.join("3/only-v3")).unwrap(),
        content(3, "only-v3")
    );
    assert!(env.status()["pending"].is_null());
}

#[test]
fn a_failing_pre_hook_leaves_the_deployment() {
    let Some(env) = Env::new() else { return };
    env.pull(1, &[]);
    env.deploy_ok(1, &[]);
    env.pull(2, &[]);
    let before = env.deployments();
    let out = env.deploy(2, &["--pre", "echo refusing >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pre hook") && err.contains("exit status: 7"),
        "{err}"
    );
    assert!(
        err.contains("refusing"),
        "hook output goes to stderr: {err}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(env.deployments(), before);
    assert_eq!(
        fs::read_link(&env.target).unwrap(),
        Path::new("current.deployments/0-1")
    );
    assert_eq!(env.deployed_tree(), 1);
    let s = env.status();
    assert_eq!(s["current"]["version"], "1");
    assert!(s["previous"].is_null());

    // Hooks see what is switched; the pre hook runs before the switch, the post hook after.
    let log = env.fs.path().join("hooks.log");
    let pre = format!(
        "echo \"pre $SUBVOL_ACTION $SUBVOL_VERSION $SUBVOL_PREVIOUS_VERSION $(readlink {})\" >> {}",
        env.target.display(),
        log.display()
    );
    let post = format!(
        "echo \"post $(readlink {}) $(cat $SUBVOL_DEPLOYMENT/only-v2 | head -c 19)\" >> {}",
        env.target.display(),
        log.display()
    );
    env.deploy_ok(2, &["--pre", &pre, "--post", &post]);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "pre deploy 2 1 current.deployments/0-1\n\
         post current.deployments/2-2 version 2 file only\n"
    );
    // A failing post hook reports, and the switch stays.
    env.pull(3, &[]);
    let out = env.deploy(3, &["--post", "false"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("post hook"));
    assert_eq!(env.deployed_tree(), 3);
    assert_eq!(env.status()["previous"]["version"], "2");
}

#[test]
fn pull_keep_never_deletes_the_deployed_or_previous_version() {
    let Some(env) = Env::new() else { return };
    env.pull(1, &[]);
    env.deploy_ok(1, &[]);
    env.pull(2, &[]);
    env.deploy_ok(2, &[]);
    env.pull(3, &["--keep", "1"]);
    // 3 is the target, 2 deployed, 1 previous.
    assert_eq!(env.pool_versions(), ["1", "2", "3"]);
    env.deploy_ok(3, &[]);
    env.pull(4, &["--keep", "1"]);
    // 1 is no longer used by a deployment: retention takes it.
    assert_eq!(env.pool_versions(), ["2", "3", "4"]);
    let s = env.status();
    let marks: BTreeMap<&str, (bool, bool)> = s["pulled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                (
                    p["deployed"].as_bool().unwrap(),
                    p["previous"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(marks["3"], (true, false));
    assert_eq!(marks["2"], (false, true));
    assert_eq!(marks["4"], (false, false));
    assert_eq!(s["pending"], "4");
}

#[test]
fn deploy_refuses_what_it_does_not_manage() {
    let Some(env) = Env::new() else { return };
    env.pull(1, &[]);
    // An unknown version.
    let out = env.deploy(9, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("version 9 is not in the pool"));
    // A target that is a real directory is never replaced.
    fs::create_dir(&env.target).unwrap();
    let out = env.deploy(1, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a symbolic link"));
    assert!(env.target.is_dir() && !env.target.is_symlink());
    fs::remove_dir(&env.target).unwrap();
    // Nothing to roll back to.
    env.deploy_ok(1, &[]);
    let out = subvol()
        .arg("rollback")
        .arg("--to")
        .arg(&env.target)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no previous deployment"));
}

/// `dist/subvol-update` (what `subvol-pull@.service` runs) with the configuration in its
/// environment.
fn update_script(env: &Env, verify: &Path) -> Output {
    Command::new("sh")
        .arg(crate::support::repo_root().join("dist/subvol-update"))
        .env("SUBVOL_BIN", bin("subvol"))
        .env("SUBVOL_SOURCE", &env.repo)
        .env("SUBVOL_POOL", &env.pool)
        .env("SUBVOL_VERIFY", verify)
        .env("SUBVOL_PULL_ARGS", "--keep 1")
        .env("SUBVOL_DEPLOY_TO", &env.target)
        .env("SUBVOL_DEPLOY_POST", "echo \"post $SUBVOL_VERSION\" >&2")
        .output()
        .unwrap()
}

#[test]
fn the_update_service_pulls_deploys_and_respects_rollbacks() {
    let Some(env) = Env::new() else { return };
    env.pull(2, &[]);
    env.deploy_ok(2, &[]);
    let out = update_script(&env, &env.public);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("post 4"), "{err}");
    assert_eq!(env.deployed_tree(), 4);
    assert_eq!(env.pool_versions(), ["2", "4"]);
    // Nothing new: no second deployment.
    let out = update_script(&env, &env.public);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing new to deploy"));
    assert_eq!(env.status()["history"].as_array().unwrap().len(), 2);
    // A rollback sticks: the version rolled back from is not deployed again.
    env.rollback_ok();
    let out = update_script(&env, &env.public);
    assert!(out.status.success());
    assert_eq!(env.deployed_tree(), 2);
    // A pull that fails (the index is signed by another key) leaves the deployment untouched.
    let other = env.fs.path().join("other.key");
    run(subvol().arg("keygen").arg("-o").arg(&other));
    let out = update_script(&env, &env.fs.path().join("other.key.pub"));
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(env.deployed_tree(), 2);
    assert_eq!(env.status()["history"].as_array().unwrap().len(), 3);
}
