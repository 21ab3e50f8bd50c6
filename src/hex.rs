//! Lowercase hex, written in-house rather than pulling a crate for twenty lines.

/// Encodes bytes as lowercase hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.len() % 2 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() / 2);
    for p in s.chunks(2) {
        out.push(nibble(p[0])? << 4 | nibble(p[1])?);
    }
    Some(out)
}

/// Decodes hex (either case) in its own buffer: byte `i` goes where digit `i`
/// was, behind the digits still to read, and the buffer is cut to the bytes
/// (its tail's pages given back). For a large value (a sealed header) held
/// once, not as digits and bytes side by side. `None` as [`decode`].
pub fn decode_vec(mut hex: Vec<u8>) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    for i in 0..hex.len() / 2 {
        hex[i] = nibble(hex[2 * i])? << 4 | nibble(hex[2 * i + 1])?;
    }
    hex.truncate(hex.len() / 2);
    hex.shrink_to_fit();
    Some(hex)
}

/// Decodes exactly 32 bytes of hex.
pub fn decode32(s: &str) -> Option<[u8; 32]> {
    decode(s)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(super::encode(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(super::decode("00ABff"), Some(vec![0, 0xab, 0xff]));
        assert_eq!(super::decode("0"), None);
        assert_eq!(super::decode("zz"), None);
        for s in ["", "00ABff", "0", "zz", "0g", "deadbeef"] {
            assert_eq!(
                super::decode_vec(s.as_bytes().to_vec()),
                super::decode(s),
                "{s}"
            );
        }
    }
}
