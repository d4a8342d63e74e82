//! A new entity hash as Redis's own `DUMP` would serialize it, so that a write can create it
//! with one `RESTORE` instead of `HSET`.
//!
//! Redis spends most of a materialization's time in `HSET`: on a new key of 11 fields it
//! parses 23 arguments into objects and appends each field and value to the hash one at a
//! time, 3.5–4.2 µs of CPU per key here. `RESTORE` of the same hash, already laid out,
//! costs 1.9–2.0 µs (`bench/redis_restore_cost.py`, BENCHMARKS.md). The payload is exactly
//! what `HSET` would have built, byte for byte: a hash small enough to be a listpack is one,
//! with Redis's choice of integer or string encoding for each entry (the tests compare
//! `DUMP` of both on a real server).
//!
//! The format (Redis `rdb.c`, `listpack.c`, `DUMP`/`RESTORE`):
//! - type byte 16 (`RDB_TYPE_HASH_LISTPACK`), then the listpack as an RDB string
//!   (length-prefixed, uncompressed);
//! - a listpack is a 4-byte little-endian total size, a 2-byte element count, the entries
//!   (field, value, field, value, ...) and the end byte 0xFF. An entry is its encoding (a
//!   small integer, or a string length and the bytes), then the encoding's size written
//!   backwards so the list can be walked from the end;
//! - the footer is the RDB version (2 bytes little-endian) and the CRC-64 (Jones, as Redis's
//!   `crc64`) of everything before it (8 bytes little-endian).
//!
//! Version 10 is Redis 7.0's, the first to know listpack hashes; every later Redis (and
//! Valkey) loads it. An older server refuses the payload, and the store then writes with
//! `HSET` as before.

use crc::{CRC_64_REDIS, Crc, Table};

/// `RDB_TYPE_HASH_LISTPACK`.
const RDB_TYPE_HASH_LISTPACK: u8 = 16;
/// The RDB version written in the footer: Redis 7.0's.
const RDB_VERSION: u16 = 10;
/// Redis's default `hash-max-listpack-entries` and `hash-max-listpack-value`: `HSET` makes a
/// hash with more fields, or with a field or value longer than this, a hash table. Such a
/// hash is not offered as a listpack: a server configured with larger limits just gets
/// `HSET` for it. One configured with smaller limits converts a restored hash with too many
/// fields at once, and keeps one with a longer entry a listpack, as when it loads an RDB
/// file.
const MAX_PAIRS: usize = 128;
const MAX_ENTRY_LEN: usize = 64;

static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// The `DUMP` payload of a hash holding `pairs` (field, value) in this order, as `HSET key
/// f1 v1 f2 v2 ...` on a missing key leaves it, or `None` when such a hash would not be a
/// listpack (too many pairs, an entry too long) or has no pairs. `pairs` must not repeat a
/// field (`HSET` would keep one; Redis would load both). `out` is cleared and reused.
pub fn listpack_hash_payload<'a>(
    pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    out: &mut Vec<u8>,
) -> Option<()> {
    out.clear();
    // The listpack goes after room for the type byte and the longest RDB string length
    // (5 bytes); the prefix is written once the listpack's size is known and the unused
    // room dropped.
    const ROOM: usize = 6;
    out.extend_from_slice(&[0; ROOM + 6]);
    let mut n = 0;
    for (field, value) in pairs {
        n += 1;
        if n > MAX_PAIRS || field.len() > MAX_ENTRY_LEN || value.len() > MAX_ENTRY_LEN {
            return None;
        }
        push_entry(out, field);
        push_entry(out, value);
    }
    if n == 0 {
        return None;
    }
    out.push(0xFF);
    let lp_len = out.len() - ROOM;
    out[ROOM..ROOM + 4].copy_from_slice(&(lp_len as u32).to_le_bytes());
    out[ROOM + 4..ROOM + 6].copy_from_slice(&((2 * n) as u16).to_le_bytes());
    // RDB string length (`rdbSaveLen`): 6 bits, 14 bits big-endian, or 0x80 and 32 bits
    // big-endian.
    let mut prefix = [RDB_TYPE_HASH_LISTPACK, 0, 0, 0, 0, 0];
    let prefix_len = if lp_len < 64 {
        prefix[1] = lp_len as u8;
        2
    } else if lp_len < 16384 {
        prefix[1..3].copy_from_slice(&(0x4000 | lp_len as u16).to_be_bytes());
        3
    } else {
        prefix[1] = 0x80;
        prefix[2..6].copy_from_slice(&(lp_len as u32).to_be_bytes());
        6
    };
    out[ROOM - prefix_len..ROOM].copy_from_slice(&prefix[..prefix_len]);
    out.drain(..ROOM - prefix_len);
    out.extend_from_slice(&RDB_VERSION.to_le_bytes());
    let crc = CRC64.checksum(out);
    out.extend_from_slice(&crc.to_le_bytes());
    Some(())
}

/// One listpack entry: the encoding Redis's `lpEncodeGetType` picks, then the back length.
fn push_entry(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    match as_int(bytes) {
        Some(v) if (0..=127).contains(&v) => out.push(v as u8),
        Some(v) if (-4096..=4095).contains(&v) => {
            let u = (v as u16) & 0x1FFF;
            out.extend_from_slice(&[0xC0 | (u >> 8) as u8, (u & 0xFF) as u8]);
        }
        Some(v) if (-32768..=32767).contains(&v) => {
            out.push(0xF1);
            out.extend_from_slice(&(v as i16).to_le_bytes());
        }
        Some(v) if (-8_388_608..=8_388_607).contains(&v) => {
            out.push(0xF2);
            out.extend_from_slice(&(v as i32).to_le_bytes()[..3]);
        }
        Some(v) if i32::try_from(v).is_ok() => {
            out.push(0xF3);
            out.extend_from_slice(&(v as i32).to_le_bytes());
        }
        Some(v) => {
            out.push(0xF4);
            out.extend_from_slice(&v.to_le_bytes());
        }
        // Entries here are at most 64 bytes: the 6-bit and 12-bit string forms suffice.
        None if bytes.len() < 64 => {
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(bytes);
        }
        None => {
            out.extend_from_slice(&[0xE0 | (bytes.len() >> 8) as u8, bytes.len() as u8]);
            out.extend_from_slice(bytes);
        }
    }
    let entry_len = out.len() - start;
    // The back length: at most 1 + 64 + 1 bytes here, so one or two 7-bit groups, the
    // high group first and every byte but the first flagged.
    if entry_len <= 127 {
        out.push(entry_len as u8);
    } else {
        out.extend_from_slice(&[(entry_len >> 7) as u8, (entry_len & 127) as u8 | 128]);
    }
}

/// The integer a listpack stores `bytes` as (Redis's `lpStringToInt64`): the bytes must be
/// exactly the canonical decimal form of an `i64` (no sign but a leading `-`, no leading
/// zeros, no `-0`).
fn as_int(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: i64 = std::str::from_utf8(bytes).ok()?.parse().ok()?;
    // Rejects leading zeros and "-0", which parse but are not how Redis prints the number.
    (v.to_string().as_bytes() == bytes).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(pairs: &[(&[u8], &[u8])]) -> Option<Vec<u8>> {
        let mut out = vec![1, 2, 3];
        listpack_hash_payload(pairs.iter().copied(), &mut out)?;
        Some(out)
    }

    #[test]
    fn integers_are_recognized_as_redis_does() {
        for (s, want) in [
            ("0", Some(0)),
            ("7", Some(7)),
            ("-1", Some(-1)),
            ("127", Some(127)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("007", None),
            ("+5", None),
            ("", None),
            ("-", None),
            ("1a", None),
            (" 1", None),
        ] {
            assert_eq!(as_int(s.as_bytes()), want, "{s:?}");
        }
    }

    #[test]
    fn a_small_hash_is_laid_out_as_redis_dumps_it() {
        // DUMP of `HSET k a 1 bc xyz` on Redis 7.0 with rdbcompression off:
        // type, RDB length 21, listpack header (21 bytes, 4 entries), "a" (string of 1 +
        // back length 2), 1 (7-bit int + back length 1), "bc", "xyz", end, version 10, CRC.
        let got = payload(&[(b"a", b"1"), (b"bc", b"xyz")]).unwrap();
        let body = [
            16, 21, 21, 0, 0, 0, 4, 0, 0x81, b'a', 2, 1, 1, 0x82, b'b', b'c', 3, 0x83, b'x', b'y',
            b'z', 4, 0xFF, 10, 0,
        ];
        assert_eq!(&got[..body.len()], &body);
        let crc = CRC64.checksum(&body);
        assert_eq!(&got[body.len()..], &crc.to_le_bytes());
    }

    #[test]
    fn integer_encodings_cover_each_width() {
        let lp_entries = |v: &str| {
            let p = payload(&[(b"f", v.as_bytes())]).unwrap();
            // type, 1-byte length, 6-byte header, "f" entry (3 bytes): the value's entry
            // follows, up to the end byte.
            let end = p.len() - 10 - 1;
            p[2 + 6 + 3..end].to_vec()
        };
        assert_eq!(lp_entries("5"), vec![5, 1]);
        assert_eq!(lp_entries("-1"), vec![0xDF, 0xFF, 2]);
        assert_eq!(lp_entries("4095"), vec![0xCF, 0xFF, 2]);
        assert_eq!(lp_entries("-4096"), vec![0xD0, 0x00, 2]);
        assert_eq!(lp_entries("4096"), vec![0xF1, 0x00, 0x10, 3]);
        assert_eq!(lp_entries("-32768"), vec![0xF1, 0x00, 0x80, 3]);
        assert_eq!(lp_entries("32768"), vec![0xF2, 0x00, 0x80, 0x00, 4]);
        assert_eq!(
            lp_entries("-8388609"),
            vec![0xF3, 0xFF, 0xFF, 0x7F, 0xFF, 5]
        );
        assert_eq!(
            lp_entries("2147483648"),
            vec![0xF4, 0, 0, 0, 0x80, 0, 0, 0, 0, 9]
        );
    }

    #[test]
    fn long_entries_and_large_hashes_are_not_offered() {
        let long = [b'x'; 65];
        assert!(payload(&[(b"f", &long[..])]).is_none());
        assert!(payload(&[]).is_none());
        let fields: Vec<Vec<u8>> = (0..129).map(|i| format!("f{i}").into_bytes()).collect();
        let many: Vec<(&[u8], &[u8])> = fields.iter().map(|f| (&f[..], &b"v"[..])).collect();
        assert!(payload(&many).is_none());
        assert!(payload(&many[..128]).is_some());
        // 64 bytes is still a listpack entry, in the 12-bit string form; the listpack is
        // then over 63 bytes, so its RDB length takes the 14-bit form.
        let p = payload(&[(b"f", &[b'y'; 64][..])]).unwrap();
        assert_eq!(&p[..3], &[16, 0x40, 6 + 3 + 67 + 1]);
        assert_eq!(&p[3 + 6 + 3..][..2], &[0xE0, 64]);
        // The longest listpack offered: 128 pairs of 64-byte entries, over 16383 bytes, so
        // the 32-bit length form.
        let wide: Vec<Vec<u8>> = (0..128u8).map(|i| vec![i; 64]).collect();
        let pairs: Vec<(&[u8], &[u8])> = wide.iter().map(|f| (&f[..], &f[..])).collect();
        let p = payload(&pairs).unwrap();
        let lp_len = 6 + 256 * 67 + 1;
        assert_eq!(p[1], 0x80);
        assert_eq!(&p[2..6], &(lp_len as u32).to_be_bytes());
        assert_eq!(p.len(), 6 + lp_len + 10);
    }
}
