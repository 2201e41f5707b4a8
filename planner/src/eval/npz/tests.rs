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

/// The members' declared uncompressed sizes, summed.
fn declared(bytes: &[u8]) -> u64 {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    (0..zip.len())
        .map(|i| zip.by_index(i).unwrap().size())
        .sum()
}

#[test]
fn arrays_past_the_limit_are_refused_naming_the_member_and_the_limit() {
    let bytes = sample();
    let total = declared(&bytes);
    assert_eq!(read_npz_within(&bytes, total).unwrap().len(), 2);
    let e = read_npz_within(&bytes, total - 1).unwrap_err();
    let Error::Invalid { errors, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(errors[0].path, "y", "{e}");
    assert!(
        errors[0]
            .reason
            .contains(&format!("past the {} bytes", total - 1)),
        "{e}"
    );
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
