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
use crate::problem::device::DeviceProfile;
use crate::problem::manifest::{ActivationBits, Manifest};
use crate::problem::{Candidate, Problem};
use crate::solve::front::FrontIndex;
use crate::solve::ilp::SolveStatus;
use crate::solve::plan::{plan_indexed, PlanRequest, PlanStatus};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

const WHAT: &str = "fleet";

/// A device of a fleet: its profile (name, latency model) plus what it can run and afford.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub profile: DeviceProfile,
    pub budgets: Budgets,
    /// Weight bit-widths the device runs (all when `None`).
    pub weight_bits: Option<Vec<u8>>,
    /// Activation bit-widths the device runs (all when `None`).
    pub activation_bits: Option<Vec<u8>>,
    /// Layers that must stay at the highest bit-width the device allows them.
    pub high_bit_layers: Vec<String>,
    /// The latency model as given, to recognise devices that share it.
    latency_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtras {
    #[serde(default)]
    budgets: Budgets,
    #[serde(default)]
    weight_bits: Option<Vec<u8>>,
    #[serde(default)]
    activation_bits: Option<Vec<u8>>,
    #[serde(default)]
    high_bit_layers: Vec<String>,
}

/// Keys of a device document that belong to the profile rather than the fleet extras.
const PROFILE_KEYS: [&str; 3] = ["name", "latency_ms", "roofline"];

fn prefixed(e: Error, prefix: &str) -> Vec<FieldError> {
    match e {
        Error::Invalid { errors, .. } => errors
            .into_iter()
            .map(|f| {
                FieldError::new(
                    if f.path.is_empty() {
                        prefix.trim_end_matches('.').to_string()
                    } else {
                        format!("{prefix}{}", f.path)
                    },
                    f.reason,
                )
            })
            .collect(),
        other => vec![FieldError::new(
            prefix.trim_end_matches('.'),
            other.to_string(),
        )],
    }
}

impl DeviceSpec {
    /// Parses one device document: a device profile plus `budgets`, `weight_bits`,
    /// `activation_bits` and `high_bit_layers`. Errors carry `prefix` on their paths.
    pub fn from_value(
        value: Value,
        prefix: &str,
    ) -> std::result::Result<DeviceSpec, Vec<FieldError>> {
        let Value::Object(map) = value else {
            return Err(vec![FieldError::new(
                prefix.trim_end_matches('.'),
                "must be an object",
            )]);
        };
        let (profile_part, extra_part): (Map<String, Value>, Map<String, Value>) = map
            .into_iter()
            .partition(|(k, _)| PROFILE_KEYS.contains(&k.as_str()));
        let latency_key =
            json!([profile_part.get("latency_ms"), profile_part.get("roofline")]).to_string();
        let mut errors = Vec::new();
        let profile = DeviceProfile::from_json(&Value::Object(profile_part).to_string())
            .map_err(|e| errors.extend(prefixed(e, prefix)))
            .ok();
        let extras: Option<RawExtras> =
            crate::error::parse_json::<RawExtras>(WHAT, &Value::Object(extra_part).to_string())
                .map_err(|e| errors.extend(prefixed(e, prefix)))
                .ok();
        if let Some(x) = &extras {
            for (field, list) in [
                ("weight_bits", &x.weight_bits),
                ("activation_bits", &x.activation_bits),
            ] {
                if let Some(l) = list {
                    if l.is_empty() {
                        errors.push(FieldError::new(
                            format!("{prefix}{field}"),
                            "must list at least one bit-width",
                        ));
                    }
                    for (i, b) in l.iter().enumerate() {
                        if !(1..=crate::MAX_BITS).contains(b) {
                            errors.push(FieldError::new(
                                format!("{prefix}{field}[{i}]"),
                                format!("{b} is not a bit-width"),
                            ));
                        }
                    }
                }
            }
            if let Err(e) = x.budgets.check_values() {
                errors.extend(prefixed(e, &format!("{prefix}budgets.")));
            }
        }
        match (profile, extras) {
            (Some(profile), Some(x)) if errors.is_empty() => Ok(DeviceSpec {
                profile,
                budgets: x.budgets,
                weight_bits: x.weight_bits,
                activation_bits: x.activation_bits,
                high_bit_layers: x.high_bit_layers,
                latency_key,
            }),
            _ => Err(errors),
        }
    }

    pub fn name(&self) -> &str {
        &self.profile.name
    }

    /// The cost this device is planned along: latency when it has a latency budget, else size
    /// (size or average bits), else BOPs; size without budgets.
    pub fn primary_cost(&self) -> CostKind {
        let b = &self.budgets;
        if b.max_latency_ms.is_some() {
            CostKind::Latency
        } else if b.max_size_bytes.is_some() || b.max_avg_bits.is_some() || b.max_bops.is_none() {
            CostKind::Size
        } else {
            CostKind::Bops
        }
    }

    /// The manifest as this device can run it: each layer's bits narrowed to the supported ones,
    /// high-bit layers pinned to their highest. `Err` says why the device cannot run the model.
    pub fn restrict(&self, manifest: &Manifest) -> std::result::Result<Manifest, String> {
        let supported = |b: &u8| {
            self.weight_bits.as_ref().is_none_or(|w| w.contains(b))
                && (manifest.activation_bits != ActivationBits::Same
                    || self.activation_bits.as_ref().is_none_or(|a| a.contains(b)))
        };
        if let (ActivationBits::Fixed(a), Some(list)) =
            (manifest.activation_bits, &self.activation_bits)
        {
            if !list.contains(&a) {
                return Err(format!(
                    "the model runs activations at {a} bits; the device supports {list:?}"
                ));
            }
        }
        let mut doc = manifest.to_json();
        let global: Vec<u8> = manifest.bits.iter().copied().filter(supported).collect();
        doc["bits"] = json!(global);
        for (i, layer) in manifest.layers.iter().enumerate() {
            let bits: Vec<u8> = layer.bits.iter().copied().filter(supported).collect();
            if bits.is_empty() {
                return Err(format!(
                    "layer {:?}: none of its bit-widths {:?} is supported by the device",
                    layer.name, layer.bits
                ));
            }
            if let Some(p) = layer.pin {
                if !bits.contains(&p) {
                    return Err(format!(
                        "layer {:?} is pinned to {p} bits, which the device does not support",
                        layer.name
                    ));
                }
            }
            let entry = &mut doc["layers"][i];
            if self.high_bit_layers.contains(&layer.name) && layer.pin.is_none() {
                entry["pin"] = json!(bits.iter().max());
            }
            if let Some(per_bit) = entry.get_mut("perturbation").and_then(Value::as_object_mut) {
                per_bit.retain(|k, _| k.parse::<u8>().is_ok_and(|b| bits.contains(&b)));
            }
            entry["bits"] = json!(bits);
        }
        Manifest::from_value(doc).map_err(|e| match e {
            Error::Invalid { errors, .. } => format!(
                "the model's constraints cannot be met on the device's bit-widths: {}",
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            other => other.to_string(),
        })
    }
}

/// A named set of devices.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub name: String,
    pub devices: Vec<DeviceSpec>,
}

impl Fleet {
    /// Parses `{"name": ..., "devices": [device, ...]}`; every problem is listed with its path.
    pub fn from_json(text: &str) -> Result<Fleet> {
        let value: Value = crate::error::parse_json(WHAT, text)?;
        Fleet::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Fleet> {
        let mut errors = Vec::new();
        let name = match value.get("name").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => {
                errors.push(FieldError::new("name", "must be a non-empty string"));
                String::new()
            }
        };
        if let Some(obj) = value.as_object() {
            for k in obj.keys().filter(|k| *k != "name" && *k != "devices") {
                errors.push(FieldError::new(
                    k.clone(),
                    "unknown field; expected name, devices",
                ));
            }
        }
        let mut devices = Vec::new();
        match value.get("devices").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => {
                for (i, d) in list.iter().enumerate() {
                    match DeviceSpec::from_value(d.clone(), &format!("devices[{i}].")) {
                        Ok(spec) => {
                            if devices.iter().any(|o: &DeviceSpec| o.name() == spec.name()) {
                                errors.push(FieldError::new(
                                    format!("devices[{i}].name"),
                                    format!("duplicate device name {:?}", spec.name()),
                                ));
                            }
                            devices.push(spec);
                        }
                        Err(e) => errors.extend(e),
                    }
                }
            }
            _ => errors.push(FieldError::new(
                "devices",
                "must be a non-empty list of devices",
            )),
        }
        Error::check(WHAT, errors)?;
        Ok(Fleet { name, devices })
    }

    /// Checks the fleet against a manifest: high-bit layers exist, lookup tables cover every
    /// layer and bit-width the device may run (errors name the device and the layer).
    pub fn check(&self, manifest: &Manifest) -> Result<()> {
        let mut errors = Vec::new();
        for (i, d) in self.devices.iter().enumerate() {
            for (j, l) in d.high_bit_layers.iter().enumerate() {
                if manifest.layer_index(l).is_none() {
                    errors.push(FieldError::new(
                        format!("devices[{i}].high_bit_layers[{j}]"),
                        format!(
                            "device {:?}: no layer {l:?} in manifest {:?}",
                            d.name(),
                            manifest.name
                        ),
                    ));
                }
            }
            if let Ok(m) = d.restrict(manifest) {
                if let Err(e) = Problem::new(&m, Some(&d.profile)) {
                    errors.extend(prefixed(e, &format!("devices[{i}].")));
                }
            }
        }
        Error::check(WHAT, errors)
    }
}

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
            time_limit_s: crate::solve::plan::DEFAULT_TIME_LIMIT_S,
            neighbour_time_limit_s: 0.05,
            mip_gap: 0.0,
        }
    }
}

impl FleetOptions {
    /// Checks every option; each error names its option.
    pub fn check(&self) -> Result<()> {
        let mut errors = Vec::new();
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
        errors.extend(crate::solve::plan::check_mip_gap(self.mip_gap));
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
                let r = plan_device(&restricted[i], device, shared, options, &cache);
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

    let solve = |budgets: &Budgets, time_limit_s: f64| -> Result<Solved> {
        let key = format!(
            "{problem_key}\u{1}{}\u{1}{time_limit_s}",
            serde_json::to_string(budgets).expect("JSON")
        );
        once(&cache.solves, key, || {
            let request = PlanRequest {
                budgets: budgets.clone(),
                time_limit_s,
                mip_gap: options.mip_gap,
                ..PlanRequest::default()
            };
            let axis = single_budget_cost(budgets).filter(|_| sharing >= FRONT_SHARING);
            let index = axis.and_then(|axis| {
                once(
                    &cache.fronts,
                    format!("{problem_key}\u{1}{}", axis.as_str()),
                    || FrontIndex::build(&problem, axis).ok().map(Arc::new),
                )
            });
            plan_indexed(&problem, &request, index.as_deref())
                .map(|p| Solved {
                    best: p.candidates.first().map(|c| (c.candidate.clone(), c.solve)),
                    infeasibility: p.infeasibility.clone(),
                    status: p.status,
                })
                .map_err(|e| e.to_string())
        })
        .map_err(Error::Solver)
    };

    let best = solve(&device.budgets, options.time_limit_s)?;
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
    for j in (1..=options.neighbours).rev() {
        let scale = 1.0 - options.step * j as f64;
        if scale > 0.0 {
            let s = solve(
                &scaled(&device.budgets, cost, scale),
                options.neighbour_time_limit_s,
            )?;
            result.neighbours.push(neighbour(scale, s));
        }
    }
    for j in 1..=options.neighbours {
        let scale = 1.0 + options.step * j as f64;
        let s = solve(
            &scaled(&device.budgets, cost, scale),
            options.neighbour_time_limit_s,
        )?;
        result.neighbours.push(neighbour(scale, s));
    }
    Ok(result)
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
