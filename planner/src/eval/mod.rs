//! The evaluation engine: reading ONNX models and validation sets, materialising a candidate's
//! weights by Double Rounding, running it segment by segment on a [`Backend`], and scoring its
//! outputs against the full-precision model's; measured sensitivity, manifests derived from a
//! model, and the QDQ export. It knows nothing of budgets or solvers: it prices nothing, it only
//! measures what it is given.
//!
//! - [`onnx`], [`external`]: models, their weighted layers and tensors stored beside them.
//! - [`npz`]: validation sets from NumPy `.npz`, bound to a model's inputs.
//! - [`quant`]: Double Rounding of the stored high-bit integers.
//! - [`runtime`] (the interface) and `ort_backend` (ONNX Runtime behind it).
//! - [`evaluator`]: candidates measured on a validation set; [`compare`]: the metrics.
//! - [`sensitivity`]: each layer alone at each bit-width; [`ingest`]: a manifest from a model.
//! - [`export`]: a plan as a deployable QDQ model; [`synth_model`]: generated test models.

pub mod compare;
pub mod evaluator;
pub mod export;
pub mod external;
pub mod ingest;
pub mod npz;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_backend;
mod prepare;
pub mod quant;
pub mod runtime;
mod segment;
pub mod sensitivity;
mod sessions;
pub mod synth_model;

pub use evaluator::{
    EvalOptions, Evaluator, Metrics, Scheme, Timings, DEFAULT_BATCH_SIZE, FULL_PRECISION,
};
pub use prepare::{activation_quantizer, probe};
pub use runtime::{Backend, Elements, External, Feed, Initializer, Session, Tensor};
