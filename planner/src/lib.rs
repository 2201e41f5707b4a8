//! # bitplan planner
//!
//! Chooses a bit-width per layer of a quantized supernet: minimise the Hessian-weighted
//! quantization error (HAWQ-V3's Omega) under budgets on model size, bit-operations, device
//! latency and average bits, with tied and pinned layers; enumerate the exact Pareto front; build
//! the source paper's iterative candidate pool.
//!
//! ```
//! use planner::{plan, Budgets, CostKind, Manifest, PlanRequest, Problem};
//!
//! let manifest = Manifest::from_json(r#"{
//!   "name": "tiny", "bits": [8, 4, 2],
//!   "layers": [
//!     {"name": "conv", "params": 1000, "macs": 50000, "hessian_trace": 2.0},
//!     {"name": "fc",   "params": 4000, "macs": 4000,  "hessian_trace": 0.5, "pin": 8}
//!   ]}"#).unwrap();
//! let problem = Problem::new(&manifest, None).unwrap();
//!
//! // The least-error plan within 4.5 kB of weights.
//! let request = PlanRequest {
//!     budgets: Budgets { max_size_bytes: Some(4500.0), ..Budgets::default() },
//!     ..PlanRequest::default()
//! };
//! let best = plan(&problem, &request).unwrap();
//! assert_eq!(best.candidates[0].candidate.bits, vec![4, 8]);
//!
//! // Every non-dominated (size, Omega) trade-off.
//! let front = plan(&problem, &PlanRequest { pareto: Some(CostKind::Size), ..PlanRequest::default() }).unwrap();
//! let sizes: Vec<f64> = front.candidates.iter().map(|c| c.candidate.size_bytes).collect();
//! assert_eq!(sizes, vec![4250.0, 4500.0, 5000.0]);
//! ```

mod budget;
pub mod compare;
mod core;
mod cost;
mod device;
mod error;
pub mod eval;
pub mod export;
pub mod external;
mod fields;
pub mod fleet;
mod front;
mod hasb;
mod ilp;
pub mod ingest;
mod manifest;
pub mod npz;
pub mod onnx;
#[cfg(feature = "ort")]
pub mod ort_backend;
mod plan;
mod problem;
pub mod quant;
pub mod runtime;
mod segment;
pub mod sensitivity;
mod sessions;
pub mod synth;
pub mod synth_model;
mod traces;

pub use budget::{fmt_num, BudgetReport, Budgets, Infeasibility};
pub use cost::{CostKind, Costs, Limits, PerCost};
pub use device::{DeviceProfile, LatencyModel};
pub use error::{Error, FieldError, Result};
pub use front::{spread, FrontIndex, MAX_STATES};
pub use hasb::{sampling_probabilities, HasbParams, LayerProbabilities};
pub use ilp::{SolveOutcome, SolveStatus};
pub use manifest::{
    bits_json, ActivationBits, Divergence, Layer, Manifest, Rounding, Warning, MAX_BITS,
};
pub use plan::{
    bare_candidate_json, candidate_json, plan, plan_indexed, validate as validate_plan, Engine,
    Plan, PlanRequest, PlanStatus, PlannedCandidate, Source, Sweep, AUTO_KNAPSACK_MAX_GROUPS,
    DEFAULT_TIME_LIMIT_S,
};
pub use problem::{layer_omega, proxy_omega, Candidate, Choice, Group, Problem};
