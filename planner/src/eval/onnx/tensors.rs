//! Tensors as ONNX declares and stores them: element types and declared shapes of values, a
//! weight's shape checked before anything is sized from it, and a tensor's values read as f32.
//! It reads tensors; finding which ones are weights is the parent module's.

use super::{pb, WHAT};
use crate::error::{Error, Result};

/// An integer attribute `name = value`.
pub fn int_attribute(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: Some(name.into()),
        i: Some(value),
        r#type: Some(pb::attribute_proto::AttributeType::Int as i32),
        ..Default::default()
    }
}

/// An ONNX element type's name (`FLOAT`, `INT64`, ...).
pub fn data_type_name(t: i32) -> String {
    pb::tensor_proto::DataType::try_from(t).map_or_else(
        |_| format!("data type {t}"),
        |d| d.as_str_name().to_string(),
    )
}

/// A value's declared tensor element type, when it declares one.
pub fn declared_elem_type(value: &pb::ValueInfoProto) -> Option<i32> {
    match value.r#type.as_ref()?.value.as_ref()? {
        pb::type_proto::Value::TensorType(t) => t.elem_type,
        _ => None,
    }
}

/// A value's declared dimensions (`None` for symbolic or unknown ones); `None` when it declares
/// no tensor shape at all.
pub fn declared_dims(value: &pb::ValueInfoProto) -> Option<Vec<Option<usize>>> {
    let Some(pb::type_proto::Value::TensorType(t)) = value.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                    Some(v as usize)
                }
                _ => None,
            })
            .collect(),
    )
}

/// A weight's shape as declared: every axis at least 1 (a weight with no values has nothing to
/// quantize, and its other axes would size per-channel arrays from nothing), and the product
/// addressable. That the data holds that many values is checked when it is read.
pub(super) fn weight_shape(dims: &[i64]) -> std::result::Result<Vec<usize>, String> {
    let shape: Vec<usize> = dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("has shape {dims:?}: every axis needs at least one value"))?;
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("has shape {dims:?}: more values than can be addressed"))?;
    Ok(shape)
}

/// How many values a tensor holds in the model file, by its element type (`None` for data in an
/// external file, or a type bitplan does not read).
pub(super) fn stored_len(t: &pb::TensorProto) -> Option<usize> {
    use pb::tensor_proto::DataType as D;
    if crate::eval::external::is_external(t) {
        return None;
    }
    let raw = t.raw_data.as_deref().unwrap_or(&[]).len();
    match D::try_from(t.data_type.unwrap_or(0)).ok()? {
        D::Float if raw > 0 => Some(raw / 4),
        D::Float => Some(t.float_data.len()),
        D::Int8 | D::Uint8 if raw > 0 => Some(raw),
        D::Int32 if raw > 0 => Some(raw / 4),
        D::Int8 | D::Uint8 | D::Int32 => Some(t.int32_data.len()),
        _ => None,
    }
}

/// The values of a tensor as f32 (float, or integer types converted exactly).
pub(super) fn tensor_values(t: &pb::TensorProto) -> Result<Vec<f32>> {
    use pb::tensor_proto::DataType as D;
    let name = t.name.clone().unwrap_or_default();
    if crate::eval::external::is_external(t) {
        return Err(Error::invalid(
            WHAT,
            name,
            "its data is in an external file: load the model from its path (OnnxModel::from_path, \
             or the CLI) so the file beside it can be read, or save the model with its weights inside",
        ));
    }
    let n = t
        .dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| {
            Error::invalid(
                WHAT,
                name.clone(),
                format!("shape {:?} is not a number of values", t.dims),
            )
        })?;
    let raw = t.raw_data.as_deref().unwrap_or(&[]);
    let values: Vec<f32> = match D::try_from(t.data_type.unwrap_or(0)) {
        Ok(D::Float) if !raw.is_empty() => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Ok(D::Float) => t.float_data.clone(),
        Ok(D::Int8) if !raw.is_empty() => raw.iter().map(|&b| f32::from(b as i8)).collect(),
        Ok(D::Uint8) if !raw.is_empty() => raw.iter().map(|&b| f32::from(b)).collect(),
        Ok(D::Int8 | D::Uint8 | D::Int32) if raw.is_empty() => {
            t.int32_data.iter().map(|&v| v as f32).collect()
        }
        Ok(D::Int32) => raw
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        _ => {
            return Err(Error::invalid(
                WHAT,
                name,
                format!(
                    "{} weights are not supported (float, int8, uint8, int32 are)",
                    data_type_name(t.data_type.unwrap_or(0))
                ),
            ))
        }
    };
    if values.len() != n {
        return Err(Error::invalid(
            WHAT,
            name,
            format!(
                "holds {} values but its shape {:?} needs {n}",
                values.len(),
                t.dims
            ),
        ));
    }
    Ok(values)
}
