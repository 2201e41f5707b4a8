//! Fleets: one model, many devices. Each device has its budgets, the bit-widths it can run, a
//! latency model, and layers that must stay at high precision. A fleet plan gives each device its
//! least-Omega configuration under its budgets, the optima at tighter and looser budgets around it
//! (its neighbourhood on the device's front), or why it cannot be met.
//!
//! Shared work is shared: devices whose restrictions give the same problem share it; identical
//! solves (same problem, same budgets) run once; single-budget solves are answered from one exact
//! front per problem and cost ([`FrontIndex`]); devices are planned on all cores.

use crate::error::{Error, FieldError, Result};
use crate::problem::budget::{Budgets, Infeasibility};
use crate::problem::cost::CostKind;
use crate::problem::manifest::Manifest;
use crate::problem::{Candidate, Problem};
use crate::solve::answer::PlanStatus;
use crate::solve::front::FrontIndex;
use crate::solve::halt::Halt;
use crate::solve::ilp::SolveStatus;
use crate::solve::plan::plan_indexed;
use crate::solve::request::PlanRequest;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

mod measured;
mod spec;

pub use measured::{best_measured, MeasuredChoice};
pub use spec::{DeviceSpec, Fleet, MAX_DEVICES};

/// Most neighbours a device may show on each side of its budget.
pub const MAX_NEIGHBOURS: usize = 50;

/// How much of each device's front to show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetOptions {
    /// Optima at this many tighter and this many looser budgets.
    pub neighbours: usize,
    /// Budget step between neighbours, as a fraction of the device's budget on its primary cost.
    pub step: f64,
    /// Time limit of each ILP solve for a device's choice, seconds.
    pub time_limit_s: f64,
    /// Time limit of each ILP solve for a neighbour, seconds. Neighbours are context for the
    /// choice; a neighbour stopped at this limit carries its solver status and gap.
    pub neighbour_time_limit_s: f64,
    /// Relative gap at which each ILP solve may stop (see `PlanRequest::mip_gap`); 0 proves
    /// every optimum.
    pub mip_gap: f64,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            neighbours: 2,
            step: 0.1,
            time_limit_s: crate::solve::request::DEFAULT_TIME_LIMIT_S,
            neighbour_time_limit_s: 0.05,
            mip_gap: PlanRequest::default().mip_gap,
        }
    }
}

impl FleetOptions {
    /// Checks every option; each error names its option.
    pub fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
        if self.neighbours > MAX_NEIGHBOURS {
            errors.push(FieldError::new(
                "neighbours",
                format!("must be at most {MAX_NEIGHBOURS}"),
            ));
        }
        if !(self.step > 0.0 && self.step < 1.0) {
            errors.push(FieldError::new("step", "must be within (0, 1)"));
        }
        for (name, v) in [
            ("time_limit_s", self.time_limit_s),
            ("neighbour_time_limit_s", self.neighbour_time_limit_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                errors.push(FieldError::new(
                    name,
                    "must be a positive number of seconds",
                ));
            }
        }
        errors.extend(crate::solve::request::check_mip_gap(self.mip_gap));
        Error::check("fleet options", errors)
    }
}

/// The optimum at a scaled primary budget.
#[derive(Debug, Clone)]
pub struct Neighbour {
    /// The primary budget's multiplier (0.9 = 10% tighter).
    pub scale: f64,
    pub candidate: Option<Candidate>,
    pub solve: Option<SolveStatus>,
}

/// One device's plan.
#[derive(Debug, Clone)]
pub struct DeviceResult {
    pub device: String,
    pub status: PlanStatus,
    pub cost: CostKind,
    pub budgets: Budgets,
    pub best: Option<Candidate>,
    pub solve: Option<SolveStatus>,
    /// Tighter budgets first, then looser.
    pub neighbours: Vec<Neighbour>,
    pub infeasibility: Option<Infeasibility>,
    /// Why the device cannot run the model at all (unsupported bit-widths).
    pub unsupported: Option<String>,
}

/// A whole fleet's plan.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    pub fleet: String,
    pub devices: Vec<DeviceResult>,
    /// Distinct problems after the devices' restrictions.
    pub problems: usize,
    /// Distinct solves run (identical ones across devices run once).
    pub solves: usize,
    pub time_ms: f64,
}

type Shared<T> = Mutex<HashMap<String, Arc<OnceLock<T>>>>;

/// Work shared across devices: problems, fronts and solves, each computed once.
#[derive(Default)]
struct Cache {
    problems: Shared<std::result::Result<Arc<Problem>, String>>,
    fronts: Shared<Option<Arc<FrontIndex>>>,
    solves: Shared<std::result::Result<Solved, String>>,
}

#[derive(Debug, Clone)]
struct Solved {
    best: Option<(Candidate, SolveStatus)>,
    infeasibility: Option<Infeasibility>,
    status: PlanStatus,
}

fn once<T: Clone>(map: &Shared<T>, key: String, make: impl FnOnce() -> T) -> T {
    let cell = map.lock().expect("lock").entry(key).or_default().clone();
    cell.get_or_init(make).clone()
}

/// Plans every device of `fleet` for `manifest`. Invalid input (a lookup table missing a layer, a
/// high-bit layer the manifest lacks) is an error; a device whose budgets or bit-widths cannot be
/// met is a result, and the others are still planned.
pub fn plan_fleet(manifest: &Manifest, fleet: &Fleet, options: &FleetOptions) -> Result<FleetPlan> {
    plan_fleet_halting(manifest, fleet, options, &Halt::default())
}

/// [`plan_fleet`], stopping with [`Error::Stopped`] when `halt` says so (checked before each
/// device and each solve; no solve runs past its deadline).
pub fn plan_fleet_halting(
    manifest: &Manifest,
    fleet: &Fleet,
    options: &FleetOptions,
    halt: &Halt,
) -> Result<FleetPlan> {
    options.check()?;
    fleet.check(manifest)?;
    let started = Instant::now();
    let cache = Cache::default();
    // Each device's restricted manifest and problem key, and how many devices share each problem.
    let restricted: Vec<std::result::Result<(Manifest, String), String>> = fleet
        .devices
        .iter()
        .map(|d| {
            d.restrict(manifest).map(|m| {
                let key = format!("{}\u{1}{}", m.to_json(), d.latency_key);
                (m, key)
            })
        })
        .collect();
    let mut sharing: HashMap<&str, usize> = HashMap::new();
    for (_, key) in restricted.iter().flatten() {
        *sharing.entry(key.as_str()).or_default() += 1;
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<DeviceResult>>>> =
        Mutex::new((0..fleet.devices.len()).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(fleet.devices.len());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(device) = fleet.devices.get(i) else {
                    break;
                };
                let shared = match &restricted[i] {
                    Ok((_, key)) => sharing[key.as_str()],
                    Err(_) => 1,
                };
                let r = halt.check().and_then(|()| {
                    plan_device(&restricted[i], device, shared, options, &cache, halt)
                });
                results.lock().expect("lock")[i] = Some(r);
            });
        }
    });
    let devices = results
        .into_inner()
        .expect("lock")
        .into_iter()
        .map(|r| r.expect("every device planned"))
        .collect::<Result<Vec<_>>>()?;
    let problems = cache.problems.lock().expect("lock").len();
    let solves = cache.solves.lock().expect("lock").len();
    Ok(FleetPlan {
        fleet: fleet.name.clone(),
        devices,
        problems,
        solves,
        time_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Budgets with the primary cost's budget scaled.
fn scaled(budgets: &Budgets, cost: CostKind, scale: f64) -> Budgets {
    let mut b = budgets.clone();
    match cost {
        CostKind::Latency => b.max_latency_ms = b.max_latency_ms.map(|v| v * scale),
        CostKind::Size => {
            b.max_size_bytes = b.max_size_bytes.map(|v| v * scale);
            b.max_avg_bits = b.max_avg_bits.map(|v| v * scale);
        }
        CostKind::Bops => b.max_bops = b.max_bops.map(|v| v * scale),
    }
    b
}

/// Devices that must share a problem before its exact front is enumerated to answer their
/// single-budget solves (below this, solving each is cheaper than the enumeration).
const FRONT_SHARING: usize = 4;

fn plan_device(
    restricted: &std::result::Result<(Manifest, String), String>,
    device: &DeviceSpec,
    sharing: usize,
    options: &FleetOptions,
    cache: &Cache,
    halt: &Halt,
) -> Result<DeviceResult> {
    let cost = device.primary_cost();
    let mut result = DeviceResult {
        device: device.name().to_string(),
        status: PlanStatus::Infeasible,
        cost,
        budgets: device.budgets.clone(),
        best: None,
        solve: None,
        neighbours: Vec::new(),
        infeasibility: None,
        unsupported: None,
    };
    let (restricted, problem_key) = match restricted {
        Ok((m, key)) => (m, key.clone()),
        Err(reason) => {
            result.unsupported = Some(reason.clone());
            return Ok(result);
        }
    };
    let problem = once(&cache.problems, problem_key.clone(), || {
        Problem::new(restricted, Some(&device.profile))
            .map(Arc::new)
            .map_err(|e| e.to_string())
    })
    .map_err(Error::Runtime)?;
    let solver = DeviceSolver {
        problem: &problem,
        problem_key,
        front_index: sharing >= FRONT_SHARING,
        mip_gap: options.mip_gap,
        cache,
        halt,
    };

    let best = solver.solve(&device.budgets, options.time_limit_s)?;
    result.status = best.status;
    result.infeasibility = best.infeasibility;
    let Some((candidate, status)) = best.best else {
        return Ok(result);
    };
    result.best = Some(candidate);
    result.solve = Some(status);
    if device.budgets.is_empty() {
        return Ok(result);
    }
    for scale in neighbour_scales(options) {
        let s = solver.solve(
            &scaled(&device.budgets, cost, scale),
            options.neighbour_time_limit_s,
        )?;
        result.neighbours.push(neighbour(scale, s));
    }
    Ok(result)
}

/// The budget scales of a device's neighbours: tighter ones first (largest cut first), then
/// looser; a scale that would leave no budget is skipped.
fn neighbour_scales(options: &FleetOptions) -> Vec<f64> {
    let n = options.neighbours;
    let tighter = (1..=n).rev().map(|j| 1.0 - options.step * j as f64);
    let looser = (1..=n).map(|j| 1.0 + options.step * j as f64);
    tighter.filter(|&s| s > 0.0).chain(looser).collect()
}

/// Solves for one device's problem, each distinct (problem, budgets, time limit) once per fleet.
struct DeviceSolver<'a> {
    problem: &'a Arc<Problem>,
    problem_key: String,
    /// Whether single-budget solves are answered from the problem's shared front.
    front_index: bool,
    mip_gap: f64,
    cache: &'a Cache,
    halt: &'a Halt,
}

impl DeviceSolver<'_> {
    fn solve(&self, budgets: &Budgets, time_limit_s: f64) -> Result<Solved> {
        self.halt.check()?;
        let problem_key = &self.problem_key;
        let key = format!(
            "{problem_key}\u{1}{}\u{1}{time_limit_s}",
            serde_json::to_string(budgets).expect("JSON")
        );
        once(&self.cache.solves, key, || {
            let request = PlanRequest {
                budgets: budgets.clone(),
                time_limit_s,
                mip_gap: self.mip_gap,
                ..PlanRequest::default()
            };
            let axis = single_budget_cost(budgets).filter(|_| self.front_index);
            let index = axis.and_then(|axis| {
                once(
                    &self.cache.fronts,
                    format!("{problem_key}\u{1}{}", axis.as_str()),
                    || {
                        FrontIndex::build(self.problem, axis, self.halt)
                            .ok()
                            .map(Arc::new)
                    },
                )
            });
            plan_indexed(self.problem, &request, index.as_deref(), self.halt)
                .map(|p| Solved {
                    best: p.candidates.first().map(|c| (c.candidate.clone(), c.solve)),
                    infeasibility: p.infeasibility.clone(),
                    status: p.status,
                })
                .map_err(|e| e.to_string())
        })
        .map_err(Error::Solver)
    }
}

fn neighbour(scale: f64, s: Solved) -> Neighbour {
    let (candidate, solve) = s.best.map_or((None, None), |(c, st)| (Some(c), Some(st)));
    Neighbour {
        scale,
        candidate,
        solve,
    }
}

/// The cost of the only kind of budget set (average bits counts as size), if exactly one is.
fn single_budget_cost(b: &Budgets) -> Option<CostKind> {
    match b.kinds()[..] {
        [k] => Some(k),
        _ => None,
    }
}

impl FleetPlan {
    /// The JSON document of `bitplan fleet --format json` (and of the service's fleet plans).
    /// `bits` maps layer names to bit-widths in manifest order.
    pub fn to_json(&self, manifest: &Manifest) -> Value {
        let bits = |c: &Candidate| manifest.bits_json(&c.bits);
        let priced = |c: &Candidate| {
            json!({
                "bits": bits(c),
                "omega": c.omega,
                "size_bytes": c.size_bytes,
                "bops": c.bops,
                "avg_bits": c.avg_bits,
                "latency_ms": c.latency_ms,
            })
        };
        let devices: Vec<Value> = self
            .devices
            .iter()
            .map(|d| {
                let mut row = match &d.best {
                    Some(c) => priced(c),
                    None => json!({"bits": null, "omega": null, "size_bytes": null, "bops": null,
                                   "avg_bits": null, "latency_ms": null}),
                };
                let obj = row.as_object_mut().expect("object");
                obj.insert("device".into(), json!(d.device));
                obj.insert(
                    "status".into(),
                    json!(if d.unsupported.is_some() {
                        "unsupported"
                    } else {
                        d.status.as_str()
                    }),
                );
                obj.insert("cost".into(), json!(d.cost.as_str()));
                obj.insert("budgets".into(), json!(d.budgets));
                obj.insert("solve".into(), json!(d.solve));
                obj.insert(
                    "front".into(),
                    json!(d
                        .neighbours
                        .iter()
                        .map(|n| {
                            let mut v = n
                                .candidate
                                .as_ref()
                                .map_or_else(|| json!({"bits": null}), priced);
                            v["scale"] = json!(n.scale);
                            v["solve"] = json!(n.solve);
                            v
                        })
                        .collect::<Vec<_>>()),
                );
                obj.insert("infeasible".into(), json!(d.infeasibility));
                obj.insert("reason".into(), json!(d.unsupported));
                row
            })
            .collect();
        json!({
            "fleet": self.fleet,
            "devices": devices,
            "problems": self.problems,
            "solves": self.solves,
            "time_ms": self.time_ms,
        })
    }
}
