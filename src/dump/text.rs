//! `btrfs receive --dump` text, byte for byte as btrfs-progs v6.2 prints it, or (with
//! [`TextFormat::Progs6_10`]) as btrfs-progs 6.9.1 and later do.
//!
//! Quirks kept on purpose (they are what scripts parsing progs' output expect): titles padded to
//! 16 columns, paths escaped and padded to 32 columns (at least one space), `chown` printing gid
//! before uid, `fileattr=0x<decimal>`, times in the local time zone (honours `TZ`) without
//! nanoseconds. v6.2 also prints `, ` separators in `encoded_write`, and xattr names, values and
//! clone sources raw (C strings: cut at the first NUL); 6.9.1 escapes those three (the value over
//! its whole length, NULs included), drops the `data=` before the value and the commas.

use super::escape_into;
use crate::Error;
use crate::pipeline::{CommandSink, Position};
use crate::stream::{Command, Op, Timespec};
use std::io::Write;
use std::ops::ControlFlow;

const PATH_MAX: usize = 4096;

/// Which btrfs-progs release's `--dump` text to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextFormat {
    /// btrfs-progs 6.2 (Debian 12) up to 6.9: xattr names and values and clone sources raw.
    #[default]
    Progs6_2,
    /// btrfs-progs 6.9.1, 6.10 and later: those escaped too, no `data=`, no commas in
    /// `encoded_write`.
    Progs6_10,
}

/// Prints the progs `--dump` text.
pub struct TextDump<W: Write> {
    out: W,
    line: Vec<u8>,
    full_subvol_path: Vec<u8>,
    tz: jiff::tz::TimeZone,
    format: TextFormat,
}

/// Proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// A C string view: progs copies string attributes into NUL-terminated buffers.
fn cstr(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// progs' `path_cat_out`: one trailing `/` dropped from each part, joined with `/`.
fn path_cat(p1: &[u8], p2: &[u8]) -> Option<Vec<u8>> {
    let (p1, p2) = (cstr(p1), cstr(p2));
    if p1.len() + p2.len() + 2 >= PATH_MAX {
        return None;
    }
    let p1 = p1.strip_suffix(b"/").unwrap_or(p1);
    let p2 = p2.strip_suffix(b"/").unwrap_or(p2);
    let mut out = Vec::with_capacity(p1.len() + p2.len() + 1);
    out.extend_from_slice(p1);
    out.push(b'/');
    out.extend_from_slice(p2);
    Some(out)
}

impl<W: Write> TextDump<W> {
    /// A dump to `out`, with times in the system (or `TZ`) time zone.
    pub fn new(out: W) -> TextDump<W> {
        TextDump {
            out,
            line: Vec::with_capacity(512),
            full_subvol_path: b".".to_vec(),
            tz: jiff::tz::TimeZone::system(),
            format: TextFormat::Progs6_2,
        }
    }

    /// The same dump in another release's text.
    #[must_use]
    pub fn format(self, format: TextFormat) -> TextDump<W> {
        TextDump { format, ..self }
    }

    /// A dump with an explicit time zone (tests).
    pub fn with_time_zone(out: W, tz: jiff::tz::TimeZone) -> TextDump<W> {
        TextDump {
            tz,
            ..TextDump::new(out)
        }
    }

    /// `strftime("%FT%T%z", localtime_r(sec))` as glibc prints it. None where `localtime_r`
    /// fails (the year does not fit `tm_year`).
    fn time(&self, t: Timespec) -> Option<String> {
        let off = i128::from(self.utc_offset(t.sec));
        let local = i128::from(t.sec) + off;
        let days = i64::try_from(local.div_euclid(86_400)).ok()?;
        let secs = local.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        // glibc keeps `tm_year = year - 1900` in an int and prints `tm_year + 1900` in int
        // arithmetic (it wraps for the largest years), without zero padding.
        let tm_year = i32::try_from(year - 1900).ok()?;
        let year = tm_year.wrapping_add(1900);
        let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
        Some(format!(
            "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}{sign}{:02}{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            off / 3600,
            (off / 60) % 60
        ))
    }

    /// The zone's UTC offset in seconds at `sec`. Outside the range jiff handles (years -9999 to
    /// 9999) this uses the zone's rule for the same point of the 400-year Gregorian cycle (what
    /// glibc's POSIX-TZ footer rule gives) in the future, and the earliest offset in the past.
    fn utc_offset(&self, sec: i64) -> i32 {
        // 400 Gregorian years, exactly.
        const CYCLE: i64 = 146_097 * 86_400;
        // 9000-01-01T00:00:00Z: the cycle starting there lies inside jiff's range.
        const BASE: i64 = 221_845_392_000;
        let max = jiff::Timestamp::MAX.as_second();
        let sec = if sec > max - 2 * 86_400 {
            BASE + (sec - BASE).rem_euclid(CYCLE)
        } else {
            sec.max(jiff::Timestamp::MIN.as_second() + 2 * 86_400)
        };
        jiff::Timestamp::from_second(sec).map_or(0, |ts| self.tz.to_offset(ts).seconds())
    }

    /// Writes `title`, the escaped path, and (if `fields` is Some) padding and the fields.
    fn line(&mut self, title: &str, path: &[u8], fields: Option<&[u8]>) {
        self.line.clear();
        self.line.extend_from_slice(title.as_bytes());
        for _ in title.len()..16 {
            self.line.push(b' ');
        }
        let mut n = escape_into(&mut self.line, path);
        if let Some(f) = fields {
            loop {
                self.line.push(b' ');
                n += 1;
                if n >= 32 {
                    break;
                }
            }
            self.line.extend_from_slice(f);
        }
        self.line.push(b'\n');
    }
}

impl<W: Write> CommandSink for TextDump<W> {
    fn header(&mut self, _version: u32, _: Position) -> Result<(), Error> {
        Ok(())
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        self.print(c, at.index)?;
        Ok(ControlFlow::Continue(()))
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(Error::output)
    }

    fn abort(&mut self) {
        // Text printed before an error is kept.
        let _ = self.out.flush();
    }
}

impl<W: Write> TextDump<W> {
    /// Prints one command's line.
    fn print(&mut self, c: &Command, index: u64) -> Result<(), Error> {
        let fail = |reason: String| Error::Dump {
            index,
            cmd: c.name(),
            reason,
        };
        let op = c.op().map_err(|e| fail(e.to_string()))?;
        let in_subvol = |p: &[u8], s: &Self| {
            path_cat(&s.full_subvol_path, p)
                .ok_or_else(|| fail(format!("path invalid: {}", String::from_utf8_lossy(p))))
        };
        let mut f: Vec<u8> = Vec::with_capacity(128);
        let esc = |f: &mut Vec<u8>, b: &[u8]| {
            escape_into(f, cstr(b));
        };
        let new_text = self.format == TextFormat::Progs6_10;
        let (title, path): (&str, Vec<u8>) = match op {
            Op::Subvol {
                path,
                uuid,
                ctransid,
            }
            | Op::Snapshot {
                path,
                uuid,
                ctransid,
                ..
            } => {
                self.full_subvol_path = path_cat(b".", path).ok_or_else(|| {
                    fail(format!("path invalid: {}", String::from_utf8_lossy(path)))
                })?;
                write!(f, "uuid={uuid} transid={ctransid}").map_err(Error::output)?;
                let title = if let Op::Snapshot {
                    clone_uuid,
                    clone_ctransid,
                    ..
                } = op
                {
                    write!(
                        f,
                        " parent_uuid={clone_uuid} parent_transid={clone_ctransid}"
                    )
                    .map_err(Error::output)?;
                    "snapshot"
                } else {
                    "subvol"
                };
                let p = self.full_subvol_path.clone();
                self.line(title, &p, Some(&f));
                return self.out.write_all(&self.line).map_err(Error::output);
            }
            Op::Mkfile { path, .. } => ("mkfile", in_subvol(path, self)?),
            Op::Mkdir { path, .. } => ("mkdir", in_subvol(path, self)?),
            Op::Mkfifo { path, .. } => ("mkfifo", in_subvol(path, self)?),
            Op::Mksock { path, .. } => ("mksock", in_subvol(path, self)?),
            Op::Unlink { path } => ("unlink", in_subvol(path, self)?),
            Op::Rmdir { path } => ("rmdir", in_subvol(path, self)?),
            Op::Mknod {
                path, mode, rdev, ..
            } => {
                write!(f, "mode={mode:o} dev=0x{rdev:x}").map_err(Error::output)?;
                ("mknod", in_subvol(path, self)?)
            }
            Op::Symlink { path, target, .. } => {
                f.extend_from_slice(b"dest=");
                esc(&mut f, target);
                ("symlink", in_subvol(path, self)?)
            }
            Op::Rename { from, to } => {
                let full_to = in_subvol(to, self)?;
                f.extend_from_slice(b"dest=");
                esc(&mut f, &full_to);
                ("rename", in_subvol(from, self)?)
            }
            Op::Link { path, target } => {
                f.extend_from_slice(b"dest=");
                esc(&mut f, target);
                ("link", in_subvol(path, self)?)
            }
            Op::SetXattr { path, name, data } => {
                f.extend_from_slice(b"name=");
                if new_text {
                    esc(&mut f, name);
                    f.push(b' ');
                    escape_into(&mut f, data);
                } else {
                    f.extend_from_slice(cstr(name));
                    f.extend_from_slice(b" data=");
                    f.extend_from_slice(cstr(data));
                }
                write!(f, " len={}", data.len()).map_err(Error::output)?;
                ("set_xattr", in_subvol(path, self)?)
            }
            Op::RemoveXattr { path, name } => {
                f.extend_from_slice(b"name=");
                if new_text {
                    esc(&mut f, name);
                } else {
                    f.extend_from_slice(cstr(name));
                }
                ("remove_xattr", in_subvol(path, self)?)
            }
            Op::Write { path, offset, data } => {
                write!(f, "offset={offset} len={}", data.len()).map_err(Error::output)?;
                ("write", in_subvol(path, self)?)
            }
            Op::Clone {
                path,
                offset,
                len,
                clone_path,
                clone_offset,
                ..
            } => {
                // progs reads CLONE_LEN into an `int` and passes it on as a u64: the low 32 bits,
                // sign-extended.
                let len = i64::from(len as u32 as i32) as u64;
                let from = in_subvol(clone_path, self)?;
                write!(f, "offset={offset} len={len} from=").map_err(Error::output)?;
                if new_text {
                    esc(&mut f, &from);
                } else {
                    f.extend_from_slice(&from);
                }
                write!(f, " clone_offset={clone_offset}").map_err(Error::output)?;
                ("clone", in_subvol(path, self)?)
            }
            Op::Truncate { path, size } => {
                write!(f, "size={size}").map_err(Error::output)?;
                ("truncate", in_subvol(path, self)?)
            }
            Op::Chmod { path, mode } => {
                write!(f, "mode={mode:o}").map_err(Error::output)?;
                ("chmod", in_subvol(path, self)?)
            }
            Op::Chown { path, uid, gid } => {
                write!(f, "gid={gid} uid={uid}").map_err(Error::output)?;
                ("chown", in_subvol(path, self)?)
            }
            Op::Utimes {
                path,
                atime,
                mtime,
                ctime,
            } => {
                let conv = |t: Timespec| {
                    self.time(t).ok_or_else(|| {
                        fail(format!(
                            "failed to convert time {}.{:09} to local time",
                            t.sec, t.nsec
                        ))
                    })
                };
                let (a, m, ct) = (conv(atime)?, conv(mtime)?, conv(ctime)?);
                write!(f, "atime={a} mtime={m} ctime={ct}").map_err(Error::output)?;
                ("utimes", in_subvol(path, self)?)
            }
            Op::UpdateExtent { path, offset, len } => {
                write!(f, "offset={offset} len={len}").map_err(Error::output)?;
                ("update_extent", in_subvol(path, self)?)
            }
            Op::Fallocate {
                path,
                mode,
                offset,
                len,
            } => {
                // progs keeps the mode in an `int` and prints it with %d.
                let mode = mode as i32;
                write!(f, "mode={mode} offset={offset} len={len}").map_err(Error::output)?;
                ("fallocate", in_subvol(path, self)?)
            }
            Op::Fileattr { path, attr } => {
                // progs prints "0x%llu": a hex prefix on a decimal number.
                write!(f, "fileattr=0x{attr}").map_err(Error::output)?;
                ("fileattr", in_subvol(path, self)?)
            }
            Op::EncodedWrite {
                path,
                offset,
                unencoded_file_len,
                unencoded_len,
                unencoded_offset,
                compression,
                encryption,
                data,
            } => {
                let sep = if new_text { " " } else { ", " };
                write!(
                    f,
                    "offset={offset} len={}{sep}unencoded_file_len={unencoded_file_len}{sep}\
                     unencoded_len={unencoded_len}{sep}unencoded_offset={unencoded_offset}{sep}\
                     compression={compression}{sep}encryption={encryption}",
                    data.len()
                )
                .map_err(Error::output)?;
                ("encoded_write", in_subvol(path, self)?)
            }
            Op::EnableVerity {
                path,
                algorithm,
                block_size,
                salt,
                sig,
            } => {
                write!(
                    f,
                    "algorithm={algorithm} block_size={block_size} salt_len={} sig_len={}",
                    salt.len(),
                    sig.len()
                )
                .map_err(Error::output)?;
                ("enable_verity", in_subvol(path, self)?)
            }
            Op::End | Op::Unknown(_) => return Ok(()),
        };
        let fields = matches!(
            title,
            "mkfile" | "mkdir" | "mkfifo" | "mksock" | "unlink" | "rmdir"
        );
        self.line(title, &path, if fields { None } else { Some(&f) });
        self.out.write_all(&self.line).map_err(Error::output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values printed by glibc 2.36 `localtime_r` + `strftime("%FT%T%z")`.
    #[test]
    fn times_like_glibc() {
        let cases: &[(&str, i64, Option<&str>)] = &[
            ("UTC", 0, Some("1970-01-01T00:00:00+0000")),
            ("UTC", -1, Some("1969-12-31T23:59:59+0000")),
            ("UTC", -62_135_596_800, Some("1-01-01T00:00:00+0000")),
            ("UTC", -62_135_596_801, Some("0-12-31T23:59:59+0000")),
            ("UTC", -62_198_755_200, Some("-1-01-01T00:00:00+0000")),
            ("UTC", -65_000_000_000, Some("-90-03-27T04:26:40+0000")),
            ("UTC", -253_402_300_799, Some("-6060-01-02T00:00:01+0000")),
            ("UTC", 253_402_300_800, Some("10000-01-01T00:00:00+0000")),
            (
                "UTC",
                99_999_999_999_999,
                Some("3170843-11-07T09:46:39+0000"),
            ),
            (
                "UTC",
                67_767_976_233_532_799,
                Some("2147483647-12-31T23:59:59+0000"),
            ),
            (
                "UTC",
                67_767_976_233_532_800,
                Some("-2147483648-01-01T00:00:00+0000"),
            ),
            (
                "UTC",
                67_768_036_191_676_799,
                Some("-2147481749-12-31T23:59:59+0000"),
            ),
            ("UTC", 67_768_036_191_676_800, None),
            (
                "UTC",
                -67_768_040_609_740_800,
                Some("-2147481748-01-01T00:00:00+0000"),
            ),
            ("UTC", -67_768_040_609_740_801, None),
            ("UTC", i64::MAX, None),
            ("UTC", i64::MIN, None),
            (
                "Asia/Kolkata",
                -62_135_596_800,
                Some("1-01-01T05:53:28+0553"),
            ),
            (
                "Asia/Kolkata",
                253_402_300_799,
                Some("10000-01-01T05:29:59+0530"),
            ),
            (
                "Asia/Kolkata",
                99_999_999_999_999,
                Some("3170843-11-07T15:16:39+0530"),
            ),
            ("Asia/Kolkata", 67_768_036_191_676_799, None),
            (
                "Asia/Kolkata",
                -67_768_040_609_740_801,
                Some("-2147481748-01-01T05:53:27+0553"),
            ),
            (
                "America/New_York",
                -62_135_596_800,
                Some("0-12-31T19:03:58-0456"),
            ),
            (
                "America/New_York",
                253_402_300_800,
                Some("9999-12-31T19:00:00-0500"),
            ),
            (
                "America/New_York",
                4_102_444_800,
                Some("2099-12-31T19:00:00-0500"),
            ),
            (
                "America/New_York",
                99_999_999_999_999,
                Some("3170843-11-07T04:46:39-0500"),
            ),
            (
                "America/New_York",
                67_768_036_191_676_800,
                Some("-2147481749-12-31T19:00:00-0500"),
            ),
            ("America/New_York", -67_768_040_609_740_800, None),
            (
                "America/New_York",
                -30_000_000_000,
                Some("1019-05-04T13:43:58-0456"),
            ),
        ];
        for &(zone, sec, want) in cases {
            let d = TextDump::with_time_zone(Vec::new(), jiff::tz::TimeZone::get(zone).unwrap());
            assert_eq!(
                d.time(Timespec { sec, nsec: 0 }).as_deref(),
                want,
                "{zone} {sec}"
            );
        }
    }

    #[test]
    fn path_cat_strips_one_trailing_slash() {
        assert_eq!(path_cat(b"./s", b"").unwrap(), b"./s/");
        assert_eq!(path_cat(b"./s/", b"a//").unwrap(), b"./s/a/");
        assert!(path_cat(b"./s", &[b'a'; 4093]).is_none());
    }

    /// SUBVOL `s`, then commands with names holding spaces, newlines, backslashes, NULs and
    /// bytes outside printable ASCII in paths, xattr names and values, clone sources and link
    /// targets (the cases of btrfs-progs' misc-tests/054 and more).
    fn special_names() -> Vec<Command> {
        use crate::stream::{Builder, Uuid, attr, cmd};
        let v = 2;
        let b = |c| Builder::new(c, v);
        let xattr = |name: &[u8], data: &[u8]| {
            b(cmd::SET_XATTR)
                .bytes(attr::PATH, b"x file")
                .bytes(attr::XATTR_NAME, name)
                .bytes(attr::XATTR_DATA, data)
        };
        [
            b(cmd::SUBVOL)
                .bytes(attr::PATH, b"s")
                .uuid(attr::UUID, &Uuid([7; 16]))
                .u64(attr::CTRANSID, 9),
            xattr(b"user.name\nfailed xattr name", b"123\nfailed xattr value"),
            xattr(b"user.k\\ey", b"a\0b\t\\\xff"),
            b(cmd::REMOVE_XATTR)
                .bytes(attr::PATH, b"dir/\x01f")
                .bytes(attr::XATTR_NAME, b"user.sp ace"),
            b(cmd::CLONE)
                .bytes(attr::PATH, b"clone target\nx")
                .u64(attr::FILE_OFFSET, 0)
                .u64(attr::CLONE_LEN, 4096)
                .uuid(attr::CLONE_UUID, &Uuid([7; 16]))
                .u64(attr::CLONE_CTRANSID, 9)
                .bytes(attr::CLONE_PATH, b"clone source\\1")
                .u64(attr::CLONE_OFFSET, 8192),
            b(cmd::SYMLINK)
                .bytes(attr::PATH, b"a b")
                .u64(attr::INO, 258)
                .bytes(attr::PATH_LINK, b"t\nu"),
            b(cmd::UNLINK).bytes(attr::PATH, b"\x7f\xe9 a very long name that is longer"),
            b(cmd::TRUNCATE)
                .bytes(attr::PATH, b"a very long name\tthat is longer")
                .u64(attr::SIZE, 5),
            b(cmd::ENCODED_WRITE)
                .bytes(attr::PATH, b"e")
                .u64(attr::FILE_OFFSET, 0)
                .u64(attr::UNENCODED_FILE_LEN, 4096)
                .u64(attr::UNENCODED_LEN, 4096)
                .u64(attr::UNENCODED_OFFSET, 0)
                .u32(attr::COMPRESSION, 1)
                .data(b"abc"),
        ]
        .into_iter()
        .map(|c| c.build().unwrap())
        .collect()
    }

    fn dump_with(format: TextFormat) -> String {
        let mut out = Vec::new();
        let mut d = TextDump::with_time_zone(&mut out, jiff::tz::TimeZone::UTC).format(format);
        for (i, c) in special_names().iter().enumerate() {
            d.print(c, i as u64).unwrap();
        }
        drop(d);
        String::from_utf8(out).unwrap()
    }

    const SUBVOL_LINE: &str = "subvol          ./s                             \
        uuid=07070707-0707-0707-0707-070707070707 transid=9\n";

    /// Lines both formats print alike: paths and link targets were escaped already in 6.2.
    const COMMON_TAIL: &str = concat!(
        r"symlink         ./s/a\ b                        dest=t\nu",
        "\n",
        r"unlink          ./s/\177\351\ a\ very\ long\ name\ that\ is\ longer",
        "\n",
        r"truncate        ./s/a\ very\ long\ name\tthat\ is\ longer size=5",
        "\n",
    );

    #[test]
    fn progs_6_2_prints_xattrs_and_clone_sources_raw() {
        let want = [
            SUBVOL_LINE,
            r"set_xattr       ./s/x\ file                     name=user.name",
            "\nfailed xattr name data=123\nfailed xattr value len=22\n",
            r"set_xattr       ./s/x\ file                     name=user.k\ey data=a len=6",
            "\n",
            r"remove_xattr    ./s/dir/\001f                   name=user.sp ace",
            "\n",
            r"clone           ./s/clone\ target\nx            offset=0 len=4096 from=./s/clone source\1 clone_offset=8192",
            "\n",
            COMMON_TAIL,
            "encoded_write   ./s/e                           offset=0 len=3, unencoded_file_len=4096, \
             unencoded_len=4096, unencoded_offset=0, compression=1, encryption=0\n",
        ]
        .concat();
        assert_eq!(dump_with(TextFormat::Progs6_2), want);
    }

    #[test]
    fn progs_6_10_escapes_xattrs_and_clone_sources() {
        let got = dump_with(TextFormat::Progs6_10);
        let want = [
            SUBVOL_LINE,
            r"set_xattr       ./s/x\ file                     name=user.name\nfailed\ xattr\ name 123\nfailed\ xattr\ value len=22",
            "\n",
            r"set_xattr       ./s/x\ file                     name=user.k\\ey a\000b\t\\\377 len=6",
            "\n",
            r"remove_xattr    ./s/dir/\001f                   name=user.sp\ ace",
            "\n",
            r"clone           ./s/clone\ target\nx            offset=0 len=4096 from=./s/clone\ source\\1 clone_offset=8192",
            "\n",
            COMMON_TAIL,
            "encoded_write   ./s/e                           offset=0 len=3 unencoded_file_len=4096 \
             unencoded_len=4096 unencoded_offset=0 compression=1 encryption=0\n",
        ]
        .concat();
        assert_eq!(got, want);
        // misc-tests/054's check: no name can start a line of its own.
        assert!(!got.lines().any(|l| l.starts_with("failed")), "{got}");
    }

    #[test]
    fn escaping_matches_progs() {
        let mut v = Vec::new();
        let n = escape_into(&mut v, "dir with space/café\n\\".as_bytes());
        assert_eq!(v, b"dir\\ with\\ space/caf\\303\\251\\n\\\\");
        assert_eq!(n, v.len());
    }
}
