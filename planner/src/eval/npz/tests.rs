//! Bounded reading: size limits, shape overflow, and corrupted input that must not panic.

use super::*;
use proptest::prelude::*;

fn sample() -> Vec<u8> {
    let x = Array {
        shape: vec![3, 2],
        values: Values::Float(vec![0.5, -1.0, 2.0, 3.5, 0.0, 1.0]),
    };
    let y = Array {
        shape: vec![3],
        values: Values::Int(vec![0, 1, 2]),
    };
    to_npz(&[("x", &x), ("y", &y)])
}

/// The members' declared uncompressed sizes, in archive order.
fn declared(bytes: &[u8]) -> Vec<u64> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().size())
        .collect()
}

#[test]
fn arrays_past_the_limit_are_refused_naming_the_member_and_the_limit() {
    let bytes = sample();
    // While `y` is read, `x`'s six values (8 bytes each) are held, `y`'s bytes are read whole,
    // and its three values are made from them.
    let sizes = declared(&bytes);
    let (x, y) = (sizes[0] + 6 * 8, 6 * 8 + sizes[1] + 3 * 8);
    let need = x.max(y);
    assert_eq!(read_npz_within(&bytes, need).unwrap().len(), 2);
    let e = read_npz_within(&bytes, need - 1).unwrap_err();
    let Error::Invalid { errors, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(errors[0].path, if x >= y { "x" } else { "y" }, "{e}");
    assert!(
        errors[0]
            .reason
            .contains(&format!("past the {} bytes", need - 1)),
        "{e}"
    );
}

/// One `.npy` member of `n` uint8 values, stored.
fn bytes_npz(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({n},), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
    npy.extend_from_slice(header.as_bytes());
    npy.extend(std::iter::repeat_n(7u8, n));
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("x.npy", options).unwrap();
    zip.write_all(&npy).unwrap();
    zip.finish().unwrap().into_inner()
}

#[test]
fn bytes_that_would_widen_past_the_limit_are_refused_before_widening() {
    let n = 10_000;
    let bytes = bytes_npz(n);
    let raw = declared(&bytes)[0];
    assert!(raw < 2 * n as u64, "{raw}");
    // The member itself fits; its values as i64 (eight times the bytes) do not.
    let e = read_npz_within(&bytes, 4 * n as u64)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{n} values, {} bytes once read", 8 * n)),
        "{e}"
    );
    // The member's bytes and its values, held together.
    let set = ValidationSet::from_npz_within(&bytes, raw + 8 * n as u64).unwrap();
    assert_eq!(set.len(), n);
}

#[test]
fn a_shape_with_more_values_than_can_be_addressed_is_refused() {
    let huge = Array {
        shape: vec![1 << 40, 1 << 40],
        values: Values::Float(Vec::new()),
    };
    let e = read_npz(&to_npz(&[("x", &huge)])).unwrap_err().to_string();
    assert!(e.contains("more values than can be addressed"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any corruption of a valid archive (bytes overwritten, the end cut off) is an error or a
    /// set, never a panic.
    #[test]
    fn corrupted_archives_never_panic(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = sample();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        let _ = read_npz(&bytes);
        let _ = ValidationSet::from_npz(&bytes);
    }

    /// `.npy` parsing of arbitrary bytes behind a valid magic is an error or an array.
    #[test]
    fn arbitrary_npy_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend(tail);
        let _ = parse_npy(&bytes);
    }
}
