//! Fields a document carries that bitplan does not read.
//!
//! Manifests come from other tools (trace estimators, exporters) that add fields of their own
//! (`op`, `shape`, `source`, …): those are accepted with a warning naming their JSON path. A field
//! that is a near-miss of a known one (`hesian_trace`) is a typo, and a typo of a real field must not
//! pass silently, so it is an error that suggests the known name. This module owns that rule; the
//! documents' own modules say which fields they know.

use crate::error::FieldError;
use crate::problem::manifest::Warning;
use serde_json::Value;

/// Whether `field` (lowercased) is taken for a typo of `known`: within 2 edits (insertions,
/// deletions, substitutions, adjacent transpositions) of a name of 5 or more characters; for
/// shorter names, where one edit already reaches fields other tools use (`bias` is one from `bits`,
/// `min` from `pin`), only two neighbouring letters swapped (`tei`).
fn is_typo(field: &str, known: &str) -> bool {
    let distance = edit_distance(field, known);
    if known.chars().count() >= 5 {
        return distance <= 2;
    }
    let sorted = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        c.sort_unstable();
        c
    };
    distance == 1 && sorted(field) == sorted(known)
}

/// Optimal-string-alignment distance between two names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known field an unknown one is a typo of, if any (the nearest; ties go to the first listed).
pub(crate) fn typo_of<'k>(field: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = field.to_ascii_lowercase();
    known
        .iter()
        .filter(|k| lower == **k || is_typo(&lower, k))
        .min_by_key(|k| edit_distance(&lower, k))
        .copied()
}

/// Sorts the fields of `object` (at JSON path `path`) that are not in `known`: typos of known
/// fields become errors with a suggestion, the rest warnings; the unknown fields are removed so a
/// strict parser behind this sees only what it knows.
pub(crate) fn screen(
    object: &mut Value,
    path: &str,
    known: &[&str],
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<Warning>,
) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let unknown: Vec<String> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .cloned()
        .collect();
    for field in unknown {
        map.remove(&field);
        let at = if path.is_empty() {
            field.clone()
        } else {
            format!("{path}.{field}")
        };
        match typo_of(&field, known) {
            Some(k) => errors.push(FieldError::new(
                at,
                format!("unknown field; did you mean {k}?"),
            )),
            None => warnings.push(Warning {
                path: at,
                message: "unknown field, ignored".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn distance_counts_edits_and_transpositions() {
        assert_eq!(edit_distance("hessian_trace", "hessian_trace"), 0);
        assert_eq!(edit_distance("hesian_trace", "hessian_trace"), 1);
        assert_eq!(edit_distance("hessain_trace", "hessian_trace"), 1);
        assert_eq!(edit_distance("parms", "params"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn near_misses_are_typos_and_the_rest_are_not() {
        let known = [
            "name",
            "params",
            "macs",
            "hessian_trace",
            "tie",
            "pin",
            "weight",
        ];
        assert_eq!(typo_of("hesian_trace", &known), Some("hessian_trace"));
        assert_eq!(typo_of("Params", &known), Some("params"));
        assert_eq!(typo_of("wieght", &known), Some("weight"));
        assert_eq!(typo_of("tei", &known), Some("tie"));
        assert_eq!(typo_of("PIN", &known), Some("pin"));
        let with_bits = ["bits", "name", "pin", "tie"];
        for other in [
            "hessian_trace_stderr",
            "op",
            "shape",
            "source",
            "id",
            "kind",
            "bias",
            "min",
            "pins",
        ] {
            assert_eq!(typo_of(other, &known), None, "{other}");
            assert_eq!(typo_of(other, &with_bits), None, "{other}");
        }
    }

    #[test]
    fn screen_removes_unknown_fields_and_sorts_them() {
        let mut v = json!({"name": "a", "op": "Conv", "nmae": 1});
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        screen(
            &mut v,
            "layers[0]",
            &["name", "params"],
            &mut errors,
            &mut warnings,
        );
        assert_eq!(v, json!({"name": "a"}));
        assert_eq!(
            errors,
            vec![FieldError::new(
                "layers[0].nmae",
                "unknown field; did you mean name?"
            )]
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].path, "layers[0].op");
        assert_eq!(warnings[0].message, "unknown field, ignored");
    }
}
