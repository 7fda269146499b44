//! Tests: remotes as configuration (`subvol remote`) and pulls over a list of mirrors with
//! failover, against real nginx servers (and a server that accepts connections and never
//! answers). Every pulled version is compared by tree digest with the tree it was published
//! from; every failure by exit code, message and the pool left as it was.

use crate::mirror::{
    Fixture, Server, VERSIONS, check_version, fixture, new_pool, output_within, pool_versions,
    repo_copy, subvol,
};
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::nginx::Nginx;
use crate::support::tree::run;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `subvol` with `SUBVOL_CONFIG_DIR` set to `cfg`.
fn subvol_in(cfg: &Path) -> Command {
    let mut c = subvol();
    c.env("SUBVOL_CONFIG_DIR", cfg);
    c
}

fn code_and_stderr(out: &Output) -> (Option<i32>, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, subvol::sign::PublicKey) {
    let key = dir.join(name);
    run(subvol().arg("keygen").arg("-o").arg(&key));
    let public = subvol::sign::SecretKey::load(&key)
        .unwrap()
        .public()
        .clone();
    (dir.join(format!("{name}.pub")), public)
}

/// Every file under `dir` with its bytes, sorted by path (relative).
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn json_out(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn remote_add_list_show_remove_round_trip() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("etc");
    let (pub_a, key_a) = keygen(work.path(), "a.key");
    let (pub_b, key_b) = keygen(work.path(), "b.key");
    let root = work.path().join("root.json");
    fs::write(&root, b"{\"signed\": {\"version\": 1}}\n").unwrap();
    let root_hash = hex::encode(Sha256::digest(fs::read(&root).unwrap()));
    let rd = cfg.join("remotes.d");

    // Two mirrors and two keys.
    let out = subvol_in(&cfg)
        .args([
            "remote",
            "add",
            "vendor",
            "http://127.0.0.1:1/a/",
            "/srv/repo",
        ])
        .arg("--verify")
        .arg(&pub_a)
        .arg("--verify")
        .arg(&pub_b)
        .arg("--json")
        .output()
        .unwrap();
    let added = json_out(&out);
    let (ida, idb) = (key_a.id().to_string(), key_b.id().to_string());
    let vendor = json!({
        "name": "vendor",
        "urls": ["http://127.0.0.1:1/a/", "/srv/repo"],
        "keys": [rd.join(format!("vendor.d/{ida}.pub")), rd.join(format!("vendor.d/{idb}.pub"))],
        "root": null,
        "file": rd.join("vendor.conf"),
    });
    assert_eq!(added, vendor);
    let mut want = vec![
        (
            "vendor.conf".to_string(),
            format!(
                "# subvol remote vendor: written by `subvol remote add`; see docs/mirrors.md\n\
                     URL=http://127.0.0.1:1/a/\nURL=/srv/repo\n\
                     VERIFY=vendor.d/{ida}.pub\nVERIFY=vendor.d/{idb}.pub\n"
            )
            .into_bytes(),
        ),
        (
            format!("vendor.d/{ida}.pub"),
            format!("{}\n", key_a.to_line()).into_bytes(),
        ),
        (
            format!("vendor.d/{idb}.pub"),
            format!("{}\n", key_b.to_line()).into_bytes(),
        ),
    ];
    want.sort();
    assert_eq!(files_under(&rd), want);
    // The stored copy is what counts: the original may go.
    fs::remove_file(&pub_b).unwrap();

    // A second remote with a root file only, given by --config-dir.
    let out = subvol()
        .args([
            "remote",
            "add",
            "os.stable",
            "oci://registry.example/os:stable",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--config-dir")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored_root = rd.join(format!("os.stable.d/root-{}.json", &root_hash[..16]));
    assert_eq!(fs::read(&stored_root).unwrap(), fs::read(&root).unwrap());
    assert_eq!(
        fs::read_to_string(rd.join("os.stable.conf")).unwrap(),
        format!(
            "# subvol remote os.stable: written by `subvol remote add`; see docs/mirrors.md\n\
             URL=oci://registry.example/os:stable\nROOT=os.stable.d/root-{}.json\n",
            &root_hash[..16]
        )
    );
    let os = json!({
        "name": "os.stable",
        "urls": ["oci://registry.example/os:stable"],
        "keys": [],
        "root": stored_root,
        "file": rd.join("os.stable.conf"),
    });

    // list and show, JSON and text.
    let list = json_out(
        &subvol_in(&cfg)
            .args(["remote", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(list, json!([os, vendor]));
    let out = subvol_in(&cfg).args(["remote", "list"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "os.stable\toci://registry.example/os:stable\nvendor\thttp://127.0.0.1:1/a/ /srv/repo\n"
    );
    let show = json_out(
        &subvol_in(&cfg)
            .args(["remote", "show", "vendor", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(show, vendor);
    let out = subvol_in(&cfg)
        .args(["remote", "show", "vendor"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("mirror 1: http://127.0.0.1:1/a/\n  mirror 2: /srv/repo\n"),
        "{text}"
    );

    // A duplicate is refused and changes nothing; --force replaces (and drops stale keys).
    let before = files_under(&rd);
    let out = subvol_in(&cfg)
        .args(["remote", "add", "vendor", "https://other.example/"])
        .arg("--verify")
        .arg(&pub_a)
        .output()
        .unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("remote vendor exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(files_under(&rd), before);
    let out = subvol_in(&cfg)
        .args([
            "remote",
            "add",
            "vendor",
            "https://other.example/",
            "--force",
        ])
        .arg("--verify")
        .arg(&pub_a)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = files_under(&rd).into_iter().map(|f| f.0).collect();
    assert_eq!(
        names,
        vec![
            "os.stable.conf".to_string(),
            format!("os.stable.d/root-{}.json", &root_hash[..16]),
            "vendor.conf".to_string(),
            format!("vendor.d/{ida}.pub"),
        ]
    );

    // A concurrent add or remove (holding the lock on remotes.d) makes another fail as busy.
    {
        let held = fs::File::open(&rd).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        for args in [
            &["remote", "remove", "vendor"][..],
            &["remote", "add", "x", "http://127.0.0.1:1/", "--verify"][..],
        ] {
            let mut c = subvol_in(&cfg);
            c.args(args);
            if args[1] == "add" {
                c.arg(&pub_a);
            }
            let (code, err) = code_and_stderr(&c.output().unwrap());
            assert_eq!(code, Some(1), "{err}");
            assert!(
                err.contains("another remote add or remove is running"),
                "{err}"
            );
        }
    }
    assert!(rd.join("vendor.conf").exists() && !rd.join("x.conf").exists());

    // remove: the remote and its stored files go; the other stays.
    let out = subvol_in(&cfg)
        .args(["remote", "remove", "vendor"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!rd.join("vendor.conf").exists() && !rd.join("vendor.d").exists());
    let list = json_out(
        &subvol_in(&cfg)
            .args(["remote", "list", "--json"])
            .output()
            .unwrap(),
    );
    assert_eq!(list, json!([os]));
    let out = subvol_in(&cfg)
        .args(["remote", "remove", "vendor"])
        .output()
        .unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no remote named vendor in"), "{err}");
    let out = subvol_in(&cfg)
        .args(["remote", "show", "vendor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn bad_remote_names_urls_and_files_are_refused_and_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("etc");
    let (public, _) = keygen(work.path(), "k.key");
    let add = |name: &str, url: &str, extra: &[&str]| {
        let out = subvol_in(&cfg)
            .args(["remote", "add", "--verify"])
            .arg(&public)
            .args(extra)
            .arg("--")
            .args([name, url])
            .output()
            .unwrap();
        code_and_stderr(&out)
    };
    for name in ["a/b", ".hidden", "-opt", "..", "white space", "ünï"] {
        let (code, err) = add(name, "http://127.0.0.1:1/", &[]);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains("invalid remote name"), "{name}: {err}");
    }
    for url in [
        "ftp://x/",
        "relative/dir",
        "http:///nohost",
        "http://u:p@h/",
    ] {
        let (code, err) = add("ok", url, &[]);
        assert_eq!(code, Some(1), "{url}: {err}");
        assert!(err.contains("invalid mirror URL"), "{url}: {err}");
    }
    // A key file that holds no key: exit 4 as for pull, naming the file.
    let junk = work.path().join("junk.pub");
    fs::write(&junk, "not a key\n").unwrap();
    let out = subvol_in(&cfg)
        .args(["remote", "add", "ok", "http://127.0.0.1:1/", "--verify"])
        .arg(&junk)
        .output()
        .unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("junk.pub"), "{err}");
    // A root file that is not JSON.
    let out = subvol_in(&cfg)
        .args(["remote", "add", "ok", "http://127.0.0.1:1/", "--root"])
        .arg(&junk)
        .output()
        .unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("junk.pub: not JSON"), "{err}");
    // No trust at all is a usage error.
    let out = subvol_in(&cfg)
        .args(["remote", "add", "ok", "http://127.0.0.1:1/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(files_under(&cfg).is_empty(), "{:?}", files_under(&cfg));

    // A hand-edited file that points outside its directory is refused, naming file and line.
    let rd = cfg.join("remotes.d");
    fs::create_dir_all(&rd).unwrap();
    fs::write(
        rd.join("evil.conf"),
        "URL=http://127.0.0.1:1/\nVERIFY=../../k.key.pub\n",
    )
    .unwrap();
    let out = subvol_in(&cfg)
        .args(["remote", "show", "evil"])
        .output()
        .unwrap();
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("evil.conf line 2") && err.contains("is not a file in evil.d"),
        "{err}"
    );
}

/// Adds remote `name` with `urls` and the fixture's key in `cfg`.
fn add_remote(f: &Fixture, cfg: &Path, name: &str, urls: &[String]) {
    run(subvol_in(cfg)
        .args(["remote", "add", name])
        .args(urls)
        .arg("--verify")
        .arg(&f.public));
}

/// `subvol pull SOURCE --into POOL [extra]` without --verify and --json (so the messages are
/// printed), with `SUBVOL_CONFIG_DIR=cfg`, given at most 120 s.
fn pull_remote(cfg: &Path, source: &str, pool: &Path, extra: &[&str]) -> Output {
    output_within(
        subvol_in(cfg)
            .arg("pull")
            .arg(source)
            .arg("--into")
            .arg(pool)
            .args(extra),
        Duration::from_secs(120),
    )
}

fn assert_pulled(out: &Output) -> String {
    let (code, err) = code_and_stderr(out);
    assert_eq!(code, Some(0), "{err}");
    err
}

/// A stream file of the newest version's full stream, and every stream file, of a repository.
fn stream_files(repo: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(repo.join("streams"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "zst"))
        .collect();
    v.sort();
    v
}

/// Flips one byte in the middle of `p` (same size, other SHA-256).
fn corrupt(p: &Path) {
    let mut b = fs::read(p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    fs::write(p, b).unwrap();
}

/// The full stream file of version `v` in `repo`.
fn full_of(repo: &Path, v: &str) -> PathBuf {
    let idx = crate::mirror::index_of(repo);
    repo.join(crate::mirror::stream(&idx, None, v).0)
}

#[test]
fn pull_by_remote_name_uses_its_mirrors_and_keys() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("etc");
    add_remote(f, &cfg, "vendor", &[nginx.url()]);
    let pool = new_pool(&btrfs, "pool");
    let err = assert_pulled(&pull_remote(&cfg, "vendor", &pool, &["--version", "2"]));
    assert!(!err.contains("skipped"), "{err}");
    check_version(f, &pool, 2);
    assert_pulled(&pull_remote(&cfg, "vendor", &pool, &[]));
    check_version(f, &pool, VERSIONS);
    // Every request went to the remote's mirror.
    assert!(nginx.requests().iter().any(|r| r.path == "index.json"));
    // An unknown name without '/' is a directory, as before: it does not exist.
    let out = pull_remote(
        &cfg,
        "nosuch",
        &pool,
        &["--verify", f.public.to_str().unwrap()],
    );
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(6), "{err}");
    assert!(err.contains("nosuch/index.json"), "{err}");
}

/// `dist/subvol-update` (what `subvol-pull@.service` runs) with SUBVOL_SOURCE naming a remote
/// and no SUBVOL_VERIFY: the remote's mirrors and keys are used.
#[test]
fn the_update_service_pulls_from_a_remote() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(nginx) = Nginx::start(&f.repo) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("etc");
    add_remote(f, &cfg, "vendor", &[nginx.url()]);
    let pool = new_pool(&btrfs, "pool");
    let out = Command::new("sh")
        .arg(crate::support::repo_root().join("dist/subvol-update"))
        .env("SUBVOL_BIN", crate::support::bin("subvol"))
        .env("SUBVOL_CONFIG_DIR", &cfg)
        .env("SUBVOL_SOURCE", "vendor")
        .env("SUBVOL_POOL", &pool)
        .env_remove("SUBVOL_VERIFY")
        .output()
        .unwrap();
    assert_pulled(&out);
    check_version(f, &pool, VERSIONS);
}

#[test]
fn failover_when_the_first_mirror_is_stopped_or_never_answers() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let Some(good) = Nginx::start(&f.repo) else {
        return;
    };
    // A mirror that was started and stopped: connections are refused.
    let stopped = Nginx::start(&f.repo).unwrap();
    let stopped_url = stopped.url();
    drop(stopped);
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("etc");
    add_remote(f, &cfg, "vendor", &[stopped_url.clone(), good.url()]);
    let pool = new_pool(&btrfs, "pool");
    let err = assert_pulled(&pull_remote(&cfg, "vendor", &pool, &[]));
    assert!(
        err.contains(&format!("mirror {stopped_url} skipped:")),
        "{err}"
    );
    check_version(f, &pool, VERSIONS);

    // A mirror that accepts connections and never answers: given up after --timeout.
    let hole = Blackhole::start();
    let pool = new_pool(&btrfs, "pool2");
    let start = Instant::now();
    let out = pull_remote(
        &cfg,
        &hole.url(),
        &pool,
        &[
            "--mirror",
            &good.url(),
            "--verify",
            f.public.to_str().unwrap(),
            "--timeout",
            "2",
        ],
    );
    let err = assert_pulled(&out);
    assert!(
        err.contains(&format!("mirror {} skipped:", hole.url())) && err.contains("(--timeout)"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    check_version(f, &pool, VERSIONS);
}

#[test]
fn failover_when_the_first_mirror_serves_a_corrupted_stream_file() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bad_repo = repo_copy(f, work.path());
    let full = full_of(&bad_repo, "5");
    corrupt(&full);
    let Some(bad) = Nginx::start(&bad_repo) else {
        return;
    };
    let good = Nginx::start(&f.repo).unwrap();
    let cfg = work.path().join("etc");
    add_remote(f, &cfg, "vendor", &[bad.url(), good.url()]);
    let pool = new_pool(&btrfs, "pool");
    let err = assert_pulled(&pull_remote(&cfg, "vendor", &pool, &[]));
    let rel = full.strip_prefix(&bad_repo).unwrap().display().to_string();
    assert!(
        err.contains(&format!("mirror {} skipped for {rel}:", bad.url()))
            && err.contains("SHA-256"),
        "{err}"
    );
    check_version(f, &pool, VERSIONS);
    // The good mirror served the file in full; the bad one's copy was refused.
    assert!(
        good.requests()
            .iter()
            .any(|r| r.path == rel && r.status == 200),
        "{:?}",
        good.requests()
    );
}

#[test]
fn failover_when_the_first_mirror_serves_an_old_index() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let old_repo = repo_copy(f, work.path());
    fs::copy(f_saved_index(f, 3), old_repo.join("index.json")).unwrap();
    let Some(old) = Nginx::start(&old_repo) else {
        return;
    };
    let good = Nginx::start(&f.repo).unwrap();
    let pool = new_pool(&btrfs, "pool");
    // A fresh pool: the old index is valid on its own, yet the newer one wins.
    let out = pull_remote(
        work.path(),
        &old.url(),
        &pool,
        &[
            "--mirror",
            &good.url(),
            "--verify",
            f.public.to_str().unwrap(),
        ],
    );
    let err = assert_pulled(&out);
    assert!(
        err.contains(&format!(
            "mirror {} skipped: its index serial 3 is older than serial 5 of {}",
            old.url(),
            good.url()
        )),
        "{err}"
    );
    check_version(f, &pool, VERSIONS);
    // No stream file was fetched from the stale mirror.
    assert!(
        old.requests().iter().all(|r| r.path == "index.json"),
        "{:?}",
        old.requests()
    );
}

#[test]
fn failover_when_the_first_mirror_lacks_a_file_or_serves_a_forged_index() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let bad_repo = repo_copy(f, work.path());
    let full = full_of(&bad_repo, "5");
    let rel = full.strip_prefix(&bad_repo).unwrap().display().to_string();
    fs::remove_file(&full).unwrap();
    let Some(bad) = Nginx::start(&bad_repo) else {
        return;
    };
    let good = Nginx::start(&f.repo).unwrap();
    let verify = ["--verify", f.public.to_str().unwrap()];

    // 404 for the file: the next mirror serves it. --json lists the skipped mirror.
    let pool = new_pool(&btrfs, "pool");
    let out = pull_remote(
        work.path(),
        &bad.url(),
        &pool,
        &[&["--mirror", &good.url(), "--json"][..], &verify[..]].concat(),
    );
    let r = json_out(&out);
    assert_eq!(
        r["mirrors_skipped"],
        json!([format!(
            "{} ({rel}): {}{rel}: HTTP 404",
            bad.url(),
            bad.url()
        )])
    );
    assert_eq!(r["refused"], json!([]));
    check_version(f, &pool, VERSIONS);

    // A forged index on the first mirror: skipped, the second one's is used.
    let text = fs::read_to_string(f.repo.join("index.json")).unwrap();
    fs::write(
        bad_repo.join("index.json"),
        text.replace("\\\"serial\\\": 5", "\\\"serial\\\": 99"),
    )
    .unwrap();
    let pool = new_pool(&btrfs, "pool2");
    let out = pull_remote(
        work.path(),
        &bad.url(),
        &pool,
        &[&["--mirror", &good.url()][..], &verify[..]].concat(),
    );
    let err = assert_pulled(&out);
    assert!(
        err.contains(&format!("mirror {} skipped: index refused:", bad.url()))
            && err.contains("does not verify"),
        "{err}"
    );
    check_version(f, &pool, VERSIONS);
    assert!(
        bad.requests()
            .iter()
            .all(|r| r.path != rel || r.status == 404),
        "{:?}",
        bad.requests()
    );
}

fn f_saved_index(f: &Fixture, serial: usize) -> PathBuf {
    f.dir.join(format!("index-{serial}.json"))
}

#[test]
fn failover_when_the_first_mirror_stalls_on_a_stream_file() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    // Serves the index, then headers and silence for stream files.
    let stalling = Server::start(&f.repo);
    stalling.trickle(-1.0);
    let Some(good) = Nginx::start(&f.repo) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let pool = new_pool(&btrfs, "pool");
    let start = Instant::now();
    let out = pull_remote(
        work.path(),
        &stalling.url(),
        &pool,
        &[
            "--mirror",
            &good.url(),
            "--verify",
            f.public.to_str().unwrap(),
            "--timeout",
            "2",
        ],
    );
    let err = assert_pulled(&out);
    assert!(
        err.contains(&format!("mirror {} skipped for streams/", stalling.url()))
            && err.contains("no data for 2 s"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    check_version(f, &pool, VERSIONS);
}

#[test]
fn when_every_mirror_fails_the_pull_fails_and_the_pool_is_unchanged() {
    let Some(f) = fixture() else { return };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let stopped = Nginx::start(&f.repo).unwrap();
    let stopped_url = stopped.url();
    drop(stopped);
    let pool = new_pool(&btrfs, "pool");
    let verify = ["--verify", f.public.to_str().unwrap()];
    let state = |pool: &Path| fs::read(pool.join(".subvol/state.json")).ok();

    // Stopped + a forged index: the refusal decides, exit 4.
    let forged_repo = work.path().join("forged");
    fs::create_dir(&forged_repo).unwrap();
    crate::support::tree::copy_tree(&f.repo, &forged_repo.join("r"));
    let forged_repo = forged_repo.join("r");
    let text = fs::read_to_string(f.repo.join("index.json")).unwrap();
    fs::write(
        forged_repo.join("index.json"),
        text.replace("\\\"serial\\\": 5", "\\\"serial\\\": 99"),
    )
    .unwrap();
    let forged = Nginx::start(&forged_repo).unwrap();
    let out = pull_remote(
        work.path(),
        &stopped_url,
        &pool,
        &[&["--mirror", &forged.url()][..], &verify[..]].concat(),
    );
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("every mirror failed")
            && err.contains(&stopped_url)
            && err.contains(&format!("{}: index refused", forged.url())),
        "{err}"
    );
    assert!(pool_versions(&pool).is_empty());
    assert_eq!(state(&pool), None);

    // Stopped + never answering: a network failure, exit 6.
    let hole = Blackhole::start();
    let out = pull_remote(
        work.path(),
        &stopped_url,
        &pool,
        &[
            &["--mirror", &hole.url(), "--timeout", "2"][..],
            &verify[..],
        ]
        .concat(),
    );
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(6), "{err}");
    assert!(
        err.contains("every mirror failed") && err.contains(&hole.url()),
        "{err}"
    );
    assert!(pool_versions(&pool).is_empty());
    assert_eq!(state(&pool), None);

    // Two mirrors whose every stream file is corrupt: no chain, exit 4.
    let mut servers = Vec::new();
    for name in ["c1", "c2"] {
        let d = work.path().join(name);
        fs::create_dir(&d).unwrap();
        let r = repo_copy(f, &d);
        for s in stream_files(&r) {
            corrupt(&s);
        }
        servers.push(Nginx::start(&r).unwrap());
    }
    let out = pull_remote(
        work.path(),
        &servers[0].url(),
        &pool,
        &[&["--mirror", &servers[1].url()][..], &verify[..]].concat(),
    );
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("no usable chain") && err.contains("every mirror failed"),
        "{err}"
    );
    assert!(pool_versions(&pool).is_empty());

    // A pool that saw serial 5, and mirrors that both serve serial 3: rolled back, exit 4.
    let good = Nginx::start(&f.repo).unwrap();
    let held = new_pool(&btrfs, "held");
    assert_pulled(&pull_remote(
        work.path(),
        &good.url(),
        &held,
        &[&["--version", "2"][..], &verify[..]].concat(),
    ));
    let before = (pool_versions(&held), state(&held));
    let mut old = Vec::new();
    for name in ["o1", "o2"] {
        let d = work.path().join(name);
        fs::create_dir(&d).unwrap();
        let r = repo_copy(f, &d);
        fs::copy(f_saved_index(f, 3), r.join("index.json")).unwrap();
        old.push(Nginx::start(&r).unwrap());
    }
    let out = pull_remote(
        work.path(),
        &old[0].url(),
        &held,
        &[&["--mirror", &old[1].url()][..], &verify[..]].concat(),
    );
    let (code, err) = code_and_stderr(&out);
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("serial 3 is older than serial 5"), "{err}");
    assert_eq!((pool_versions(&held), state(&held)), before);
    check_version(f, &held, 2);
}

/// A TCP server on 127.0.0.1 that accepts connections and never sends a byte (a mirror that
/// withholds by stalling). Stopped and its port released on drop.
struct Blackhole {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        // Read the request so the client is waiting for an answer, not writing.
                        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                        let _ = s.read(&mut [0u8; 4096]);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Blackhole {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
