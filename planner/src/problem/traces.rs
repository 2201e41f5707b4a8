//! How far a Hessian trace estimate is trusted: the trace the objective uses for each layer.
//!
//! Hutchinson estimates of a near-flat layer scatter around zero, and some come out negative or
//! tiny. Taken at face value such a layer is "free": the planner gives it the fewest bits at every
//! budget, and on a real network the model collapses. The rule:
//!
//! 1. An estimate is *credible* when it is positive beyond noise: above twice its standard error
//!    when the manifest gives `hessian_trace_stderr` (a one-sided 97.7% bound), else above 0.
//! 2. The *floor* is 1% of the median trace per weight among credible layers: no layer is priced as
//!    less sensitive per weight than that. With no credible layer there is no scale to borrow, and
//!    every layer gets the same trace per weight (1), which makes the objective the plain
//!    quantization error.
//! 3. A layer whose estimate is not credible is priced at the larger of the top of its interval
//!    (`max(t, 0) + 2·stderr`) and the floor; a credible one below the floor at the floor. Each such
//!    layer gets a warning saying what it was priced at.
//!
//! Measured sensitivity, where a manifest has it, replaces traces altogether (see
//! [`crate::problem`]).

use crate::problem::manifest::Warning;

/// Standard errors above which an estimate counts as positive beyond noise.
const CREDIBLE_SIGMAS: f64 = 2.0;
/// The floor's share of the median credible trace per weight.
const FLOOR_OF_MEDIAN: f64 = 0.01;

/// One layer's trace estimate, as the manifest gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Estimate {
    pub trace: f64,
    pub stderr: Option<f64>,
    pub params: u64,
}

impl Estimate {
    fn credible(&self) -> bool {
        self.trace > CREDIBLE_SIGMAS * self.stderr.unwrap_or(0.0)
    }
}

/// The trace per weight below which no layer is priced (see the module docs).
fn floor_per_param(estimates: &[Estimate]) -> f64 {
    let mut credible: Vec<f64> = estimates
        .iter()
        .filter(|e| e.credible())
        .map(|e| e.trace / e.params as f64)
        .collect();
    if credible.is_empty() {
        return 1.0;
    }
    credible.sort_by(f64::total_cmp);
    let n = credible.len();
    let median = if n % 2 == 1 {
        credible[n / 2]
    } else {
        0.5 * (credible[n / 2 - 1] + credible[n / 2])
    };
    FLOOR_OF_MEDIAN * median
}

/// The trace the objective uses for each estimate (`None` passes through: a layer with measured
/// sensitivity only), with a warning at `paths[i]` for each one changed.
pub(crate) fn objective_traces(
    estimates: &[Option<Estimate>],
    paths: &[String],
) -> (Vec<f64>, Vec<Warning>) {
    let known: Vec<Estimate> = estimates.iter().flatten().copied().collect();
    let any_credible = known.iter().any(Estimate::credible);
    let floor = floor_per_param(&known);
    let mut warnings = Vec::new();
    let traces = estimates
        .iter()
        .zip(paths)
        .map(|(e, path)| {
            let Some(e) = e else { return 0.0 };
            let at_floor = floor * e.params as f64;
            if !any_credible {
                return at_floor;
            }
            let priced = if e.credible() {
                e.trace.max(at_floor)
            } else {
                (e.trace.max(0.0) + CREDIBLE_SIGMAS * e.stderr.unwrap_or(0.0)).max(at_floor)
            };
            if priced != e.trace {
                let spread = e.stderr.map_or(String::new(), |s| format!(" ± {s}"));
                let why = if e.credible() {
                    "is below the floor of 1% of the median credible trace per weight"
                } else {
                    "cannot be told from zero"
                };
                warnings.push(Warning {
                    path: path.clone(),
                    message: format!(
                        "Hessian trace estimate {}{spread} {why}: priced as {priced:.6e} so the layer is not treated as free",
                        e.trace
                    ),
                });
            }
            priced
        })
        .collect();
    if !any_credible && !known.is_empty() {
        warnings.push(Warning {
            path: "layers".into(),
            message: "no Hessian trace is credibly positive: every layer is priced at the same trace per weight (the objective is the plain quantization error)".into(),
        });
    }
    (traces, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est(trace: f64, stderr: Option<f64>, params: u64) -> Option<Estimate> {
        Some(Estimate {
            trace,
            stderr,
            params,
        })
    }

    fn paths(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("layers[{i}].hessian_trace"))
            .collect()
    }

    #[test]
    fn credible_traces_pass_and_noise_is_priced_at_its_interval_or_the_floor() {
        let estimates = [
            est(10.0, Some(1.0), 10),   // 1.0 per weight, credible
            est(300.0, None, 100),      // 3.0 per weight, credible
            est(0.5, Some(1.0), 10),    // not credible: 0.5 + 2 = 2.5
            est(-0.2, Some(0.01), 100), // not credible: 0 + 0.02, below the floor 0.02 * 100 = 2
            est(-4.0, None, 10),        // negative without a spread: the floor, 0.2
            None,                       // measured sensitivity only
        ];
        let (traces, warnings) = objective_traces(&estimates, &paths(6));
        // Median credible per weight of {1, 3} is 2; the floor is 0.02 per weight.
        let want = [10.0, 300.0, 2.5, 2.0, 0.2, 0.0];
        for (got, want) in traces.iter().zip(want) {
            assert!((got - want).abs() <= 1e-12 * want, "{traces:?}");
        }
        let warned: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            warned,
            [
                "layers[2].hessian_trace",
                "layers[3].hessian_trace",
                "layers[4].hessian_trace"
            ]
        );
        assert!(warnings[0]
            .message
            .contains("0.5 ± 1 cannot be told from zero"));
    }

    #[test]
    fn a_tiny_credible_trace_is_raised_to_the_floor() {
        let (traces, warnings) = objective_traces(
            &[est(1.0, None, 1), est(2.0, None, 1), est(1e-9, None, 1)],
            &paths(3),
        );
        // Median of {1, 2, 1e-9} is 1: floor 0.01.
        assert_eq!(traces, [1.0, 2.0, 0.01]);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].message.contains("below the floor"));
    }

    #[test]
    fn without_any_credible_trace_every_layer_weighs_the_same_per_weight() {
        let (traces, warnings) =
            objective_traces(&[est(-1.0, None, 4), est(0.0, None, 2)], &paths(2));
        assert_eq!(traces, [4.0, 2.0]);
        assert_eq!(warnings.last().unwrap().path, "layers");
    }
}
