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
