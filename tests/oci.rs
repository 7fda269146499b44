//! Tests: pushing a directory repository to a real OCI registry (Debian's `docker-registry` on
//! 127.0.0.1) and pulling from it: from empty and from older versions, seeded with ranges, a
//! resumed blob download, refusals of tampered and missing blobs, basic auth over TLS (a CA the
//! test makes, `--ca`) with right, wrong and no credentials, the bearer-token flow and a
//! registry that ignores Range (a Python proxy in front of the registry), and the registry's
//! garbage collector after pruning.
//!
//! The repository is the one `tests/mirror.rs` publishes (five versions). Credentials are given
//! through `REGISTRY_AUTH_FILE` only (a file the test writes, or a missing one: no host file is
//! ever read).

use crate::mirror::{
    Fixture, VERSIONS, check_version, fixture, index_of, new_pool, pool_versions, repo_copy,
    stream, subvol,
};
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::registry::{Proxy, ProxyMode, Registry};
use crate::support::tree::{copy_tree, run};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Output;

/// `subvol push REPO DEST --json [extra]` with the credentials file `auth`.
fn push(repo: &Path, dest: &str, auth: &Path, extra: &[&str]) -> Output {
    subvol()
        .arg("push")
        .arg(repo)
        .arg(dest)
        .arg("--json")
        .args(extra)
        .env("REGISTRY_AUTH_FILE", auth)
        .output()
        .unwrap()
}

fn push_ok(repo: &Path, dest: &str, auth: &Path, extra: &[&str]) -> Value {
    let out = push(repo, dest, auth, extra);
    assert!(
        out.status.success(),
        "push {dest} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `subvol pull SOURCE --into POOL --verify PUB --json [extra]` with the credentials file
/// `auth`.
fn pull(f: &Fixture, source: &str, pool: &Path, auth: &Path, extra: &[&str]) -> Output {
    subvol()
        .arg("pull")
        .arg(source)
        .arg("--into")
        .arg(pool)
        .arg("--verify")
        .arg(&f.public)
        .arg("--json")
        .args(extra)
        .env("REGISTRY_AUTH_FILE", auth)
        .output()
        .unwrap()
}

fn pull_ok(f: &Fixture, source: &str, pool: &Path, auth: &Path, extra: &[&str]) -> Value {
    let out = pull(f, source, pool, auth, extra);
    assert!(
        out.status.success(),
        "pull {source} {extra:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pull_fails(
    f: &Fixture,
    source: &str,
    pool: &Path,
    auth: &Path,
    extra: &[&str],
    code: i32,
) -> String {
    let out = pull(f, source, pool, auth, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "pull {source} {extra:?}: expected exit {code}:\n{err}"
    );
    err
}

/// The blobs a push of the fixture uploads: every stream and map file, the index, the config.
fn blob_count(repo: &Path) -> u64 {
    let idx = index_of(repo);
    let streams = idx["streams"].as_array().unwrap();
    let maps = streams.iter().filter(|s| !s["map"].is_null()).count();
    (streams.len() + maps + 2) as u64
}

#[test]
fn push_then_pull_from_empty_and_from_older_versions() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let no_auth = reg.dir().join("no-auth.json");
    let dest = reg.url("vendor/os");
    let r = push_ok(&f.repo, &dest, &no_auth, &[]);
    assert_eq!(r["uploaded"], blob_count(&f.repo), "{r}");
    assert_eq!(r["present"], 0, "{r}");
    assert_eq!(r["serial"], VERSIONS as u64);
    assert_eq!(
        r["tags"],
        serde_json::json!([format!("serial-{VERSIONS}"), "latest"])
    );
    // Again: nothing to upload, the same manifest.
    let again = push_ok(&f.repo, &dest, &no_auth, &[]);
    assert_eq!(again["uploaded"], 0, "{again}");
    assert_eq!(again["manifest"], r["manifest"]);
    // The serial tag and the digest name the same repository.
    let by_serial = format!("{dest}:serial-{VERSIONS}");
    let by_digest = format!("{dest}@{}", r["manifest"].as_str().unwrap());

    // From empty: the full stream of the newest.
    let pool = new_pool(&btrfs, "empty");
    let p = pull_ok(f, &dest, &pool, &no_auth, &["--plan", "chain"]);
    assert_eq!(p["target"], VERSIONS.to_string());
    assert_eq!(p["steps"].as_array().unwrap().len(), 1);
    assert!(p["steps"][0]["from"].is_null());
    check_version(f, &pool, VERSIONS);
    let p = pull_ok(f, &by_digest, &pool, &no_auth, &[]);
    assert_eq!(p["already"], true);

    // From each older version: deltas only.
    let idx = index_of(&f.repo);
    let (_, full) = stream(&idx, None, &VERSIONS.to_string());
    for old in 1..VERSIONS {
        let pool = new_pool(&btrfs, &format!("from{old}"));
        pull_ok(
            f,
            &by_serial,
            &pool,
            &no_auth,
            &["--version", &old.to_string()],
        );
        check_version(f, &pool, old);
        let p = pull_ok(f, &dest, &pool, &no_auth, &["--plan", "chain"]);
        let steps = p["steps"].as_array().unwrap();
        assert!(steps.iter().all(|s| !s["from"].is_null()), "{p}");
        assert!(p["bytes"].as_u64().unwrap() < full);
        check_version(f, &pool, VERSIONS);
        assert_eq!(
            pool_versions(&pool),
            vec![old.to_string(), VERSIONS.to_string()]
        );
    }

    // Seeded from version 1: the newest full rebuilt from the pool plus ranges of its blob.
    let pool = new_pool(&btrfs, "seeded");
    pull_ok(f, &dest, &pool, &no_auth, &["--version", "1"]);
    let p = pull_ok(f, &dest, &pool, &no_auth, &["--plan", "seeded"]);
    assert!(p["seeded"].is_object(), "{p}");
    assert!(p["bytes"].as_u64().unwrap() < full, "{p}");
    check_version(f, &pool, VERSIONS);

    // A pull killed mid-download left part of the newest full in the cache: the next pull
    // resumes the blob with a Range request.
    let pool = new_pool(&btrfs, "resume");
    let (full_path, size) = stream(&idx, None, &VERSIONS.to_string());
    let sha = full_path
        .trim_start_matches("streams/")
        .trim_end_matches(".zst");
    let cache = pool.join(".subvol/cache");
    fs::create_dir_all(&cache).unwrap();
    let have = size / 3;
    let data = fs::read(f.repo.join(&full_path)).unwrap();
    fs::write(cache.join(format!("{sha}.part")), &data[..have as usize]).unwrap();
    let out = subvol()
        .arg("pull")
        .arg(&dest)
        .arg("--into")
        .arg(&pool)
        .arg("--verify")
        .arg(&f.public)
        .args(["--plan", "chain"])
        .env("REGISTRY_AUTH_FILE", &no_auth)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!("resuming {full_path} at byte {have} of {size}")),
        "{err}"
    );
    check_version(f, &pool, VERSIONS);

    // A registry repository nothing was pushed to.
    let pool = new_pool(&btrfs, "nothing");
    let err = pull_fails(f, &reg.url("vendor/none"), &pool, &no_auth, &[], 6);
    assert!(err.contains("nothing was pushed there"), "{err}");
}

#[test]
fn tampered_and_missing_blobs_are_refused() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let no_auth = reg.dir().join("no-auth.json");
    let dest = reg.url("vendor/os");
    push_ok(&f.repo, &dest, &no_auth, &[]);
    let idx = index_of(&f.repo);
    let hex = |path: &str| {
        path.trim_start_matches("streams/")
            .trim_end_matches(".zst")
            .to_string()
    };

    // Version 1 has one way in, its full stream: tampered (same size), it is refused by its
    // SHA-256 and nothing is received.
    let (full1, _) = stream(&idx, None, "1");
    let data_path = reg.blob_data(&hex(&full1));
    let original = fs::read(&data_path).unwrap();
    let mut data = original.clone();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(&data_path, &data).unwrap();
    let pool = new_pool(&btrfs, "tampered");
    let err = pull_fails(f, &dest, &pool, &no_auth, &["--version", "1"], 4);
    assert!(err.contains("no usable chain"), "{err}");
    assert!(err.contains("SHA-256"), "{err}");
    assert!(pool_versions(&pool).is_empty());

    // The manifest names a blob the registry lost: refused with the blob's URL and 404.
    fs::remove_file(&data_path).unwrap();
    let pool = new_pool(&btrfs, "missing");
    let err = pull_fails(f, &dest, &pool, &no_auth, &["--version", "1"], 4);
    assert!(err.contains("no usable chain"), "{err}");
    assert!(
        err.contains(&format!("blobs/sha256:{}", hex(&full1))),
        "{err}"
    );
    assert!(err.contains("the registry lacks this blob"), "{err}");
    assert!(pool_versions(&pool).is_empty());

    // Restored: the same pull works.
    fs::write(&data_path, &original).unwrap();
    pull_ok(f, &dest, &pool, &no_auth, &["--version", "1"]);
    check_version(f, &pool, 1);
}

#[test]
fn basic_auth_over_tls_with_right_wrong_and_no_credentials() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(Some(("vendor", "s3cret-pass")), true) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    // `auth` is base64 of user:password.
    let auth_file = |name: &str, auth: &str| {
        let p = reg.dir().join(name);
        let json = serde_json::json!({ "auths": { reg.host(): { "auth": auth } } });
        fs::write(&p, json.to_string()).unwrap();
        p
    };
    let right = auth_file("right.json", "dmVuZG9yOnMzY3JldC1wYXNz"); // vendor:s3cret-pass
    let wrong = auth_file("wrong.json", "dmVuZG9yOmd1ZXNz"); // vendor:guess
    let none = reg.dir().join("none.json");
    let dest = reg.url("vendor/os");
    assert!(dest.starts_with("oci://"), "TLS: {dest}");
    let ca_path = reg.ca();
    let ca = ["--ca", ca_path.to_str().unwrap()];

    // Without or with wrong credentials, push is refused (exit 1) with the reason.
    let out = push(&f.repo, &dest, &none, &ca);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("authentication failed"), "{err}");
    assert!(err.contains("none are stored for"), "{err}");
    let out = push(&f.repo, &dest, &wrong, &ca);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the credentials of vendor from"),
        "{err}"
    );
    assert!(!err.contains("guess"), "the password is never shown: {err}");

    push_ok(&f.repo, &dest, &right, &ca);
    let pool = new_pool(&btrfs, "auth");
    let err = pull_fails(f, &dest, &pool, &wrong, &ca, 1);
    assert!(err.contains("authentication failed"), "{err}");
    let err = pull_fails(f, &dest, &pool, &none, &ca, 1);
    assert!(err.contains("none are stored for"), "{err}");
    // Without --ca the registry's certificate is not trusted (network error, exit 6).
    let err = pull_fails(f, &dest, &pool, &right, &[], 6);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(pool_versions(&pool).is_empty());
    pull_ok(f, &dest, &pool, &right, &ca);
    check_version(f, &pool, VERSIONS);

    // A credential helper named by `credHelpers` (docker's protocol: the registry on stdin,
    // JSON on stdout), found in $PATH: right and wrong passwords.
    let bin = reg.dir().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = |name: &str, password: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let p = bin.join(format!("docker-credential-{name}"));
        let script = format!(
            "#!/bin/sh\nread -r host\n[ \"$host\" = \"{}\" ] || exit 1\nprintf '{{\"Username\":\"vendor\",\"Secret\":\"{password}\"}}'\n",
            reg.host()
        );
        fs::write(&p, script).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let cfg = reg.dir().join(format!("{name}.json"));
        let json = serde_json::json!({ "credHelpers": { reg.host(): name } });
        fs::write(&cfg, json.to_string()).unwrap();
        cfg
    };
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pull_with = |cfg: &Path, pool: &Path| {
        subvol()
            .arg("pull")
            .arg(&dest)
            .arg("--into")
            .arg(pool)
            .arg("--verify")
            .arg(&f.public)
            .args(ca)
            .env("REGISTRY_AUTH_FILE", cfg)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    let pool = new_pool(&btrfs, "auth-helper");
    let out = pull_with(&helper("subvol-wrong", "guess"), &pool);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the credentials of vendor from docker-credential-subvol-wrong"),
        "{err}"
    );
    assert!(pool_versions(&pool).is_empty());
    let out = pull_with(&helper("subvol-right", "s3cret-pass"), &pool);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_version(f, &pool, VERSIONS);
}

#[test]
fn registry_garbage_collection_after_pruning_keeps_what_the_live_index_names() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let no_auth = reg.dir().join("no-auth.json");
    let dest = reg.url("vendor/os");
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let trees = work.path().join("trees");
    copy_tree(&f.dir.join("repo.trees"), &trees);
    let old = push_ok(&repo, &dest, &no_auth, &[]);
    let old_idx = index_of(&repo);
    // Versions 1 and 2 retired; the new index (serial 6) pushed.
    run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&f.key)
        .arg("--trees")
        .arg(&trees)
        .arg("--prune")
        .arg("3"));
    let new = push_ok(&repo, &dest, &no_auth, &[]);
    assert_eq!(new["serial"], VERSIONS as u64 + 1);
    // Pruning writes no stream: only the new index is uploaded.
    assert_eq!(new["uploaded"], 1, "{new}");
    // The old manifest (tag serial-5) deleted, then the registry's garbage collector run.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!(
            "{}vendor/os/manifests/{}",
            reg.api(),
            old["manifest"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "202", "{out:?}");
    let out = std::process::Command::new(crate::support::registry::REGISTRY)
        .arg("garbage-collect")
        .arg(reg.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Blobs only the retired versions used are gone; everything the live index names stays.
    let (full1, _) = stream(&old_idx, None, "1");
    let hex = |p: &str| {
        p.trim_start_matches("streams/")
            .trim_end_matches(".zst")
            .trim_end_matches(".map")
            .to_string()
    };
    assert!(!reg.blob_data(&hex(&full1)).exists(), "{full1} collected");
    let idx = index_of(&repo);
    for s in idx["streams"].as_array().unwrap() {
        let p = s["path"].as_str().unwrap();
        assert!(reg.blob_data(&hex(p)).is_file(), "{p} kept");
        if let Some(m) = s["map"]["path"].as_str() {
            assert!(reg.blob_data(&hex(m)).is_file(), "{m} kept");
        }
    }
    let pool = new_pool(&btrfs, "after-gc");
    pull_ok(f, &dest, &pool, &no_auth, &["--version", "3"]);
    check_version(f, &pool, 3);
    pull_ok(f, &dest, &pool, &no_auth, &[]);
    check_version(f, &pool, VERSIONS);
}

#[test]
fn bearer_token_flow_through_a_token_endpoint() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(proxy) = Proxy::start(&reg, ProxyMode::Bearer) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let auth_file = |name: &str, auth: &str| {
        let p = reg.dir().join(name);
        let json = serde_json::json!({ "auths": { proxy.host(): { "auth": auth } } });
        fs::write(&p, json.to_string()).unwrap();
        p
    };
    let right = auth_file("right.json", "dG9rZW51c2VyOnRva2VuLXBhc3M="); // tokenuser:token-pass
    let wrong = auth_file("wrong.json", "dG9rZW51c2VyOm5vcGU="); // tokenuser:nope
    let none = reg.dir().join("none.json");
    let dest = proxy.url("vendor/os");

    push_ok(&f.repo, &dest, &right, &[]);
    let tokens = proxy.token_requests();
    assert!(
        tokens.iter().all(|t| t.contains("service=subvol-test")),
        "{tokens:?}"
    );
    assert!(
        tokens
            .iter()
            .any(|t| t.contains("repository%3Avendor%2Fos%3Apull%2Cpush")),
        "{tokens:?}"
    );
    let pool = new_pool(&btrfs, "bearer");
    let err = pull_fails(f, &dest, &pool, &wrong, &[], 1);
    assert!(
        err.contains("refused the credentials of tokenuser from"),
        "{err}"
    );
    let err = pull_fails(f, &dest, &pool, &none, &[], 1);
    assert!(err.contains("none are stored for"), "{err}");
    pull_ok(f, &dest, &pool, &right, &[]);
    check_version(f, &pool, VERSIONS);
    assert!(
        proxy
            .token_requests()
            .iter()
            .any(|t| t.contains("repository%3Avendor%2Fos%3Apull&") || t.ends_with("%3Apull")),
        "a pull asks for pull only: {:?}",
        proxy.token_requests()
    );
}

#[test]
fn a_registry_that_ignores_range_gets_whole_blob_requests() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(proxy) = Proxy::start(&reg, ProxyMode::NoRange) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let no_auth = reg.dir().join("no-auth.json");
    push_ok(&f.repo, &reg.url("vendor/os"), &no_auth, &[]);
    let dest = proxy.url("vendor/os");
    // Seeded: the range requests get 200, so the whole blob is read once.
    let pool = new_pool(&btrfs, "seeded");
    pull_ok(f, &dest, &pool, &no_auth, &["--version", "1"]);
    let p = pull_ok(f, &dest, &pool, &no_auth, &["--plan", "seeded"]);
    check_version(f, &pool, VERSIONS);
    assert!(p["refused"].as_array().unwrap().is_empty(), "{p}");
    // A partial download cannot be resumed: it starts over and completes.
    let idx = index_of(&f.repo);
    let pool = new_pool(&btrfs, "restart");
    let (full_path, size) = stream(&idx, None, &VERSIONS.to_string());
    let sha = full_path
        .trim_start_matches("streams/")
        .trim_end_matches(".zst");
    let cache = pool.join(".subvol/cache");
    fs::create_dir_all(&cache).unwrap();
    let data = fs::read(f.repo.join(&full_path)).unwrap();
    fs::write(
        cache.join(format!("{sha}.part")),
        &data[..(size / 2) as usize],
    )
    .unwrap();
    pull_ok(f, &dest, &pool, &no_auth, &["--plan", "chain"]);
    check_version(f, &pool, VERSIONS);
}

/// Issue 17: `publish --push` adds a version to the directory repository and then pushes it to
/// the registry; a pull from the registry gets exactly the new tree.
#[test]
fn publish_with_push_reaches_the_registry() {
    let Some(f) = fixture() else { return };
    let Some(reg) = Registry::start(None, false) else {
        return;
    };
    let Some(btrfs) = BtrfsFs::new_or_skip() else {
        return;
    };
    let no_auth = reg.dir().join("no-auth.json");
    let dest = reg.url("vendor/os");
    let work = tempfile::tempdir().unwrap();
    let repo = repo_copy(f, work.path());
    let trees = work.path().join("trees");
    copy_tree(&f.dir.join("repo.trees"), &trees);
    push_ok(&repo, &dest, &no_auth, &[]);
    // Version 6: version 5 with one file changed.
    let src = work.path().join("v6");
    copy_tree(&f.trees[VERSIONS - 1], &src);
    crate::support::tree::write(
        &src.join("new-in-6.bin"),
        &crate::support::tree::bytes(66, 300_000),
    );
    let out = run(subvol()
        .arg("publish")
        .arg("--repo")
        .arg(&repo)
        .arg("--key")
        .arg(&f.key)
        .arg("--trees")
        .arg(&trees)
        .arg("--push")
        .arg(&dest)
        .arg("--json")
        .arg(&src)
        .env("REGISTRY_AUTH_FILE", &no_auth));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["version"]["name"], "6", "{r}");
    assert_eq!(r["pushed"][0]["serial"], VERSIONS as u64 + 1, "{r}");
    // The new full, its map and the deltas to 6, plus the index: nothing else uploaded.
    let new_files = index_of(&repo)["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["to"] == "6")
        .map(|s| 1 + u64::from(!s["map"].is_null()))
        .sum::<u64>();
    assert_eq!(r["pushed"][0]["uploaded"], new_files + 1, "{r}");
    let pool = new_pool(&btrfs, "pool");
    pull_ok(f, &dest, &pool, &no_auth, &[]);
    crate::support::tree::assert_same_tree(&src, &pool.join("6"), "version 6 from the registry");
}
