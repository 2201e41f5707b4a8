//! The graph's wiring, checked once when a model is read: every node input is a graph input, a
//! weight (initializer) or the output of an earlier node, no name is produced twice, and every
//! graph output is produced. A cyclic graph fails the "earlier node" rule, so nothing downstream
//! (segmenting, liveness, ONNX Runtime) ever walks a cycle or looks up a tensor that is not there.

use super::{node_name, pb, WHAT};
use crate::error::{Error, FieldError, Result};
use std::collections::{HashMap, HashSet};

/// Most problems one refusal lists.
const MAX_LISTED: usize = 20;

/// Checks the main graph's wiring (subgraphs of If/Loop may use names from the outer scope; their
/// own wiring is ONNX Runtime's to check).
pub(super) fn check(g: &pb::GraphProto) -> Result<()> {
    let mut available: HashSet<&str> = g
        .input
        .iter()
        .filter_map(|v| v.name.as_deref())
        .chain(g.initializer.iter().filter_map(|t| t.name.as_deref()))
        .chain(
            g.sparse_initializer
                .iter()
                .filter_map(|t| t.values.as_ref().and_then(|v| v.name.as_deref())),
        )
        .collect();
    // Where each node output is produced, to tell a cycle (produced later) from a missing tensor.
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, node) in g.node.iter().enumerate() {
        for out in node.output.iter().filter(|o| !o.is_empty()) {
            if available.contains(out.as_str()) || producer.insert(out, i).is_some() {
                errors.push(FieldError::new(
                    format!("graph.node[{}]", node_name(node)),
                    format!("output {out:?} is already produced elsewhere in the graph"),
                ));
            }
        }
    }
    for (i, node) in g.node.iter().enumerate() {
        for input in node.input.iter().filter(|n| !n.is_empty()) {
            if available.contains(input.as_str()) {
                continue;
            }
            let reason = match producer.get(input.as_str()) {
                Some(&j) if j >= i => format!(
                    "input {input:?} is produced by node {:?}, which comes after it: the graph has a cycle or is not in topological order",
                    node_name(&g.node[j])
                ),
                Some(_) => continue,
                None => format!(
                    "input {input:?} is not a graph input, an initializer or any node's output (a missing initializer?)"
                ),
            };
            errors.push(FieldError::new(
                format!("graph.node[{}]", node_name(node)),
                reason,
            ));
        }
        available.extend(node.output.iter().map(String::as_str));
    }
    for out in g.output.iter().filter_map(|v| v.name.as_deref()) {
        if !available.contains(out) {
            errors.push(FieldError::new(
                "graph.output",
                format!("{out:?} is produced by no node, input or initializer"),
            ));
        }
    }
    if errors.len() > MAX_LISTED {
        let more = errors.len() - (MAX_LISTED - 1);
        errors.truncate(MAX_LISTED - 1);
        errors.push(FieldError::new(
            "graph",
            format!("and {more} more problems not listed"),
        ));
    }
    Error::check(WHAT, errors)
}
