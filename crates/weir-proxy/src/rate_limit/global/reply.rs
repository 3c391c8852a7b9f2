//! A reader for the few reply shapes the global limit gets from Redis (RESP2): the script's
//! flat array of integers (`*N` then N `:i`), a status (`+OK`, to `AUTH` and `SELECT`) and an
//! error (`-NOSCRIPT …`). It works on the bytes read so far and says whether a whole reply is
//! there, so a reply split over several reads is parsed once, when complete, without the
//! redis crate's streaming parser (its `combine` partial state cost ~4,400 instructions for
//! this four-integer reply). Any other shape is an error: the connection is then dropped,
//! never reused out of step.

/// One complete reply.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply<'a> {
    /// `+…`
    Status(&'a [u8]),
    /// `-…`: Redis refused the command (the connection stays in step).
    Error(&'a [u8]),
    /// `*N` of N integers, now in the caller's vector.
    Ints,
}

/// Bytes that are not a reply of the expected shapes.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed or unexpected reply from redis: {0}")]
pub(super) struct Malformed(pub(super) &'static str);

/// The most integers a reply may have (4 per rule; a route has a handful of rules).
const MAX_INTS: usize = 4096;
/// The longest line (an error's text) read before giving up on a peer that sends no `\r\n`.
pub(super) const MAX_LINE: usize = 4096;

/// Parse one reply at the start of `buf`: `Ok(None)` while incomplete, else the reply and
/// how many bytes it took; an array's integers are put in `ints` (cleared first).
pub(super) fn parse<'a>(
    buf: &'a [u8],
    ints: &mut Vec<i64>,
) -> Result<Option<(Reply<'a>, usize)>, Malformed> {
    let Some((first, mut at)) = line(buf, 0)? else {
        return Ok(None);
    };
    let (kind, rest) = match first.split_first() {
        Some((k, rest)) => (*k, rest),
        None => return Err(Malformed("an empty line")),
    };
    match kind {
        b'+' => Ok(Some((Reply::Status(rest), at))),
        b'-' => Ok(Some((Reply::Error(rest), at))),
        b'*' => {
            let n = integer(rest)?;
            let n = usize::try_from(n).map_err(|_| Malformed("a nil or negative array"))?;
            if n > MAX_INTS {
                return Err(Malformed("an array too long"));
            }
            ints.clear();
            for _ in 0..n {
                let Some((item, next)) = line(buf, at)? else {
                    return Ok(None);
                };
                match item.split_first() {
                    Some((b':', digits)) => ints.push(integer(digits)?),
                    _ => return Err(Malformed("an array item that is not an integer")),
                }
                at = next;
            }
            Ok(Some((Reply::Ints, at)))
        }
        _ => Err(Malformed("a reply type other than +, -, * of integers")),
    }
}

/// The line starting at `from` (without its `\r\n`) and where the next begins; `None` while
/// its end has not arrived.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Malformed> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|&b| b == b'\n') {
        Some(end) => match rest[..end].split_last() {
            Some((b'\r', text)) => Ok(Some((text, from + end + 1))),
            _ => Err(Malformed("a line not ended by \\r\\n")),
        },
        None if rest.len() > MAX_LINE => Err(Malformed("a line too long")),
        None => Ok(None),
    }
}

/// A RESP integer: an optional `-` and 1 to 19 decimal digits, in range.
fn integer(text: &[u8]) -> Result<i64, Malformed> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(Malformed("an integer of no or too many digits"));
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(Malformed("an integer with a non-digit"));
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(Malformed("an integer out of range"))?;
    }
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parsed<'a> = Result<Option<(Reply<'a>, usize)>, Malformed>;

    fn whole(bytes: &[u8]) -> (Parsed<'_>, Vec<i64>) {
        let mut ints = vec![99];
        (parse(bytes, &mut ints), ints)
    }

    #[test]
    fn the_scripts_array_of_integers_is_read_whole() {
        let reply = b"*4\r\n:1\r\n:999\r\n:-5\r\n:0\r\n";
        let (r, ints) = whole(reply);
        assert_eq!(r, Ok(Some((Reply::Ints, reply.len()))));
        assert_eq!(ints, [1, 999, -5, 0]);
        let (r, ints) = whole(b"*0\r\n");
        assert_eq!((r, ints), (Ok(Some((Reply::Ints, 4))), vec![]));
        // Bytes after the reply are not taken.
        let (r, _) = whole(b"*1\r\n:7\r\n+OK\r\n");
        assert_eq!(r, Ok(Some((Reply::Ints, 8))));
        let big = format!("*2\r\n:{}\r\n:{}\r\n", i64::MAX, i64::MIN + 1);
        let (r, ints) = whole(big.as_bytes());
        assert_eq!(r, Ok(Some((Reply::Ints, big.len()))));
        assert_eq!(ints, [i64::MAX, i64::MIN + 1]);
    }

    #[test]
    fn every_prefix_of_a_reply_is_incomplete_not_an_error() {
        for reply in [
            &b"*4\r\n:1\r\n:999\r\n:-5\r\n:60000\r\n"[..],
            b"+OK\r\n",
            b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
        ] {
            for cut in 0..reply.len() {
                let (r, _) = whole(&reply[..cut]);
                assert_eq!(r, Ok(None), "{:?}", String::from_utf8_lossy(&reply[..cut]));
            }
            let (r, _) = whole(reply);
            assert_eq!(r.map(|o| o.map(|(_, n)| n)), Ok(Some(reply.len())));
        }
    }

    #[test]
    fn statuses_and_errors_are_told_apart() {
        assert_eq!(whole(b"+OK\r\n").0, Ok(Some((Reply::Status(b"OK"), 5))));
        let e = b"-NOSCRIPT No matching script.\r\n";
        assert_eq!(
            whole(e).0,
            Ok(Some((
                Reply::Error(b"NOSCRIPT No matching script."),
                e.len()
            )))
        );
    }

    #[test]
    fn other_shapes_and_malformed_bytes_are_errors() {
        for bad in [
            &b"$3\r\nabc\r\n"[..],
            b"*1\r\n$1\r\na\r\n",
            b"*2\r\n*1\r\n:1\r\n",
            b"*-1\r\n",
            b":5\r\n",
            b"*1\r\n:12a\r\n",
            b"*1\r\n:\r\n",
            b"*1\r\n:-\r\n",
            b"*1\r\n:99999999999999999999\r\n",
            b"*1\r\n:9223372036854775808\r\n",
            b"*x\r\n",
            b"*99999\r\n",
            b"+OK\n",
            b"\r\n",
            b"_\r\n",
        ] {
            assert!(
                whole(bad).0.is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(bad)
            );
        }
        // A line that never ends is an error once past the bound, not a wait forever.
        let long = vec![b'-'; MAX_LINE + 2];
        assert!(whole(&long).0.is_err());
        assert_eq!(whole(&long[..MAX_LINE]).0, Ok(None));
    }
}
