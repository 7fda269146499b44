//! Tests: trust metadata (issue 13) end to end through the `subvol` binary, served by nginx,
//! received into pools on real btrfs. One test per attack class: each refusal exits 4 with a
//! message naming the file and what was wrong, and leaves the pool's state files
//! (`POOL/.subvol/*.json`, `POOL/.subvol/trust/*`) and subvolumes exactly as they were.

use crate::support::bin;
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::nginx::Nginx;
use crate::support::tree::{assert_same_tree, bytes, copy_tree, run, write};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const VERSIONS: usize = 4;

fn subvol() -> Command {
    Command::new(bin("subvol"))
}

/// Source trees (small: these tests are about metadata) and key pairs, made once per run.
struct Shared {
    trees: Vec<PathBuf>,
    keys: PathBuf,
}

const KEYS: &[&str] = &[
    "root1", "root2", "root3", "root4", "root5", "rel1", "rel2", "rel3", "rel4", "ts", "ts2",
    "stream", "stream2", "evil",
];

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("trust-shared-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut trees: Vec<PathBuf> = Vec::new();
        for v in 1..=VERSIONS {
            let t = dir.join(format!("v{v}"));
            if let Some(prev) = trees.last() {
                copy_tree(prev, &t);
            }
            for f in 0..8 {
                write(&t.join(format!("d/f{f}")), &bytes(v as u64 * 100 + f, 3000));
            }
            write(&t.join("version"), format!("{v}\n").as_bytes());
            write(&t.join(format!("new{v}")), &bytes(v as u64, 70_000));
            trees.push(t);
        }
        let keys = dir.join("keys");
        fs::create_dir_all(&keys).unwrap();
        for k in KEYS {
            run(subvol().arg("keygen").arg("-o").arg(keys.join(k)));
        }
        Shared { trees, keys }
    })
}

fn key(name: &str) -> PathBuf {
    shared().keys.join(name)
}

fn public(name: &str) -> PathBuf {
    shared().keys.join(format!("{name}.pub"))
}

/// A repository under a temporary directory served by nginx: root keys root1-3 (2 of 3),
/// release keys rel1-3 (2 of 3), timestamp key ts, stream key stream.
struct Repo {
    dir: tempfile::TempDir,
    repo: PathBuf,
    nginx: Nginx,
    published: usize,
}

fn trust(args: &[&str], extra: &[&Path]) -> Output {
    let mut c = subvol();
    c.arg("trust").args(args);
    for p in extra {
        c.arg(p);
    }
    run(&mut c)
}

impl Repo {
    fn new(name: &str) -> Option<Repo> {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let repo = dir.path().join("repo");
        fs::create_dir_all(&repo).unwrap();
        let nginx = Nginx::start(dir.path())?;
        let mut c = subvol();
        c.args(["trust", "init", "--name", name, "--repo"])
            .arg(&repo);
        for k in ["root1", "root2", "root3"] {
            c.arg("--root-key").arg(public(k));
        }
        for k in ["rel1", "rel2", "rel3"] {
            c.arg("--release-key").arg(public(k));
        }
        c.args(["--root-threshold", "2", "--release-threshold", "2"])
            .arg("--timestamp-key")
            .arg(public("ts"))
            .arg("--stream-key")
            .arg(public("stream"))
            .arg("--sign")
            .arg(key("root1"))
            .arg("--sign")
            .arg(key("root2"));
        run(&mut c);
        Some(Repo {
            dir,
            repo,
            nginx,
            published: 0,
        })
    }

    fn url(&self) -> String {
        format!("{}repo", self.nginx.url())
    }

    fn root1(&self) -> PathBuf {
        self.repo.join("root/1.json")
    }

    /// Publishes the next version with `stream` signing the streams, release keys `rel`,
    /// timestamp key `ts`.
    fn publish_with(&mut self, stream: &str, rel: &[&str], ts: &str) {
        self.published += 1;
        let mut c = subvol();
        c.arg("publish")
            .arg("--repo")
            .arg(&self.repo)
            .arg("--key")
            .arg(key(stream))
            .arg(&shared().trees[self.published - 1])
            .args(["--version", &self.published.to_string(), "--level", "1"]);
        for r in rel {
            c.arg("--release-key").arg(key(r));
        }
        c.arg("--timestamp-key").arg(key(ts));
        run(&mut c);
    }

    fn publish(&mut self) {
        self.publish_with("stream", &["rel1", "rel2"], "ts");
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        fs::read(self.repo.join(rel)).unwrap()
    }

    fn put(&self, rel: &str, data: &[u8]) {
        fs::write(self.repo.join(rel), data).unwrap();
    }

    /// What a holder of the timestamp key (and nothing else) can do: edit the timestamp and
    /// sign it again.
    fn forge_timestamp(&self, edit: impl FnOnce(&mut Value), signer: &str) {
        let mut ts: Value = serde_json::from_slice(&self.read("timestamp.json")).unwrap();
        edit(&mut ts["signed"]);
        ts["signatures"] = Value::Array(Vec::new());
        self.put("timestamp.json", &serde_json::to_vec(&ts).unwrap());
        trust(
            &["sign"],
            &[
                &self.repo.join("timestamp.json"),
                Path::new("--key"),
                &key(signer),
            ],
        );
    }

    /// Points the timestamp at the bytes now in `release/<serial>.json` (a forger holding the
    /// timestamp key).
    fn forge_timestamp_for(&self, serial: u64, signer: &str) {
        let b = self.read(&format!("release/{serial}.json"));
        use sha2::Digest;
        let sha = subvol::util::hex::encode(sha2::Sha256::digest(&b));
        self.forge_timestamp(
            |s| {
                s["release"]["sha256"] = sha.into();
                s["release"]["size"] = (b.len() as u64).into();
            },
            signer,
        );
    }

    fn rotate(&self, args: &[&str], sign: &[&str]) {
        let mut c = subvol();
        c.args(["trust", "rotate", "--repo"]).arg(&self.repo);
        for a in args {
            if a.starts_with("--") || a.parse::<u64>().is_ok() {
                c.arg(a);
            } else {
                c.arg(public(a));
            }
        }
        for s in sign {
            c.arg("--sign").arg(key(s));
        }
        run(&mut c);
    }

    fn timestamp(&self, k: &str, valid_for: &str) {
        trust(
            &["timestamp", "--valid-for", valid_for, "--key"],
            &[&key(k), Path::new("--repo"), &self.repo],
        );
    }
}

fn pull(url: &str, pool: &Path, root: Option<&Path>, extra: &[&str]) -> Output {
    let mut c = subvol();
    c.arg("pull").arg(url).arg("--into").arg(pool).arg("--json");
    if let Some(r) = root {
        c.arg("--root").arg(r);
    }
    c.args(extra).output().unwrap()
}

fn pull_ok(url: &str, pool: &Path, root: Option<&Path>, extra: &[&str]) -> Value {
    let out = pull(url, pool, root, extra);
    assert!(
        out.status.success(),
        "pull {url} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The pool's state files and subvolumes.
fn pool_state(pool: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let mut files = BTreeMap::new();
    for dir in [pool.join(".subvol"), pool.join(".subvol/trust")] {
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                let n = p.display().to_string();
                if p.is_file() && n.ends_with(".json") {
                    files.insert(n, fs::read(&p).unwrap());
                }
            }
        }
    }
    let mut subvols: Vec<String> = fs::read_dir(pool)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    subvols.sort();
    (files, subvols)
}

/// Pulls, expecting exit 4, a message containing every one of `says`, and the pool unchanged.
fn refused(url: &str, pool: &Path, root: Option<&Path>, says: &[&str]) -> String {
    let before = pool_state(pool);
    let out = pull(url, pool, root, &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "expected exit 4:\n{err}");
    for s in says {
        assert!(err.contains(s), "expected {s:?} in:\n{err}");
    }
    assert_eq!(pool_state(pool), before, "the pool changed:\n{err}");
    err
}

fn new_pool(fs: &BtrfsFs, name: &str) -> PathBuf {
    let p = fs.path().join(name);
    fs::create_dir(&p).unwrap();
    p
}

fn check(pool: &Path, v: usize) {
    assert_same_tree(
        &shared().trees[v - 1],
        &pool.join(v.to_string()),
        &format!("version {v}"),
    );
}

/// A repository with `n` versions and a pool that pulled the newest with `--root`.
fn setup(n: usize) -> Option<(BtrfsFs, Repo, PathBuf)> {
    let btrfs = BtrfsFs::new_or_skip()?;
    let mut r = Repo::new("test os")?;
    for _ in 0..n {
        r.publish();
    }
    let pool = new_pool(&btrfs, "pool");
    let out = pull_ok(&r.url(), &pool, Some(&r.root1()), &[]);
    assert_eq!(out["target"], n.to_string());
    check(&pool, n);
    Some((btrfs, r, pool))
}

#[test]
fn pull_with_a_root_then_with_the_pinned_one() {
    let Some((_fs, mut r, pool)) = setup(1) else {
        return;
    };
    // The pool pinned the root: later pulls need neither --root nor --verify.
    r.publish();
    r.publish();
    r.nginx.clear_log();
    pull_ok(&r.url(), &pool, None, &[]);
    check(&pool, 3);
    // Nothing changed: the timestamp (and a 404 for the next root version) is all it fetches.
    r.nginx.clear_log();
    let out = pull_ok(&r.url(), &pool, None, &[]);
    assert_eq!(out["already"], true);
    assert_eq!(out["trust"]["name"], "test os", "{out}");
    assert_eq!(out["trust"]["timestamp_version"], 3, "{out}");
    assert!(
        out["trust"]["metadata_bytes"].as_u64().unwrap() < 8 << 10,
        "{out}"
    );
    let reqs = r.nginx.requests();
    let got: u64 = reqs.iter().map(|q| q.sent).sum();
    assert!(got < 8 << 10, "{reqs:?}");
    let paths: Vec<&str> = reqs.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(
        paths,
        ["repo/root/2.json", "repo/timestamp.json"],
        "{reqs:?}"
    );
    // The legacy index is still there for older clients, signed by --key.
    let legacy = new_pool(&_fs, "legacy");
    let out = subvol()
        .args(["pull", &r.url(), "--into"])
        .arg(&legacy)
        .arg("--verify")
        .arg(public("stream"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&legacy, 3);
}

#[test]
fn arbitrary_software_a_bad_signature_is_refused() {
    let Some((_fs, mut r, pool)) = setup(1) else {
        return;
    };
    r.publish();
    // A mirror alters the timestamp (without the key): its signature no longer verifies.
    let mut ts: Value = serde_json::from_slice(&r.read("timestamp.json")).unwrap();
    ts["signed"]["expires"] = (ts["signed"]["expires"].as_u64().unwrap() + 1).into();
    r.put("timestamp.json", &serde_json::to_vec(&ts).unwrap());
    refused(
        &r.url(),
        &pool,
        None,
        &[
            "timestamp.json: signed by 0 of the timestamp keys, 1 needed",
            "does not verify",
        ],
    );
    // Signed by a key the root does not list.
    r.forge_timestamp(|_| {}, "evil");
    refused(&r.url(), &pool, None, &["is not a timestamp key"]);
}

#[test]
fn rollback_to_an_older_timestamp_is_refused() {
    let Some((_fs, mut r, pool)) = setup(2) else {
        return;
    };
    let old = r.read("timestamp.json");
    r.publish();
    pull_ok(&r.url(), &pool, None, &[]);
    check(&pool, 3);
    r.put("timestamp.json", &old);
    refused(
        &r.url(),
        &pool,
        None,
        &["timestamp.json: timestamp version 2 is older than timestamp version 3"],
    );
}

#[test]
fn indefinite_freeze_an_expired_timestamp_is_refused() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    // The release is valid for 30 days; the timestamp for one second.
    r.timestamp("ts", "1");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused(
        &r.url(),
        &pool,
        None,
        &["timestamp.json: expired at", "subvol trust timestamp"],
    );
}

#[test]
fn fast_forward_is_recovered_by_rotating_the_timestamp_key() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    let honest = r.read("timestamp.json");
    // The leaked timestamp key pushes the version far ahead, and the pool follows.
    r.forge_timestamp(|s| s["version"] = 1_000_000.into(), "ts");
    pull_ok(&r.url(), &pool, None, &[]);
    // The publisher's next timestamps are "rollbacks" now.
    r.put("timestamp.json", &honest);
    r.timestamp("ts", "1d");
    refused(
        &r.url(),
        &pool,
        None,
        &["timestamp version 2 is older than timestamp version 1000000"],
    );
    // Recovery: a new root with a new timestamp key; the pool resets what it saw of the role.
    r.rotate(&["--timestamp-key", "ts2"], &["root1", "root3"]);
    r.timestamp("ts2", "1d");
    let out = pull_ok(&r.url(), &pool, None, &[]);
    assert_eq!(out["target"], "1");
    let state: Value =
        serde_json::from_slice(&fs::read(pool.join(".subvol/state.json")).unwrap()).unwrap();
    let (_, rec) = state["trust"].as_object().unwrap().iter().next().unwrap();
    assert_eq!(rec["timestamp_version"], 3, "{rec}");
    assert_eq!(rec["root_version"], 2, "{rec}");
    // The revoked key cannot sign timestamps any more.
    r.forge_timestamp(|s| s["version"] = 2_000_000.into(), "ts");
    refused(&r.url(), &pool, None, &["is not a timestamp key"]);
}

#[test]
fn mix_and_match_a_timestamp_naming_another_release_is_refused() {
    let Some((_fs, mut r, pool)) = setup(1) else {
        return;
    };
    r.publish();
    r.publish();
    // release/3.json holds release 2's (validly signed) bytes.
    let two = r.read("release/2.json");
    r.put("release/3.json", &two);
    refused(
        &r.url(),
        &pool,
        None,
        &["release/3.json", "metadata of two publishes mixed"],
    );
}

#[test]
fn endless_data_a_huge_timestamp_is_cut_off() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    r.put("timestamp.json", &vec![b' '; 16 << 20]);
    r.nginx.clear_log();
    refused(
        &r.url(),
        &pool,
        None,
        &["timestamp.json: larger than the 8192 bytes accepted"],
    );
}

#[test]
fn wrong_software_metadata_of_another_repository_is_refused() {
    let Some((fs_, r, pool)) = setup(1) else {
        return;
    };
    // Another repository (other channel), the same keys.
    let mut other = Repo::new("test os beta").unwrap();
    other.publish();
    other.publish();
    for f in ["timestamp.json", "release/2.json"] {
        fs::copy(other.repo.join(f), r.repo.join(f)).unwrap();
    }
    refused(
        &r.url(),
        &pool,
        None,
        &["timestamp.json: belongs to repository", "(test os)"],
    );
    // The other repository's root for this source: the pool pinned the first one.
    refused(
        &r.url(),
        &pool,
        Some(&other.root1()),
        &[
            "belongs to repository",
            "the repository this pool pinned for",
        ],
    );
    drop(fs_);
}

#[test]
fn key_compromise_below_the_release_threshold_is_refused() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    // rel1 and the online timestamp key leaked: a release listing a version of the attacker's
    // choice, signed by rel1 only.
    let path = r.repo.join("release/1.json");
    let mut rel: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    rel["signed"]["index"]["versions"][0]["name"] = "evil".into();
    rel["signed"]["index"]["streams"][0]["to"] = "evil".into();
    rel["signatures"] = Value::Array(Vec::new());
    fs::write(&path, serde_json::to_vec(&rel).unwrap()).unwrap();
    trust(&["sign"], &[&path, Path::new("--key"), &key("rel1")]);
    r.forge_timestamp_for(1, "ts");
    refused(
        &r.url(),
        &pool,
        None,
        &["release/1.json: signed by 1 of the release keys, 2 needed"],
    );
}

#[test]
fn a_root_chain_gap_is_refused() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    r.rotate(&[], &["root1", "root2"]);
    r.rotate(&[], &["root2", "root3"]);
    r.timestamp("ts", "1d");
    fs::rename(r.repo.join("root/2.json"), r.dir.path().join("2.json")).unwrap();
    refused(
        &r.url(),
        &pool,
        None,
        &[
            "root chain gap: ",
            "root/2.json is missing",
            "names root version 3",
        ],
    );
}

#[test]
fn a_root_signed_below_threshold_is_refused() {
    let Some((_fs, r, pool)) = setup(1) else {
        return;
    };
    r.rotate(&["--stream-key", "evil"], &["root1"]);
    r.timestamp("ts", "1d");
    refused(
        &r.url(),
        &pool,
        None,
        &["root/2.json: signed by 1 of the root keys, 2 needed"],
    );
    // A fresh pool given a root that is not signed by its own threshold.
    let fresh = new_pool(&_fs, "fresh");
    refused(
        &r.url(),
        &fresh,
        Some(&r.repo.join("root/2.json")),
        &["root/2.json: signed by 1 of the root keys, 2 needed"],
    );
}

#[test]
fn a_stream_signed_by_a_revoked_stream_key_is_refused() {
    let Some((btrfs, mut r, _pool)) = setup(1) else {
        return;
    };
    // stream is revoked for stream2; version 1's full stream is still signed by it.
    r.rotate(&["--stream-key", "stream2"], &["root1", "root2"]);
    r.publish_with("stream2", &["rel1", "rel2"], "ts");
    let fresh = new_pool(&btrfs, "fresh");
    let mut c = subvol();
    let before = pool_state(&fresh);
    let out = c
        .args(["pull", &r.url(), "--version", "1", "--into"])
        .arg(&fresh)
        .arg("--root")
        .arg(r.root1())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("no usable chain of streams reaches version 1"),
        "{err}"
    );
    assert!(
        err.contains("not an accepted key") || err.contains("not accepted"),
        "{err}"
    );
    assert_eq!(pool_state(&fresh), before, "{err}");
    // Version 2, signed by the new key, comes.
    pull_ok(&r.url(), &fresh, Some(&r.root1()), &[]);
    check(&fresh, 2);
}

#[test]
fn full_rotation_of_every_role_while_a_pool_is_several_publishes_behind() {
    let Some((_fs, mut r, pool)) = setup(1) else {
        return;
    };
    // Every key replaced: root (signed by 2 old and 2 new), release, timestamp, streams.
    r.rotate(
        &[
            "--root-key",
            "root4",
            "--root-key",
            "root5",
            "--root-threshold",
            "2",
            "--release-key",
            "rel4",
            "--release-threshold",
            "1",
            "--timestamp-key",
            "ts2",
            "--stream-key",
            "stream2",
        ],
        &["root1", "root2", "root4", "root5"],
    );
    r.publish_with("stream2", &["rel4"], "ts2");
    r.publish_with("stream2", &["rel4"], "ts2");
    r.publish_with("stream2", &["rel4"], "ts2");
    let out = pull_ok(&r.url(), &pool, None, &[]);
    assert_eq!(out["target"], "4");
    check(&pool, 4);
    let pinned = fs::read_dir(pool.join(".subvol/trust"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".root.json"))
        .unwrap();
    assert_eq!(fs::read(pinned.path()).unwrap(), r.read("root/2.json"));
    // A root signed by the old root keys only is no longer enough.
    r.rotate(&["--stream-key", "evil"], &["root1", "root2"]);
    r.timestamp("ts2", "1d");
    refused(
        &r.url(),
        &pool,
        None,
        &["root/3.json: signed by 0 of the root keys, 2 needed"],
    );
}

/// Migration: a repository published with one key and a pool that pulled it with --verify
/// move to trust metadata: same repository identity, the legacy index still written, and the
/// pool reaches the next version without fetching again what it holds.
#[test]
fn a_verify_repository_and_its_pools_migrate_without_downloading_again() {
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let repo = dir.path().join("repo");
    let Some(nginx) = Nginx::start(dir.path()) else {
        return;
    };
    let url = format!("{}repo", nginx.url());
    for v in 1..=2 {
        run(subvol()
            .arg("publish")
            .arg("--repo")
            .arg(&repo)
            .arg("--key")
            .arg(key("stream"))
            .arg(&shared().trees[v - 1])
            .args(["--version", &v.to_string(), "--level", "1"]));
    }
    let pool = new_pool(&btrfs, "pool");
    let out = subvol()
        .args(["pull", &url, "--into"])
        .arg(&pool)
        .arg("--verify")
        .arg(public("stream"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&pool, 2);
    let legacy: Value =
        serde_json::from_slice(&fs::read(repo.join("index.json")).unwrap()).unwrap();
    let legacy: Value = serde_json::from_str(legacy["index"].as_str().unwrap()).unwrap();

    let mut c = subvol();
    c.args(["trust", "init", "--name", "migrated", "--repo"])
        .arg(&repo);
    c.arg("--root-key").arg(public("root1"));
    c.arg("--release-key").arg(public("rel1"));
    c.arg("--timestamp-key").arg(public("ts"));
    c.arg("--stream-key").arg(public("stream"));
    c.arg("--sign").arg(key("root1"));
    run(&mut c);
    let root: Value = serde_json::from_slice(&fs::read(repo.join("root/1.json")).unwrap()).unwrap();
    assert_eq!(root["signed"]["repository"]["uuid"], legacy["repository"]);
    run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(key("stream"))
        .arg(&shared().trees[2])
        .args(["--version", "3", "--level", "1", "--release-key"])
        .arg(key("rel1"))
        .arg("--timestamp-key")
        .arg(key("ts")));
    nginx.clear_log();
    let out = pull_ok(&url, &pool, Some(&repo.join("root/1.json")), &[]);
    check(&pool, 3);
    // One delta 2 → 3, nothing of versions 1 and 2 again.
    let steps = out["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{out}");
    assert_eq!(steps[0]["from"], "2", "{out}");
    let state: Value =
        serde_json::from_slice(&fs::read(pool.join(".subvol/state.json")).unwrap()).unwrap();
    let rec = &state["trust"][legacy["repository"].as_str().unwrap()];
    assert_eq!(rec["release_serial"], 3, "{state}");
    // Older clients still pull through the legacy index.
    let old = new_pool(&btrfs, "old");
    let out = subvol()
        .args(["pull", &url, "--into"])
        .arg(&old)
        .arg("--verify")
        .arg(public("stream"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&old, 3);
}

/// Key files: a secret key readable by others is refused with the reason; an OpenSSH ed25519
/// public key serves as a role key; an under-signed release gets no timestamp from the tool.
#[test]
fn trust_tools_refuse_open_secret_keys_and_accept_openssh_public_keys() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let repo = dir.path().join("repo");
    let ssh = dir.path().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh));
    let mut c = subvol();
    c.args(["trust", "init", "--name", "keys", "--repo"])
        .arg(&repo);
    c.arg("--root-key").arg(public("root1"));
    c.arg("--release-key").arg(public("rel1"));
    c.arg("--timestamp-key").arg(public("ts"));
    c.arg("--stream-key").arg(ssh.with_extension("pub"));
    c.arg("--sign").arg(key("root1"));
    run(&mut c);
    let root: Value = serde_json::from_slice(&fs::read(repo.join("root/1.json")).unwrap()).unwrap();
    assert_eq!(
        root["signed"]["roles"]["streams"]["keyids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let before = fs::read(repo.join("root/1.json")).unwrap();
    let open = dir.path().join("open.key");
    fs::copy(key("root2"), &open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let out = subvol()
        .args(["trust", "sign"])
        .arg(repo.join("root/1.json"))
        .arg("--key")
        .arg(&open)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A key file that is not acceptable is a key check failure (status 4), as for `subvol sign`.
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("too open (group or others may read it)"),
        "{err}"
    );
    assert_eq!(
        fs::read(repo.join("root/1.json")).unwrap(),
        before,
        "the file is unchanged"
    );
    // A timestamp key that is not one: refused, exit 1.
    let out = subvol()
        .args(["trust", "timestamp", "--repo"])
        .arg(&repo)
        .arg("--key")
        .arg(key("evil"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not a timestamp key of root version 1"),
        "{err}"
    );
}

/// Slow retrieval: a mirror that accepts connections and never answers is given up after
/// --timeout (status 6, a network fault, not a verdict on the repository), the pool unchanged.
#[test]
fn slow_retrieval_a_silent_mirror_is_given_up() {
    let Some((_fs, _r, pool)) = setup(1) else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let before = pool_state(&pool);
    let t = std::time::Instant::now();
    let out = pull(
        &format!("http://127.0.0.1:{port}/repo"),
        &pool,
        Some(&_r.root1()),
        &["--timeout", "2"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(err.contains("root/2.json"), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "{err}");
    assert_eq!(pool_state(&pool), before, "{err}");
}

/// Mirrors that block updates: a stale mirror listed first (an older but unexpired timestamp)
/// cannot hold a pool back while another mirror serves the newer release.
#[test]
fn a_stale_mirror_listed_first_does_not_hold_the_pool_back() {
    let Some((fs_, mut r, _pool)) = setup(2) else {
        return;
    };
    let stale_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    copy_tree(&r.repo, &stale_dir.path().join("repo"));
    let stale = Nginx::start(stale_dir.path()).unwrap();
    let stale_url = format!("{}repo", stale.url());
    r.publish();
    let pool = new_pool(&fs_, "fresh");
    let out = pull_ok(&stale_url, &pool, Some(&r.root1()), &["--mirror", &r.url()]);
    assert_eq!(out["target"], "3", "{out}");
    check(&pool, 3);
    let skipped = out["mirrors_skipped"].to_string();
    assert!(
        skipped.contains(&stale_url) && skipped.contains("older than another mirror"),
        "{out}"
    );
}
