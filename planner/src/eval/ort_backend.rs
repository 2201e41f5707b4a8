//! ONNX Runtime behind [`Backend`], loaded dynamically from the shared
//! library of the PyPI `onnxruntime` wheel. One environment per process.

use crate::error::{Error, Result};
use crate::eval::runtime::{Backend, Elements, External, Feed, Session, Tensor};
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorElementType;
use ort::value::TensorRef;
use std::path::Path;
use std::sync::OnceLock;

static ENVIRONMENT: OnceLock<std::result::Result<ort::environment::Environment, String>> =
    OnceLock::new();

/// ONNX Runtime with a fixed number of intra-op threads per session.
#[derive(Debug, Clone)]
pub struct OrtBackend {
    env: ort::environment::Environment,
    intra_threads: usize,
}

impl OrtBackend {
    /// Loads `libonnxruntime` from `library` (once per process; later calls reuse it).
    pub fn new(library: &Path, intra_threads: usize) -> Result<OrtBackend> {
        let env = ENVIRONMENT
            .get_or_init(|| {
                ort::init_from(library)
                    .map_err(|e| {
                        format!("cannot load ONNX Runtime from {}: {e}", library.display())
                    })?
                    .with_name("bitplan")
                    .build()
                    .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
            })
            .clone()
            .map_err(Error::Runtime)?;
        Ok(OrtBackend {
            env,
            intra_threads: intra_threads.max(1),
        })
    }
}

/// An ONNX Runtime session.
#[derive(Debug)]
pub struct OrtSession(ort::session::Session);

impl Backend for OrtBackend {
    type Session = OrtSession;

    fn session(&self, model: &[u8], external: External) -> Result<OrtSession> {
        let rt = |e: ort::Error| Error::Runtime(format!("ONNX Runtime refused the model: {e}"));
        let mut builder = ort::session::Session::builder(&self.env)
            .map_err(rt)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| rt(e.into()))?
            .with_intra_threads(self.intra_threads)
            .map_err(|e| rt(e.into()))?
            .with_inter_threads(1)
            .map_err(|e| rt(e.into()))?
            // Without the arena a session hands its activations back after each run: the
            // evaluator keeps many sessions, and each arena would keep its peak batch's memory.
            .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
            .map_err(|e| rt(e.into()))?;
        if let Some(folder) = &external.folder {
            // A model read from memory finds its external data relative to this folder.
            builder = builder
                .with_config_entry(
                    "session.model_external_initializers_file_folder_path",
                    folder.to_string_lossy(),
                )
                .map_err(|e| rt(e.into()))?;
        }
        for t in external.values {
            let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            let value = ort::value::Tensor::from_array((shape, t.data)).map_err(rt)?;
            builder = builder
                .with_external_initializer(&t.name, value.into_dyn())
                .map_err(|e| rt(e.into()))?;
        }
        let session = builder.commit_from_memory(model).map_err(rt)?;
        Ok(OrtSession(session))
    }
}

impl Session for OrtSession {
    fn run(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Tensor>> {
        let rt = |e: ort::Error| Error::Runtime(format!("inference failed: {e}"));
        let mut inputs: Vec<(&str, ort::session::SessionInputValue<'_>)> =
            Vec::with_capacity(feeds.len());
        for feed in feeds {
            let shape: Vec<i64> = feed.shape.iter().map(|&d| d as i64).collect();
            let value = match feed.elements {
                Elements::F32(d) => TensorRef::from_array_view((shape, d)).map_err(rt)?.into(),
                Elements::I64(d) => TensorRef::from_array_view((shape, d)).map_err(rt)?.into(),
                Elements::I32(d) => TensorRef::from_array_view((shape, d)).map_err(rt)?.into(),
            };
            inputs.push((feed.name, value));
        }
        let outputs = self.0.run(inputs).map_err(rt)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (name, value) in outputs.iter() {
            let shape: Vec<usize> = match value.dtype() {
                ort::value::ValueType::Tensor { shape, .. } => {
                    shape.iter().map(|&d| d.max(0) as usize).collect()
                }
                other => {
                    return Err(Error::Runtime(format!(
                        "output {name:?} is a {other}, not a tensor"
                    )))
                }
            };
            // Integer outputs (class indices, counts) are compared as numbers like any other.
            let data: Vec<f32> = match value.dtype().tensor_type() {
                Some(TensorElementType::Float32) => {
                    value.try_extract_tensor::<f32>().map_err(rt)?.1.to_vec()
                }
                Some(TensorElementType::Float64) => value.try_extract_tensor::<f64>().map_err(rt)?.1.iter().map(|&v| v as f32).collect(),
                Some(TensorElementType::Int64) => value.try_extract_tensor::<i64>().map_err(rt)?.1.iter().map(|&v| v as f32).collect(),
                Some(TensorElementType::Int32) => value.try_extract_tensor::<i32>().map_err(rt)?.1.iter().map(|&v| v as f32).collect(),
                other => {
                    return Err(Error::Runtime(format!(
                        "output {name:?} has element type {other:?}; bitplan reads float, double, int64 and int32 outputs"
                    )))
                }
            };
            out.push(Tensor { shape, data });
        }
        Ok(out)
    }
}
