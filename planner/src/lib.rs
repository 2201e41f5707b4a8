//! # bitplan planner
//!
//! Chooses a bit-width per layer of a quantized supernet: minimise the Hessian-weighted
//! quantization error (HAWQ-V3's Omega) under budgets on model size, bit-operations, device
//! latency and average bits, with tied and pinned layers; enumerate the exact Pareto front; build
//! the source paper's iterative candidate pool; measure candidates on ONNX models.
//!
//! Three concerns, one module each, and the crate root re-exports what most callers need:
//! - [`problem`]: what is asked and what each choice costs (manifests, devices, budgets, costs),
//!   compiled into a [`Problem`];
//! - [`solve`]: from a problem and budgets to bit allocations ([`plan`], fronts, fleets);
//! - [`eval`]: running candidates on ONNX models and measuring them (Double Rounding, sessions,
//!   metrics, sensitivity, export).
//!
//! No HTTP, no database, no files but the ones a caller names: the service lives in `server`.
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

mod error;
pub mod eval;
pub mod problem;
pub mod solve;

pub use error::{Error, FieldError, Result};
pub use problem::budget::{fmt_num, BudgetReport, Budgets, Infeasibility};
pub use problem::cost::{CostKind, Costs, Limits, PerCost};
pub use problem::device::{DeviceProfile, LatencyModel};
pub use problem::manifest::{
    bits_json, ActivationBits, Divergence, Layer, Manifest, Rounding, Warning, DEFAULT_BITS,
    MAX_BITS, MAX_LAYERS,
};
pub use problem::{layer_omega, proxy_omega, Candidate, Choice, Group, Problem};
pub use solve::{
    bare_candidate_json, candidate_json, plan, plan_indexed, sampling_probabilities, spread,
    validate_plan, Engine, FrontIndex, Halt, HasbParams, LayerProbabilities, Plan, PlanRequest,
    PlanStatus, PlannedCandidate, SolveOutcome, SolveStatus, Solver, Solvers, Source, Sweep,
    AUTO_KNAPSACK_MAX_GROUPS, DEFAULT_TIME_LIMIT_S, MAX_FRONT_CELLS, MAX_POINTS, MAX_SOLVES,
    MAX_STATES, MAX_SWEEP_POINTS, MAX_TOTAL_STATES,
};
