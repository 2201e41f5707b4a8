//! ONNX Runtime behind [`Backend`](crate::eval::Backend), loaded dynamically from the shared
//! library of the PyPI `onnxruntime` wheel. One environment per process.

use crate::error::{Error, Result};
use crate::eval::{Backend, Session, Tensor};
use ort::session::builder::GraphOptimizationLevel;
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

    fn session(&self, model: &[u8]) -> Result<OrtSession> {
        let rt = |e: ort::Error| Error::Runtime(format!("ONNX Runtime refused the model: {e}"));
        let session = ort::session::Session::builder(&self.env)
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
            .map_err(|e| rt(e.into()))?
            .commit_from_memory(model)
            .map_err(rt)?;
        Ok(OrtSession(session))
    }
}

impl Session for OrtSession {
    fn run(&mut self, inputs: &[(&str, &[usize], &[f32])]) -> Result<Vec<Tensor>> {
        let rt = |e: ort::Error| Error::Runtime(format!("inference failed: {e}"));
        let mut feeds = Vec::with_capacity(inputs.len());
        for &(name, shape, data) in inputs {
            let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            feeds.push((name, TensorRef::from_array_view((shape, data)).map_err(rt)?));
        }
        let outputs = self.0.run(feeds).map_err(rt)?;
        let mut out = Vec::with_capacity(outputs.len());
        for (_, value) in outputs.iter() {
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(rt)?;
            out.push(Tensor {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}
