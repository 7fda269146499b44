//! One JSON object per line for each stream header and command, with every attribute.
//!
//! Encoding: integers as numbers; UUIDs as `8-4-4-4-12` strings; times as `{"sec":..,"nsec":..}`;
//! names and paths as JSON strings when they are valid UTF-8, otherwise `{"hex":"..."}`; binary
//! values (xattr data, verity salt/signature) always as `{"hex":"..."}`; file data (DATA) as
//! `{"len":N}` only. Duplicate attributes appear once each, in wire order, in the `attrs` array.

use crate::Error;
use crate::pipeline::{CommandSink, Position};
use crate::stream::proto::{self, AttrKind};
use crate::stream::{Command, cmd};
use std::fmt::Write as _;
use std::io::Write;
use std::ops::ControlFlow;

/// Prints JSON lines.
pub struct JsonDump<W: Write> {
    out: W,
    line: String,
}

fn hex(s: &mut String, b: &[u8]) {
    s.push_str("{\"hex\":\"");
    s.push_str(&crate::util::hex::encode(b));
    s.push_str("\"}");
}

fn string(s: &mut String, b: &[u8]) {
    match std::str::from_utf8(b) {
        // serde_json escapes control characters and quotes correctly.
        Ok(t) => s.push_str(&serde_json::to_string(t).unwrap_or_default()),
        Err(_) => hex(s, b),
    }
}

impl<W: Write> JsonDump<W> {
    /// A JSON dump to `out`.
    pub fn new(out: W) -> JsonDump<W> {
        JsonDump {
            out,
            line: String::with_capacity(256),
        }
    }

    fn value(&mut self, c: &Command, a: u16, v: &[u8]) {
        let s = &mut self.line;
        if a == proto::attr::DATA {
            let _ = write!(s, "{{\"len\":{}}}", v.len());
            return;
        }
        match proto::attr_kind(a) {
            AttrKind::Int(n) if v.len() == n => {
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(v);
                let _ = write!(s, "{}", u64::from_le_bytes(b));
            }
            AttrKind::Uuid if v.len() == 16 => {
                let _ = write!(s, "\"{}\"", c.uuid(a).unwrap_or_default());
            }
            AttrKind::Timespec if v.len() == 12 => {
                if let Ok(t) = c.timespec(a) {
                    let _ = write!(s, "{{\"sec\":{},\"nsec\":{}}}", t.sec, t.nsec);
                }
            }
            AttrKind::String => string(s, v),
            // Binary values, and fixed-size ones of the wrong size, as hex.
            _ => hex(s, v),
        }
    }
}

impl<W: Write> CommandSink for JsonDump<W> {
    fn header(&mut self, version: u32, at: Position) -> Result<(), Error> {
        let offset = at.offset;
        writeln!(
            self.out,
            "{{\"offset\":{offset},\"stream\":{{\"version\":{version}}}}}"
        )
        .map_err(Error::output)
    }

    fn command(&mut self, c: &Command, at: Position) -> Result<ControlFlow<()>, Error> {
        let Position { offset, index } = at;
        self.line.clear();
        let _ = write!(
            self.line,
            "{{\"offset\":{offset},\"index\":{index},\"command\":\"{}\",\"cmd\":{},\"len\":{},\"attrs\":[",
            cmd::name(c.cmd()).unwrap_or("unknown"),
            c.cmd(),
            c.payload().len()
        );
        // Walk the TLVs in wire order (duplicates included) using the indexed values: a repeated
        // attribute shows the value that wins (the last), which is what a receiver applies.
        for (i, &a) in c.attr_order().iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            let _ = write!(self.line, "[\"{}\",", proto::attr::name(a).unwrap_or("?"));
            let v = c.get(a).unwrap_or_default();
            self.value(c, a, v);
            self.line.push(']');
        }
        self.line.push_str("]}\n");
        self.out
            .write_all(self.line.as_bytes())
            .map_err(Error::output)?;
        Ok(ControlFlow::Continue(()))
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.out.flush().map_err(Error::output)
    }

    fn abort(&mut self) {
        // Lines printed before an error are kept.
        let _ = self.out.flush();
    }
}
