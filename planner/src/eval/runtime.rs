//! The inference runtime evaluation runs on, as an interface: a [`Backend`] builds sessions from
//! serialized ONNX models, a [`Session`] runs named input tensors ([`Feed`]) to output
//! [`Tensor`]s. A model's weights need not be in its bytes: a session reads external data from
//! the model's folder, or takes their values in memory ([`External`]). ONNX Runtime implements
//! it in `ort_backend`; the evaluator and its tests see only this.

use crate::error::Result;
use std::path::PathBuf;

/// A dense f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The elements of an input tensor, in the element type the model declares for it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Elements<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
    I32(&'a [i32]),
}

/// One named input of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub elements: Elements<'a>,
}

impl<'a> Feed<'a> {
    /// An f32 input.
    pub fn f32(name: &'a str, shape: &[usize], data: &'a [f32]) -> Feed<'a> {
        Feed {
            name,
            shape: shape.to_vec(),
            elements: Elements::F32(data),
        }
    }
}

/// The tensors a model marks as external data: where the session finds their bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct External {
    /// The folder the model's external data locations are relative to.
    pub folder: Option<PathBuf>,
    /// Values given in memory, by tensor name, instead of reading the tensor's location.
    pub values: Vec<Initializer>,
}

impl External {
    /// External data read from `folder` only.
    pub fn folder(folder: Option<PathBuf>) -> External {
        External {
            folder,
            values: Vec::new(),
        }
    }
}

/// An f32 tensor given to a session by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An inference runtime.
pub trait Backend {
    type Session: Session;
    /// Builds a session from a serialized ONNX model (which stays under protobuf's 2 GB: large
    /// weights are external data, found through `external`).
    fn session(&self, model: &[u8], external: External) -> Result<Self::Session>;
}

/// A loaded model: named inputs in, every graph output out as f32 (integer outputs converted), in
/// graph order.
pub trait Session {
    fn run(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Tensor>>;
}
