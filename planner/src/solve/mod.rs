//! The solvers: from a compiled [`Problem`](crate::Problem) and budgets to bit allocations, each
//! exact or with a proven gap. It reads problems and never runs a model.
//!
//! - [`plan`](plan()): the entry point; picks an engine per solve and merges what each mode
//!   (one optimum, the exact front, budget sweeps, the paper's pool) finds into one pool.
//! - `front`: exact Pareto fronts and single-budget optima by dynamic programming.
//! - `expanding_core`: the single-budget optimum at 1000+ groups (Lagrangian core, then DP).
//! - `ilp`: the multi-budget optimum, HiGHS in process after Lagrangian fixing.
//! - [`fleet`]: one plan per device of a fleet, sharing work across devices.
//! - `hasb`: the paper's per-layer bit sampling probabilities.

mod answer;
mod expanding_core;
pub mod fleet;
mod front;
mod halt;
mod hasb;
mod ilp;
mod plan;
mod request;
pub mod search;

pub use answer::{
    bare_candidate_json, candidate_json, Plan, PlanStatus, PlannedCandidate, Solver, Solvers,
    Source,
};
pub use front::{spread, FrontIndex, MAX_FRONT_CELLS, MAX_STATES, MAX_TOTAL_STATES};
pub use halt::Halt;
pub use hasb::{sampling_probabilities, HasbParams, LayerProbabilities};
pub use ilp::{SolveOutcome, SolveStatus};
pub use plan::{plan, plan_indexed, validate as validate_plan};
pub use request::{
    Engine, PlanRequest, Sweep, AUTO_KNAPSACK_MAX_GROUPS, DEFAULT_TIME_LIMIT_S, MAX_POINTS,
    MAX_SOLVES, MAX_SWEEP_POINTS,
};
