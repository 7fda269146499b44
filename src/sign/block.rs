//! The signature block: one extra command in the stream, its fixed encoding and the message it signs.

use super::keys::KeyId;
use crate::stream::attr;

/// Command number of a signature block. The kernel's commands end at 26; btrfs-progs silently
/// skips any number it does not know. On the wire the number reads `47 53` ("GS").
pub const SIGNATURE_CMD: u16 = 0x5347;
/// Value of the block's XATTR_NAME attribute: marks the command as a subvol signature block.
pub const BLOCK_MAGIC: &[u8; 16] = b"subvol-signature";
/// Format version carried in every block (and in every signed message).
pub const FORMAT_VERSION: u8 = 1;
/// Domain separation prefix of every signed message.
pub const DOMAIN: &[u8; 32] = b"subvol signed send stream block\0";

/// Length of the block body carried in XATTR_DATA.
pub const BODY_LEN: usize = 1 + 1 + 8 + 16 + 8 + 8 + 8 + 32 + 64;
/// Length of the block's payload (two TLVs).
pub const PAYLOAD_LEN: usize = 4 + BLOCK_MAGIC.len() + 4 + BODY_LEN;
/// Length of the signed message.
pub const MESSAGE_LEN: usize = DOMAIN.len() + BODY_LEN - 64 + 64;

/// What follows a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// More commands of the same stream follow.
    Segment = 0,
    /// The next command is END, and the input ends right after it.
    EndLast = 1,
    /// The next command is END, and another stream (header) follows; the chain goes on.
    EndMore = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            0 => Some(Kind::Segment),
            1 => Some(Kind::EndLast),
            2 => Some(Kind::EndMore),
            _ => None,
        }
    }
}

/// A decoded signature block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// What follows this block.
    pub kind: Kind,
    /// Id of the signing key.
    pub key_id: KeyId,
    /// Random id of the signed stream, the same in all its blocks.
    pub stream_id: [u8; 16],
    /// Segment number, from 0.
    pub segment: u64,
    /// Bytes covered by this segment (stream headers and commands since the previous block).
    pub bytes: u64,
    /// Commands covered by this segment.
    pub commands: u64,
    /// BLAKE3 hash of the covered bytes.
    pub digest: [u8; 32],
    /// Ed25519 signature of [`Block::message`].
    pub signature: [u8; 64],
}

impl Block {
    /// The message the signature is over: domain, all fields but the signature, then the
    /// previous block's signature (64 zero bytes for segment 0).
    #[must_use]
    pub fn message(&self, prev_sig: &[u8; 64]) -> [u8; MESSAGE_LEN] {
        let mut m = [0u8; MESSAGE_LEN];
        let mut w = Cursor(&mut m, 0);
        w.put(DOMAIN);
        self.put_fields(&mut w);
        w.put(prev_sig);
        debug_assert_eq!(w.1, MESSAGE_LEN);
        m
    }

    fn put_fields(&self, w: &mut Cursor<'_>) {
        w.put(&[FORMAT_VERSION, self.kind as u8]);
        w.put(&self.key_id.0);
        w.put(&self.stream_id);
        w.put(&self.segment.to_le_bytes());
        w.put(&self.bytes.to_le_bytes());
        w.put(&self.commands.to_le_bytes());
        w.put(&self.digest);
    }

    /// The command payload: `XATTR_NAME = "subvol-signature"`, `XATTR_DATA = body`.
    #[must_use]
    pub fn encode(&self) -> [u8; PAYLOAD_LEN] {
        let mut p = [0u8; PAYLOAD_LEN];
        let mut w = Cursor(&mut p, 0);
        w.put(&attr::XATTR_NAME.to_le_bytes());
        w.put(&(BLOCK_MAGIC.len() as u16).to_le_bytes());
        w.put(BLOCK_MAGIC);
        w.put(&attr::XATTR_DATA.to_le_bytes());
        w.put(&(BODY_LEN as u16).to_le_bytes());
        self.put_fields(&mut w);
        w.put(&self.signature);
        debug_assert_eq!(w.1, PAYLOAD_LEN);
        p
    }

    /// Decodes a block payload. The encoding is canonical: exactly these two TLVs in this
    /// order with these lengths, so no two different payloads decode to the same block.
    ///
    /// # Errors
    /// What is wrong with the payload.
    pub fn decode(p: &[u8]) -> Result<Block, String> {
        if p.len() != PAYLOAD_LEN {
            return Err(format!(
                "signature block payload is {} bytes, expected {PAYLOAD_LEN}",
                p.len()
            ));
        }
        let mut r = Reader(p);
        let tlv = |r: &mut Reader<'_>, a: u16, len: usize| {
            let ty = u16::from_le_bytes(r.take::<2>());
            let l = u16::from_le_bytes(r.take::<2>());
            ty == a && usize::from(l) == len
        };
        if !tlv(&mut r, attr::XATTR_NAME, BLOCK_MAGIC.len()) || &r.take::<16>() != BLOCK_MAGIC {
            return Err("command 0x5347 is not a subvol signature block".into());
        }
        if !tlv(&mut r, attr::XATTR_DATA, BODY_LEN) {
            return Err("signature block body has the wrong attribute or length".into());
        }
        let [version, kind] = r.take::<2>();
        if version != FORMAT_VERSION {
            return Err(format!(
                "signature block format {version} is not supported (this version knows {FORMAT_VERSION})"
            ));
        }
        let kind =
            Kind::from_u8(kind).ok_or_else(|| format!("unknown signature block kind {kind}"))?;
        Ok(Block {
            kind,
            key_id: KeyId(r.take()),
            stream_id: r.take(),
            segment: u64::from_le_bytes(r.take()),
            bytes: u64::from_le_bytes(r.take()),
            commands: u64::from_le_bytes(r.take()),
            digest: r.take(),
            signature: r.take(),
        })
    }
}

struct Cursor<'a>(&'a mut [u8], usize);
impl Cursor<'_> {
    fn put(&mut self, b: &[u8]) {
        self.0[self.1..self.1 + b.len()].copy_from_slice(b);
        self.1 += b.len();
    }
}

struct Reader<'a>(&'a [u8]);
impl Reader<'_> {
    /// Callers check the total length first.
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (a, b) = self.0.split_at(N);
        self.0 = b;
        a.try_into().expect("length checked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Block {
        Block {
            kind: Kind::EndMore,
            key_id: KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
            stream_id: [9; 16],
            segment: 3,
            bytes: 12345,
            commands: 17,
            digest: [0xaa; 32],
            signature: [0x55; 64],
        }
    }

    #[test]
    fn encode_decode() {
        let b = sample();
        let p = b.encode();
        assert_eq!(p.len(), 170);
        assert_eq!(&p[..4], &[13, 0, 16, 0]);
        assert_eq!(&p[20..24], &[14, 0, BODY_LEN as u8, 0]);
        assert_eq!(Block::decode(&p).unwrap(), b);
        // Every single-byte change is either rejected or decodes to a different block.
        for i in 0..p.len() {
            let mut q = p;
            q[i] ^= 1;
            if let Ok(d) = Block::decode(&q) {
                assert_ne!(d, b, "byte {i}");
            }
        }
        assert!(Block::decode(&p[..169]).is_err());
    }

    #[test]
    fn message_binds_every_field() {
        let b = sample();
        let m = b.message(&[0; 64]);
        assert_eq!(m.len(), MESSAGE_LEN);
        assert!(m.starts_with(DOMAIN));
        assert_ne!(m, b.message(&[1; 64]));
        let mut c = b.clone();
        c.kind = Kind::EndLast;
        assert_ne!(m, c.message(&[0; 64]));
        let mut c = b.clone();
        c.commands += 1;
        assert_ne!(m, c.message(&[0; 64]));
    }
}
