//! A 50-device fleet on a ResNet-50-scale manifest: the fleet plan (shared problems, fronts and
//! solves, all cores) against planning each device alone with the planner's defaults, one after
//! the other, in the same process. Prints JSON.
//!
//! `cargo run --release -p bitplan-planner --example fleet_bench [-- DEVICES]`

use planner::problem::synth;
use planner::solve::fleet::{plan_fleet, DeviceSpec, Fleet, FleetOptions};
use planner::{plan, PlanRequest, Problem};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let manifest = synth::resnet50(50);
    let doc = synth::fleet_json(&manifest, n, 7);
    let fleet = Fleet::from_value(doc.clone()).expect("a valid fleet");
    let options = FleetOptions {
        neighbours: std::env::args()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or(2),
        ..FleetOptions::default()
    };

    let mut runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let r = plan_fleet(&manifest, &fleet, &options).expect("planned");
        runs.push((t.elapsed().as_secs_f64(), r));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (fleet_s, result) = &runs[1];
    let feasible = result.devices.iter().filter(|d| d.best.is_some()).count();

    // Baseline: each device alone, its choice only (no neighbours), no sharing.
    let t = Instant::now();
    for d in doc["devices"].as_array().expect("devices") {
        let spec = DeviceSpec::from_value(d.clone(), "").expect("device");
        if let Ok(m) = spec.restrict(&manifest) {
            let p = Problem::new(&m, Some(&spec.profile)).expect("problem");
            let request = PlanRequest {
                budgets: spec.budgets.clone(),
                ..PlanRequest::default()
            };
            plan(&p, &request).expect("plan");
        }
    }
    let alone_s = t.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "devices": n,
            "layers": manifest.layers.len(),
            "feasible": feasible,
            "distinct_problems": result.problems,
            "solves": result.solves,
            "fleet_s": fleet_s,
            "alone_choice_only_s": alone_s,
            "ratio": alone_s / fleet_s,
        })
    );
}
