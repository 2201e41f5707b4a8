//! Tests of manifest parsing and checking.
use super::*;

fn err_paths(text: &str) -> Vec<String> {
    match Manifest::from_json(text) {
        Err(e) => e
            .field_errors()
            .iter()
            .map(|f| format!("{} | {}", f.path, f.reason))
            .collect(),
        Ok(_) => panic!("expected an error for {text}"),
    }
}

#[test]
fn parses_the_contract_example() {
    let m = Manifest::from_json(
        r#"{ "name": "resnet18", "bits": [8, 6, 5, 4, 3, 2], "activation_bits": "same",
          "layers": [ { "name": "stage1.unit1.conv1", "params": 36864, "macs": 115605504,
            "hessian_trace": 2528.1, "perturbation": {"8": 0.0235, "4": 6.743},
            "bits": [8, 4], "tie": "stage2.unit1.out", "pin": 8, "weight": "conv1.weight" } ] }"#,
    )
    .unwrap();
    assert_eq!(m.bits, vec![8, 6, 5, 4, 3, 2]);
    assert_eq!(m.layers[0].bits, vec![8, 4]);
    assert_eq!(m.layers[0].pin, Some(8));
    assert_eq!(m.layers[0].perturbation.as_ref().unwrap()[&4], 6.743);
    assert_eq!(m.rounding, Rounding::HalfAwayFromZero);
    assert!(m.proxy_layers().is_empty());
}

#[test]
fn per_param_trace_is_scaled_by_params() {
    let m = Manifest::from_json(
        r#"{"name":"m","bits":[8,4],"layers":[{"name":"a","params":10,"macs":5,"hessian_trace_per_param":0.5}]}"#,
    )
    .unwrap();
    assert_eq!(m.layers[0].hessian_trace, Some(5.0));
    assert_eq!(m.layers[0].objective_trace, 5.0);
    assert_eq!(m.proxy_layers(), vec!["a"]);
}

#[test]
fn a_negative_trace_is_priced_not_free_and_kept_as_given() {
    let text = r#"{"name":"m","bits":[8,4],"layers":[
        {"name":"a","params":10,"macs":5,"hessian_trace":-0.01,"hessian_trace_stderr":0.5},
        {"name":"b","params":10,"macs":5,"hessian_trace":20}]}"#;
    let m = Manifest::from_json(text).unwrap();
    assert_eq!(m.layers[0].hessian_trace, Some(-0.01));
    // The top of its interval, 0 + 2 * 0.5, is above the floor (1% of 2 per weight).
    assert_eq!(m.layers[0].objective_trace, 1.0);
    assert_eq!(m.warnings.len(), 1);
    assert_eq!(m.warnings[0].path, "layers[0].hessian_trace");
    // Stored and read again, the rule gives the same price.
    let again = Manifest::from_value(m.to_json()).unwrap();
    assert_eq!(again.layers[0].objective_trace, 1.0);
    assert_eq!(again.layers[0].hessian_trace_stderr, Some(0.5));
}

#[test]
fn sensitivity_replaces_traces_on_every_layer_or_none() {
    let m = Manifest::from_json(
        r#"{"name":"m","bits":[8,4],"sensitivity_metric":"mse","layers":[
            {"name":"a","params":10,"macs":5,"sensitivity":{"8":0.001,"4":0.3}},
            {"name":"b","params":10,"macs":5,"hessian_trace":-3,"sensitivity":{"8":0.002,"4":0.1}}]}"#,
    )
    .unwrap();
    assert_eq!(m.sensitivity_metric, Some(Divergence::Mse));
    assert!(m.proxy_layers().is_empty());
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(Manifest::from_value(m.to_json()).unwrap(), m);
    let errs = err_paths(
        r#"{"name":"m","bits":[8,4],"layers":[
            {"name":"a","params":10,"macs":5,"sensitivity":{"8":0.001,"4":-0.3}},
            {"name":"b","params":10,"macs":5,"hessian_trace":1}]}"#,
    );
    assert_eq!(
        errs,
        [
            "layers[0].sensitivity.4 | must be a finite, non-negative divergence, not -0.3",
            "layers[1].sensitivity | missing: 1 other layers have measured sensitivity, and the objective cannot mix it with Hessian-weighted errors",
        ]
    );
}

#[test]
fn every_problem_is_named_by_path() {
    let errs = err_paths(
        r#"{"name":"m","bits":[8,4,4],"activation_bits":"half","layers":[
            {"name":"a","params":0,"macs":5,"hessian_trace":1,"pin":6},
            {"name":"a","params":3,"macs":5},
            {"name":"b","params":3,"macs":5,"hessian_trace":1,"hessian_trace_per_param":1},
            {"name":"c","params":3,"macs":5,"hessian_trace":1,"bits":[8],"tie":"g","perturbation":{"8":1,"7":2}},
            {"name":"d","params":3,"macs":5,"hessian_trace":1,"bits":[4],"tie":"g"}
        ]}"#,
    );
    let want = [
        "bits[2] | bit-width 4 is listed twice",
        "activation_bits | must be \"same\" or a bit-width",
        "layers[0].params | must be a positive weight count",
        "layers[0].pin | pinned bit-width 6 is not among",
        "layers[1].name | duplicate layer name \"a\" (first at layers[0])",
        "layers[1].hessian_trace | missing",
        "layers[2].hessian_trace | give hessian_trace or hessian_trace_per_param, not both",
        "layers[3].perturbation.7 | key \"7\" is not one of",
        "layers[3].tie | tie group \"g\" has no common bit-width",
    ];
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "missing {w:?} in {errs:#?}"
        );
    }
    assert_eq!(errs.len(), want.len(), "{errs:#?}");
}

#[test]
fn serde_errors_carry_the_json_path() {
    let errs = err_paths(
        r#"{"name":"m","bits":[8],"layers":[{"name":"a","params":"many","macs":1,"hessian_trace":1}]}"#,
    );
    assert!(
        errs[0].starts_with("layers[0].params | invalid type"),
        "{errs:?}"
    );
    let errs = err_paths(r#"{"name":"m","bits":[8],"#);
    assert!(errs[0].contains("malformed JSON at line 1"), "{errs:?}");
}

#[test]
fn perturbation_must_cover_allowed_bits() {
    let errs = err_paths(
        r#"{"name":"m","bits":[8,4],"layers":[{"name":"a","params":1,"macs":1,"hessian_trace":1,"perturbation":{"8":0.1}}]}"#,
    );
    assert_eq!(
        errs,
        vec![
            "layers[0].perturbation | has no value for bit-width 4; give every allowed bit or none"
        ]
    );
}

#[test]
fn round_trips_through_json() {
    let text = r#"{"name":"m","bits":[4,8],"activation_bits":8,"rounding":"half_to_even","layers":[
        {"name":"a","params":2,"macs":1,"hessian_trace":1,"tie":"t","pin":8,"weight":"w","perturbation":{"8":0.1,"4":0.4}}]}"#;
    let m = Manifest::from_json(text).unwrap();
    let again = Manifest::from_value(m.to_json()).unwrap();
    assert_eq!(m, again);
    assert_eq!(again.activation_bits, ActivationBits::Fixed(8));
    assert_eq!(again.rounding, Rounding::HalfToEven);
}

#[test]
fn fields_of_other_tools_are_warnings_and_typos_errors() {
    let m = Manifest::from_json(
        r#"{"name":"m","bits":[8,4],"exporter":"x","layers":[
            {"name":"a","params":1,"macs":1,"hessian_trace":1,"source":"pyhessian","op":"Conv","shape":[1,1]}]}"#,
    )
    .unwrap();
    let got: Vec<String> = m
        .warnings
        .iter()
        .map(|w| format!("{}: {}", w.path, w.message))
        .collect();
    assert_eq!(
        got,
        [
            "exporter: unknown field, ignored",
            "layers[0].source: unknown field, ignored",
            "layers[0].op: unknown field, ignored",
            "layers[0].shape: unknown field, ignored",
        ]
    );
    let errs = err_paths(
        r#"{"name":"m","bits":[8],"layers":[{"name":"a","params":1,"macs":1,"hessian_trace":1},
            {"name":"b","params":1,"macs":1,"hesian_trace":1}]}"#,
    );
    assert_eq!(
        errs,
        [
            "layers[1].hesian_trace | unknown field; did you mean hessian_trace?",
            "layers[1].hessian_trace | missing: give hessian_trace or hessian_trace_per_param (or measured sensitivity)",
        ]
    );
}

#[test]
fn every_known_field_is_read_without_a_warning() {
    for trace in [r#""hessian_trace":1"#, r#""hessian_trace_per_param":1"#] {
        let text = format!(
            r#"{{"name":"m","bits":[8,4],"activation_bits":"same","rounding":"half_to_even","layers":[
            {{"name":"a","params":2,"macs":1,{trace},"tie":"t","pin":8,"weight":"w","bits":[8,4],"perturbation":{{"8":0.1,"4":0.4}}}}]}}"#
        );
        let m = Manifest::from_json(&text).unwrap();
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    }
}

#[test]
fn a_manifest_without_any_objective_is_structure_only_and_cannot_be_planned() {
    let m = Manifest::from_json(
        r#"{"name":"m","bits":[8,4],"layers":[{"name":"a","params":4,"macs":1},
            {"name":"b","params":4,"macs":1}]}"#,
    )
    .unwrap();
    assert_eq!(m.objective(), "none");
    assert!(!m.is_scored());
    assert_eq!(m.warnings.len(), 1);
    assert_eq!(m.warnings[0].path, "layers");
    let e = crate::problem::Problem::new(&m, None).unwrap_err();
    assert_eq!(e.field_errors()[0].path, "layers");
    assert!(e.to_string().contains("sensitivity"), "{e}");
    // One layer with a trace makes the trace the objective: the other needs one too.
    let errs = err_paths(
        r#"{"name":"m","bits":[8,4],"layers":[{"name":"a","params":4,"macs":1,"hessian_trace":1},
            {"name":"b","params":4,"macs":1}]}"#,
    );
    assert_eq!(
        errs,
        ["layers[1].hessian_trace | missing: give hessian_trace or hessian_trace_per_param (or measured sensitivity)"]
    );
}

/// A manifest of `n` layers named `l0…`, with these weights each.
fn layers_json(n: usize, params: &str) -> String {
    let layers: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name":"l{i}","params":{params},"macs":1,"hessian_trace":1}}"#))
        .collect();
    format!(
        r#"{{"name":"m","bits":[8,4],"layers":[{}]}}"#,
        layers.join(",")
    )
}

#[test]
fn too_many_layers_are_refused_before_any_is_checked() {
    assert!(Manifest::from_json(&layers_json(MAX_LAYERS, "1")).is_ok());
    let errors = err_paths(&layers_json(MAX_LAYERS + 1, "1"));
    assert_eq!(
        errors,
        vec![format!(
            "layers | lists {} layers, more than the {MAX_LAYERS} a manifest may hold",
            MAX_LAYERS + 1
        )]
    );
}

#[test]
fn weights_summing_past_two_to_the_53_are_refused_not_wrapped() {
    // Three layers of i64::MAX weights wrap a u64 sum; two of 2^52 + 1 pass 2^53 without wrapping.
    for (n, params) in [
        (3, i64::MAX.to_string()),
        (2, ((1u64 << 52) + 1).to_string()),
    ] {
        let errors = err_paths(&layers_json(n, &params));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("layers | the layers count more than")),
            "{errors:?}"
        );
    }
    assert!(Manifest::from_json(&layers_json(2, &(1u64 << 52).to_string())).is_ok());
}

#[test]
fn a_refusal_lists_at_most_max_problems() {
    let errors = err_paths(&layers_json(500, "-1"));
    assert_eq!(errors.len(), MAX_PROBLEMS);
    assert_eq!(
        errors.last().unwrap(),
        &format!(
            "layers | and {} more problems not listed",
            500 - (MAX_PROBLEMS - 1)
        )
    );
}
