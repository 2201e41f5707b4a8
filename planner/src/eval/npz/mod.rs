//! Validation sets: named input arrays (and optional integer labels `y`) read from NumPy `.npz`
//! without Python, and bound to a model's data inputs.
//!
//! An npz for a single-input model holds `x` (or an array named like the input); for a model with
//! several inputs, one array per input, named like it; other arrays are ignored. Every array but
//! `y` is read as an input, and all share the leading sample dimension. Binding ([`ValidationSet::bind`]) orders the arrays like the
//! model's inputs and converts them to the element type each declares: integer arrays feed float
//! inputs as numbers (uint8 images), and integer inputs (token ids, masks) take integer arrays
//! unchanged; float arrays never feed integer inputs.

use crate::error::{Error, FieldError, Result};
use crate::eval::onnx::{data_type_name, declared_dims, declared_elem_type, pb, OnnxModel};
use crate::eval::runtime::{Elements, Feed};
use std::collections::BTreeMap;
use std::io::Read;

const WHAT: &str = "validation set";

/// Most bytes the arrays of one `.npz` may take, both as decompressed members and as values held
/// in memory (8 bytes each, since values are widened to f64 or i64): a zip bomb (a small archive
/// declaring or inflating to far more), or a uint8 array that would widen eightfold past it, is
/// refused before it is read or widened. The service's `--max-npz-bytes` may lower it.
pub const MAX_NPZ_BYTES: u64 = 4 << 30;

/// Bytes one value takes in memory once read ([`Values`] are f64 or i64).
const VALUE_BYTES: u64 = 8;

/// One array's values: floats as f64, integers as i64 (both exact for what the npz held).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One `.npy` array: its shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Values,
}

/// An input's elements, in the type a run feeds.
#[derive(Debug, Clone, PartialEq)]
pub enum InputValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

/// One named input `[N, ...]` of a validation set.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: InputValues,
}

impl Input {
    /// Samples `start..end` as a run's input.
    pub fn feed(&self, start: usize, end: usize) -> Feed<'_> {
        let per: usize = self.shape[1..].iter().product();
        let (a, b) = (start * per, end * per);
        let mut shape = self.shape.clone();
        shape[0] = end - start;
        Feed {
            name: &self.name,
            shape,
            elements: match &self.values {
                InputValues::F32(v) => Elements::F32(&v[a..b]),
                InputValues::I64(v) => Elements::I64(&v[a..b]),
                InputValues::I32(v) => Elements::I32(&v[a..b]),
            },
        }
    }
}

/// A validation set: inputs sharing a leading sample dimension and, when present, labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSet {
    /// Read from an npz, in the archive's name order; bound to a model, in its input order.
    pub inputs: Vec<Input>,
    pub y: Option<Vec<i64>>,
}

impl ValidationSet {
    /// A set with one f32 input `x` of `shape` `[N, ...]`.
    pub fn single(x: Vec<f32>, shape: Vec<usize>, y: Option<Vec<i64>>) -> ValidationSet {
        ValidationSet {
            inputs: vec![Input {
                name: "x".into(),
                shape,
                values: InputValues::F32(x),
            }],
            y,
        }
    }

    /// Samples: the labels', else those of `x`, else of the first input (all agree once bound).
    pub fn len(&self) -> usize {
        if let Some(y) = &self.y {
            return y.len();
        }
        self.input("x")
            .or(self.inputs.first())
            .and_then(|i| i.shape.first().copied())
            .unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every input's samples `start..end`, as a run's inputs.
    pub fn feeds(&self, start: usize, end: usize) -> Vec<Feed<'_>> {
        self.inputs.iter().map(|i| i.feed(start, end)).collect()
    }

    /// The input of that name.
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    /// Samples `start..end` as a set of their own.
    pub fn slice(&self, start: usize, end: usize) -> ValidationSet {
        ValidationSet {
            inputs: self
                .inputs
                .iter()
                .map(|i| {
                    let per: usize = i.shape[1..].iter().product();
                    let (a, b) = (start * per, end * per);
                    let mut shape = i.shape.clone();
                    shape[0] = end - start;
                    Input {
                        name: i.name.clone(),
                        shape,
                        values: match &i.values {
                            InputValues::F32(v) => InputValues::F32(v[a..b].to_vec()),
                            InputValues::I64(v) => InputValues::I64(v[a..b].to_vec()),
                            InputValues::I32(v) => InputValues::I32(v[a..b].to_vec()),
                        },
                    }
                })
                .collect(),
            y: self.y.as_ref().map(|y| y[start..end].to_vec()),
        }
    }

    /// Reads every array of an `.npz`: `y` as labels, the others as inputs. Shapes are checked
    /// when the set is bound to a model ([`ValidationSet::bind`]).
    pub fn from_npz(bytes: &[u8]) -> Result<ValidationSet> {
        Self::from_npz_within(bytes, MAX_NPZ_BYTES)
    }

    /// [`ValidationSet::from_npz`] holding at most `max_bytes` of arrays ([`read_npz_within`]).
    pub fn from_npz_within(bytes: &[u8], max_bytes: u64) -> Result<ValidationSet> {
        let mut arrays = read_npz_within(bytes, max_bytes)?;
        let y = arrays.remove("y");
        if arrays.is_empty() {
            return Err(Error::invalid(
                WHAT,
                "x",
                "the npz has no input array: name it `x` (or, for a model with several inputs, like each input)",
            ));
        }
        let inputs = arrays
            .into_iter()
            .map(|(name, a)| Input {
                name,
                shape: a.shape,
                values: match a.values {
                    Values::Float(v) => InputValues::F32(v.into_iter().map(|v| v as f32).collect()),
                    Values::Int(v) => InputValues::I64(v),
                },
            })
            .collect();
        let y = match y {
            None => None,
            Some(y) => {
                if y.shape.len() != 1 {
                    return Err(Error::invalid(
                        WHAT,
                        "y",
                        format!(
                            "labels must be one per sample, [N]; got shape {:?}",
                            y.shape
                        ),
                    ));
                }
                let labels = match y.values {
                    Values::Int(v) => v,
                    Values::Float(v) => v
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            if v.fract() == 0.0 && v.abs() < 2f64.powi(53) {
                                Ok(v as i64)
                            } else {
                                Err(Error::invalid(
                                    WHAT,
                                    format!("y[{i}]"),
                                    format!("labels must be non-negative integers, found {v}"),
                                ))
                            }
                        })
                        .collect::<Result<_>>()?,
                };
                if let Some((i, v)) = labels.iter().enumerate().find(|(_, &v)| v < 0) {
                    return Err(Error::invalid(
                        WHAT,
                        format!("y[{i}]"),
                        format!("labels must be non-negative integers, found {v}"),
                    ));
                }
                Some(labels)
            }
        };
        Ok(ValidationSet { inputs, y })
    }

    /// This set as `model` reads it: one input per data input of the model, in the model's order,
    /// under its names, in the element type it declares, with shapes checked against its fixed
    /// dimensions. Arrays no input reads are left out (an npz may carry indices or metadata).
    /// Errors name the array and the reason; every problem is reported at once.
    pub fn bind(&self, model: &OnnxModel) -> Result<ValidationSet> {
        let wanted = model.data_inputs()?;
        let mut errors = Vec::new();
        let mut inputs = Vec::with_capacity(wanted.len());
        for info in &wanted {
            let name = info.name.clone().unwrap_or_default();
            let found = self.inputs.iter().position(|i| i.name == name).or_else(|| {
                // A single-input model reads `x` whatever it calls its input.
                (wanted.len() == 1)
                    .then(|| self.inputs.iter().position(|i| i.name == "x"))
                    .flatten()
            });
            let Some(k) = found else {
                let have = self
                    .inputs
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                errors.push(if wanted.len() == 1 {
                    FieldError::new(
                        "x",
                        format!("the npz has no array `x` nor one named like the model input {name:?} (it has: {have})"),
                    )
                } else {
                    FieldError::new(
                        name.clone(),
                        format!("the model input {name:?} has no array of that name in the npz (it has: {have})"),
                    )
                });
                continue;
            };
            match bind_input(&self.inputs[k], info) {
                Ok(values) => inputs.push(Input {
                    name,
                    shape: self.inputs[k].shape.clone(),
                    values,
                }),
                Err(reason) => errors.push(FieldError::new(self.inputs[k].name.clone(), reason)),
            }
        }
        Error::check(WHAT, errors)?;
        // Every input, and the labels, have one row per sample.
        let mut errors = Vec::new();
        let n = inputs[0].shape.first().copied().unwrap_or(0);
        for i in &inputs {
            let m = i.shape.first().copied().unwrap_or(0);
            if m == 0 {
                errors.push(FieldError::new(
                    i.name.clone(),
                    format!(
                        "must have a leading sample dimension of at least 1, has shape {:?}",
                        i.shape
                    ),
                ));
            } else if m != n {
                errors.push(FieldError::new(
                    i.name.clone(),
                    format!(
                        "has {m} samples but {} has {n}: inputs share the leading dimension",
                        inputs[0].name
                    ),
                ));
            }
        }
        if let Some(y) = &self.y {
            if y.len() != n {
                errors.push(FieldError::new(
                    "y",
                    format!("has {} labels for {n} samples of the inputs", y.len()),
                ));
            }
        }
        Error::check(WHAT, errors)?;
        Ok(ValidationSet {
            inputs,
            y: self.y.clone(),
        })
    }
}

/// An input's values converted to the element type the model declares for `info`, or why not.
fn bind_input(
    input: &Input,
    info: &pb::ValueInfoProto,
) -> std::result::Result<InputValues, String> {
    use pb::tensor_proto::DataType as D;
    let name = info.name.clone().unwrap_or_default();
    if let Some(dims) = declared_dims(info) {
        let fits = dims.len() == input.shape.len()
            && dims
                .iter()
                .zip(&input.shape)
                .skip(1)
                .all(|(d, &x)| d.is_none_or(|d| d == x));
        if !fits {
            let want: Vec<String> = dims
                .iter()
                .map(|d| d.map_or("?".into(), |v| v.to_string()))
                .collect();
            return Err(format!(
                "shape {:?} does not fit the model input {name:?} [{}]",
                input.shape,
                want.join(", ")
            ));
        }
    }
    let elem = declared_elem_type(info).unwrap_or(D::Float as i32);
    let float_for_int = || {
        format!(
            "holds floats, but the model input {name:?} is {}: save it as an integer array",
            data_type_name(elem)
        )
    };
    Ok(match (elem, &input.values) {
        (e, InputValues::F32(v)) if e == D::Float as i32 => InputValues::F32(v.clone()),
        (e, InputValues::I64(v)) if e == D::Float as i32 => {
            InputValues::F32(v.iter().map(|&v| v as f32).collect())
        }
        (e, InputValues::I32(v)) if e == D::Float as i32 => {
            InputValues::F32(v.iter().map(|&v| v as f32).collect())
        }
        (e, InputValues::I64(v)) if e == D::Int64 as i32 => InputValues::I64(v.clone()),
        (e, InputValues::I32(v)) if e == D::Int64 as i32 => {
            InputValues::I64(v.iter().map(|&v| i64::from(v)).collect())
        }
        (e, InputValues::I32(v)) if e == D::Int32 as i32 => InputValues::I32(v.clone()),
        (e, InputValues::I64(v)) if e == D::Int32 as i32 => InputValues::I32(
            v.iter()
                .enumerate()
                .map(|(i, &v)| {
                    i32::try_from(v).map_err(|_| {
                        format!("value {v} at flat index {i} does not fit the int32 input {name:?}")
                    })
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        (e, InputValues::F32(_)) if e == D::Int64 as i32 || e == D::Int32 as i32 => {
            return Err(float_for_int())
        }
        (e, _) => {
            return Err(format!(
                "the model input {name:?} is {}; bitplan feeds float, int64 and int32 inputs",
                data_type_name(e)
            ))
        }
    })
}

/// Every `.npy` member of an `.npz` archive (stored or deflated), by name without `.npy`.
pub fn read_npz(bytes: &[u8]) -> Result<BTreeMap<String, Array>> {
    read_npz_within(bytes, MAX_NPZ_BYTES)
}

/// [`read_npz`] with at most `max_bytes` of arrays, decompressed and in memory: each member's
/// declared size must fit in what is left before anything is read, a member is read no further
/// than it declares, and its values (8 bytes each) count against the limit before they are
/// widened.
pub fn read_npz_within(bytes: &[u8], max_bytes: u64) -> Result<BTreeMap<String, Array>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| Error::invalid(WHAT, "", format!("not an .npz archive: {e}")))?;
    let mut out = BTreeMap::new();
    let mut left = max_bytes;
    for i in 0..zip.len() {
        let f = zip
            .by_index(i)
            .map_err(|e| Error::invalid(WHAT, "", format!("unreadable npz member {i}: {e}")))?;
        let name = f.name().trim_end_matches(".npy").to_string();
        let invalid = |reason: String| Error::invalid(WHAT, name.clone(), reason);
        let declared = f.size();
        if declared > left {
            return Err(invalid(format!(
                "declares {declared} bytes uncompressed, past the {max_bytes} bytes an npz may hold"
            )));
        }
        left -= declared;
        let mut buf = Vec::new();
        buf.try_reserve_exact(declared as usize)
            .map_err(|_| invalid(format!("{declared} bytes do not fit in memory")))?;
        // One byte past the declared size tells a member that holds more than it says.
        f.take(declared + 1)
            .read_to_end(&mut buf)
            .map_err(|e| invalid(format!("unreadable: {e}")))?;
        if buf.len() as u64 > declared {
            return Err(invalid(format!(
                "holds more than the {declared} bytes it declares uncompressed"
            )));
        }
        if (buf.len() as u64) < declared {
            return Err(invalid(format!(
                "declares {declared} bytes uncompressed but holds {}",
                buf.len()
            )));
        }
        // The member's bytes are held while its values are read: both count.
        let arr = parse_npy_within(&buf, left, max_bytes).map_err(invalid)?;
        // The member's bytes are dropped; its values stay.
        left = (left + declared).saturating_sub(arr.values.len() as u64 * VALUE_BYTES);
        out.insert(name, arr);
    }
    Ok(out)
}

/// An `.npz` archive (stored, not deflated) of `.npy` arrays, version 1: floats as `<f8`, integers
/// as `<i8`, in C order. What [`read_npz`] reads back.
pub fn to_npz(arrays: &[(&str, &Array)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, array) in arrays {
        let (descr, data): (&str, Vec<u8>) = match &array.values {
            Values::Float(v) => ("<f8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Values::Int(v) => ("<i8", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        let dims: Vec<String> = array.shape.iter().map(usize::to_string).collect();
        let shape = match dims.as_slice() {
            [one] => format!("({one},)"),
            _ => format!("({})", dims.join(", ")),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        // The data starts 64-byte aligned, after a newline-terminated header.
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut npy = b"\x93NUMPY\x01\x00".to_vec();
        npy.extend_from_slice(&(header.len() as u16).to_le_bytes());
        npy.extend_from_slice(header.as_bytes());
        npy.extend_from_slice(&data);
        zip.start_file(format!("{name}.npy"), options)
            .expect("writing to memory");
        zip.write_all(&npy).expect("writing to memory");
    }
    zip.finish().expect("writing to memory").into_inner()
}

/// Parses one `.npy` file (format versions 1-3, little-endian or byte-sized dtypes, C order).
pub fn parse_npy(b: &[u8]) -> std::result::Result<Array, String> {
    parse_npy_within(b, MAX_NPZ_BYTES, MAX_NPZ_BYTES)
}

/// [`parse_npy`], refusing an array whose values would take more than `left` bytes in memory
/// (what is left of the `max_bytes` an npz may hold).
fn parse_npy_within(b: &[u8], left: u64, max_bytes: u64) -> std::result::Result<Array, String> {
    let (header, data) = npy_header(b)?;
    let descr = header_field(header, "descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("malformed descr")?;
    if header_field(header, "fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-ordered arrays are not supported; save with np.ascontiguousarray".into(),
        );
    }
    let shape_text = header_field(header, "shape")?;
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
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} has more values than can be addressed"))?;
    if (n as u64).saturating_mul(VALUE_BYTES) > left {
        return Err(format!(
            "shape {shape:?} holds {n} values, {} bytes once read, past the {max_bytes} bytes an npz may hold",
            (n as u64).saturating_mul(VALUE_BYTES)
        ));
    }
    let values = npy_values(descr, data, n)?;
    Ok(Array { shape, values })
}

/// The header text of a `.npy` file and the bytes after it.
fn npy_header(b: &[u8]) -> std::result::Result<(&str, &[u8]), String> {
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
    Ok((header, &b[start + header_len..]))
}

/// The text after `'key':` in a `.npy` header.
fn header_field<'a>(header: &'a str, key: &str) -> std::result::Result<&'a str, String> {
    let at = header
        .find(&format!("'{key}'"))
        .ok_or(format!("the .npy header has no {key}"))?;
    Ok(header[at + key.len() + 2..]
        .trim_start()
        .trim_start_matches(':')
        .trim_start())
}

/// The first `n` values of dtype `descr` in `data`, widened to f64 or i64.
fn npy_values(descr: &str, data: &[u8], n: usize) -> std::result::Result<Values, String> {
    let (endian, kind) = descr.split_at(1);
    if endian == ">" {
        return Err(format!("big-endian dtype {descr} is not supported"));
    }
    macro_rules! read {
        ($t:ty, $size:expr, $as:ty) => {{
            if n.checked_mul($size).is_none_or(|bytes| data.len() < bytes) {
                return Err(format!(
                    "truncated data: {} bytes for {n} values of {descr}",
                    data.len()
                ));
            }
            data[..n * $size]
                .chunks_exact($size)
                .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size")) as $as)
                .collect::<Vec<$as>>()
        }};
    }
    Ok(match kind {
        "f4" => Values::Float(read!(f32, 4, f64)),
        "f8" => Values::Float(read!(f64, 8, f64)),
        "f2" => return Err("float16 arrays are not supported; convert to float32".into()),
        "i1" => Values::Int(read!(i8, 1, i64)),
        "u1" | "b1" => Values::Int(read!(u8, 1, i64)),
        "i2" => Values::Int(read!(i16, 2, i64)),
        "u2" => Values::Int(read!(u16, 2, i64)),
        "i4" => Values::Int(read!(i32, 4, i64)),
        "u4" => Values::Int(read!(u32, 4, i64)),
        "i8" => Values::Int(read!(i64, 8, i64)),
        "u8" => {
            let v = read!(u64, 8, u64);
            match v.iter().find(|&&v| i64::try_from(v).is_err()) {
                Some(big) => return Err(format!("uint64 value {big} is beyond int64")),
                None => Values::Int(v.into_iter().map(|v| v as i64).collect()),
            }
        }
        other => return Err(format!("unsupported dtype {other:?}")),
    })
}

#[cfg(test)]
mod tests;
