//! `subvol publish`, `pull`, `pool`, `list`, `show`, `snapshot`, `delete`.

use super::interrupt_flag;
use super::progress::{PlanBar, Status};
use crate::args;
use std::io::{self, Write};
use std::time::{Duration, Instant};
use subvol::mirror::{
    self, Plan, PublishEvent, PublishOptions, PullEvent, PullOptions, PullState, StreamFile,
    remotes,
};
use subvol::sign::{KeySet, SecretKey};
use subvol::util::{escape, human_size as human};
use subvol::{Error, pool};

pub(super) fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| Error::output(io::Error::other(e)))?;
    writeln!(out).map_err(Error::output)
}

pub(super) fn time(sec: u64) -> String {
    jiff::Timestamp::from_second(i64::try_from(sec).unwrap_or(i64::MAX))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| sec.to_string())
}

/// A name from a repository, a pool or the command line, for a person: control characters
/// escaped (a hostile name must not retitle or clear the terminal).
pub(super) fn esc(name: &str) -> String {
    escape(name.as_bytes())
}

/// A path for a person, escaped as [`esc`].
pub(super) fn esc_path(p: &std::path::Path) -> String {
    escape(p.as_os_str().as_encoded_bytes())
}

/// "full V" or "delta A → B", escaped.
fn what(f: &StreamFile) -> String {
    match &f.from {
        None => format!("full {}", esc(&f.to)),
        Some(from) => format!("delta {} → {}", esc(from), esc(&f.to)),
    }
}

fn short(f: &StreamFile) -> String {
    format!("{:<24} {:>10}  {}", what(f), human(f.size), esc(&f.path))
}

/// The lines describing a plan (the `plan` event and `--dry-run`).
fn plan_lines(p: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    match &p.seeded {
        None => {
            out.push(format!(
                "plan: {} → {} in {} step(s), {} to fetch",
                esc(p.start.as_deref().unwrap_or("empty")),
                esc(&p.target),
                p.steps.len(),
                human(p.bytes)
            ));
            for (i, s) in p.steps.iter().enumerate() {
                out.push(format!("  {}. {}", i + 1, short(&s.file)));
            }
        }
        Some(s) => {
            out.push(format!(
                "plan: {} seeded from the pool, {} to fetch ({} in {} range(s) + map {})",
                esc(&p.target),
                human(p.bytes),
                human(s.fetch_bytes),
                s.ranges,
                human(s.map_bytes)
            ));
            for st in &p.steps {
                out.push(format!("  1. {}", short(&st.file)));
            }
            out.push(format!(
                "  found locally: {} of {} stream bytes",
                human(s.local_bytes),
                human(s.stream_bytes)
            ));
            for l in &s.local_from {
                out.push(format!("    {} from {}", human(l.bytes), esc(&l.name)));
            }
        }
    }
    out
}

/// The space a plan needs, for a person.
fn space_line(s: &mirror::SpaceEstimate) -> String {
    format!(
        "space: needs {} ({} written by the steps, {} of downloads in the cache); {} free, {} kept in reserve{}",
        human(s.need),
        human(s.writes),
        human(s.cache),
        human(s.free),
        human(s.reserve),
        if s.fits() { "" } else { ": does not fit" }
    )
}

/// `subvol publish`.
///
/// # Errors
/// Key, tree, send, signing or repository errors.
pub fn publish(a: &args::PublishArgs) -> Result<(), Error> {
    let key = SecretKey::load(&a.key)?;
    let release_keys = a
        .release_keys
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let timestamp_key = a
        .timestamp_key
        .as_deref()
        .map(SecretKey::load)
        .transpose()?;
    let o = PublishOptions {
        repo: a.repo.clone(),
        key,
        source: a.source.clone(),
        version: a.version.clone(),
        trees: a.trees.clone(),
        prune_keep: a.prune,
        valid_for: a.valid_for,
        level: a.level,
        proto: a.proto,
        deltas: !a.no_deltas,
        threads: a.threads,
        release_keys,
        timestamp_key,
        timestamp_valid_for: a.timestamp_valid_for,
    };
    let mut line = Status::new(false);
    let json = a.json;
    let report = mirror::publish(&o, &mut |ev| match ev {
        PublishEvent::StoringTree { path } => {
            line.show(|| format!("publish: copying the tree to {}", path.display()));
        }
        PublishEvent::Stream { from, to, bytes } => line.show(|| match from {
            None => format!("publish: full {to}: {}", human(bytes)),
            Some(f) => format!("publish: delta {f} → {to}: {}", human(bytes)),
        }),
        PublishEvent::StreamDone(f) => {
            line.clear();
            if !json {
                eprintln!("  wrote {}", short(f));
                if let Some(m) = &f.map {
                    eprintln!(
                        "  wrote {:<24} {:>10}  {}",
                        "content map",
                        human(m.size),
                        esc(&m.path)
                    );
                }
            }
        }
        PublishEvent::MissingTree { version, path } => {
            line.clear();
            eprintln!(
                "warning: no delta from version {}: its tree {} is not in the store",
                esc(version),
                esc_path(path)
            );
        }
    });
    line.clear();
    let r = report?;
    // Registries get the repository once the directory has it (the format of record).
    let mut pushed = Vec::new();
    for dest in &a.push {
        match push_to(&a.repo, dest, a.ca.as_deref(), 30, json) {
            Ok(p) => pushed.push(p),
            Err(e) => {
                // The directory has the new version: say how to finish, then the error.
                eprintln!(
                    "subvol: published to {}, but not pushed to {}; retry with `subvol push {} {}`",
                    esc_path(&a.repo),
                    esc(dest),
                    esc_path(&a.repo),
                    esc(dest)
                );
                return Err(e);
            }
        }
    }
    if a.json {
        let mut v = serde_json::to_value(&r).map_err(|e| Error::output(io::Error::other(e)))?;
        if !pushed.is_empty() {
            v["pushed"] =
                serde_json::to_value(&pushed).map_err(|e| Error::output(io::Error::other(e)))?;
        }
        return print_json(&v);
    }
    let mut out = io::stdout().lock();
    let w = |e| Error::output(e);
    for p in &pushed {
        writeln!(out, "{}", pushed_line(p)).map_err(w)?;
    }
    if let Some(v) = &r.version {
        writeln!(
            out,
            "published version {} (UUID {}) to {}: {} file(s), {}",
            esc(&v.name),
            v.uuid,
            esc_path(&r.repo),
            r.streams.len(),
            human(r.streams.iter().map(|s| s.size).sum())
        )
        .map_err(w)?;
    }
    for p in &r.pruned {
        writeln!(out, "retired version {}", esc(p)).map_err(w)?;
    }
    if !r.removed_files.is_empty() {
        writeln!(
            out,
            "deleted {} unreferenced file(s)",
            r.removed_files.len()
        )
        .map_err(w)?;
    }
    if let Some(tr) = &r.trust {
        writeln!(
            out,
            "wrote {} ({}){}",
            tr.release.path,
            if tr.threshold_met {
                "release threshold met"
            } else {
                "below the release threshold: add signatures with `subvol trust sign`, then `subvol trust timestamp`"
            },
            match &tr.timestamp {
                Some(ts) => format!(
                    "; timestamp version {} valid until {}",
                    ts.version,
                    time(ts.expires)
                ),
                None => "; timestamp not written (no --timestamp-key)".into(),
            }
        )
        .map_err(w)?;
    }
    writeln!(
        out,
        "index serial {}, valid until {}; {} version(s), {} in stream and map files; trees in {}",
        r.serial,
        time(r.expires),
        r.versions,
        human(r.repo_bytes),
        esc_path(&r.trees)
    )
    .map_err(w)
}

/// `subvol push`.
///
/// # Errors
/// Unreadable repository, registry, credential and network errors.
pub fn push(a: &args::PushArgs) -> Result<(), Error> {
    let report = push_to(&a.repo, &a.dest, a.ca.as_deref(), a.timeout, a.json)?;
    if a.json {
        return print_json(&report);
    }
    writeln!(io::stdout(), "{}", pushed_line(&report)).map_err(Error::output)
}

/// Pushes directory repository `repo` to registry `dest` (uploads said on stderr unless
/// `quiet`).
fn push_to(
    repo: &std::path::Path,
    dest: &str,
    ca: Option<&std::path::Path>,
    timeout: u64,
    quiet: bool,
) -> Result<mirror::oci::PushReport, Error> {
    let limits = mirror::StallLimits {
        timeout: Duration::from_secs(timeout.max(1)),
        ..mirror::StallLimits::default()
    };
    Ok(mirror::oci::push(repo, dest, ca, limits, &mut |ev| {
        if quiet {
            return;
        }
        match ev {
            mirror::oci::PushEvent::Upload { path, size } => {
                eprintln!("  upload {:>10}  {}", human(size), esc(path));
            }
            mirror::oci::PushEvent::Present { .. } => {}
            mirror::oci::PushEvent::Tagged(t) => eprintln!("  tagged {}", esc(t)),
        }
    })?)
}

fn pushed_line(report: &mirror::oci::PushReport) -> String {
    format!(
        "pushed serial {} to {}: {} blob(s) uploaded ({}), {} already there; manifest {}",
        report.serial,
        esc(&report.reference),
        report.uploaded,
        human(report.uploaded_bytes),
        report.present,
        report.manifest
    )
}

/// `subvol pull`.
///
/// # Errors
/// Refused index, no chain, download or receive errors.
pub fn pull(a: &args::PullArgs) -> Result<(), Error> {
    let mut keys = KeySet::load(&a.verify)?;
    let mut source = a.source.clone();
    let mut mirrors: Vec<String> = Vec::new();
    let mut root = None;
    // A bare name (no '/', no scheme) that is a configured remote: its mirrors and trust.
    if !a.source.contains('/') && remotes::exists(&a.config_dir, &a.source) {
        let r = remotes::show(&a.config_dir, &a.source)?;
        for k in remotes::load_keys(&r)? {
            keys.add(k);
        }
        let mut urls = r.urls.into_iter();
        if let Some(first) = urls.next() {
            source = first;
        }
        mirrors.extend(urls);
        root = r.root;
    }
    mirrors.extend(a.mirror.iter().cloned());
    let interrupted = interrupt_flag()?;
    let o = PullOptions {
        source,
        mirrors,
        // --root wins over the remote's root.
        root: a.root.clone().or(root),
        pool: a.into.clone(),
        keys,
        version: a.version.clone(),
        keep: a.keep.map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
        dry_run: a.dry_run,
        interrupted: Some(interrupted),
        stall: mirror::StallLimits {
            timeout: Duration::from_secs(a.timeout.max(1)),
            min_rate: a.min_rate,
            window: Duration::from_secs(a.rate_window.max(1)),
            limit_rate: a.limit_rate,
        },
        no_stream: a.no_stream,
        checkpoint_bytes: Some(a.checkpoint_every),
        checkpoint_max_share: (a.checkpoint_overhead < 100)
            .then(|| f64::from(a.checkpoint_overhead) / 100.0),
        plan: match a.plan {
            args::PlanChoice::Auto => mirror::PlanChoice::Auto,
            args::PlanChoice::Chain => mirror::PlanChoice::Chain,
            args::PlanChoice::Seeded => mirror::PlanChoice::Seeded,
        },
        ca: a.ca.clone(),
    };
    let json = a.json;
    let verbose = a.verbose;
    let mut line = Status::new(a.progress);
    let mut plan_bar = PlanBar::new(a.progress);
    let start = Instant::now();
    let mut dl_start: Option<(Instant, u64)> = None;
    let mut step_start = Instant::now();
    let mut last_progress: Option<Instant> = None;
    let say = |line: &mut Status, bar: &mut PlanBar, s: String| {
        line.clear();
        bar.clear();
        if !json {
            eprintln!("{s}");
        }
    };
    // --json: one object per line on stderr for each event (stdout keeps the report).
    let emit = |v: serde_json::Value| {
        if json {
            let mut err = io::stderr().lock();
            let _ = serde_json::to_writer(&mut err, &v);
            let _ = writeln!(err);
        }
    };
    let report = mirror::pull(&o, &mut |ev| match ev {
        PullEvent::Index {
            serial,
            expires,
            versions,
            key,
        } => {
            emit(
                serde_json::json!({"event": "index", "serial": serial, "expires": expires,
                "versions": versions, "key": key.to_string()}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "index serial {serial} signed by key {key}: {versions} version(s), valid until {}",
                    time(expires)
                ),
            );
        }
        PullEvent::MirrorSkipped {
            mirror,
            file,
            reason,
        } => {
            emit(
                serde_json::json!({"event": "mirror_skipped", "mirror": mirror,
                "file": file.map(|f| f.path.clone()), "reason": reason}),
            );
            say(
                &mut line,
                &mut plan_bar,
                match file {
                    Some(f) => format!(
                        "mirror {} skipped for {}: {}; trying the next mirror",
                        esc(mirror),
                        esc(&f.path),
                        super::escape_controls(reason)
                    ),
                    None => format!(
                        "mirror {} skipped: {}",
                        esc(mirror),
                        super::escape_controls(reason)
                    ),
                },
            );
        }
        PullEvent::Trust {
            repository,
            uuid,
            root_version,
            rotations,
            timestamp_version,
            timestamp_expires,
            serial,
            versions,
        } => {
            emit(
                serde_json::json!({"event": "trust", "repository": repository,
                "uuid": uuid.to_string(), "root_version": root_version, "rotations": rotations,
                "timestamp_version": timestamp_version, "timestamp_expires": timestamp_expires,
                "serial": serial, "versions": versions}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "repository {} ({uuid}): root version {root_version}{}, timestamp {timestamp_version} valid until {}, release serial {serial}: {versions} version(s)",
                    esc(repository),
                    if rotations > 0 {
                        format!(" ({rotations} rotation(s) verified)")
                    } else {
                        String::new()
                    },
                    time(timestamp_expires)
                ),
            );
        }
        PullEvent::Held(names) => {
            emit(serde_json::json!({"event": "held", "versions": names}));
            say(
                &mut line,
                &mut plan_bar,
                if names.is_empty() {
                    "pool holds no version yet".into()
                } else {
                    let names: Vec<String> = names.iter().map(|n| esc(n)).collect();
                    format!("pool holds: {}", names.join(", "))
                },
            );
        }
        PullEvent::Plan(p) => {
            emit(serde_json::json!({"event": "plan", "plan": p}));
            if !json {
                line.clear();
                plan_bar.clear();
                for l in plan_lines(p) {
                    eprintln!("{l}");
                }
            }
            step_start = Instant::now();
        }
        PullEvent::Space(s) => {
            emit(serde_json::json!({"event": "space", "space": s}));
            if verbose {
                say(&mut line, &mut plan_bar, space_line(s));
            }
        }
        PullEvent::Progress(p) => {
            let last = p.applied >= p.total;
            if json
                && (last || last_progress.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)))
            {
                last_progress = Some(Instant::now());
                emit(
                    serde_json::json!({"event": "progress", "step": p.step, "steps": p.steps,
                    "total": p.total, "fetched": p.fetched, "reused": p.reused,
                    "applied": p.applied, "resumed": p.resumed}),
                );
            }
            if !json {
                line.clear();
                plan_bar.update(&p);
            }
        }
        PullEvent::Step {
            step,
            steps,
            file,
            fetched,
            reused,
        } => {
            let secs = step_start.elapsed().as_secs_f64();
            step_start = Instant::now();
            emit(
                serde_json::json!({"event": "step", "step": step, "steps": steps,
                "file": file.path, "to": file.to, "size": file.size,
                "stream_bytes": file.stream_bytes, "fetched": fetched, "reused": reused,
                "seconds": secs}),
            );
            if verbose {
                say(
                    &mut line,
                    &mut plan_bar,
                    format!(
                        "step {step}/{steps}: {}: {} fetched{}, its {} stream applied, in {secs:.1}s",
                        what(file),
                        human(fetched),
                        if reused > 0 {
                            format!(", {} reused from an earlier pull", human(reused))
                        } else {
                            String::new()
                        },
                        human(file.stream_bytes)
                    ),
                );
            }
        }
        PullEvent::Download {
            step,
            steps,
            done,
            total,
            ..
        } => {
            let (t0, b0) = *dl_start.get_or_insert((Instant::now(), done));
            if !json {
                plan_bar.clear();
            }
            line.show(|| {
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                let rate = done.saturating_sub(b0) as f64 / secs;
                let eta = if rate > 0.0 {
                    format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
                } else {
                    "?".into()
                };
                format!(
                    "pull: step {step}/{steps} fetching {} of {} ({:.0}%) {}/s ETA {eta}",
                    human(done),
                    human(total),
                    done as f64 * 100.0 / total.max(1) as f64,
                    human(rate as u64)
                )
            });
        }
        PullEvent::Resume { file, offset } => {
            emit(
                serde_json::json!({"event": "resume", "file": file.path, "offset": offset,
                "size": file.size}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "resuming {} at byte {offset} of {}",
                    esc(&file.path),
                    file.size
                ),
            );
        }
        PullEvent::Refused { file, reason } => {
            emit(serde_json::json!({"event": "refused", "file": file.path, "reason": reason}));
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "refused {}: {}; trying another chain",
                    esc(&file.path),
                    super::escape_controls(reason)
                ),
            );
        }
        // The plan's bar shows receiving ([`PullEvent::Progress`]).
        PullEvent::Receiving { .. } => {}
        PullEvent::Received {
            step,
            steps,
            version,
            path,
        } => {
            emit(
                serde_json::json!({"event": "received", "step": step, "steps": steps,
                "version": version, "path": path}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "step {step}/{steps}: received version {} as {}",
                    esc(version),
                    esc_path(path)
                ),
            );
        }
        PullEvent::Removed { name, reason } => {
            emit(serde_json::json!({"event": "removed", "name": name, "reason": reason}));
            say(
                &mut line,
                &mut plan_bar,
                format!("deleted {} ({})", esc(name), super::escape_controls(reason)),
            );
        }
        PullEvent::StaleRemoved(n) => say(
            &mut line,
            &mut plan_bar,
            format!(
                "removed stale staging subvolume {} left by an interrupted receive",
                escape(n.as_encoded_bytes())
            ),
        ),
        PullEvent::ApplyResumed {
            step,
            steps,
            file,
            offset,
        } => {
            emit(
                serde_json::json!({"event": "apply_resumed", "step": step, "steps": steps,
                "file": file.path, "to": file.to, "offset": offset,
                "stream_bytes": file.stream_bytes}),
            );
            if verbose {
                say(
                    &mut line,
                    &mut plan_bar,
                    format!(
                        "step {step}/{steps}: {}: resuming the interrupted receive at byte {offset} \
                         of {} ({} applied by an earlier pull)",
                        what(file),
                        file.stream_bytes,
                        human(offset)
                    ),
                );
            }
        }
        PullEvent::Checkpoint { step, file, offset } => {
            emit(
                serde_json::json!({"event": "checkpoint", "step": step, "file": file.path,
                "offset": offset}),
            );
            if verbose {
                say(
                    &mut line,
                    &mut plan_bar,
                    format!(
                        "step {step}: checkpoint at byte {offset} of {}",
                        esc(&file.path)
                    ),
                );
            }
        }
        PullEvent::Kept { step, file, offset } => {
            emit(
                serde_json::json!({"event": "kept", "step": step, "file": file.path,
                "offset": offset}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "kept the interrupted receive of step {step} ({}) for the next pull to \
                     resume at byte {offset}",
                    esc(&file.path)
                ),
            );
        }
        PullEvent::ResumeRefused { file, name, reason } => {
            emit(
                serde_json::json!({"event": "resume_refused", "file": file.path, "name": name,
                "reason": reason}),
            );
            say(
                &mut line,
                &mut plan_bar,
                format!(
                    "not resuming the interrupted receive of {}: {}; removed it, starting {} over",
                    esc(name),
                    super::escape_controls(reason),
                    esc(&file.path)
                ),
            );
        }
        PullEvent::Indexed(i) => say(
            &mut line,
            &mut plan_bar,
            format!(
                "indexed content of {}: {} file(s), {}, index {}",
                esc(&i.name),
                i.files,
                human(i.bytes),
                human(i.index_bytes)
            ),
        ),
        PullEvent::IndexDropped(files) => say(
            &mut line,
            &mut plan_bar,
            format!(
                "dropped {} content index file(s) of subvolumes no longer in the pool",
                files.len()
            ),
        ),
        PullEvent::IndexCorrupt { file, reason } => say(
            &mut line,
            &mut plan_bar,
            format!(
                "content index {} is unusable ({}); indexing again",
                esc(file),
                super::escape_controls(reason)
            ),
        ),
    });
    line.clear();
    plan_bar.clear();
    let r = report?;
    if a.json {
        return print_json(&r);
    }
    let mut out = io::stdout().lock();
    let w = |e| Error::output(e);
    if let Some(p) = &r.plan {
        for l in plan_lines(p) {
            writeln!(out, "{l}").map_err(w)?;
        }
        if let Some(s) = &r.space {
            writeln!(out, "{}", space_line(s)).map_err(w)?;
        }
        return writeln!(out, "dry run: nothing fetched or changed").map_err(w);
    }
    if r.already {
        return writeln!(
            out,
            "{} is version {} already; nothing to do",
            esc_path(&r.path),
            esc(&r.target)
        )
        .map_err(w);
    }
    let how = match &r.seeded {
        Some(s) => format!(
            "seeded full ({} read from the pool{})",
            human(s.local_bytes),
            if s.refetched_frames > 0 {
                format!(", {} frame(s) fetched after all", s.refetched_frames)
            } else {
                String::new()
            }
        ),
        None => format!("{} step(s)", r.steps.len()),
    };
    let shared = if r.deduped > 0 {
        format!(", {} shared with the pool", human(r.deduped))
    } else {
        String::new()
    };
    let reused = if r.reused > 0 {
        format!(" (+{} reused from an earlier pull)", human(r.reused))
    } else {
        String::new()
    };
    let resumed: u64 = r.resumed.iter().map(|s| s.offset).sum();
    let shared = if resumed > 0 {
        format!(
            "{shared}, {} of stream applied by an interrupted pull (resumed)",
            human(resumed)
        )
    } else {
        shared
    };
    writeln!(
        out,
        "{} is version {}: {how}, {} fetched{reused}{shared} in {:.1}s",
        esc_path(&r.path),
        esc(&r.target),
        human(r.bytes),
        start.elapsed().as_secs_f64()
    )
    .map_err(w)
}

/// `subvol pool ...`.
///
/// # Errors
/// Image, mkfs or mount failures.
pub fn pool(a: &args::PoolArgs) -> Result<(), Error> {
    let Some(i) = a.init() else {
        return Err(Error::Invalid("unknown pool subcommand".into()));
    };
    let r = pool::init(&i.path, i.size, i.image.as_deref())?;
    if i.json {
        return print_json(&r);
    }
    let mut out = io::stdout().lock();
    let w = |e| Error::output(e);
    match (&r.image, r.mounted) {
        (None, _) => writeln!(out, "{} is a pool (on btrfs)", esc_path(&r.path)),
        (Some(img), true) => writeln!(
            out,
            "{} is a pool: {}btrfs image {} ({}) mounted there\n  remove with: umount {} && rm {}",
            esc_path(&r.path),
            if r.created_image { "new " } else { "" },
            esc_path(img),
            human(r.size.unwrap_or(0)),
            esc_path(&r.path),
            esc_path(img)
        ),
        (Some(img), false) => writeln!(
            out,
            "{} is a pool already (image {} mounted)",
            esc_path(&r.path),
            esc_path(img)
        ),
    }
    .map_err(w)
}

fn opt(v: Option<&impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".to_string(), |v| esc(&v.to_string()))
}

/// `subvol list`.
///
/// # Errors
/// Not on btrfs; ioctl errors.
pub fn list(a: &args::ListArgs) -> Result<(), Error> {
    let mut l = pool::list(&a.path)?;
    // In a pool, name the versions pull recorded (a directory that is no pool has no state).
    let state = PullState::load(&a.path).unwrap_or_default();
    for e in &mut l {
        e.version = e
            .received_uuid
            .and_then(|r| state.version_of(&r).map(str::to_string));
    }
    if a.json {
        return print_json(&l);
    }
    let mut out = io::stdout().lock();
    let w = |e| Error::output(e);
    let rel = |e: &pool::SubvolEntry| {
        e.path
            .strip_prefix(&a.path)
            .map_or_else(|_| esc_path(&e.path), esc_path)
    };
    let width = l.iter().map(|e| rel(e).len()).max().unwrap_or(4).max(4);
    let pw = l
        .iter()
        .map(|e| opt(e.parent.as_ref()).len())
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:<width$}  MODE  CREATED               UUID                                  RECEIVED UUID                         {:<pw$}  VERSION",
        "NAME", "PARENT"
    )
    .map_err(w)?;
    for e in &l {
        writeln!(
            out,
            "{:<width$}  {}    {}  {}  {:<36}  {:<pw$}  {}",
            rel(e),
            if e.readonly { "ro" } else { "rw" },
            e.created,
            e.uuid,
            opt(e.received_uuid.as_ref()),
            opt(e.parent.as_ref()),
            opt(e.version.as_ref())
        )
        .map_err(w)?;
    }
    Ok(())
}

/// `subvol show`.
///
/// # Errors
/// Not a subvolume; ioctl errors.
pub fn show(a: &args::ShowArgs) -> Result<(), Error> {
    let d = pool::show(&a.path)?;
    if a.json {
        return print_json(&d);
    }
    let e = &d.entry;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "{}\n  name:           {}\n  path in fs:     {}\n  id:             {}\n  uuid:           {}\n  parent uuid:    {}\n  parent:         {}\n  received uuid:  {}\n  received:       {}\n  read-only:      {}\n  created:        {}\n  generation:     {}\n  snapshots:      {}",
        esc_path(&e.path),
        esc(&e.name),
        esc(&d.fs_path),
        e.id,
        e.uuid,
        opt(e.parent_uuid.as_ref()),
        opt(e.parent.as_ref()),
        opt(e.received_uuid.as_ref()),
        opt(d.received.as_ref()),
        if e.readonly { "yes" } else { "no" },
        e.created,
        e.generation,
        if d.snapshots.is_empty() {
            "-".to_string()
        } else {
            d.snapshots
                .iter()
                .map(|s| esc(s))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )
    .map_err(Error::output)
}

/// `subvol snapshot`.
///
/// # Errors
/// Not a subvolume, DEST exists, ioctl errors.
pub fn snapshot(a: &args::SnapshotArgs) -> Result<(), Error> {
    let e = pool::snapshot(&a.source, &a.dest, a.readonly)?;
    if a.json {
        return print_json(&e);
    }
    writeln!(
        io::stdout().lock(),
        "created {}snapshot {} of {} (UUID {})",
        if a.readonly { "read-only " } else { "" },
        esc_path(&a.dest),
        esc_path(&a.source),
        e.uuid
    )
    .map_err(Error::output)
}

/// `subvol delete`.
///
/// # Errors
/// The first subvolume that cannot be deleted (earlier ones are deleted).
pub fn delete(a: &args::DeleteArgs) -> Result<(), Error> {
    let mut done = Vec::new();
    for p in &a.paths {
        let e = pool::delete(p)?;
        if !a.json {
            writeln!(
                io::stdout().lock(),
                "deleted {} (UUID {})",
                esc_path(p),
                e.uuid
            )
            .map_err(Error::output)?;
        }
        done.push(e);
    }
    if a.json {
        return print_json(&done);
    }
    Ok(())
}
