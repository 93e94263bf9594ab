//! Go's `encoding/binary` varints, as containerd stores integers in its bolt databases.

/// Unsigned LEB128 (`binary.Uvarint`): snapshot ids in `metadata.db`.
/// Returns the value and the bytes consumed; `None` if truncated or longer than 64 bits.
pub fn uvarint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None; // overflows 64 bits
        }
        value |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Signed zigzag varint (`binary.Varint`): sizes and versions in `meta.db`.
pub fn varint(bytes: &[u8]) -> Option<(i64, usize)> {
    let (u, n) = uvarint(bytes)?;
    let v = (u >> 1) as i64;
    Some((if u & 1 != 0 { !v } else { v }, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_decodes_go_encodings() {
        assert_eq!(uvarint(&[0x01]), Some((1, 1)));
        assert_eq!(uvarint(&[0x00]), Some((0, 1)));
        assert_eq!(uvarint(&[0xac, 0x02]), Some((300, 2)));
        assert_eq!(uvarint(&[0x80, 0x80, 0x5e]), Some((1_540_096, 3)));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(uvarint(&max), Some((u64::MAX, 10)));
    }

    #[test]
    fn uvarint_rejects_truncated_and_overlong_input() {
        assert_eq!(uvarint(&[]), None);
        assert_eq!(uvarint(&[0x80]), None);
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(uvarint(&[0x80; 11]), None);
    }

    #[test]
    fn varint_decodes_zigzag_values_seen_in_meta_db() {
        // containerd-layout.md §2.1: 404 → a8 06, 3 → 06, 329334 → ec 99 28
        assert_eq!(varint(&[0xa8, 0x06]), Some((404, 2)));
        assert_eq!(varint(&[0x06]), Some((3, 1)));
        assert_eq!(varint(&[0xec, 0x99, 0x28]), Some((329_334, 3)));
        assert_eq!(varint(&[0x01]), Some((-1, 1)));
        assert_eq!(varint(&[0x03]), Some((-2, 1)));
        // metadata.db usage: 770048 bytes → 80 80 5e
        assert_eq!(varint(&[0x80, 0x80, 0x5e]), Some((770_048, 3)));
    }
}
