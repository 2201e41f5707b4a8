//! `bitplan search` on the digits fixture: the measured front it reports is what
//! `bitplan evaluate` measures, non-dominated, cheapest first, within the evaluation budget; bad
//! arguments and budgets no configuration meets exit 2.

use crate::{bitplan, evaluate, stderr, stdout};
use serde_json::Value;

const MANIFEST: &str = "examples/digits-cnn.manifest.json";
const MODEL: &str = "testdata/digits-cnn/digits_cnn.onnx";
const DATA: &str = "testdata/digits-cnn/digits_val.npz";

#[test]
fn the_reported_front_is_measured_non_dominated_and_within_budget() {
    let out = bitplan(&[
        "search",
        MANIFEST,
        "--model",
        MODEL,
        "--data",
        DATA,
        "--pareto",
        "avg-bits",
        "--evaluations",
        "20",
        "--max-avg-bits",
        "7",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&doc["method"], &doc["pareto"]),
        (&"search".into(), &"avg_bits".into())
    );
    let evaluations = doc["evaluations"].as_u64().unwrap();
    assert!((4..=20).contains(&evaluations), "{doc}");
    let rounds = doc["rounds"].as_array().unwrap();
    let per_round: u64 = rounds
        .iter()
        .map(|r| r["evaluated"].as_u64().unwrap())
        .sum();
    assert_eq!(per_round, evaluations);
    // Each round's ratio of measured to predicted, recomputed from the points it measured. The
    // search plans on the output-space objective, whose every round predicts a loss (the
    // additive objective's first round predicts Omega, and has no ratio).
    assert!(rounds.len() >= 2, "{doc}");
    let interaction = doc["interaction"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&interaction), "{doc}");
    for (i, r) in rounds.iter().enumerate() {
        let logs: Vec<f64> = doc["points"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["round"] == i + 1)
            .map(|p| {
                let (loss, predicted) = (
                    p["loss"].as_f64().unwrap(),
                    p["predicted"].as_f64().unwrap(),
                );
                assert!(loss > 0.0 && predicted > 0.0, "{p}");
                (loss / predicted).ln()
            })
            .collect();
        assert_eq!(logs.len() as u64, r["evaluated"].as_u64().unwrap());
        if r["model"] == "start" {
            assert!(r["fit"]["ratio"].is_null(), "{r}");
        } else {
            let ratio = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
            let reported = r["fit"]["ratio"].as_f64().unwrap();
            assert!(
                (ratio - reported).abs() <= 1e-9 * ratio,
                "{ratio} against {r}"
            );
        }
    }
    assert!(rounds.iter().all(|r| r["model"] == "output"), "{doc}");
    let front = doc["front"].as_array().unwrap();
    assert!(front.len() >= 3, "{doc}");
    let mut last: Option<(f64, f64)> = None;
    for p in front {
        let (cost, loss) = (
            p["avg_bits"].as_f64().unwrap(),
            p["measured"]["loss"].as_f64().unwrap(),
        );
        assert!(cost <= 7.0 + 1e-9, "{p}");
        if let Some((c, l)) = last {
            // Cheapest first, each point strictly better than every cheaper one.
            assert!(cost >= c && loss < l, "{p} after ({c}, {l})");
        }
        last = Some((cost, loss));
    }
    // The oracle: `bitplan evaluate` of the cheapest and the best point gives the same KL.
    for p in [&front[0], front.last().unwrap()] {
        let m = evaluate(MANIFEST, MODEL, DATA, &p["bits"].to_string());
        let kl = m["kl_fp32"].as_f64().unwrap();
        let reported = p["measured"]["kl_fp32"].as_f64().unwrap();
        assert!(
            (kl - reported).abs() <= 1e-9 * kl.max(1e-12),
            "{kl} against {reported}"
        );
        assert_eq!(p["measured"]["loss"], p["measured"]["kl_fp32"]);
    }
}

/// The baselines measure their points in one round, within the evaluation budget and the
/// budgets, and report their measured front in the same shape.
#[test]
fn the_baselines_measure_one_round_within_their_budgets() {
    for method in ["proxy-only", "greedy"] {
        let out = bitplan(&[
            "search",
            MANIFEST,
            "--model",
            MODEL,
            "--data",
            DATA,
            "--pareto",
            "avg_bits",
            "--evaluations",
            "6",
            "--max-avg-bits",
            "6",
            "--method",
            method,
            "--format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let doc: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(doc["method"], method.replace('-', "_"));
        let evaluations = doc["evaluations"].as_u64().unwrap();
        assert!((2..=6).contains(&evaluations), "{doc}");
        assert_eq!(doc["rounds"].as_array().unwrap().len(), 1);
        assert_eq!(doc["rounds"][0]["evaluated"], evaluations);
        // Their predictions are the manifest's Omega, not losses: no ratio of the two.
        assert!(doc["rounds"][0]["fit"]["ratio"].is_null(), "{doc}");
        let front = doc["front"].as_array().unwrap();
        assert!(!front.is_empty());
        assert!(
            front
                .iter()
                .all(|p| p["avg_bits"].as_f64().unwrap() <= 6.0 + 1e-9),
            "{doc}"
        );
    }
}

#[test]
fn bad_arguments_are_refused_with_exit_2() {
    for (args, says) in [
        (vec!["--evaluations", "0"], "--evaluations: must be within"),
        (
            vec!["--evaluations", "5", "--max-avg-bits", "1"],
            "no configuration meets the budgets",
        ),
    ] {
        let mut all = vec![
            "search", MANIFEST, "--model", MODEL, "--data", DATA, "--pareto", "size",
        ];
        all.extend(args);
        let out = bitplan(&all);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}
