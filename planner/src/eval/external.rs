//! ONNX external data: tensors whose bytes live in a file beside the model (how every model over
//! 2 GB is saved, since one protobuf cannot exceed 2 GB). A reference names `location` (relative to
//! the model's folder), `offset` and `length`; bitplan checks each reference when a model is read,
//! reads the bytes only when a tensor's values are needed, and hands ONNX Runtime the folder so a
//! session reads them from the file itself.

use crate::error::{Error, Result};
use crate::eval::onnx::pb;
use std::path::{Component, Path, PathBuf};

const WHAT: &str = "ONNX model";

/// Initializers of at least this many bytes go to the external data file when a model is written
/// with one (onnx's own converter uses 1 KiB too).
pub const THRESHOLD: usize = 1024;

/// Whether the tensor's bytes are in an external file.
pub fn is_external(t: &pb::TensorProto) -> bool {
    t.data_location == Some(pb::tensor_proto::DataLocation::External as i32)
}

/// Whether any initializer keeps its bytes outside the model file.
pub fn has_external_data(proto: &pb::ModelProto) -> bool {
    proto
        .graph
        .as_ref()
        .is_some_and(|g| g.initializer.iter().any(is_external))
}

/// Every tensor of the graph that can hold data, with the name errors give it: initializers, and
/// Constant nodes' values (named by the node's output).
pub(crate) fn tensors(g: &pb::GraphProto) -> impl Iterator<Item = (String, &pb::TensorProto)> {
    let constants = g.node.iter().flat_map(|n| {
        let output = n.output.first().cloned().unwrap_or_default();
        n.attribute
            .iter()
            .filter_map(move |a| a.t.as_ref().map(|t| (output.clone(), t)))
    });
    g.initializer
        .iter()
        .map(|t| (t.name.clone().unwrap_or_default(), t))
        .chain(constants)
}

/// Refuses a model whose tensors keep their bytes beside it when there is no folder to read them
/// from (a model given as bytes alone), naming each such tensor.
pub fn require_folder(g: &pb::GraphProto, folder: Option<&Path>) -> Result<()> {
    if folder.is_some() {
        return Ok(());
    }
    let errors: Vec<crate::FieldError> = tensors(g)
        .filter(|(_, t)| is_external(t))
        .map(|(name, _)| {
            crate::FieldError::new(
                format!("{name}.external_data"),
                "its bytes are in a file beside the model, and the model came alone: give it with \
                 its weights inside (the CLI reads a model's path with the files beside it)",
            )
        })
        .collect();
    Error::check(WHAT, errors)
}

/// Every tensor of the graph that can hold data, mutably: initializers and Constant nodes' values.
pub(crate) fn tensors_mut(g: &mut pb::GraphProto) -> impl Iterator<Item = &mut pb::TensorProto> {
    let constants = g
        .node
        .iter_mut()
        .flat_map(|n| n.attribute.iter_mut())
        .filter_map(|a| a.t.as_mut());
    g.initializer.iter_mut().chain(constants)
}

/// Marks `t` as external data at `location` with no bytes of its own: what a session is given in
/// place of it instead comes from [`crate::eval::runtime::External::values`].
pub fn mark(t: &mut pb::TensorProto, location: &str, offset: usize, length: usize) {
    let entry = |key: &str, value: String| pb::StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    };
    t.raw_data = None;
    t.float_data.clear();
    t.external_data = vec![
        entry("location", location.into()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
    t.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
}

/// Moves every initializer of at least [`THRESHOLD`] raw bytes out of `proto` into the returned
/// blob, each at a 64-byte aligned offset, recorded as external data at `location` (the blob's
/// file name, relative to the model's folder).
pub fn externalize(proto: &mut pb::ModelProto, location: &str) -> Vec<u8> {
    let mut blob = Vec::new();
    let Some(g) = proto.graph.as_mut() else {
        return blob;
    };
    for t in &mut g.initializer {
        let Some(raw) = t.raw_data.take_if(|r| r.len() >= THRESHOLD) else {
            continue;
        };
        blob.resize(blob.len().div_ceil(64) * 64, 0);
        mark(t, location, blob.len(), raw.len());
        blob.extend_from_slice(&raw);
    }
    blob
}

/// Where a tensor's external bytes are: a file inside the model's folder and a byte range in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub path: PathBuf,
    pub offset: u64,
    pub length: u64,
}

/// Finds and checks `t`'s external data beside the model in `folder`: the location must be a path
/// inside the folder (not absolute, no `..`), the file must open, and the range must lie in it.
/// Errors name `<tensor>.external_data`.
pub fn locate(t: &pb::TensorProto, folder: &Path) -> Result<Reference> {
    let name = t.name.clone().unwrap_or_default();
    let refuse = |reason: String| Error::invalid(WHAT, format!("{name}.external_data"), reason);
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let number = |key: &str| -> Result<Option<u64>> {
        entry(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| refuse(format!("{key} {v:?} is not a byte count")))
            })
            .transpose()
    };
    let location = entry("location").ok_or_else(|| refuse("has no location".into()))?;
    let relative = Path::new(&location);
    let inside = !location.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside {
        return Err(refuse(format!(
            "location {location:?} must be a path inside the model's folder (not absolute, no ..)"
        )));
    }
    let (offset, length) = (number("offset")?.unwrap_or(0), number("length")?);
    let path = folder.join(relative);
    let meta = std::fs::File::open(&path)
        .and_then(|f| f.metadata())
        .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a file", path.display())));
    }
    let size = meta.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(refuse(format!(
            "bytes {offset}..{} are past the end of {location:?} ({size} bytes)",
            offset.saturating_add(length)
        )));
    }
    Ok(Reference {
        path,
        offset,
        length,
    })
}

/// Reads the bytes of `t`'s external data from beside the model in `folder`.
pub fn read(t: &pb::TensorProto, folder: &Path) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let at = locate(t, folder)?;
    let failed = |e: std::io::Error| {
        Error::invalid(
            WHAT,
            format!("{}.external_data", t.name.clone().unwrap_or_default()),
            format!("cannot read {}: {e}", at.path.display()),
        )
    };
    let mut raw = vec![0u8; at.length as usize];
    let mut file = std::fs::File::open(&at.path).map_err(failed)?;
    file.seek(SeekFrom::Start(at.offset))
        .and_then(|_| file.read_exact(&mut raw))
        .map_err(failed)?;
    Ok(raw)
}
