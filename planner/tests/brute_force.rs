//! The solver, the knapsack DP, the expanding-core DP and the exact front checked against brute-force enumeration on
//! random small instances (<= 7 layers, <= 4 bit-widths, random ties, pins, devices and budgets).

use planner::CostKind::{Bops, Latency, Size};
use planner::{
    plan, Budgets, CostKind, Costs, DeviceProfile, Engine, Manifest, PlanRequest, PlanStatus,
    Problem, SolveStatus,
};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
struct Instance {
    manifest: Manifest,
    device: DeviceProfile,
}

/// One assignment priced from the manifest formulas directly, independent of the planner's grouping.
#[derive(Debug, Clone)]
struct Priced {
    bits: Vec<u8>,
    omega: f64,
    cost: Costs,
}

fn instance() -> impl Strategy<Value = Instance> {
    let all_bits = vec![8u8, 6, 5, 4, 3, 2];
    (1usize..=7, proptest::sample::subsequence(all_bits, 1..=4), any::<u64>()).prop_map(|(n, bits, seed)| {
        let mut rng = planner::problem::synth::Rng::new(seed);
        let mut layers = Vec::new();
        let mut lut = serde_json::Map::new();
        for i in 0..n {
            let params = 1 + rng.below(5000);
            let macs = rng.below(200_000);
            let mut l = json!({"name": format!("l{i}"), "params": params, "macs": macs, "hessian_trace": rng.range(0.0, 10.0)});
            let own: Vec<u8> = if rng.unit() < 0.3 { bits.iter().copied().filter(|_| rng.unit() < 0.7).collect() } else { bits.clone() };
            let own = if own.is_empty() { vec![bits[0]] } else { own };
            if own != bits {
                l["bits"] = json!(own);
            }
            if rng.unit() < 0.5 {
                let p: serde_json::Map<_, _> = own.iter().map(|b| (b.to_string(), json!(params as f64 * rng.range(0.5, 2.0) * 0.25f64.powi(i32::from(*b))))).collect();
                l["perturbation"] = json!(p);
            }
            if rng.unit() < 0.3 {
                l["tie"] = json!(["A", "B"][rng.below(2) as usize]);
            }
            if rng.unit() < 0.15 {
                l["pin"] = json!(own[rng.below(own.len() as u64) as usize]);
            }
            let row: serde_json::Map<_, _> = own.iter().map(|b| (b.to_string(), json!(rng.range(0.01, 1.0) * f64::from(*b)))).collect();
            lut.insert(format!("l{i}"), json!(row));
            layers.push(l);
        }
        let act = if rng.unit() < 0.3 { json!(8) } else { json!("same") };
        let doc = json!({"name": "random", "bits": bits, "activation_bits": act, "layers": layers});
        let manifest = Manifest::from_value(doc).unwrap_or_else(|_| {
            // A tie group without a common bit: drop ties, which is always valid.
            let mut doc = json!({"name": "random", "bits": bits, "activation_bits": act, "layers": layers});
            for l in doc["layers"].as_array_mut().unwrap() {
                l.as_object_mut().unwrap().remove("tie");
            }
            Manifest::from_value(doc).unwrap()
        });
        let device = DeviceProfile::from_json(&json!({"name": "dev", "latency_ms": lut}).to_string()).unwrap();
        Instance { manifest, device }
    })
}

/// Every valid assignment, priced by the formulas of the manifest contract.
fn enumerate(inst: &Instance) -> Vec<Priced> {
    let m = &inst.manifest;
    let choices: Vec<Vec<u8>> = m
        .layers
        .iter()
        .map(|l| l.pin.map_or(l.bits.clone(), |p| vec![p]))
        .collect();
    let mut out = Vec::new();
    let mut idx = vec![0usize; m.layers.len()];
    loop {
        let bits: Vec<u8> = idx.iter().zip(&choices).map(|(&i, c)| c[i]).collect();
        let tied_ok = m.layers.iter().enumerate().all(|(i, a)| {
            m.layers
                .iter()
                .enumerate()
                .all(|(j, b)| a.tie.is_none() || a.tie != b.tie || bits[i] == bits[j])
        });
        if tied_ok {
            let mut p = Priced {
                bits: bits.clone(),
                omega: 0.0,
                cost: Costs::ZERO,
            };
            for (l, &b) in m.layers.iter().zip(&bits) {
                let a = match m.activation_bits {
                    planner::ActivationBits::Same => b,
                    planner::ActivationBits::Fixed(a) => a,
                };
                p.omega += match &l.perturbation {
                    Some(pt) => l.objective_trace / l.params as f64 * pt[&b],
                    None => l.objective_trace * 4f64.powi(-i32::from(b)) / 3.0,
                };
                p.cost[Size] += l.params as f64 * f64::from(b) / 8.0;
                p.cost[Bops] += l.macs as f64 * f64::from(b) * f64::from(a);
                p.cost[Latency] += inst.device.layer_latency_ms(l, b, a).unwrap();
            }
            out.push(p);
        }
        let mut k = 0;
        loop {
            if k == idx.len() {
                return out;
            }
            idx[k] += 1;
            if idx[k] < choices[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-12
}

fn budgets_strategy() -> impl Strategy<Value = [Option<f64>; 4]> {
    // Each budget: absent, or a fraction of the way from the cheapest to the dearest assignment
    // (negative fractions make infeasible budgets).
    proptest::array::uniform4(proptest::option::of(-0.1f64..1.05))
}

fn budgets_for(
    all: &[Priced],
    total_params: f64,
    fr: [Option<f64>; 4],
) -> (Budgets, impl Fn(&Priced) -> bool) {
    let span = |k: CostKind| {
        let lo = all.iter().map(|p| p.cost[k]).fold(f64::INFINITY, f64::min);
        let hi = all.iter().map(|p| p.cost[k]).fold(0.0, f64::max);
        (lo, hi)
    };
    let lim = |k: CostKind, f: Option<f64>| {
        f.map(|f| {
            let (lo, hi) = span(k);
            (lo + f * (hi - lo)).max(0.0)
        })
    };
    let size = lim(Size, fr[0]);
    let bops = lim(Bops, fr[1]);
    let lat = lim(Latency, fr[2]);
    let avg = lim(Size, fr[3]).map(|s| s * 8.0 / total_params);
    let b = Budgets {
        max_size_bytes: size,
        max_bops: bops,
        max_latency_ms: lat,
        max_avg_bits: avg,
    };
    let ok = move |p: &Priced| {
        size.is_none_or(|s| p.cost[Size] <= s * (1.0 + 1e-12))
            && bops.is_none_or(|s| p.cost[Bops] <= s * (1.0 + 1e-12))
            && lat.is_none_or(|s| p.cost[Latency] <= s * (1.0 + 1e-12))
            && avg.is_none_or(|a| p.cost[Size] * 8.0 / total_params <= a * (1.0 + 1e-12))
    };
    (b, ok)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn single_solve_equals_brute_force(inst in instance(), fr in budgets_strategy()) {
        let all = enumerate(&inst);
        let total = inst.manifest.total_params() as f64;
        let (budgets, ok) = budgets_for(&all, total, fr);
        let best = all.iter().filter(|p| ok(p)).map(|p| p.omega).fold(f64::INFINITY, f64::min);
        let problem = Problem::new(&inst.manifest, Some(&inst.device)).unwrap();
        for engine in [Engine::Highs, Engine::Knapsack, Engine::Core, Engine::Auto] {
            let req = PlanRequest { budgets: budgets.clone(), engine, ..PlanRequest::default() };
            let result = plan(&problem, &req).unwrap();
            if best.is_infinite() {
                prop_assert_eq!(result.status, PlanStatus::Infeasible);
                let inf = result.infeasibility.unwrap();
                prop_assert!(!inf.budgets.is_empty());
                // The reported minimum of each budget alone is the brute-force minimum.
                for r in &inf.budgets {
                    let k = match r.budget { "max_size_bytes" | "max_avg_bits" => Size, "max_bops" => Bops, _ => Latency };
                    let unit = if r.budget == "max_avg_bits" { 8.0 / total } else { 1.0 };
                    let lo = all.iter().map(|p| p.cost[k]).fold(f64::INFINITY, f64::min) * unit;
                    prop_assert!(close(r.min_achievable, lo), "{:?} vs {}", r, lo);
                }
            } else {
                prop_assert_eq!(result.status, PlanStatus::Optimal, "{:?}", engine);
                let c = &result.candidates[0].candidate;
                prop_assert!(close(c.omega, best), "{:?}: solver {} vs brute force {}", engine, c.omega, best);
                let priced = all.iter().find(|p| p.bits == c.bits).expect("the candidate is a valid assignment (ties, pins, allowed bits)");
                prop_assert!(ok(priced), "{:?} breaks a budget: {:?}", engine, priced);
                prop_assert!(close(priced.omega, c.omega) && close(priced.cost[Size], c.size_bytes) && close(priced.cost[Bops], c.bops));
            }
        }
    }

    /// A solve allowed to stop within a relative gap answers a feasible plan no further from the
    /// brute-force optimum than the gap it reports, which is within the one asked.
    #[test]
    fn a_solve_within_a_gap_is_that_close_to_brute_force(inst in instance(), fr in budgets_strategy(), mip_gap in prop::sample::select(vec![1e-3, 0.02, 0.2, 0.6])) {
        let all = enumerate(&inst);
        let total = inst.manifest.total_params() as f64;
        let (budgets, ok) = budgets_for(&all, total, fr);
        let best = all.iter().filter(|p| ok(p)).map(|p| p.omega).fold(f64::INFINITY, f64::min);
        prop_assume!(best.is_finite());
        let problem = Problem::new(&inst.manifest, Some(&inst.device)).unwrap();
        let req = PlanRequest { budgets, mip_gap, engine: Engine::Highs, ..PlanRequest::default() };
        let result = plan(&problem, &req).unwrap();
        let planned = &result.candidates[0];
        let c = &planned.candidate;
        let priced = all.iter().find(|p| p.bits == c.bits).expect("a valid assignment");
        prop_assert!(ok(priced), "breaks a budget: {:?}", priced);
        let off = (c.omega - best) / c.omega;
        match planned.solve {
            SolveStatus::Optimal => {
                prop_assert_eq!(result.status, PlanStatus::Optimal);
                prop_assert!(close(c.omega, best), "{} vs brute force {}", c.omega, best);
            }
            SolveStatus::WithinGap { gap } => {
                prop_assert_eq!(result.status, PlanStatus::WithinGap);
                prop_assert!(gap <= mip_gap, "reported {} over the asked {}", gap, mip_gap);
                prop_assert!(off <= gap + 1e-9, "{} from the optimum, reported {}", off, gap);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn front_equals_brute_force_non_dominated_set(inst in instance(), fr in budgets_strategy(), axis in 0usize..3) {
        let axis = CostKind::ALL[axis];
        let all = enumerate(&inst);
        let total = inst.manifest.total_params() as f64;
        let (budgets, ok) = budgets_for(&all, total, fr);
        let feasible: Vec<&Priced> = all.iter().filter(|p| ok(p)).collect();
        let mut expected: Vec<(f64, f64)> = feasible
            .iter()
            .filter(|p| !feasible.iter().any(|q| q.cost[axis] <= p.cost[axis] && q.omega <= p.omega && (q.cost[axis] < p.cost[axis] || q.omega < p.omega) && !(close(q.cost[axis], p.cost[axis]) && close(q.omega, p.omega))))
            .map(|p| (p.cost[axis], p.omega))
            .collect();
        expected.sort_by(|a, b| a.0.total_cmp(&b.0));
        expected.dedup_by(|a, b| close(a.0, b.0) && close(a.1, b.1));

        let problem = Problem::new(&inst.manifest, Some(&inst.device)).unwrap();
        let req = PlanRequest { budgets, pareto: Some(axis), ..PlanRequest::default() };
        let result = plan(&problem, &req).unwrap();
        let got: Vec<(f64, f64)> = result.candidates.iter().map(|c| (c.candidate.cost(axis), c.candidate.omega)).collect();
        prop_assert_eq!(got.len(), expected.len(), "front {:?} vs brute force {:?}", got, expected);
        for (g, e) in got.iter().zip(&expected) {
            prop_assert!(close(g.0, e.0) && close(g.1, e.1), "front {:?} vs brute force {:?}", got, expected);
        }
        for c in &result.candidates {
            let priced = all.iter().find(|p| p.bits == c.candidate.bits).expect("a valid assignment");
            prop_assert!(ok(priced));
        }
        if expected.is_empty() {
            prop_assert_eq!(result.status, PlanStatus::Infeasible);
        }
    }

    #[test]
    fn paper_pool_and_sweep_respect_every_budget(inst in instance(), fr in budgets_strategy()) {
        let all = enumerate(&inst);
        let (budgets, ok) = budgets_for(&all, inst.manifest.total_params() as f64, fr);
        let problem = Problem::new(&inst.manifest, Some(&inst.device)).unwrap();
        let req = PlanRequest { budgets, paper_pool: true, sweep: Some(planner::Sweep { cost: CostKind::Bops, points: 4 }), ..PlanRequest::default() };
        let result = plan(&problem, &req).unwrap();
        let mut seen = std::collections::HashSet::new();
        for c in &result.candidates {
            prop_assert!(seen.insert(c.candidate.bits.clone()), "duplicate candidate");
            let priced = all.iter().find(|p| p.bits == c.candidate.bits).expect("a valid assignment");
            prop_assert!(ok(priced));
        }
        // The optimum is in the pool, and nothing in it beats the optimum.
        let best = all.iter().filter(|p| ok(p)).map(|p| p.omega).fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            prop_assert!(result.candidates.iter().any(|c| close(c.candidate.omega, best)));
            prop_assert!(result.candidates.iter().all(|c| c.candidate.omega >= best * (1.0 - 1e-9)));
        }
    }
}
