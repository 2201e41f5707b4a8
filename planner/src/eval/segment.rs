//! Splitting a prepared graph at single-tensor cuts, so candidates that agree on the bits of every
//! planned layer upstream of a cut share the activations at that cut instead of recomputing them.
//!
//! A cut sits just before a planned layer (before its activation quantizer, when it has one) where
//! exactly one tensor made by earlier nodes is read by later ones. Graph inputs do not count: they
//! are the validation set's (or per-run quantizer parameters), fed again to every segment that
//! reads them, so a mask or a second input read deep in the graph does not prevent cuts. Graphs
//! with skip connections cut only where the branches have joined; a graph with no such place is
//! one segment.

use crate::eval::onnx::pb;
use crate::eval::prepare::{slot_name, tensor_type};
use std::collections::{HashMap, HashSet};

/// One piece of the graph: a model from one tensor to the next cut (or the graph's output).
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    pub proto: pb::ModelProto,
    /// The tensor entering the segment from the one before (none for the first).
    pub input: Option<String>,
    /// The graph's data inputs the segment reads, fed from the validation set.
    pub data_inputs: Vec<String>,
    /// Planned layers whose weight slots (`bitplan.weight.<layer>`) live here.
    pub slots: Vec<usize>,
    /// Planned layers whose activation quantizer inputs are fed here.
    pub act_layers: Vec<usize>,
}

fn untyped(name: &str) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(tensor_type(None)),
        ..Default::default()
    }
}

fn is_constant_node(n: &pb::NodeProto) -> bool {
    n.op_type.as_deref() == Some("Constant")
}

/// Splits a graph prepared by the evaluator (weights in `bitplan.weight.{i}` initializers,
/// quantizer inputs `bitplan.act.{i}.*`) at every valid cut before a planned layer. `data_inputs`
/// are the graph inputs the validation set feeds.
pub(crate) fn split(proto: &pb::ModelProto, data_inputs: &[String], layers: usize) -> Vec<Segment> {
    let g = proto.graph.as_ref().expect("checked on load");
    let output = g
        .output
        .first()
        .and_then(|o| o.name.clone())
        .unwrap_or_default();
    let cuts = cuts(g, layers, &output);
    let constant_nodes: Vec<pb::NodeProto> = g
        .node
        .iter()
        .filter(|n| is_constant_node(n))
        .cloned()
        .collect();
    let mut bounds: Vec<(usize, Option<String>)> = vec![(0, None)];
    bounds.extend(cuts.into_iter().map(|(b, t)| (b, Some(t))));
    (0..bounds.len())
        .map(|s| {
            let (start, input) = &bounds[s];
            let end = bounds.get(s + 1).map_or(g.node.len(), |b| b.0);
            let piece = Piece {
                nodes: *start..end,
                input: input.clone(),
                output: bounds
                    .get(s + 1)
                    .and_then(|b| b.1.clone())
                    .unwrap_or_else(|| output.clone()),
            };
            segment(proto, &constant_nodes, piece, data_inputs, layers)
        })
        .collect()
}

/// Where each tensor is made and last read, constants and graph inputs left out.
struct Liveness<'a> {
    made: HashMap<&'a str, usize>,
    last_read: HashMap<&'a str, usize>,
}

impl<'a> Liveness<'a> {
    fn new(g: &'a pb::GraphProto) -> Liveness<'a> {
        let mut constant: HashSet<&str> = g
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        for n in g.node.iter().filter(|n| is_constant_node(n)) {
            constant.extend(n.output.iter().map(String::as_str));
        }
        constant.extend(g.input.iter().filter_map(|i| i.name.as_deref()));
        let mut made: HashMap<&str, usize> = HashMap::new();
        let mut last_read: HashMap<&str, usize> = HashMap::new();
        for (k, n) in g.node.iter().enumerate() {
            for o in &n.output {
                made.insert(o.as_str(), k + 1);
            }
            for i in n
                .input
                .iter()
                .filter(|i| !i.is_empty() && !constant.contains(i.as_str()))
            {
                last_read.insert(i.as_str(), k);
            }
        }
        // Graph outputs are read "after the end".
        for name in g.output.iter().filter_map(|o| o.name.as_deref()) {
            last_read.insert(name, g.node.len());
        }
        Liveness { made, last_read }
    }

    /// The tensors made before node `b` and read at or after it, sorted.
    fn live(&self, b: usize) -> Vec<&'a str> {
        let mut out: Vec<&str> = self
            .last_read
            .iter()
            .filter(|(t, &r)| r >= b && self.made.get(*t).is_some_and(|&m| m <= b))
            .map(|(t, _)| *t)
            .collect();
        out.sort_unstable();
        out
    }
}

/// The valid cuts, by node: the first node of each planned layer's chain where exactly one
/// tensor crosses and that chain reads it; with the tensor.
fn cuts(g: &pb::GraphProto, layers: usize, output: &str) -> Vec<(usize, String)> {
    let nodes = &g.node;
    let liveness = Liveness::new(g);
    let mut cuts: Vec<(usize, String)> = Vec::new();
    for i in 0..layers {
        let (act, weight) = (format!("bitplan.act.{i}.scale"), slot_name(i));
        let start = nodes
            .iter()
            .position(|n| n.input.contains(&act))
            .or_else(|| nodes.iter().position(|n| n.input.contains(&weight)));
        let Some(b) = start.filter(|&b| b > 0) else {
            continue;
        };
        // The one tensor crossing must be what the layer's chain reads (a float activation),
        // not, say, an integer mask made earlier while the layer reads a graph input.
        if let [t] = liveness.live(b).as_slice() {
            if *t != output
                && nodes[b].input.iter().any(|i| i == t)
                && !cuts.iter().any(|(c, _)| *c == b)
            {
                cuts.push((b, t.to_string()));
            }
        }
    }
    cuts.sort();
    cuts
}

/// One segment's place in the graph: its nodes, the tensor entering it and the one leaving.
struct Piece {
    nodes: std::ops::Range<usize>,
    input: Option<String>,
    output: String,
}

/// The segment of `piece`: its nodes (after every Constant node, which any segment may read),
/// the initializers and graph inputs they read, and which planned layers' slots and quantizer
/// inputs it holds.
fn segment(
    proto: &pb::ModelProto,
    constant_nodes: &[pb::NodeProto],
    piece: Piece,
    data_inputs: &[String],
    layers: usize,
) -> Segment {
    let g = proto.graph.as_ref().expect("checked on load");
    let last = piece.nodes.end == g.node.len();
    let body: Vec<pb::NodeProto> = g.node[piece.nodes]
        .iter()
        .filter(|n| !is_constant_node(n))
        .cloned()
        .collect();
    let reads: HashSet<&str> = body
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut seg_graph = g.clone();
    seg_graph.node = constant_nodes.iter().chain(&body).cloned().collect();
    seg_graph
        .initializer
        .retain(|t| t.name.as_deref().is_some_and(|n| reads.contains(n)));
    // The tensor from the segment before, then every graph input the segment reads.
    seg_graph.input = piece
        .input
        .iter()
        .map(|t| untyped(t))
        .chain(
            g.input
                .iter()
                .filter(|i| i.name.as_deref().is_some_and(|n| reads.contains(n)))
                .cloned(),
        )
        .collect();
    seg_graph.output = vec![if last {
        g.output[0].clone()
    } else {
        untyped(&piece.output)
    }];
    seg_graph.value_info.clear();
    let slots = (0..layers)
        .filter(|i| {
            let name = slot_name(*i);
            seg_graph
                .initializer
                .iter()
                .any(|t| t.name.as_deref() == Some(name.as_str()))
        })
        .collect();
    let act_layers = (0..layers)
        .filter(|i| reads.contains(format!("bitplan.act.{i}.scale").as_str()))
        .collect();
    let data_inputs = data_inputs
        .iter()
        .filter(|d| reads.contains(d.as_str()))
        .cloned()
        .collect();
    let mut seg_proto = proto.clone();
    seg_proto.graph = Some(seg_graph);
    Segment {
        proto: seg_proto,
        input: piece.input,
        data_inputs,
        slots,
        act_layers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
        pb::NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    /// `m` (a graph input) is made into an integer `mi` before the first planned layer, which
    /// reads the graph input `x`: `mi` is the one tensor live there, yet not what the layer reads,
    /// so no cut; before the second layer only `y`, which it reads, crosses.
    #[test]
    fn a_cut_carries_only_the_tensor_its_layer_reads() {
        let weight = |i: usize| pb::TensorProto {
            name: Some(format!("bitplan.weight.{i}")),
            ..Default::default()
        };
        let graph = pb::GraphProto {
            node: vec![
                node("Unsqueeze", &["m", "axes"], "mi"),
                node("MatMul", &["x", "bitplan.weight.0"], "h"),
                node("Cast", &["mi"], "mf"),
                node("Mul", &["h", "mf"], "y"),
                node("MatMul", &["y", "bitplan.weight.1"], "out"),
            ],
            initializer: vec![weight(0), weight(1)],
            input: vec![untyped("x"), untyped("m"), untyped("axes")],
            output: vec![untyped("out")],
            ..Default::default()
        };
        let proto = pb::ModelProto {
            graph: Some(graph),
            ..Default::default()
        };
        let segments = split(&proto, &["x".into(), "m".into()], 2);
        let inputs: Vec<Option<&str>> = segments.iter().map(|s| s.input.as_deref()).collect();
        assert_eq!(inputs, [None, Some("y")]);
        assert_eq!(segments[0].data_inputs, ["x", "m"]);
        assert!(segments[1].data_inputs.is_empty());
        assert_eq!(segments[1].slots, [1]);
    }
}
