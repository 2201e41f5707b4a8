//! NumPy `.npz` validation sets: `x` (inputs, any float or integer dtype) and optional `y`
//! (integer labels), read without Python.

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::io::Read;

const WHAT: &str = "validation set";

/// One array: its shape and values as f64 (exact for every dtype an npz of inputs or labels holds).
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// A validation set: inputs and, when present, labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSet {
    /// Inputs `[N, ...]`, as f32.
    pub x: Vec<f32>,
    pub x_shape: Vec<usize>,
    pub y: Option<Vec<i64>>,
}

impl ValidationSet {
    pub fn len(&self) -> usize {
        self.x_shape.first().copied().unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Elements per sample.
    pub fn sample_size(&self) -> usize {
        self.x_shape[1..].iter().product()
    }

    /// Reads `x` and optional `y` from `.npz` bytes.
    pub fn from_npz(bytes: &[u8]) -> Result<ValidationSet> {
        let arrays = read_npz(bytes)?;
        let x = arrays.get("x").ok_or_else(|| {
            Error::invalid(
                WHAT,
                "x",
                format!(
                    "the npz has no array `x` (it has: {})",
                    arrays.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        if x.shape.is_empty() || x.shape[0] == 0 {
            return Err(Error::invalid(
                WHAT,
                "x",
                format!(
                    "must have a leading sample dimension of at least 1, has shape {:?}",
                    x.shape
                ),
            ));
        }
        let y = match arrays.get("y") {
            None => None,
            Some(y) => {
                if y.shape != [x.shape[0]] {
                    return Err(Error::invalid(
                        WHAT,
                        "y",
                        format!(
                            "shape {:?} does not match {} samples of x",
                            y.shape, x.shape[0]
                        ),
                    ));
                }
                let mut labels = Vec::with_capacity(y.values.len());
                for (i, &v) in y.values.iter().enumerate() {
                    if v.fract() != 0.0 || v < 0.0 {
                        return Err(Error::invalid(
                            WHAT,
                            format!("y[{i}]"),
                            format!("labels must be non-negative integers, found {v}"),
                        ));
                    }
                    labels.push(v as i64);
                }
                Some(labels)
            }
        };
        Ok(ValidationSet {
            x: x.values.iter().map(|&v| v as f32).collect(),
            x_shape: x.shape.clone(),
            y,
        })
    }
}

/// Every `.npy` member of an `.npz` archive (stored or deflated), by name without `.npy`.
pub fn read_npz(bytes: &[u8]) -> Result<BTreeMap<String, Array>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::invalid(WHAT, "", format!("not an .npz archive: {e}")))?;
    let mut out = BTreeMap::new();
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| Error::invalid(WHAT, "", format!("unreadable npz member {i}: {e}")))?;
        let name = f.name().trim_end_matches(".npy").to_string();
        let mut buf = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| Error::invalid(WHAT, name.clone(), format!("unreadable: {e}")))?;
        let arr = parse_npy(&buf).map_err(|reason| Error::invalid(WHAT, name.clone(), reason))?;
        out.insert(name, arr);
    }
    Ok(out)
}

/// Parses one `.npy` file (format versions 1-3, little-endian or byte-sized dtypes, C order).
pub fn parse_npy(b: &[u8]) -> std::result::Result<Array, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = b
        .get(start..start + header_len)
        .ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the .npy header is not text")?;
    let field = |key: &str| -> std::result::Result<&str, String> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or(format!("the .npy header has no {key}"))?;
        Ok(header[at + key.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("malformed descr")?;
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("malformed shape")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("malformed shape dimension {s:?}"))
        })
        .collect::<std::result::Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let data = &b[start + header_len..];
    let (endian, kind) = descr.split_at(1);
    if endian == ">" {
        return Err(format!("big-endian dtype {descr} is not supported"));
    }
    macro_rules! read {
        ($t:ty, $size:expr) => {{
            if data.len() < n * $size {
                return Err(format!(
                    "truncated data: {} bytes for {n} values of {descr}",
                    data.len()
                ));
            }
            data[..n * $size]
                .chunks_exact($size)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")) as f64)
                .collect::<Vec<f64>>()
        }};
    }
    let values = match kind {
        "f4" => read!(f32, 4),
        "f8" => read!(f64, 8),
        "f2" => return Err("float16 arrays are not supported; convert x to float32".into()),
        "i1" => read!(i8, 1),
        "u1" | "b1" => read!(u8, 1),
        "i2" => read!(i16, 2),
        "u2" => read!(u16, 2),
        "i4" => read!(i32, 4),
        "u4" => read!(u32, 4),
        "i8" => read!(i64, 8),
        "u8" => read!(u64, 8),
        other => return Err(format!("unsupported dtype {other:?}")),
    };
    Ok(Array { shape, values })
}
