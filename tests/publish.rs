//! Tests: reproducible publishing. The same trees, key and settings give byte-identical stream
//! and map files, in another repository with its own tree store (copies made at another time,
//! so with other ctimes) and with any number of threads.

use crate::support::bin;
use crate::support::tree::{Rng, bytes, copy_tree, run, set_times, write, write_at};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory removed when the test ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn subvol() -> Command {
    Command::new(bin("subvol"))
}

/// Three versions: many small files, files with large aligned data (DATA frames), a changed
/// block, new, rewritten and removed files.
fn make_trees(base: &Path) -> Vec<PathBuf> {
    let mut rng = Rng(0x0dd_5eed);
    let v1 = base.join("v1");
    for d in 0..4 {
        for f in 0..40 {
            let len = 100 + rng.below(12 << 10) as usize;
            write(&v1.join(format!("d{d}/f{f}")), &bytes(rng.next(), len));
        }
    }
    write(&v1.join("big"), &bytes(3, 3 << 20));
    write(&v1.join("text"), &b"reproducible ".repeat(100_000));
    let mut out = vec![v1];
    for v in 2..=3 {
        let next = base.join(format!("v{v}"));
        copy_tree(out.last().unwrap(), &next);
        write_at(
            &next.join("big"),
            4096 * (v as u64 * 7),
            &bytes(rng.next(), 8192),
        );
        write(&next.join(format!("new{v}")), &bytes(rng.next(), 200_000));
        write(&next.join("d1/f3"), &bytes(rng.next(), 5000));
        let _ = fs::remove_file(next.join(format!("d2/f{v}")));
        out.push(next);
    }
    // Atimes equal to the mtimes: the first publish's `cp` of a tree updates its atimes
    // (relatime), and the later publishes must still give the same files.
    for t in &out {
        for e in walk(t) {
            set_times(&e, 1_700_000_000, 5);
        }
    }
    out
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if p.is_dir() {
        for e in fs::read_dir(p).unwrap() {
            v.extend(walk(&e.unwrap().path()));
        }
    }
    v.push(p.to_path_buf());
    v
}

/// Publishes the trees into `repo` with `threads` (None: the default); returns the stream files
/// (path → bytes) and the index's stream entries. `no_copies`: the notes that let a full stream
/// copy frames from the previous version's are removed, so every frame is compressed.
fn publish_all(
    trees: &[PathBuf],
    key: &Path,
    repo: &Path,
    threads: Option<&str>,
    no_copies: bool,
) -> Published {
    let store = repo.with_extension("trees");
    for (i, t) in trees.iter().enumerate() {
        let mut c = subvol();
        c.arg("publish")
            .arg("--repo")
            .arg(repo)
            .arg("--key")
            .arg(key)
            .arg(t)
            .arg("--version")
            .arg((i + 1).to_string())
            .arg("--level")
            .arg("3");
        if let Some(n) = threads {
            c.arg("--threads").arg(n);
        }
        run(&mut c);
        let note = store.join(format!(".{}.frames", i + 1));
        assert!(note.is_file(), "{}", note.display());
        if no_copies {
            fs::remove_file(note).unwrap();
        }
    }
    let env: Value = serde_json::from_slice(&fs::read(repo.join("index.json")).unwrap()).unwrap();
    let index: Value = serde_json::from_str(env["index"].as_str().unwrap()).unwrap();
    let streams = index["streams"].as_array().unwrap().clone();
    let mut files = BTreeMap::new();
    for e in fs::read_dir(repo.join("streams")).unwrap() {
        let e = e.unwrap();
        files.insert(
            e.file_name().to_string_lossy().into_owned(),
            fs::read(e.path()).unwrap(),
        );
    }
    Published { streams, files }
}

#[derive(PartialEq)]
struct Published {
    streams: Vec<Value>,
    files: BTreeMap<String, Vec<u8>>,
}

#[test]
fn publishing_the_same_trees_again_gives_identical_files_whatever_the_threads() {
    let dir = Scratch(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("publish-repro-{}", std::process::id())),
    );
    let _ = fs::remove_dir_all(&dir.0);
    fs::create_dir_all(&dir.0).unwrap();
    let trees = make_trees(&dir.0.join("src"));
    let key = dir.0.join("k.key");
    run(subvol().arg("keygen").arg("-o").arg(&key));

    let one = publish_all(&trees, &key, &dir.0.join("one"), Some("1"), false);
    // 3 fulls, deltas 1→2, 2→3, 1→3; fulls have maps.
    assert_eq!(one.streams.len(), 6);
    assert_eq!(one.files.len(), 6 + 3);
    for (threads, name, no_copies) in [
        (None, "default", false),
        (Some("5"), "five", false),
        (None, "no-copies", true),
    ] {
        let other = publish_all(&trees, &key, &dir.0.join(name), threads, no_copies);
        assert_eq!(other.streams, one.streams, "index entries, {name} threads");
        assert_eq!(
            other.files.keys().collect::<Vec<_>>(),
            one.files.keys().collect::<Vec<_>>()
        );
        assert!(other == one, "file bytes, {name} threads");
    }

    // Another key: other files (the key signs, and keys the stream ids).
    let key2 = dir.0.join("k2.key");
    run(subvol().arg("keygen").arg("-o").arg(&key2));
    let other = publish_all(&trees[..1], &key2, &dir.0.join("key2"), None, false);
    assert_eq!(other.files.len(), 2);
    assert!(other.files.keys().all(|f| !one.files.contains_key(f)));

    // The files verify: every stream after decompression, with the public key.
    for s in &one.streams {
        let path = s["path"].as_str().unwrap();
        let raw = dir.0.join("check.stream");
        fs::write(
            &raw,
            zstd::stream::decode_all(&one.files[path.trim_start_matches("streams/")][..]).unwrap(),
        )
        .unwrap();
        run(subvol()
            .arg("verify")
            .arg("-f")
            .arg(&raw)
            .arg("--key")
            .arg(dir.0.join("k.key.pub")));
    }
}
