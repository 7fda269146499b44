//! Resumable receives on real loop-mounted btrfs: a receive killed (kill -9, SIGINT) at random
//! points keeps its last checkpoint, and receiving the same stream again (file, pipe, or a pipe
//! from the offset with --resume-from) continues from there, for unsigned and signed streams;
//! the received tree's digest is exact. Tampered, foreign or stale checkpoints are never used.

use crate::support::bin;
use crate::support::btrfs_fixture::BtrfsFs;
use crate::support::tree::{assert_same_tree, bytes, send_full, write};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Small checkpoint interval so that a few-MiB stream has many.
const EVERY: &str = "262144";

/// A deterministic generator (xorshift) for the kill points.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A source tree of about 6 MiB in many files (so, many commands), named `name`.
fn make_tree(parent: &Path, name: &str, seed: u64) -> PathBuf {
    let root = parent.join(name);
    for d in 0..12u64 {
        let dir = root.join(format!("d{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..8u64 {
            let n = d * 8 + f;
            let len = 32 * 1024 + (n as usize * 1543) % (64 * 1024);
            write(&dir.join(format!("f{f}")), &bytes(seed + n, len));
        }
        for s in 0..20u64 {
            write(
                &dir.join(format!("small{s}")),
                format!("{seed} {d} {s}").as_bytes(),
            );
        }
    }
    root
}

struct Streams {
    _work: tempfile::TempDir,
    src: PathBuf,
    name: String,
    plain: PathBuf,
    signed: PathBuf,
    public: PathBuf,
}

fn subvol(args: &[&str]) -> Output {
    Command::new(bin("subvol")).args(args).output().unwrap()
}

fn streams(name: &str, seed: u64) -> Streams {
    let work = tempfile::tempdir().unwrap();
    let src = make_tree(work.path(), name, seed);
    let plain = work.path().join("plain.stream");
    send_full(&src, 2, &plain);
    let sk = work.path().join("k.key");
    let o = subvol(&["keygen", "-o", sk.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let signed = work.path().join("signed.stream");
    let o = subvol(&[
        "sign",
        "--key",
        sk.to_str().unwrap(),
        "-f",
        plain.to_str().unwrap(),
        "-o",
        signed.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "sign: {}", stderr(&o));
    Streams {
        public: subvol::sign::pub_path(&sk),
        _work: work,
        src,
        name: name.to_string(),
        plain,
        signed,
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn records(dest: &Path) -> Vec<PathBuf> {
    entries(dest)
        .into_iter()
        .filter(|n| n.ends_with(".resume"))
        .map(|n| dest.join(n))
        .collect()
}

fn verify_args(s: &Streams, signed: bool) -> Vec<String> {
    if signed {
        vec!["--verify".into(), s.public.to_string_lossy().into_owned()]
    } else {
        Vec::new()
    }
}

/// Starts `subvol recv` reading a pipe, feeds it the first `cut` bytes of `stream`, waits for
/// it to apply them, and returns it (still running, the pipe open).
fn start_cut(
    stream: &[u8],
    cut: usize,
    dest: &Path,
    extra: &[String],
) -> (Child, std::process::ChildStdin) {
    let mut child = Command::new(bin("subvol"))
        .args([
            "recv",
            "--checkpoint-every",
            EVERY,
            "--checkpoint-overhead",
            "100",
        ])
        .args(extra)
        .arg(dest)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Slowly, so that the receiver applies (and checkpoints) as the bytes come.
    for chunk in stream[..cut].chunks(256 * 1024) {
        stdin.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(15));
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(400));
    (child, stdin)
}

/// The offset `--resume-offset` prints for DEST.
fn resume_offset(dest: &Path) -> u64 {
    let o = subvol(&["recv", "--resume-offset", dest.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

/// `subvol recv -f STREAM DEST`.
fn recv_file(stream: &Path, dest: &Path, extra: &[String]) -> Output {
    Command::new(bin("subvol"))
        .args([
            "recv",
            "--checkpoint-every",
            EVERY,
            "--checkpoint-overhead",
            "100",
        ])
        .args(extra)
        .arg("-f")
        .arg(stream)
        .arg(dest)
        .output()
        .unwrap()
}

fn delete_subvol(p: &Path) {
    let st = Command::new("btrfs")
        .args(["-q", "subvolume", "delete"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

/// Checks the received tree and that nothing else is left in DEST, then deletes it.
fn check_and_clear(s: &Streams, dest: &Path, what: &str) {
    assert_same_tree(&s.src, &dest.join(&s.name), what);
    assert_eq!(
        entries(dest),
        std::slice::from_ref(&s.name),
        "{what}: left over"
    );
    delete_subvol(&dest.join(&s.name));
}

/// The resume line the second run prints, and its offset.
fn resumed_at(err: &str) -> Option<u64> {
    let l = err
        .lines()
        .find(|l| l.starts_with("resuming the interrupted receive of "))?;
    l.rsplit(' ').next()?.parse().ok()
}

/// kill -9 at ten random points, then `recv -f` of the same stream resumes.
fn kill_then_resume(signed: bool, seed: u64) {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", seed);
    let path = if signed { &s.signed } else { &s.plain };
    let stream = fs::read(path).unwrap();
    let dest = fs_.path();
    let extra = verify_args(&s, signed);
    let mut rng = Rng(seed);
    let mut resumed = 0;
    let mut offsets = Vec::new();
    for round in 0..10 {
        let len = stream.len() as u64;
        let cut = (len / 5 + rng.below(len * 7 / 10)) as usize;
        let (mut child, stdin) = start_cut(&stream, cut, dest, &extra);
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        drop(stdin);
        assert!(
            !entries(dest).contains(&s.name),
            "round {round}: final name after kill -9"
        );
        let kept = resume_offset(dest);
        let out = recv_file(path, dest, &extra);
        let err = stderr(&out);
        assert!(out.status.success(), "round {round} (cut {cut}): {err}");
        if kept > 0 {
            // It resumed where the checkpoint was: only the rest was applied.
            assert_eq!(resumed_at(&err), Some(kept), "round {round}: {err}");
            assert!(
                kept <= cut as u64 && kept < len,
                "round {round}: {kept} of {len}"
            );
            resumed += 1;
            offsets.push((cut, kept));
        } else {
            assert_eq!(resumed_at(&err), None, "round {round}: {err}");
        }
        check_and_clear(
            &s,
            dest,
            &format!("round {round} (cut {cut}, resumed at {kept})"),
        );
    }
    eprintln!(
        "resume (signed {signed}): {resumed} of 10 rounds resumed, offsets {offsets:?} of {}",
        stream.len()
    );
    assert!(resumed >= 7, "only {resumed} of 10 rounds had a checkpoint");
}

#[test]
fn kill_9_then_resume_unsigned() {
    kill_then_resume(false, 0x5eed_0001);
}

#[test]
fn kill_9_then_resume_signed() {
    kill_then_resume(true, 0x5eed_0002);
}

/// SIGINT keeps the checkpoint (exit 130); resuming from a pipe that starts at the offset
/// (`--resume-offset`, then `--resume-from`) finishes the receive, signed or not.
#[test]
fn sigint_then_resume_from_a_piped_offset() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 7);
    let dest = fs_.path();
    for signed in [false, true] {
        let path = if signed { &s.signed } else { &s.plain };
        let stream = fs::read(path).unwrap();
        let extra = verify_args(&s, signed);
        let (child, stdin) = start_cut(&stream, stream.len() * 3 / 5, dest, &extra);
        let st = Command::new("kill")
            .arg("-INT")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
        let offset = resume_offset(dest);
        assert!(offset > 0, "signed {signed}: no checkpoint kept");
        assert!(
            stderr(&out).contains(&format!(
                "kept the interrupted receive of tree for resume at byte {offset}"
            )),
            "{}",
            stderr(&out)
        );
        // The stream from the offset on, as `tail -c +$((offset + 1))` sends it.
        let mut child = Command::new(bin("subvol"))
            .args(["recv", "--resume-from", &offset.to_string()])
            .args(&extra)
            .arg(dest)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let rest = stream[offset as usize..].to_vec();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&rest);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        let err = stderr(&out);
        assert!(out.status.success(), "signed {signed}: {err}");
        assert_eq!(resumed_at(&err), Some(offset), "{err}");
        check_and_clear(&s, dest, &format!("resume-from, signed {signed}"));
    }
}

/// Leaves an interrupted receive of `stream` in DEST (SIGKILL after 3/5 of it) and returns
/// its record's path.
fn interrupt(stream: &Path, dest: &Path, extra: &[String]) -> PathBuf {
    let bytes = fs::read(stream).unwrap();
    let (mut child, stdin) = start_cut(&bytes, bytes.len() * 3 / 5, dest, extra);
    // A loaded machine may take longer than start_cut's pause to reach a checkpoint: wait for
    // its record (the input stays open, so the receiver waits for more and keeps it).
    let t = std::time::Instant::now();
    while records(dest).is_empty() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    drop(stdin);
    let r = records(dest);
    assert_eq!(r.len(), 1, "{:?}", entries(dest));
    r[0].clone()
}

/// A tampered record, a replaced checkpoint snapshot (the file system is not in the state the
/// record describes): the receive starts over, with the right result.
#[test]
fn tampered_or_stale_checkpoints_are_not_used() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 11);
    let dest = fs_.path();
    // Tampered: one digit of the offset changed, checksum kept.
    let record = interrupt(&s.plain, dest, &[]);
    let text = fs::read_to_string(&record).unwrap();
    let at = text.find("\"offset\": ").unwrap() + "\"offset\": ".len();
    let mut changed = text.into_bytes();
    changed[at] = if changed[at] == b'1' { b'2' } else { b'1' };
    fs::write(&record, changed).unwrap();
    assert_eq!(resume_offset(dest), 0, "a tampered record is listed");
    let out = recv_file(&s.plain, dest, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), None, "{err}");
    assert!(err.contains("removed stale staging subvolume"), "{err}");
    check_and_clear(&s, dest, "after a tampered record");

    // The checkpoint snapshot replaced by another of the same name (a newer state).
    interrupt(&s.plain, dest, &[]);
    let ckpt = entries(dest)
        .into_iter()
        .find(|n| n.contains(".ckpt-"))
        .unwrap();
    let working = entries(dest)
        .into_iter()
        .find(|n| {
            n.starts_with(".subvol-recv-staging.")
                && !n.ends_with(".lock")
                && !n.ends_with(".resume")
                && !n.contains(".ckpt-")
        })
        .unwrap();
    delete_subvol(&dest.join(&ckpt));
    let st = Command::new("btrfs")
        .args(["-q", "subvolume", "snapshot", "-r"])
        .arg(dest.join(&working))
        .arg(dest.join(&ckpt))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(resume_offset(dest), 0, "a replaced checkpoint is listed");
    let out = recv_file(&s.plain, dest, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), None, "{err}");
    check_and_clear(&s, dest, "after a replaced checkpoint");
}

/// A checkpoint of another stream is not used: one of another name stays, one of the same
/// name is removed when a different stream of that name is received.
#[test]
fn checkpoints_of_other_streams_are_not_used() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let a = streams("tree", 21);
    let b = streams("other", 22);
    let a2 = streams("tree", 23); // same name, other content
    let dest = fs_.path();
    interrupt(&a.plain, dest, &[]);
    // Another name: received in full, the interrupted one stays.
    let out = recv_file(&b.plain, dest, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), None, "{err}");
    assert_same_tree(&b.src, &dest.join("other"), "other stream");
    delete_subvol(&dest.join("other"));
    assert!(
        resume_offset(dest) > 0,
        "the interrupted receive was removed"
    );
    // The same name, another stream: starts over, removing the interrupted one.
    let out = recv_file(&a2.plain, dest, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), None, "{err}");
    assert!(
        err.contains("removed the interrupted receive of tree"),
        "{err}"
    );
    check_and_clear(&a2, dest, "same name, other stream");
    assert!(records(dest).is_empty());
}

/// `--list-incomplete` (text and JSON) and `--drop-incomplete`.
#[test]
fn list_and_drop_incomplete_receives() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 31);
    let dest = fs_.path();
    let d = dest.to_str().unwrap();
    let o = subvol(&["recv", "--list-incomplete", d]);
    assert!(o.status.success() && o.stdout.is_empty(), "{}", stderr(&o));
    interrupt(&s.plain, dest, &[]);
    let offset = resume_offset(dest);
    let o = subvol(&["recv", "--list-incomplete", d]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(&format!("tree\tbyte {offset}\tunsigned\t")),
        "{text}"
    );
    let o = subvol(&["recv", "--list-incomplete", "--json", d]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "tree");
    assert_eq!(v[0]["offset"], offset);
    assert_eq!(v[0]["signed"], false);
    let o = subvol(&["recv", "--drop-incomplete", d]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("removed the interrupted receive of tree"));
    assert!(entries(dest).is_empty(), "left {:?}", entries(dest));
    // Nothing to resume: the receive runs from the start.
    let out = recv_file(&s.plain, dest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(resumed_at(&stderr(&out)), None);
    check_and_clear(&s, dest, "after drop");
}

/// A stream fault (a corrupt byte after a checkpoint) removes everything, checkpoint included.
#[test]
fn stream_fault_removes_the_checkpoint() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 41);
    let dest = fs_.path();
    let mut bytes = fs::read(&s.plain).unwrap();
    let at = bytes.len() * 4 / 5;
    bytes[at] ^= 0xff;
    let bad = s._work.path().join("bad.stream");
    fs::write(&bad, &bytes).unwrap();
    let out = recv_file(&bad, dest, &["-v".into()]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(err.contains("checkpoint at byte"), "{err}");
    let t = Instant::now();
    while !entries(dest).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(entries(dest).is_empty(), "left {:?}", entries(dest));
}

/// An input that ends early (the sender died, the connection dropped) keeps the checkpoint; the
/// whole stream received again from a pipe resumes and checks the bytes it skips.
#[test]
fn truncated_input_is_kept_and_resumed_from_a_pipe() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 51);
    let dest = fs_.path();
    let stream = fs::read(&s.plain).unwrap();
    let (child, stdin) = start_cut(&stream, stream.len() * 4 / 5, dest, &[]);
    drop(stdin); // end of input
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let offset = resume_offset(dest);
    assert!(offset > 0, "no checkpoint kept: {}", stderr(&out));
    let mut child = Command::new(bin("subvol"))
        .args([
            "recv",
            "--checkpoint-every",
            EVERY,
            "--checkpoint-overhead",
            "100",
        ])
        .arg(dest)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let all = stream.clone();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&all);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), Some(offset), "{err}");
    check_and_clear(&s, dest, "resumed from a pipe of the whole stream");
}

/// An incremental stream (SNAPSHOT of a received parent) killed mid-way resumes on its parent;
/// `subvol-recv -f` resumes as `subvol recv -f` does.
#[test]
fn incremental_stream_resumes_with_subvol_recv() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let old = make_tree(&work.path().join("a"), "tree", 61);
    let new = make_tree(&work.path().join("b"), "next", 6200);
    // `next` is `tree` with every file rewritten, plus a directory more.
    fs::create_dir(new.join("extra")).unwrap();
    let full = work.path().join("full.stream");
    let incr = work.path().join("incr.stream");
    send_full(&old, 2, &full);
    crate::support::tree::send_incr(&old, &new, 2, &incr);
    let dest = fs_.path();
    let o = recv_file(&full, dest, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stream = fs::read(&incr).unwrap();
    let (mut child, stdin) = start_cut(&stream, stream.len() * 3 / 5, dest, &["-v".into()]);
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let offset = resume_offset(dest);
    assert!(
        offset > 0,
        "no checkpoint kept ({} bytes): {}",
        stream.len(),
        stderr(&out)
    );
    let out = Command::new(bin("subvol-recv"))
        .args(["--checkpoint-every", EVERY, "--checkpoint-overhead", "100"])
        .arg("-f")
        .arg(&incr)
        .arg(dest)
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(resumed_at(&err), Some(offset), "{err}");
    assert_same_tree(&new, &dest.join("next"), "resumed incremental");
    assert_same_tree(&old, &dest.join("tree"), "its parent");
    assert_eq!(entries(dest), ["next", "tree"]);
    let info = subvol_ioctl::subvol_info(fs::File::open(dest.join("next")).unwrap()).unwrap();
    assert!(info.is_readonly());
    assert_ne!(info.received_uuid, subvol_ioctl::Uuid::default());
}

/// A receive resumed from a stream piped from the offset goes on taking checkpoints; killed
/// again, it is resumed from the whole file, whose bytes before each offset are checked.
#[test]
fn resumed_from_an_offset_is_resumable_again() {
    let Some(fs_) = BtrfsFs::with_size_or_skip(1 << 30) else {
        return;
    };
    let s = streams("tree", 71);
    let dest = fs_.path();
    for signed in [false, true] {
        let path = if signed { &s.signed } else { &s.plain };
        let stream = fs::read(path).unwrap();
        let extra = verify_args(&s, signed);
        let (mut child, stdin) = start_cut(&stream, stream.len() * 2 / 5, dest, &extra);
        child.kill().unwrap();
        let _ = child.wait();
        drop(stdin);
        let first = resume_offset(dest);
        assert!(first > 0, "signed {signed}: no checkpoint kept");
        let rest = &stream[first as usize..];
        let mut args = extra.clone();
        args.extend(["--resume-from".to_string(), first.to_string()]);
        let (mut child, stdin) = start_cut(rest, rest.len() * 2 / 3, dest, &args);
        child.kill().unwrap();
        let _ = child.wait();
        drop(stdin);
        let second = resume_offset(dest);
        assert!(second > first, "signed {signed}: {second} after {first}");
        let out = recv_file(path, dest, &extra);
        let err = stderr(&out);
        assert!(out.status.success(), "signed {signed}: {err}");
        assert_eq!(resumed_at(&err), Some(second), "{err}");
        check_and_clear(&s, dest, &format!("resumed twice, signed {signed}"));
    }
}
