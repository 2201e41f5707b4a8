//! The inference runtime evaluation runs on, as an interface: a [`Backend`] builds sessions from
//! serialized ONNX models, a [`Session`] runs named input tensors ([`Feed`]) to output
//! [`Tensor`]s. ONNX Runtime implements it in [`crate::ort_backend`]; the evaluator and its tests
//! see only this.

use crate::error::Result;

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

/// An inference runtime.
pub trait Backend {
    type Session: Session;
    /// Builds a session from a serialized ONNX model.
    fn session(&self, model: &[u8]) -> Result<Self::Session>;
}

/// A loaded model: named inputs in, every graph output out as f32 (integer outputs converted), in
/// graph order.
pub trait Session {
    fn run(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Tensor>>;
}
