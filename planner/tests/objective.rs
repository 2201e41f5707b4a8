//! What the planner optimises: measured sensitivity where the manifest has it, and traces that
//! cannot be told from zero priced so that a layer is never free.

use planner::{plan, Budgets, Manifest, PlanRequest, Problem};

fn best_bits(manifest: &str, max_avg_bits: f64) -> Vec<u8> {
    let manifest = Manifest::from_json(manifest).unwrap();
    let problem = Problem::new(&manifest, None).unwrap();
    let request = PlanRequest {
        budgets: Budgets {
            max_avg_bits: Some(max_avg_bits),
            ..Budgets::default()
        },
        ..PlanRequest::default()
    };
    plan(&problem, &request).unwrap().candidates[0]
        .candidate
        .bits
        .clone()
}

/// Layer `a` has a negative trace (Hutchinson noise) but moves the output the most when quantized.
const NEGATIVE_TRACE_SENSITIVE_LAYER: &str = r#"{"name": "m", "bits": [8, 4, 2], "layers": [
    {"name": "a", "params": 100, "macs": 1, "hessian_trace": -0.4,
     "sensitivity": {"8": 0.001, "4": 0.9, "2": 3.0}},
    {"name": "b", "params": 100, "macs": 1, "hessian_trace": 5.0,
     "sensitivity": {"8": 0.001, "4": 0.01, "2": 0.05}},
    {"name": "c", "params": 100, "macs": 1, "hessian_trace": 7.0,
     "sensitivity": {"8": 0.001, "4": 0.02, "2": 0.08}}]}"#;

#[test]
fn a_layer_with_a_negative_trace_but_high_measured_sensitivity_keeps_high_bits() {
    // 4 average bits over three equal layers: 8 + 2 + 2.
    assert_eq!(best_bits(NEGATIVE_TRACE_SENSITIVE_LAYER, 4.0), [8, 2, 2]);
    // Traces alone: taken at face value (clamped to 0) `a` would be free and get 2 bits, the
    // others 4 (10 bits in all). Priced by the trust rule at 0 + 2 * 3.0 = 6 it keeps 4 bits and
    // the least sensitive layer, b, takes the 2.
    let traces_only = r#"{"name": "m", "bits": [8, 4, 2], "layers": [
        {"name": "a", "params": 100, "macs": 1, "hessian_trace": -0.4, "hessian_trace_stderr": 3.0},
        {"name": "b", "params": 100, "macs": 1, "hessian_trace": 5.0},
        {"name": "c", "params": 100, "macs": 1, "hessian_trace": 7.0}]}"#;
    assert_eq!(best_bits(traces_only, 10.0 / 3.0), [4, 2, 4]);
}

#[test]
fn a_negative_trace_without_a_spread_is_priced_at_the_floor_not_zero() {
    let m = Manifest::from_json(
        r#"{"name": "m", "bits": [8, 2], "layers": [
        {"name": "a", "params": 10, "macs": 1, "hessian_trace": -1.0},
        {"name": "b", "params": 10, "macs": 1, "hessian_trace": 10.0}]}"#,
    )
    .unwrap();
    let omega_a = planner::layer_omega(&m.layers[0], 2);
    // Floor: 1% of the median credible trace per weight (1.0), times 10 weights.
    assert!((m.layers[0].objective_trace - 0.1).abs() < 1e-12);
    assert!(omega_a > 0.0);
}
