//! SSH's data types (RFC 4251 section 5) read from and written to byte buffers.
//!
//! The reader borrows: a `string` is a slice of the packet, so decoding allocates nothing
//! and a length prefix larger than what is left is an error before anything happens (a
//! hostile length cannot make us allocate). The writer appends to a `BytesMut`.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Why a message could not be decoded.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    #[error("message truncated")]
    Truncated,
    #[error("boolean is not 0 or 1")]
    BadBool,
    #[error("name-list is not comma-separated printable ASCII")]
    BadNameList,
    #[error("string is not UTF-8")]
    BadUtf8,
    #[error("trailing bytes after the message")]
    Trailing,
}

/// A cursor over a received message.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::BadBool),
        }
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A `string` (u32 length + bytes), borrowed.
    pub fn string(&mut self) -> Result<&'a [u8], WireError> {
        let len = self.u32()? as usize;
        self.bytes(len)
    }

    /// A `string` that must be UTF-8.
    pub fn utf8(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.string()?).map_err(|_| WireError::BadUtf8)
    }

    /// A `name-list`: comma-separated names of printable ASCII without commas, none empty.
    pub fn name_list(&mut self) -> Result<NameList<'a>, WireError> {
        let raw = self.string()?;
        NameList::parse(raw)
    }

    /// Fail if anything is left (messages have no trailing data).
    pub fn finish(&self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing)
        }
    }
}

/// A validated name-list, borrowed from the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameList<'a>(&'a str);

/// Text a peer chose (a DISCONNECT reason, a banner, a channel type name), made safe to log
/// and show: invalid UTF-8 replaced, at most `max_chars` characters, and every control
/// character escaped (`\n`, `\u{1b}`, ...) so it cannot forge log lines or drive a
/// terminal. `multiline` keeps newlines and tabs (a banner is meant to span lines).
pub fn peer_text(bytes: &[u8], max_chars: usize, multiline: bool) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(bytes).chars().take(max_chars) {
        if c.is_control() && !(multiline && (c == '\n' || c == '\t')) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> NameList<'a> {
    /// Validate `raw` as a name-list (RFC 4251 section 5).
    pub fn parse(raw: &'a [u8]) -> Result<Self, WireError> {
        let s = std::str::from_utf8(raw).map_err(|_| WireError::BadNameList)?;
        if s.is_empty() {
            return Ok(Self(s));
        }
        let valid = s
            .split(',')
            .all(|name| !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        if valid {
            Ok(Self(s))
        } else {
            Err(WireError::BadNameList)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let s = self.0;
        s.split(',').filter(|n| !n.is_empty())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// Bytes reserved in front of a message written with [`Writer::packet`]: the packet's
/// `packet_length` and `padding_length`, filled in when it is framed.
pub const PACKET_HEADER: usize = 5;

/// Appends SSH data types to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
    /// Whether [`PACKET_HEADER`] bytes are reserved at the front.
    framed: bool,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer whose message starts with the message number `msg`.
    pub fn message(msg: u8) -> Self {
        let mut w = Self::new();
        w.u8(msg);
        w
    }

    /// Like [`Self::message`], with room reserved for the packet header so the message can be
    /// framed and encrypted where it lies ([`Self::finish_packet`]): no copy on the data path.
    pub fn packet(msg: u8, capacity: usize) -> Self {
        Self::packet_in(BytesMut::new(), msg, capacity)
    }

    /// [`Self::packet`] written into `buf` (a buffer a sent packet left, cleared here), so
    /// the data path reuses its memory instead of allocating per packet.
    pub fn packet_in(mut buf: BytesMut, msg: u8, capacity: usize) -> Self {
        buf.clear();
        buf.reserve(PACKET_HEADER + 1 + capacity + 64);
        buf.put_bytes(0, PACKET_HEADER);
        buf.put_u8(msg);
        Self { buf, framed: true }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32(v);
        self
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.put_slice(bytes);
        self
    }

    /// A `string`. Lengths beyond u32 cannot occur (packets are at most 256 KiB).
    pub fn string(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.raw(bytes)
    }

    /// A `name-list` from names.
    pub fn name_list<'n>(&mut self, names: impl IntoIterator<Item = &'n str>) -> &mut Self {
        let joined: Vec<&str> = names.into_iter().collect();
        self.string(joined.join(",").as_bytes())
    }

    /// The message alone.
    pub fn finish(mut self) -> BytesMut {
        if self.framed {
            let _ = self.buf.split_to(PACKET_HEADER);
        }
        self.buf
    }

    /// [`PACKET_HEADER`] bytes, then the message: what the transport frames in place.
    pub fn finish_packet(self) -> BytesMut {
        if self.framed {
            return self.buf;
        }
        let mut out = BytesMut::with_capacity(PACKET_HEADER + self.buf.len() + 64);
        out.put_bytes(0, PACKET_HEADER);
        out.extend_from_slice(&self.buf);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_escapes_control_characters() {
        assert_eq!(peer_text(b"bye\nFAKE LOG LINE\x1b[2J", 100, false), "bye\\nFAKE LOG LINE\\u{1b}[2J");
        assert_eq!(peer_text(b"line 1\nline 2\x07", 100, true), "line 1\nline 2\\u{7}");
        assert_eq!(peer_text(b"\xff\xfeok", 100, false), "\u{fffd}\u{fffd}ok");
        assert_eq!(peer_text(b"abcdef", 3, false), "abc");
    }

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::message(20);
        w.bool(true).u32(7).string(b"abc").name_list(["a", "b-c@x.org"]);
        let buf = w.finish();
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8(), Ok(20));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.string(), Ok(&b"abc"[..]));
        let names = r.name_list().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names.iter().collect::<Vec<_>>(), vec!["a", "b-c@x.org"]);
        assert_eq!(r.finish(), Ok(()));
        // A length larger than the message fails before anything is read.
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(r.string(), Err(WireError::Truncated));
        assert_eq!(Reader::new(&[2]).bool(), Err(WireError::BadBool));
    }

    #[test]
    fn name_lists_are_validated() {
        assert!(NameList::parse(b"").is_ok_and(|l| l.iter().count() == 0));
        for bad in [&b"a,,b"[..], b",a", b"a,", b"a b", b"\xff", b"a\x00"] {
            assert_eq!(NameList::parse(bad), Err(WireError::BadNameList), "{bad:?}");
        }
        assert_eq!(NameList::parse(&[b'a'; 65]), Err(WireError::BadNameList));
    }
}
