//! Man pages (`man/*.1`) and shell completions (`completions/`), generated from the clap
//! definitions (`subvol_cli::args::Cli`, `subvol_cli::args::RecvCli`) and committed. The tests fail when a
//! committed file differs from what the CLI generates now;
//! `UPDATE_MAN=1 cargo test --test integration man::` rewrites them (and removes stale ones).
//!
//! # Page names
//! `subvol.1`, and `subvol-<subcommand>.1` for each subcommand (clap_mangen's naming, like
//! git's). The one clash, the `subvol recv` subcommand and the separate `subvol-recv` binary, is
//! resolved by giving both one page, `subvol-recv.1`: they take the same arguments (`RecvArgs`;
//! [`recv_subcommand_and_binary_take_the_same_arguments`] keeps it so), and its SYNOPSIS shows
//! both forms. `man subvol-recv` therefore answers for either spelling. `subvol help` gets no page.
//!
//! # Sections
//! clap_mangen renders NAME, SYNOPSIS, DESCRIPTION, OPTIONS, SUBCOMMANDS and VERSION. This
//! generator adds, for every page:
//! - EXAMPLES: the `Examples:` block of the command's `after_help`, then the examples of
//!   [`PAGES`] (each with a sentence saying what it does);
//! - NOTES: the rest of the `after_help` text (exit-code tables excepted);
//! - SECURITY: from [`PAGES`]: what the command guarantees and what it does not;
//! - EXIT STATUS: parsed from [`subvol_cli::args::EXIT_CODES`], with the page's own remark;
//! - SEE ALSO.
//!
//! So a page stays complete when help texts change, and a new subcommand fails
//! [`every_subcommand_has_a_documented_page`] until it has an entry in [`PAGES`].
//!
//! Completions: `completions/subvol.bash`, `_subvol` (zsh), `subvol.fish`, and the same three for
//! `subvol-recv`. `scripts/install-completions.sh` installs pages and completions.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use subvol_cli::args::{Cli, EXIT_CODES, RecvCli};

/// What a page has besides what clap knows.
struct Page {
    /// `subvol` or `subvol-<subcommand>`.
    name: &'static str,
    /// Paragraphs appended to DESCRIPTION.
    description: &'static [&'static str],
    /// `(what it does, command lines)`.
    examples: &'static [(&'static str, &'static [&'static str])],
    /// SECURITY paragraphs (empty: no section).
    security: &'static [&'static str],
    /// Said before the exit-code list.
    exit: &'static str,
    /// SEE ALSO entries besides `subvol(1)`.
    see_also: &'static [&'static str],
}

const VERIFY_GUARANTEE: &str = "With --key, subvol verify (and subvol recv --verify) accepts a \
stream only if every byte of it is covered by a signature block that verifies against one of the \
listed public keys. The blocks form a chain: each signs the SHA-256 of its segment together with \
the stream's random id, the segment number, the segment's byte and command counts, what follows \
it (more commands, END and the end of input, or END and another stream) and the previous block's \
signature. So a modified, reordered, duplicated, dropped, truncated or appended segment, and a \
segment spliced in from another stream signed by the same key, is rejected (exit status 4), and so \
is a stream without signature blocks.";

const PROVENANCE_NOT_SAFETY: &str = "A valid signature says who produced the stream and that it \
arrived unchanged; it does not make the stream harmless. The receiver confines signed and \
unsigned streams alike.";

const CRC_IS_NOT_A_SIGNATURE: &str = "Without --key, only the stream's well-formedness is checked \
(framing, versions, CRC32C, attribute sizes). A CRC detects accidents, not tampering: anyone can \
make a stream that passes.";

/// Everything a page needs beyond clap's own text, by page name.
const PAGES: &[Page] = &[
    Page {
        name: "subvol",
        description: &[
            "Every subcommand has its own page, subvol-SUBCOMMAND(1). The subvol recv subcommand \
             and the separate subvol-recv binary (a drop-in for btrfs receive) share \
             subvol-recv(1).",
        ],
        examples: &[
            (
                "Receive a kernel send stream, refusing anything that would reach outside the new \
                 subvolume:",
                &["btrfs send /mnt/snaps/today | subvol recv /mnt/backup"],
            ),
            (
                "Make a stream from a plain directory tree (no btrfs needed on the sending side), \
                 sign it, and receive it only if the signature verifies:",
                &[
                    "subvol send /srv/www -f www.stream",
                    "subvol sign --key vendor.key -f www.stream -o www.signed",
                    "subvol recv --verify vendor.key.pub -f www.signed /mnt/pool",
                ],
            ),
            (
                "Check that two trees are identical:",
                &["subvol digest /srv/www", "subvol digest /mnt/pool/www"],
            ),
        ],
        security: &[
            "subvol recv and subvol-recv treat every send stream as hostile input: paths are \
             resolved only beneath the subvolume being received, and the subvolume appears only \
             when complete (see subvol-recv(1)).",
            CRC_IS_NOT_A_SIGNATURE,
            "Signatures (subvol-sign(1), subvol verify --key, subvol recv --verify) establish \
             who made a stream; see subvol-verify(1) for exactly what is checked.",
        ],
        exit: "subvol exits with the first failure's status:",
        // The subcommands' pages are added by `render_page`.
        see_also: &["btrfs-send(8)", "btrfs-receive(8)"],
    },
    Page {
        name: "subvol-dump",
        description: &[],
        examples: &[(
            "Print every stream of a file holding several concatenated streams:",
            &["subvol dump --all -f backups.streams"],
        )],
        security: &[
            "dump only reads and prints: it applies nothing and checks no signature (use \
             subvol verify --key for that). Names are printed escaped as btrfs receive --dump \
             prints them (control characters, spaces and bytes outside printable ASCII as \
             backslash escapes). btrfs-progs 6.2, and so the default text, prints xattr names \
             and values and clone sources raw: a hostile stream can send terminal control \
             sequences through them. --format progs-6.10 (btrfs-progs 6.9.1 and later) and \
             --json escape every name and value.",
        ],
        exit: "Status 3 means the stream is malformed; the commands before the problem have \
               been printed.",
        see_also: &["subvol-verify(1)", "btrfs-receive(8)"],
    },
    Page {
        name: "subvol-verify",
        description: &[],
        examples: &[
            (
                "Check a stream's signatures against two trusted keys (either may have signed):",
                &["subvol verify --key vendor.key.pub --key backup.key.pub -f snap.signed"],
            ),
            (
                "Machine-readable result:",
                &["subvol verify --json -f snap.stream"],
            ),
        ],
        security: &[
            CRC_IS_NOT_A_SIGNATURE,
            VERIFY_GUARANTEE,
            PROVENANCE_NOT_SAFETY,
            "Verifying a file and receiving it afterwards leaves a window in which the file can \
             be replaced. subvol recv --verify checks the very bytes it applies and commits \
             nothing unless the whole stream verified: prefer it to a separate verify step.",
        ],
        exit: "Status 3: the stream is malformed. Status 4: a signature or the signature chain \
               did not verify, or a block names a key that is not listed. Status 1: a --key file \
               is malformed.",
        see_also: &["subvol-sign(1)", "subvol-keygen(1)", "subvol-recv(1)"],
    },
    Page {
        name: "subvol-recv",
        description: &[
            "subvol-recv is the receiver as a binary of its own, a drop-in for btrfs receive: the \
             same options with the same meaning. subvol recv is the same command; this page \
             documents both.",
            "As btrfs receive does, it prints At subvol NAME on standard error and At snapshot \
             NAME on standard output when a subvolume starts. Control characters in names from \
             the stream are printed as \\ooo octal escapes, so that a stream cannot drive the \
             terminal.",
            "All or nothing: the input is one transaction, however many streams it holds \
             (btrfs send A B, send -e). Each subvolume is sealed at its END (received UUID set, \
             read-only) under its staging name, and all of them get their final names only \
             after the whole input was read, applied and (with --verify) verified. A failure \
             anywhere in the input removes every subvolume of it, the earlier complete ones \
             included: a damaged or refused second stream, garbage or a bare stream header \
             after the last END, trailing bytes after a signed stream. A later stream of the \
             input may use an earlier one as its parent or clone source. This differs from \
             btrfs receive, which commits each subvolume at its END and keeps it when a later \
             stream fails; to keep the good ones, receive the streams separately. With -e, \
             nothing after the first END is read.",
        ],
        examples: &[
            (
                "Receive a stream from a file into the btrfs directory /mnt/backup:",
                &["subvol recv -f snap.stream /mnt/backup"],
            ),
            (
                "Receive an incremental stream from another machine (the parent, received \
                 earlier, is found by its received UUID):",
                &["ssh src btrfs send -p /snaps/mon /snaps/tue | subvol-recv /mnt/backup"],
            ),
            (
                "Apply a stream only if a trusted key signed it:",
                &["subvol recv --verify vendor.key.pub -f update.signed /mnt/pool"],
            ),
            (
                "Use it where scripts call btrfs receive:",
                &["btrfs send -e /snaps/a /snaps/b | subvol-recv -e /mnt/backup"],
            ),
        ],
        security: &[
            "Confinement: every path in the stream is resolved beneath the subvolume being \
             received, component by component, without following symbolic links; absolute \
             paths and .. cannot leave it. Nothing outside the new subvolume is created, \
             written, renamed, removed or changed, whatever the stream says; a stream that tries \
             is refused (exit status 5). Data is written only into files checked to be regular \
             files. A clone may read only from the subvolume being received, its parent, an \
             earlier subvolume of the same input, or a read-only subvolume on DEST's file system \
             whose received UUID the stream names (data received earlier from the same sender, \
             as btrfs receive requires); one found only by its own UUID is refused (exit status \
             5) unless --clone-from-any is given. The source path is resolved beneath that \
             subvolume. Staging subvolumes are never parents or clone sources. Fallocate modes are whitelisted and decoded (compressed) extents \
             are capped, so no allocation is sized by an unchecked number from the stream.",
            "Atomicity: each subvolume is received under a hidden staging name \
             (.subvol-recv-staging.PID.NONCE) in DEST, guarded by a lock file beside it \
             (NAME.lock, locked before it appears), and gets its final name only after the \
             whole input succeeded, once its received UUID is set and it is read-only. An \
             existing subvolume is never overwritten. On any error, or on SIGINT or SIGTERM \
             (exit status 130), the staging subvolumes are deleted. After kill -9 or a power \
             loss, the next receive into the same DEST deletes staging subvolumes (sealed ones \
             included) whose lock no receive holds any more, and says so; receives running at \
             the same time into the same DEST never touch each other's. Only a kill during the \
             final renames of a multi-stream input can leave some of its subvolumes committed \
             and not others.",
            "With --verify, nothing of a segment (at most 8 MiB) is applied before its \
             signature verified, and nothing is committed before the final signature block of \
             the whole input verified and the input ended right after it; otherwise nothing is \
             left behind (exit status 4, or 3 for a malformed stream). What the signature check \
             covers is described in subvol-verify(1).",
            PROVENANCE_NOT_SAFETY,
            "Receiving normally runs as root, like btrfs receive, and the received tree may \
             contain setuid-root files and file capabilities exactly as they were sent: receive \
             streams only from sources you trust, or require signatures with --verify.",
        ],
        exit: "With any status but 0, no new subvolume is left in DEST.",
        see_also: &[
            "subvol-verify(1)",
            "subvol-dump(1)",
            "btrfs-receive(8)",
            "btrfs-send(8)",
        ],
    },
    Page {
        name: "subvol-send",
        description: &[],
        examples: &[(
            "Send a plain directory tree straight into a receiver on another machine:",
            &["subvol send /srv/www | ssh backup subvol-recv /mnt/backup"],
        )],
        security: &[
            "The stream carries owners, modes (setuid and setgid included), extended attributes \
             (security.capability included), device numbers and file contents as found. Send a \
             tree that nobody can change meanwhile (a read-only snapshot): a file that changes \
             size or modification time while it is read makes send fail rather than produce a \
             stream mixing two states of it, and an unreadable entry is an error, not a silent \
             omission.",
            "A stream is neither encrypted nor authenticated: sign it (--sign, or \
             subvol-sign(1)) when the receiver must know that it came from you.",
        ],
        exit: "Status 6: a file could not be read or changed while it was read.",
        see_also: &["subvol-recv(1)", "subvol-sign(1)", "btrfs-send(8)"],
    },
    Page {
        name: "subvol-sign",
        description: &[],
        examples: &[],
        security: &[
            "The secret key file must not be readable by group or others; sign refuses it \
             otherwise. Keep it on the machine that signs.",
            "Stock btrfs receive ignores the signature blocks and checks nothing: the guarantees \
             hold only where the receiver runs subvol recv --verify (or subvol verify --key on \
             the same bytes).",
            VERIFY_GUARANTEE,
            "Signing does not encrypt: anyone who can read the stream can read the files in it.",
        ],
        exit: "Status 3: the input is not a valid send stream. Status 1: the key file is not \
               acceptable (malformed, or readable by group or others); status 6: it cannot be \
               read.",
        see_also: &["subvol-keygen(1)", "subvol-verify(1)", "subvol-recv(1)"],
    },
    Page {
        name: "subvol-keygen",
        description: &[],
        examples: &[],
        security: &[
            "The secret key is created with mode 0600 and never replaces an existing file. Give \
             receivers only PATH.pub, over a channel you trust, and let them compare the key id.",
            "Anyone holding the secret key can sign streams that every receiver trusting \
             PATH.pub will apply: keep it off the machines that only receive.",
        ],
        exit: "Status 1: a key file exists already. Status 6: it cannot be written.",
        see_also: &["subvol-sign(1)", "subvol-verify(1)"],
    },
    Page {
        name: "subvol-trust",
        description: &[
            "Trust metadata after The Update Framework, on plain files: REPO/root/N.json (root \
             keys, offline, k of n), REPO/release/SERIAL.json (written by subvol publish with \
             the release keys), REPO/timestamp.json (short-lived, the online timestamp key) and \
             the stream keys that sign stream files. See docs/mirrors.md.",
        ],
        examples: &[(
            "Set a repository up, publish, then keep the timestamp fresh from cron:",
            &[
                "subvol trust init --repo /srv/repo --name example-os --root-key r1.key.pub --root-key r2.key.pub --root-threshold 2 --release-key rel.key.pub --timestamp-key ts.key.pub --stream-key stream.key.pub --sign r1.key --sign r2.key",
                "subvol publish --repo /srv/repo --key stream.key --release-key rel.key --timestamp-key ts.key ./build",
                "subvol trust timestamp --repo /srv/repo --key ts.key --valid-for 1d",
            ],
        )],
        security: &[
            "Keep root keys offline and on separate machines: a threshold of them can replace \
             every other key. The timestamp key can only delay or freeze updates, never publish \
             software: it is the one meant for an online host.",
        ],
        exit: "Status 1: an argument or the repository's files are not usable. Status 4: a key \
               file is not acceptable (a secret key readable by others, a public key given to \
               sign). Status 6: a file cannot be read or written.",
        see_also: &["subvol-publish(1)", "subvol-pull(1)", "subvol-keygen(1)"],
    },
    Page {
        name: "subvol-trust-init",
        description: &[],
        examples: &[],
        security: &[
            "The root written is what clients trust on first contact: hand it to them over a \
             channel you trust (an image, a package), not only through the mirror.",
        ],
        exit: "Status 1: a root exists already, or a role has no key.",
        see_also: &["subvol-trust-rotate(1)", "subvol-pull(1)"],
    },
    Page {
        name: "subvol-trust-rotate",
        description: &[],
        examples: &[],
        security: &[
            "A new root counts only when a threshold of the old root keys and of its own root \
             keys signed it; keys no role names any more are revoked for every pool that walks \
             to it.",
        ],
        exit: "Status 1: the repository has no root, or the new one is inconsistent.",
        see_also: &["subvol-trust-sign(1)", "subvol-trust-timestamp(1)"],
    },
    Page {
        name: "subvol-trust-sign",
        description: &[],
        examples: &[(
            "Add a second root signature on an offline machine:",
            &["subvol trust sign root/2.json --key /media/usb/root2.key"],
        )],
        security: &[],
        exit: "Status 1: the file is not metadata or a key is not usable.",
        see_also: &["subvol-trust-rotate(1)"],
    },
    Page {
        name: "subvol-trust-timestamp",
        description: &[],
        examples: &[],
        security: &[
            "Pools refuse the repository once the timestamp expires: run it more often than \
             --valid-for.",
        ],
        exit: "Status 1: not a timestamp key, or the release lacks its threshold of signatures.",
        see_also: &["subvol-trust(1)", "subvol-publish(1)"],
    },
    Page {
        name: "subvol-digest",
        description: &[
            "One line per entry (the root directory included, as .), sorted by path bytes: type, \
             mode including setuid/setgid/sticky, owner, size, SHA-256 and data ranges of \
             regular files (holes are visible), symlink targets, device numbers, every extended \
             attribute, hard-link groups and modification times. Directory sizes and access \
             times are left out. Two trees are equal when their digests are.",
        ],
        examples: &[(
            "Check that a received subvolume reproduces the tree it was sent from:",
            &[
                "subvol send /srv/www | subvol recv /mnt/pool",
                "subvol digest /srv/www",
                "subvol digest /mnt/pool/www",
            ],
        )],
        security: &[
            "digest does not follow symbolic links (it records their targets) and opens files \
             with O_NOATIME. A digest compares trees; it is not a signature.",
        ],
        exit: "",
        see_also: &["subvol-send(1)", "subvol-recv(1)"],
    },
    Page {
        name: "subvol-publish",
        description: &[],
        examples: &[],
        security: &[
            "Everything a client trusts is signed with the secret key: the index (which names \
             every version, its files and their SHA-256) and every stream. Keep the key on the \
             publishing machine; the repository itself can be served by any untrusted static \
             web server or mirror.",
            "The index expires (--valid-for, 30 days by default) so that a mirror cannot keep \
             clients on an old version forever by replaying an old index: publish (without \
             SOURCE) before it expires, or clients stop pulling. Its serial grows with every \
             publish, and clients refuse a serial older than one they saw.",
            "The tree store (--trees) keeps every published tree so that later deltas can be \
             made from it; it holds the full contents of every version: protect it like the \
             sources.",
        ],
        exit: "Status 1: the secret key is not acceptable. Status 6: the repository or the tree \
               store cannot be written.",
        see_also: &["subvol-pull(1)", "subvol-keygen(1)", "subvol-send(1)"],
    },
    Page {
        name: "subvol-pull",
        description: &[],
        examples: &[],
        security: &[
            "With --root (or the root the pool pinned), the trust metadata is verified instead of \
             the index: root versions walked one by one (a threshold of old and new root keys \
             each), the timestamp (at most 8 KiB, unexpired, not older than seen), then the \
             release file with exactly the SHA-256 and size it names, for the pinned repository; \
             streams must be signed by the root's stream keys (see docs/mirrors.md).",
            "Nothing from the mirror is trusted before it verified. The index must be signed by \
             a --verify key (or a key of the remote named as SOURCE), unexpired, and not older \
             (by serial) than one this pool already saw, so a mirror can neither forge versions \
             nor roll a pool back nor replay an expired index. With several mirrors (a remote's, \
             or --mirror), the newest valid index of all of them is used, so a mirror serving an \
             old index cannot hold a pool back while another serves the new one. Every \
             downloaded file must have the SHA-256 that the \
             signed index names, and every stream is received by the signature-verifying \
             receiver (as subvol recv --verify does): a version appears as POOL/VERSION only \
             complete and verified, and the hardened receiver's confinement applies (see \
             subvol-recv(1)).",
            "HTTP without TLS is therefore safe against tampering, but not private: an observer \
             sees which versions are fetched. A mirror that withholds new versions is noticed \
             only when the index expires, unless another mirror serves the newer index.",
            "--keep deletes only versions this pool pulled, never the target and never other \
             subvolumes.",
        ],
        exit: "Status 4: the index or a stream failed verification (or expired, or rolled \
               back). Status 6: a download or the pool failed.",
        see_also: &["subvol-publish(1)", "subvol-pool(1)", "subvol-recv(1)"],
    },
    Page {
        name: "subvol-push",
        description: &[],
        examples: &[(
            "Publish a version, then mirror the repository to a registry's stable channel:",
            &[
                "subvol publish --repo /srv/repo --key vendor.key /build/rootfs --version 2026.12",
                "subvol push /srv/repo oci://registry.example/vendor/os:stable",
            ],
        )],
        security: &[
            "Credentials are read only from the registry auth files (never from the command \
             line, so they do not show in process lists or shell history), and never printed. \
             The registry is not trusted by pulls: they verify the signed index and every blob.",
        ],
        exit: "Status 1: authentication failed, or serial-N already names another manifest. \
               Status 6: the repository cannot be read, or the network failed.",
        see_also: &["subvol-publish(1)", "subvol-pull(1)"],
    },
    Page {
        name: "subvol-pool",
        description: &[
            "A pool is a directory on btrfs that holds received versions as read-only \
             subvolumes; subvol pull fills it.",
        ],
        examples: &[(
            "Create a pool backed by an image file, then pull into it:",
            &[
                "subvol pool init /var/lib/pool",
                "subvol pull https://mirror.example/repo --into /var/lib/pool --verify vendor.key.pub",
            ],
        )],
        security: &[],
        exit: "",
        see_also: &["subvol-pull(1)", "subvol-list(1)"],
    },
    Page {
        name: "subvol-remote",
        description: &[
            "A remote is a name for the mirrors of one repository and the trust to pull from \
             them with, as OSTree and Flatpak keep them: DIR/remotes.d/NAME.conf (URL=, VERIFY= \
             and ROOT= lines) with the key and root files copied into DIR/remotes.d/NAME.d/. \
             DIR is /etc/subvol unless --config-dir or SUBVOL_CONFIG_DIR says otherwise.",
        ],
        examples: &[(
            "Add a remote with two mirrors, then pull from it:",
            &[
                "subvol remote add vendor https://m1.example/repo https://m2.example/repo --verify vendor.key.pub",
                "subvol pull vendor --into /var/lib/pool",
            ],
        )],
        security: &[
            "Whoever can write the configuration directory decides which keys a pull trusts: \
             keep it writable by root only. Key and root files are copied at add time, so a \
             remote never depends on a path that may later change.",
        ],
        exit: "Status 1: an invalid name or URL, a remote that exists (add) or does not (show, \
               remove), a malformed remote file. Status 4: a key file that holds no usable key.",
        see_also: &["subvol-pull(1)"],
    },
    Page {
        name: "subvol-remote-add",
        description: &[],
        examples: &[],
        security: &[],
        exit: "Status 1: an invalid name or URL, the remote exists (without --force), a root \
               file that is not JSON. Status 4: a key file that holds no usable key.",
        see_also: &["subvol-remote(1)", "subvol-pull(1)"],
    },
    Page {
        name: "subvol-remote-list",
        description: &[],
        examples: &[("Every remote as JSON:", &["subvol remote list --json"])],
        security: &[],
        exit: "Status 1: a malformed remote file (named, with its line).",
        see_also: &["subvol-remote(1)"],
    },
    Page {
        name: "subvol-remote-show",
        description: &[],
        examples: &[(
            "One remote's mirrors and keys:",
            &["subvol remote show vendor"],
        )],
        security: &[],
        exit: "Status 1: no such remote, or a malformed remote file.",
        see_also: &["subvol-remote(1)"],
    },
    Page {
        name: "subvol-remote-remove",
        description: &[],
        examples: &[(
            "Forget a remote and its stored keys:",
            &["subvol remote remove vendor"],
        )],
        security: &[],
        exit: "Status 1: no such remote.",
        see_also: &["subvol-remote(1)"],
    },
    Page {
        name: "subvol-pool-init",
        description: &[],
        examples: &[],
        security: &[
            "Needs root when it creates and mounts an image (loop device). Anyone who can write \
             the image file can change the pool's contents behind the file system's back: keep \
             it readable and writable by root only.",
        ],
        exit: "Status 6: the image cannot be created or mounted.",
        see_also: &["subvol-pull(1)"],
    },
    Page {
        name: "subvol-list",
        description: &[],
        examples: &[
            ("List a pool's versions:", &["subvol list /var/lib/pool"]),
            (
                "The names of read-only subvolumes, with jq:",
                &["subvol list --json /mnt/pool | jq -r '.[] | select(.readonly) | .name'"],
            ),
        ],
        security: &[],
        exit: "",
        see_also: &["subvol-show(1)", "btrfs-subvolume(8)"],
    },
    Page {
        name: "subvol-show",
        description: &[],
        examples: &[(
            "Show a received subvolume's UUIDs (its received UUID is what incremental streams \
             are matched against):",
            &["subvol show /var/lib/pool/1.1"],
        )],
        security: &[],
        exit: "",
        see_also: &["subvol-list(1)", "btrfs-subvolume(8)"],
    },
    Page {
        name: "subvol-snapshot",
        description: &[],
        examples: &[(
            "Take a read-only snapshot to send from:",
            &[
                "subvol snapshot -r /mnt/data /mnt/snaps/today",
                "subvol send /mnt/snaps/today -p /mnt/snaps/yesterday -f today.stream",
            ],
        )],
        security: &[],
        exit: "",
        see_also: &["subvol-send(1)", "btrfs-subvolume(8)"],
    },
    Page {
        name: "subvol-delete",
        description: &[],
        examples: &[(
            "Delete two old snapshots:",
            &["subvol delete /mnt/snaps/2025-01-01 /mnt/snaps/2025-01-02"],
        )],
        security: &[
            "Deletion is immediate and cannot be undone; read-only subvolumes are deleted too.",
        ],
        exit: "",
        see_also: &["subvol-list(1)", "btrfs-subvolume(8)"],
    },
    Page {
        name: "subvol-deploy",
        description: &[],
        examples: &[],
        security: &[
            "The switch is one rename(2) of the symbolic link PATH: every path lookup through \
             PATH reaches the old deployment or the new one, never a mix. A program that reads \
             several files and needs them from one version opens PATH once and reads relative \
             to that directory.",
            "Hooks run as the calling user with sh -c; the command line comes from the caller, \
             never from a repository or a pool.",
            "subvol pull --keep never deletes the versions the current and the previous \
             deployment came from (POOL/.subvol/pins/).",
        ],
        exit: "Status 1: the version is not in the pool, PATH exists and is no symbolic link, \
               or a hook failed (a failed --pre hook changes nothing). Status 6: a snapshot, \
               the switch or the state file failed.",
        see_also: &["subvol-rollback(1)", "subvol-status(1)", "subvol-pull(1)"],
    },
    Page {
        name: "subvol-rollback",
        description: &[],
        examples: &[],
        security: &[],
        exit: "Status 1: nothing deployed, no previous deployment, or a hook failed.",
        see_also: &["subvol-deploy(1)", "subvol-status(1)"],
    },
    Page {
        name: "subvol-status",
        description: &[],
        examples: &[],
        security: &[],
        exit: "",
        see_also: &["subvol-deploy(1)", "subvol-pull(1)"],
    },
];

/// No `help` subcommand at any level (it gets no page and is no entry of SUBCOMMANDS).
fn without_help(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help)
}

/// The top-level command as the pages see it: built (so that subcommands know their
/// `subvol <sub>` bin names) and without `help` subcommands.
fn cli() -> clap::Command {
    let mut cmd = without_help(Cli::command());
    cmd.build();
    cmd
}

/// Every command that gets a page, with its page name: `subvol`, then `subvol-<sub>` and
/// `subvol-<sub>-<subsub>` for nested subcommands, depth first.
fn page_commands() -> Vec<(String, clap::Command)> {
    fn walk(name: String, cmd: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        out.push((name.clone(), cmd.clone()));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(format!("{name}-{}", sub.get_name()), sub, out);
        }
    }
    let mut out = Vec::new();
    walk("subvol".to_string(), &cli(), &mut out);
    out
}

fn recv_cli() -> clap::Command {
    let mut cmd = RecvCli::command();
    cmd.build();
    cmd
}

fn page(name: &str) -> &'static Page {
    PAGES
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no entry for {name} in PAGES (tests/man.rs): add one"))
}

/// The roff that `Roff::render` puts before every document.
fn preamble() -> String {
    Roff::new().render()
}

/// One of clap_mangen's section renderers, as text without the preamble.
fn section(f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
    let mut buf = Vec::new();
    f(&mut buf).expect("render to memory");
    let s = String::from_utf8(buf).expect("roff is UTF-8");
    s.strip_prefix(&preamble())
        .expect("clap_mangen section starts with the roff preamble")
        .to_string()
}

/// A paragraph of the table, reflowed by roff.
fn para(r: &mut Roff, text: &str) {
    r.control("PP", []);
    r.text([roman(text.split_whitespace().collect::<Vec<_>>().join(" "))]);
}

/// Command lines, set unfilled and indented.
fn commands(r: &mut Roff, lines: &[&str]) {
    r.control("RS", ["4"]);
    r.control("nf", []);
    for l in lines {
        r.text([bold(*l)]);
    }
    r.control("fi", []);
    r.control("RE", []);
}

/// One example from an `Examples:` block: an optional sentence and its command lines.
type Example = (Option<String>, Vec<String>);

/// `after_help` split into its `Examples:` block, its `Exit status:` block (dropped: EXIT STATUS
/// comes from EXIT_CODES) and the other paragraphs. An `Examples:` block is either command lines
/// only, or sentences with the command lines indented below each.
fn split_after_help(cmd: &clap::Command) -> (Vec<Example>, Vec<Vec<String>>) {
    let Some(text) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) else {
        return (Vec::new(), Vec::new());
    };
    let text = text.to_string();
    let (mut examples, mut other) = (Vec::new(), Vec::new());
    for block in text.split("\n\n") {
        let mut lines = block.lines();
        let Some(first) = lines.next() else { continue };
        match first.trim() {
            "Examples:" => {
                let lines: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
                let indent = |l: &str| l.len() - l.trim_start().len();
                let base = lines.iter().map(|l| indent(l)).min().unwrap_or(0);
                let nested = lines.iter().any(|l| indent(l) > base);
                let mut current: Option<Example> = None;
                for l in lines {
                    if nested && indent(l) == base {
                        examples.extend(current.take());
                        current = Some((Some(l.trim().to_string()), Vec::new()));
                    } else {
                        current
                            .get_or_insert((None, Vec::new()))
                            .1
                            .push(l.trim().to_string());
                    }
                }
                examples.extend(current);
            }
            "Exit status:" => {}
            _ => other.push(block.lines().map(str::to_string).collect()),
        }
    }
    (examples, other)
}

/// `(code, meaning)` from EXIT_CODES.
fn exit_codes() -> Vec<(String, String)> {
    EXIT_CODES
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (code, text) = l.split_once(char::is_whitespace)?;
            code.parse::<u8>().ok()?;
            Some((code.to_string(), text.trim().to_string()))
        })
        .collect()
}

/// The page for `cmd` (already built). `also` is a second command rendered into SYNOPSIS (the
/// `subvol recv` subcommand on the `subvol-recv` page).
fn render_page(name: &str, cmd: clap::Command, also: Option<clap::Command>) -> String {
    let p = page(name);
    let (after_examples, notes) = split_after_help(&cmd);
    let man = Man::new(cmd.clone())
        .title(name.to_uppercase())
        .manual("subvol manual");
    let mut out = preamble();
    out += &section(|w| man.render_title(w));
    out += &section(|w| man.render_name_section(w));
    out += &section(|w| man.render_synopsis_section(w));
    if let Some(also) = also {
        let s = section(|w| Man::new(also).render_synopsis_section(w));
        out += ".br\n";
        out += s.strip_prefix(".SH SYNOPSIS\n").expect("synopsis heading");
    }
    out += &section(|w| man.render_description_section(w));
    let mut r = Roff::new();
    // Table paragraphs that the CLI's own long help already says (once it carries them) are
    // left out rather than printed twice.
    let words = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let clap_text = words(
        &cmd.get_long_about()
            .or_else(|| cmd.get_about())
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    for d in p.description {
        if !clap_text.contains(&words(d)) {
            para(&mut r, d);
        }
    }
    out += &r.to_roff_body();
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        out += &section(|w| man.render_options_section(w));
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        out += &section(|w| man.render_subcommands_section(w));
    }

    let mut r = Roff::new();
    assert!(
        !after_examples.is_empty() || !p.examples.is_empty(),
        "{name}: no examples in its after_help nor in PAGES (tests/man.rs)"
    );
    r.control("SH", ["EXAMPLES"]);
    for (what, lines) in &after_examples {
        match what {
            Some(what) => para(&mut r, what),
            None => {
                r.control("PP", []);
            }
        }
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        commands(&mut r, &lines);
    }
    for (what, lines) in p.examples {
        para(&mut r, what);
        commands(&mut r, lines);
    }
    if !notes.is_empty() {
        r.control("SH", ["NOTES"]);
        for block in &notes {
            // Indented lines are laid out by hand (tables, key formats): keep them as they are.
            if block.iter().any(|l| l.starts_with(' ')) {
                r.control("PP", []);
                r.control("nf", []);
                for l in block {
                    r.text([roman(l.as_str())]);
                }
                r.control("fi", []);
            } else {
                para(&mut r, &block.join(" "));
            }
        }
    }
    if !p.security.is_empty() {
        r.control("SH", ["SECURITY"]);
        for s in p.security {
            para(&mut r, s);
        }
    }
    r.control("SH", ["EXIT STATUS"]);
    if !p.exit.is_empty() {
        para(&mut r, p.exit);
    }
    for (code, text) in exit_codes() {
        r.control("TP", []);
        r.text([bold(code)]);
        r.text([roman(text)]);
    }
    r.control("SH", ["SEE ALSO"]);
    let mut see: Vec<String> = Vec::new();
    if name == "subvol" {
        see.extend(
            page_commands()
                .into_iter()
                .skip(1)
                .map(|(n, _)| format!("{n}(1)")),
        );
    } else {
        see.push("subvol(1)".into());
        // A nested subcommand's page names its parent's.
        if let Some((parent, _)) = name.rsplit_once('-').filter(|(p, _)| p.contains('-')) {
            see.push(format!("{parent}(1)"));
        }
    }
    see.extend(p.see_also.iter().map(|s| s.to_string()));
    let mut line = Vec::new();
    for (i, s) in see.iter().enumerate() {
        let (page_name, sect) = s
            .split_once('(')
            .expect("see_also entries look like name(N)");
        line.push(bold(page_name));
        line.push(roman(format!(
            "({sect}{}",
            if i + 1 < see.len() { ", " } else { "" }
        )));
    }
    r.text(line);
    out += &r.to_roff_body();
    out += &section(|w| man.render_version_section(w));
    out
}

/// Roff without the preamble (the page has it once, at the top).
trait Body {
    fn to_roff_body(&self) -> String;
}
impl Body for Roff {
    fn to_roff_body(&self) -> String {
        self.render()
            .strip_prefix(&preamble())
            .expect("preamble")
            .to_string()
    }
}

/// Every generated file, by path relative to the repository root.
fn generate() -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    for (name, cmd) in page_commands() {
        let text = if name == "subvol-recv" {
            // One page for `subvol-recv` and `subvol recv` (see the module doc).
            render_page(&name, recv_cli(), Some(cmd))
        } else {
            render_page(&name, cmd, None)
        };
        files.insert(PathBuf::from(format!("man/{name}.1")), text);
    }
    for (bin, mut cmd) in [
        ("subvol", Cli::command()),
        ("subvol-recv", RecvCli::command()),
    ] {
        for (shell, file) in [
            (Shell::Bash, format!("{bin}.bash")),
            (Shell::Zsh, format!("_{bin}")),
            (Shell::Fish, format!("{bin}.fish")),
        ] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, bin, &mut buf);
            files.insert(
                PathBuf::from("completions").join(file),
                String::from_utf8(buf).expect("completion script is UTF-8"),
            );
        }
    }
    files
}

fn repo() -> &'static Path {
    crate::support::repo_root()
}

/// Files now in the generated directories (`man/`, `completions/`), relative to the repository.
fn committed() -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in ["man", "completions"] {
        let Ok(entries) = std::fs::read_dir(repo().join(dir)) else {
            continue;
        };
        for e in entries {
            let e = e.expect("read_dir");
            if e.file_type().expect("file type").is_file() {
                found.push(Path::new(dir).join(e.file_name()));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn pages_and_completions_match_the_cli() {
    let files = generate();
    if std::env::var_os("UPDATE_MAN").is_some_and(|v| v != "0") {
        for (rel, text) in &files {
            let path = repo().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
                std::fs::write(&path, text).expect("write generated file");
                eprintln!("updated {}", rel.display());
            }
        }
        for rel in committed() {
            if !files.contains_key(&rel) {
                std::fs::remove_file(repo().join(&rel)).expect("remove stale file");
                eprintln!("removed {}", rel.display());
            }
        }
        return;
    }
    let mut problems = Vec::new();
    for (rel, text) in &files {
        match std::fs::read_to_string(repo().join(rel)) {
            Ok(old) if &old == text => {}
            Ok(_) => problems.push(format!(
                "{} differs from what the CLI generates",
                rel.display()
            )),
            Err(e) => problems.push(format!("{}: {e}", rel.display())),
        }
    }
    for rel in committed() {
        if !files.contains_key(&rel) {
            problems.push(format!("{} is not generated any more", rel.display()));
        }
    }
    assert!(
        problems.is_empty(),
        "man pages / completions are out of date:\n  {}\nRegenerate them with \
         `UPDATE_MAN=1 cargo test --test integration man::` and commit the result.",
        problems.join("\n  ")
    );
}

#[test]
fn every_subcommand_has_a_documented_page() {
    let names: Vec<String> = page_commands().into_iter().map(|(n, _)| n).collect();
    for n in &names {
        page(n); // panics with a hint when missing
    }
    for p in PAGES {
        assert!(
            names.iter().any(|n| n == p.name),
            "PAGES has an entry for {}, which is no subcommand any more",
            p.name
        );
    }
    let files = generate();
    for n in &names {
        let text = &files[&PathBuf::from(format!("man/{n}.1"))];
        for heading in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH EXAMPLES",
            ".SH \"EXIT STATUS\"",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(text.contains(heading), "{n}.1 has no {heading}");
        }
        for (code, _) in exit_codes() {
            assert!(
                text.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                "{n}.1 does not list exit status {code}"
            );
        }
    }
    // The pages where a user's safety depends on knowing the guarantees.
    for n in [
        "subvol",
        "subvol-recv",
        "subvol-verify",
        "subvol-sign",
        "subvol-keygen",
        "subvol-send",
        "subvol-publish",
        "subvol-pull",
    ] {
        assert!(
            files[&PathBuf::from(format!("man/{n}.1"))].contains(".SH SECURITY"),
            "{n}.1 has no SECURITY section"
        );
    }
    assert!(exit_codes().len() >= 7, "EXIT_CODES no longer parses");
}

/// `subvol recv` and `subvol-recv` share a page, which is only right while they take the same
/// arguments.
#[test]
fn recv_subcommand_and_binary_take_the_same_arguments() {
    let describe = |cmd: &clap::Command| {
        let mut v: Vec<String> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "version" && a.get_id() != "help")
            .map(|a| {
                format!(
                    "{} {:?} {:?} {:?} {:?}",
                    a.get_id(),
                    a.get_short(),
                    a.get_long(),
                    a.get_value_names(),
                    a.get_help().map(ToString::to_string)
                )
            })
            .collect();
        v.sort();
        v
    };
    let top = cli();
    let sub = top.find_subcommand("recv").expect("subvol recv exists");
    assert_eq!(describe(sub), describe(&recv_cli()));
    let text = &generate()[&PathBuf::from("man/subvol-recv.1")];
    assert!(text.contains("\\fBsubvol\\-recv\\fR"), "binary synopsis");
    assert!(text.contains("\\fBsubvol recv\\fR"), "subcommand synopsis");
}

/// The pages are valid roff: groff renders them without a warning (when groff is installed).
#[test]
fn pages_render_without_warnings() {
    let Some(groff) = ["/usr/bin/groff", "/bin/groff"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        // CI installs groff-base (scripts/setup.sh): there a missing groff is a failure.
        assert!(
            !crate::support::btrfs_fixture::in_ci(),
            "groff is not installed (CI=true)"
        );
        eprintln!("SKIP man::pages_render_without_warnings: groff not installed");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    for (rel, text) in generate() {
        if rel.extension().is_none_or(|e| e != "1") {
            continue;
        }
        let path = dir.path().join(rel.file_name().expect("name"));
        std::fs::write(&path, &text).expect("write page");
        let out = Command::new(groff)
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("run groff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "groff warns about {}:\n{stderr}",
            rel.display()
        );
    }
}
