//! At realistic scale, where both engines apply (one bounded cost), HiGHS and the exact knapsack DP
//! must reach the same optimum. Catches objective and row scaling that lets the MIP stop early.

use planner::{plan, synth, Budgets, CostKind, Engine, PlanRequest, PlanStatus, Problem};

fn optimum(problem: &Problem, budgets: &Budgets, engine: Engine) -> f64 {
    let r = plan(
        problem,
        &PlanRequest {
            budgets: budgets.clone(),
            engine,
            ..PlanRequest::default()
        },
    )
    .unwrap();
    assert_eq!(r.status, PlanStatus::Optimal, "{engine:?}");
    r.candidates[0].candidate.omega
}

#[test]
fn highs_matches_the_knapsack_dp_on_large_manifests() {
    for (manifest, fractions) in [
        (synth::resnet50(7), [0.1, 0.5]),
        (synth::random(80, 11), [0.2, 0.6]),
    ] {
        let p = Problem::new(&manifest, None).unwrap();
        for kind in [CostKind::Size, CostKind::Bops] {
            for f in fractions {
                let limit = Some(p.min_cost(kind) + f * (p.max_cost(kind) - p.min_cost(kind)));
                let budgets = match kind {
                    CostKind::Size => Budgets {
                        max_size_bytes: limit,
                        ..Budgets::default()
                    },
                    _ => Budgets {
                        max_bops: limit,
                        ..Budgets::default()
                    },
                };
                let exact = optimum(&p, &budgets, Engine::Knapsack);
                let milp = optimum(&p, &budgets, Engine::Highs);
                assert!(
                    (milp - exact).abs() <= 1e-9 * exact,
                    "{} {kind:?} at {f}: HiGHS {milp} vs knapsack {exact} (rel {:.2e})",
                    manifest.name,
                    (milp - exact) / exact
                );
            }
        }
    }
}

#[test]
fn a_solve_stopped_by_its_time_limit_reports_a_feasible_plan_and_its_gap() {
    let device = planner::DeviceProfile::from_json(synth::roofline_device_json()).unwrap();
    let p = Problem::new(&synth::random(1000, 1000), Some(&device)).unwrap();
    let at = |k: CostKind| Some(p.min_cost(k) + 0.4 * (p.max_cost(k) - p.min_cost(k)));
    let budgets = Budgets {
        max_size_bytes: at(CostKind::Size),
        max_bops: at(CostKind::Bops),
        max_latency_ms: at(CostKind::Latency),
        max_avg_bits: None,
    };
    let r = plan(
        &p,
        &PlanRequest {
            budgets: budgets.clone(),
            time_limit_s: 0.3,
            ..PlanRequest::default()
        },
    )
    .unwrap();
    assert_eq!(r.status, PlanStatus::TimeLimit);
    let c = &r.candidates[0];
    let planner::SolveStatus::TimeLimit { gap: Some(gap) } = c.solve else {
        panic!("{:?}", c.solve)
    };
    assert!((0.0..0.01).contains(&gap), "{gap}");
    assert!(c.candidate.size_bytes <= budgets.max_size_bytes.unwrap());
    assert!(c.candidate.bops <= budgets.max_bops.unwrap());
    assert!(c.candidate.latency_ms.unwrap() <= budgets.max_latency_ms.unwrap());
}
