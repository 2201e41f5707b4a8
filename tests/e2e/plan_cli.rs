//! `bitplan plan`: the contract CI pipelines rely on (JSON keys, exit codes, errors on stderr).

use crate::{bitplan, repo, stderr, stdout};
use serde_json::Value;

const DIGITS: &str = "examples/digits-cnn.manifest.json";
const RESNET18: &str = "examples/resnet18.manifest.json";

fn json_of(args: &[&str]) -> (i32, Value) {
    let out = bitplan(args);
    let v: Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(&out), stderr(&out)));
    (out.status.code().unwrap(), v)
}

fn manifest(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap()
}

#[test]
fn json_plan_prices_the_candidate_from_the_manifest() {
    let (code, v) = json_of(&["plan", DIGITS, "--max-avg-bits", "4", "--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(v["status"], "optimal");
    let c = &v["candidates"][0];
    let m = manifest(DIGITS);
    let (mut size, mut bops, mut omega, mut params) = (0.0, 0.0, 0.0, 0.0);
    for l in m["layers"].as_array().unwrap() {
        let b = c["bits"][l["name"].as_str().unwrap()].as_f64().unwrap();
        let p = l["params"].as_f64().unwrap();
        size += p * b / 8.0;
        bops += l["macs"].as_f64().unwrap() * b * b;
        omega += l["hessian_trace"].as_f64().unwrap() / p
            * l["perturbation"][(b as u8).to_string()].as_f64().unwrap();
        params += p;
    }
    assert_eq!(c["size_bytes"].as_f64().unwrap(), size);
    assert_eq!(c["bops"].as_f64().unwrap(), bops);
    assert!((c["omega"].as_f64().unwrap() - omega).abs() <= 1e-12 * omega);
    assert!(size * 8.0 / params <= 4.0);
    assert_eq!(c["bits"]["conv1"], 8, "conv1 is pinned to 8 bits");
    assert!(c.get("latency_ms").is_none(), "no latency without a device");
    // bits keep manifest order
    let keys: Vec<&str> = c["bits"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["conv1", "conv2", "fc1", "fc2"]);
}

#[test]
fn pareto_points_are_sorted_by_the_front_cost_and_non_dominated() {
    let (code, v) = json_of(&[
        "plan",
        RESNET18,
        "--pareto",
        "bops",
        "--max-size-bytes",
        "7000000",
        "--points",
        "12",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let cands = v["candidates"].as_array().unwrap();
    assert_eq!(cands.len(), 12);
    for w in cands.windows(2) {
        assert!(
            w[0]["bops"].as_f64() < w[1]["bops"].as_f64(),
            "sorted by BOPs, strictly"
        );
        assert!(
            w[0]["omega"].as_f64() > w[1]["omega"].as_f64(),
            "each step buys lower Omega"
        );
    }
    assert!(cands
        .iter()
        .all(|c| c["size_bytes"].as_f64().unwrap() <= 7e6));
    assert_eq!(v["sort_by"], "bops");
}

#[test]
fn device_latency_is_reported_and_bounded() {
    let (code, v) = json_of(&[
        "plan",
        RESNET18,
        "--device",
        "examples/edge-npu.device.json",
        "--max-latency-ms",
        "0.9",
        "--max-bops",
        "4e10",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{v}");
    let c = &v["candidates"][0];
    assert!(c["latency_ms"].as_f64().unwrap() <= 0.9);
    assert!(c["bops"].as_f64().unwrap() <= 4e10);
    assert_eq!(v["engine"], "highs");
}

#[test]
fn infeasible_budgets_exit_3_with_the_smallest_achievable_values() {
    let (code, v) = json_of(&[
        "plan",
        DIGITS,
        "--max-size-bytes",
        "1000",
        "--format",
        "json",
    ]);
    assert_eq!(code, 3);
    assert_eq!(v["status"], "infeasible");
    assert!(v["candidates"].as_array().unwrap().is_empty());
    let b = &v["infeasible"]["budgets"][0];
    assert_eq!(b["budget"], "max_size_bytes");
    // conv1 pinned at 8 bits, the rest at 2: 144 + (4608 + 32768 + 640) * 2 / 8
    assert_eq!(
        b["min_achievable"],
        144.0 + (4608.0 + 32768.0 + 640.0) * 2.0 / 8.0
    );
    assert_eq!(b["achievable_alone"], false);

    let out = bitplan(&["plan", DIGITS, "--max-size-bytes", "1000"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stdout(&out).contains("max_size_bytes 1000 is below the smallest achievable 9648"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn jointly_infeasible_budgets_report_each_minimum_under_the_others() {
    // A device without fast 2-bit kernels: low bits save size but cost latency.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.json");
    let d = dir.path().join("d.json");
    std::fs::write(&m, r#"{"name":"m","bits":[8,2],"layers":[{"name":"a","params":1000,"macs":10,"hessian_trace":1}]}"#).unwrap();
    std::fs::write(
        &d,
        r#"{"name":"slow2","latency_ms":{"a":{"8":1.0,"2":3.0}}}"#,
    )
    .unwrap();
    let (m, d) = (m.to_str().unwrap(), d.to_str().unwrap());
    let (code, v) = json_of(&[
        "plan",
        m,
        "--device",
        d,
        "--max-size-bytes",
        "500",
        "--format",
        "json",
    ]);
    assert_eq!(
        (code, &v["candidates"][0]["bits"]["a"]),
        (0, &Value::from(2))
    );
    let (code, v) = json_of(&[
        "plan",
        m,
        "--device",
        d,
        "--max-latency-ms",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(
        (code, &v["candidates"][0]["bits"]["a"]),
        (0, &Value::from(8))
    );

    let (code, v) = json_of(&[
        "plan",
        m,
        "--device",
        d,
        "--max-size-bytes",
        "500",
        "--max-latency-ms",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(code, 3);
    let inf = &v["infeasible"];
    assert!(
        inf["message"]
            .as_str()
            .unwrap()
            .contains("each is achievable alone"),
        "{inf}"
    );
    let size = &inf["budgets"][0];
    assert_eq!(
        (
            size["budget"].as_str(),
            size["min_achievable"].as_f64(),
            size["min_under_other_budgets"].as_f64()
        ),
        (Some("max_size_bytes"), Some(250.0), Some(1000.0))
    );
    let lat = &inf["budgets"][1];
    assert_eq!(
        (
            lat["budget"].as_str(),
            lat["min_achievable"].as_f64(),
            lat["min_under_other_budgets"].as_f64()
        ),
        (Some("max_latency_ms"), Some(1.0), Some(3.0))
    );
}

#[test]
fn invalid_manifest_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, r#"{"name":"m","bits":[8,4],"layers":[{"name":"a","params":10,"macs":1,"hessian_trace":1,"pin":6}]}"#).unwrap();
    let out = bitplan(&["plan", path.to_str().unwrap(), "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert!(
        stderr(&out)
            .contains("layers[0].pin: pinned bit-width 6 is not among the layer's bits [8, 4]"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&path, "{ not json").unwrap();
    let out = bitplan(&["plan", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("malformed JSON at line 1"),
        "{}",
        stderr(&out)
    );

    let out = bitplan(&["plan", "does/not/exist.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read manifest does/not/exist.json"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn device_missing_a_layer_is_an_error_naming_device_and_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.json");
    std::fs::write(
        &path,
        r#"{"name":"phone","latency_ms":{"conv1":{"8":1,"6":1,"5":1,"4":1,"3":1,"2":1}}}"#,
    )
    .unwrap();
    let out = bitplan(&[
        "plan",
        DIGITS,
        "--device",
        path.to_str().unwrap(),
        "--max-latency-ms",
        "3",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("device \"phone\" has no latency entry for layer \"conv2\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn latency_budget_needs_a_device() {
    let out = bitplan(&["plan", DIGITS, "--max-latency-ms", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--device"), "{}", stderr(&out));
}

#[test]
fn csv_has_one_column_per_layer_and_table_is_aligned() {
    let out = bitplan(&[
        "plan", DIGITS, "--pareto", "size", "--points", "5", "--format", "csv",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "rank,status,sources,omega,size_bytes,bops,avg_bits,conv1,conv2,fc1,fc2"
    );
    assert_eq!(lines.len(), 6);
    assert!(lines[1..].iter().all(|l| l.split(',').count() == 11));

    let out = bitplan(&["plan", DIGITS, "--pareto", "size", "--points", "5"]);
    let text = stdout(&out);
    let rows: Vec<&[u8]> = text.lines().skip(1).map(str::as_bytes).collect();
    assert_eq!(rows.len(), 6, "{text}");
    let header = std::str::from_utf8(rows[0]).unwrap();
    // Where a heading starts (a whole word: `bits` is not the end of `avg_bits`).
    let at = |name: &str| header.find(&format!(" {name} ")).unwrap() + 1;
    let blank = |r: &[u8], i: usize| r.get(i).is_none_or(|&c| c == b' ');
    // Numbers end under the end of their heading; `from` and the bits start under theirs.
    for name in ["omega", "size", "bops", "avg_bits"] {
        let end = at(name) + name.len();
        for r in &rows {
            assert!(
                !blank(r, end - 1) && blank(r, end),
                "{name} column:\n{text}"
            );
        }
    }
    for name in ["from", "bits"] {
        let start = at(name);
        for r in &rows {
            assert!(
                blank(r, start - 1) && !blank(r, start),
                "{name} column:\n{text}"
            );
        }
    }
}

#[test]
fn paper_pool_and_sweep_are_deduplicated_pools() {
    let (code, v) = json_of(&[
        "plan",
        DIGITS,
        "--max-avg-bits",
        "5",
        "--pool",
        "paper",
        "--pool",
        "sweep",
        "--sweep-points",
        "6",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let cands = v["candidates"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    for c in cands {
        assert!(seen.insert(c["bits"].to_string()), "duplicate {c}");
        assert!(c["avg_bits"].as_f64().unwrap() <= 5.0);
    }
    // The paper's pool, by brute force over all 6^3 assignments of the free layers (conv1 is
    // pinned): the optimum, and for each free layer and each other bit-width the best assignment
    // with that layer forced to it, within 5 average bits.
    let problem = planner::Problem::new(
        &planner::Manifest::from_json(&std::fs::read_to_string(repo().join(DIGITS)).unwrap())
            .unwrap(),
        None,
    )
    .unwrap();
    let widths = [8u8, 6, 5, 4, 3, 2];
    let all: Vec<planner::Candidate> = (0..216)
        .map(|i| vec![8, widths[i / 36], widths[i / 6 % 6], widths[i % 6]])
        .map(|bits| problem.candidate_from_bits(&bits).unwrap())
        .filter(|c| c.avg_bits <= 5.0)
        .collect();
    let best = |keep: &dyn Fn(&planner::Candidate) -> bool| {
        all.iter()
            .filter(|c| keep(c))
            .min_by(|a, b| a.omega.total_cmp(&b.omega))
            .map(|c| c.bits.clone())
    };
    let optimum = best(&|_| true).unwrap();
    let mut want: std::collections::BTreeSet<Vec<u8>> = [optimum.clone()].into();
    for (layer, &at_optimum) in optimum.iter().enumerate().skip(1) {
        for &b in widths.iter().filter(|&&b| b != at_optimum) {
            want.extend(best(&|c| c.bits[layer] == b));
        }
    }
    let paper: std::collections::BTreeSet<Vec<u8>> = cands
        .iter()
        .filter(|c| {
            c["sources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "paper" || s == "optimal")
        })
        .map(|c| {
            ["conv1", "conv2", "fc1", "fc2"]
                .iter()
                .map(|l| c["bits"][l].as_u64().unwrap() as u8)
                .collect()
        })
        .collect();
    assert_eq!(paper, want);
    assert!(cands.iter().any(|c| c["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s == "sweep")));
}

#[test]
fn hasb_probabilities_sum_to_one() {
    let out = bitplan(&["hasb", DIGITS]);
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&out)).unwrap();
    for (layer, lp) in v.as_object().unwrap() {
        let sum: f64 = lp["probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_f64().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-9, "{layer}: {sum}");
    }
    // fc2 has the largest trace per weight: it leans to 8 bits; conv2 the smallest: leans low.
    assert!(v["fc2"]["probabilities"]["8"].as_f64() > v["fc2"]["probabilities"]["2"].as_f64());
    assert!(v["conv2"]["probabilities"]["2"].as_f64() > v["conv2"]["probabilities"]["8"].as_f64());
}

/// `--mip-gap` lets a solve stop once its plan is proven that close to the optimum: on the
/// benchmark's 1000-layer manifest under three budgets, 1e-4 ends at the root with a plan whose
/// status says so and whose gap is reported; a gap outside [0, 1) is refused naming the flag's field.
#[test]
fn a_mip_gap_stops_a_solve_within_it_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("random1000.json");
    let out = bitplan(&["synth", "random:1000", "--seed", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&path, stdout(&out)).unwrap();
    let m = path.to_str().unwrap();
    let device = "examples/edge-npu.device.json";
    // The dearest plan has no budget; the cheapest of each cost is in an infeasibility report.
    let (_, dearest) = json_of(&["plan", m, "--device", device, "--format", "json"]);
    let dearest = &dearest["candidates"][0];
    let mut budgets = Vec::new();
    for (flag, key) in [
        ("--max-size-bytes", "size_bytes"),
        ("--max-bops", "bops"),
        ("--max-latency-ms", "latency_ms"),
    ] {
        let (code, v) = json_of(&["plan", m, "--device", device, flag, "0", "--format", "json"]);
        assert_eq!(code, 3);
        let least = v["infeasible"]["budgets"][0]["min_achievable"]
            .as_f64()
            .unwrap();
        let most = dearest[key].as_f64().unwrap();
        budgets.push((flag, key, least + 0.4 * (most - least)));
    }
    let values: Vec<String> = budgets.iter().map(|b| b.2.to_string()).collect();
    let mut args = vec!["plan", m, "--device", device, "--format", "json"];
    for (b, v) in budgets.iter().zip(&values) {
        args.extend([b.0, v.as_str()]);
    }
    args.extend(["--mip-gap", "1e-4"]);
    let (code, v) = json_of(&args);
    assert_eq!(code, 0);
    let c = &v["candidates"][0];
    assert_eq!(v["status"], c["solve"]["status"]);
    assert_eq!(v["status"], "within_gap", "{}", c["solve"]);
    let gap = c["solve"]["gap"].as_f64().unwrap();
    assert!(gap > 0.0 && gap <= 1e-4, "{gap}");
    for (_, key, limit) in &budgets {
        assert!(c[key].as_f64().unwrap() <= *limit, "{key}");
    }

    for bad in ["1", "-0.1", "NaN"] {
        let mut args = vec!["plan", m, "--mip-gap", bad, "--max-avg-bits", "4"];
        args.push("--format");
        args.push("json");
        let out = bitplan(&args);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            stderr(&out).contains("mip_gap: must be a relative gap at least 0 and below 1"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}
