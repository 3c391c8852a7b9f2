//! Just enough of TLS (RFC 8446 §4.1.2, RFC 6066 §3) to read the server name from a
//! ClientHello without terminating the connection: the bytes are only peeked at, and all of
//! them are replayed to the backend afterwards.

/// What the bytes received so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed.
    Incomplete,
    /// A complete ClientHello; its SNI host name, lowercased (`None`: it sends none).
    Complete(Option<String>),
    /// Not a TLS ClientHello (or a malformed one), with why.
    Invalid(&'static str),
}

/// Largest ClientHello we wait for (the handshake message length field allows 16 MiB; real
/// ones are a few KiB even with post-quantum key shares).
pub const MAX_HELLO: usize = 64 * 1024;

const RECORD_HEADER: usize = 5;
const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// Parse the start of a TLS connection. The ClientHello may span several records; their
/// handshake fragments are joined.
pub fn parse(bytes: &[u8]) -> Hello {
    let mut handshake = Vec::new();
    let mut rest = bytes;
    loop {
        if rest.len() < RECORD_HEADER {
            return Hello::Incomplete;
        }
        if rest[0] != CONTENT_HANDSHAKE {
            return Hello::Invalid("the first record is not a TLS handshake");
        }
        if rest[1] != 3 {
            return Hello::Invalid("unknown TLS record version");
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        if len == 0 {
            return Hello::Invalid("empty TLS record");
        }
        let Some(fragment) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
            return Hello::Incomplete;
        };
        handshake.extend_from_slice(fragment);
        rest = &rest[RECORD_HEADER + len..];
        if handshake.len() >= 4 {
            if handshake[0] != HANDSHAKE_CLIENT_HELLO {
                return Hello::Invalid("the first handshake message is not a ClientHello");
            }
            let body_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if body_len + 4 > MAX_HELLO {
                return Hello::Invalid("ClientHello too large");
            }
            if let Some(body) = handshake.get(4..4 + body_len) {
                return match server_name(body) {
                    Some(result) => {
                        result.map_or(Hello::Invalid("malformed ClientHello"), Hello::Complete)
                    }
                    None => Hello::Invalid("malformed ClientHello"),
                };
            }
        }
    }
}

/// A cursor over a byte slice whose reads fail (`None`) past the end.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// The ClientHello body → `Some(Ok(sni))`; `None` or `Some(Err)` when malformed.
fn server_name(body: &[u8]) -> Option<Result<Option<String>, ()>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(Ok(None)); // no extensions at all
    }
    let mut extensions = Reader(r.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != EXTENSION_SERVER_NAME {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == NAME_TYPE_HOST {
                let Ok(name) = std::str::from_utf8(name) else {
                    return Some(Err(()));
                };
                return Some(Ok(Some(name.trim_end_matches('.').to_ascii_lowercase())));
            }
        }
        return Some(Ok(None));
    }
    Some(Ok(None))
}

#[cfg(test)]
mod tests;
