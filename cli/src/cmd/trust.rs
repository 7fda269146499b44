//! `subvol trust init|rotate|sign|timestamp`: a repository's trust metadata, offline.

use super::mirror::{esc_path, time};
use crate::args::{self, RoleKeyArgs, TrustCommand};
use std::io::{self, Write};
use std::path::PathBuf;
use subvol::Error;
use subvol::mirror::MirrorError;
use subvol::sign::{KeySet, PublicKey, SecretKey};
use subvol::trust::{self, Role, RoleChange, RootSpec, TrustError};
use subvol::util::unix_now;

/// An offline command's failure: the publisher's own files or arguments (status 1), or I/O.
fn trust_err(e: TrustError) -> Error {
    let e = match e {
        e @ (TrustError::Io(_) | TrustError::Usage(_)) => e,
        e => TrustError::Usage(e.to_string()),
    };
    MirrorError::Trust(e).into()
}

fn public_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, Error> {
    let set = KeySet::load(paths)?;
    Ok(set
        .ids()
        .into_iter()
        .filter_map(|id| set.get(id).cloned())
        .collect())
}

fn secret_keys(paths: &[PathBuf]) -> Result<Vec<SecretKey>, Error> {
    Ok(paths
        .iter()
        .map(|p| SecretKey::load(p))
        .collect::<Result<Vec<_>, _>>()?)
}

fn threshold(t: Option<u64>) -> Option<usize> {
    t.map(|t| usize::try_from(t).unwrap_or(usize::MAX))
}

fn changes(a: &RoleKeyArgs) -> Result<Vec<RoleChange>, Error> {
    Ok(vec![
        RoleChange {
            role: Role::Root,
            keys: public_keys(&a.root_keys)?,
            threshold: threshold(a.root_threshold),
        },
        RoleChange {
            role: Role::Release,
            keys: public_keys(&a.release_keys)?,
            threshold: threshold(a.release_threshold),
        },
        RoleChange {
            role: Role::Timestamp,
            keys: public_keys(&a.timestamp_keys)?,
            threshold: threshold(a.timestamp_threshold),
        },
        RoleChange {
            role: Role::Streams,
            keys: public_keys(&a.stream_keys)?,
            threshold: None,
        },
    ])
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met yet" }
}

/// `subvol trust`.
///
/// # Errors
/// Key files, inconsistent roles, I/O errors.
pub fn trust(a: &args::TrustArgs) -> Result<(), Error> {
    let mut out = io::stdout().lock();
    let w = Error::output;
    match &a.command {
        TrustCommand::Init(a) => {
            let roles = changes(&a.roles)?;
            for c in &roles {
                if c.keys.is_empty() {
                    return Err(trust_err(TrustError::Usage(format!(
                        "no {} key given (--{}-key PUB)",
                        c.role.name(),
                        if c.role == Role::Streams {
                            "stream"
                        } else {
                            c.role.name()
                        }
                    ))));
                }
            }
            let signers = secret_keys(&a.sign)?;
            let spec = RootSpec {
                name: a.name.clone(),
                roles,
                valid_for: a.valid_for,
            };
            let (path, ok) = trust::init(
                &a.repo,
                &spec,
                &signers.iter().collect::<Vec<_>>(),
                unix_now(),
            )
            .map_err(trust_err)?;
            writeln!(
                out,
                "wrote {}: root threshold {}; clients start from it with `subvol pull URL --into POOL --root {}`",
                esc_path(&path),
                met(ok),
                esc_path(&path)
            )
            .map_err(w)
        }
        TrustCommand::Rotate(a) => {
            let roles = changes(&a.roles)?;
            let signers = secret_keys(&a.sign)?;
            let (path, old_ok, new_ok) = trust::rotate(
                &a.repo,
                &roles,
                a.valid_for,
                &signers.iter().collect::<Vec<_>>(),
                unix_now(),
            )
            .map_err(trust_err)?;
            writeln!(
                out,
                "wrote {}: old root threshold {}, new root threshold {}",
                esc_path(&path),
                met(old_ok),
                met(new_ok)
            )
            .map_err(w)
        }
        TrustCommand::Sign(a) => {
            let keys = secret_keys(&a.keys)?;
            let kind =
                trust::sign_file(&a.file, &keys.iter().collect::<Vec<_>>()).map_err(trust_err)?;
            let ids: Vec<String> = keys.iter().map(|k| k.public().id().to_string()).collect();
            writeln!(
                out,
                "signed {} ({kind} metadata) with key(s) {}",
                esc_path(&a.file),
                ids.join(", ")
            )
            .map_err(w)
        }
        TrustCommand::Timestamp(a) => {
            let key = SecretKey::load(&a.key)?;
            let ts = trust::write_timestamp(&a.repo, &key, a.valid_for, unix_now())
                .map_err(trust_err)?;
            writeln!(
                out,
                "timestamp version {} names {} (serial {}), root version {}; valid until {}",
                ts.version,
                ts.release.path,
                ts.release.serial,
                ts.root_version,
                time(ts.expires)
            )
            .map_err(w)
        }
    }
}
