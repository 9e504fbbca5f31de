//! Tree ensembles (`ai.onnx.ml` `TreeEnsembleClassifier` and `TreeEnsembleRegressor`) for
//! tract, on an evaluator of Scoria's own.
//!
//! tract 0.23's evaluator finds a leaf's weights by skipping an iterator from the first leaf
//! of the whole ensemble, so one record costs trees x leaves: 3.9 ms for the shipped
//! 100-tree random forest, 0.86 ms for the 100-stump gradient boosting. Here each leaf holds
//! the range of its weights, so a record costs trees x depth (microseconds). The nodes are
//! read the way tract reads them, and `host/tests/tabular.rs` checks the answers against
//! ONNX Runtime and scikit-learn.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::ops::array::{Slice, TypedConcat};
use tract_onnx::tract_hir::tract_core::ops::nn::{Reduce, Reducer};

/// A rank-2 `[1, n]` constant, which broadcasts over a `[batch, n]` input.
pub(super) fn row(values: &[f32]) -> TractResult<Arc<Tensor>> {
    Ok(tensor1(values).into_shape(&[1, values.len()])?.into_arc_tensor())
}

/// How a node compares its feature with its threshold; a leaf has none.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Geq,
    Gt,
    Eq,
    Neq,
    Leaf,
}

fn mode(s: &str) -> TractResult<Mode> {
    Ok(match s {
        "BRANCH_LEQ" => Mode::Leq,
        "BRANCH_LT" => Mode::Lt,
        "BRANCH_GTE" => Mode::Geq,
        "BRANCH_GT" => Mode::Gt,
        "BRANCH_EQ" => Mode::Eq,
        "BRANCH_NEQ" => Mode::Neq,
        "LEAF" => Mode::Leaf,
        _ => bail!("unsupported tree node mode {s}"),
    })
}

/// One node. For a branch, `a` and `b` are the rows of its true and false children; for a
/// leaf, the range of its weights in [`Forest::weights`].
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Node {
    mode: Mode,
    feature: u32,
    threshold: u32,
    nan_is_true: bool,
    a: u32,
    b: u32,
}

/// How a target's weights from the trees combine.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// A parsed ensemble: the root row of each tree, the nodes, and the leaves' (target,
/// weight) pairs. Immutable and shared by every plan of a model.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Forest {
    roots: Arc<Vec<u32>>,
    nodes: Arc<Vec<Node>>,
    /// (target, f32 bits of the weight).
    weights: Arc<Vec<(u32, u32)>>,
    targets: usize,
    features: usize,
    aggregate: Aggregate,
}

impl Forest {
    /// Read the ensemble of `node`, whose leaves are `{prefix}_ids`, `_nodeids`, `_treeids`
    /// and `_weights` (`class` for a classifier, `target` for a regressor).
    fn parse(node: &NodeProto, prefix: &str, targets: usize, aggregate: Aggregate) -> TractResult<Self> {
        let ints = |name: &str, n: usize| -> TractResult<Vec<usize>> {
            let v: Vec<usize> = node.get_attr_vec(name)?;
            node.expect_attr(name, v.len() == n, || format!("{n} values, got {}", v.len()))?;
            Ok(v)
        };
        let n = node.get_attr_slice::<i64>("nodes_featureids")?.len();
        node.expect_attr("nodes_featureids", n > 0, "at least one node")?;
        let node_ids = ints("nodes_nodeids", n)?;
        let tree_ids = ints("nodes_treeids", n)?;
        let features = ints("nodes_featureids", n)?;
        let true_ids = ints("nodes_truenodeids", n)?;
        let false_ids = ints("nodes_falsenodeids", n)?;
        let thresholds: Vec<f32> = node.get_attr_vec("nodes_values")?;
        let nan_true: Vec<bool> = node
            .get_attr_opt_vec("nodes_missing_value_tracks_true")?
            .unwrap_or_else(|| vec![false; n]);
        let modes: Vec<Mode> = node
            .get_attr_vec::<String>("nodes_modes")?
            .iter()
            .map(|s| mode(s))
            .collect::<TractResult<_>>()?;
        node.expect(
            thresholds.len() == n && nan_true.len() == n && modes.len() == n,
            "one threshold, mode and NaN flag per node",
        )?;
        let k = node.get_attr_slice::<i64>(&format!("{prefix}_ids"))?.len();
        let leaf_targets = ints(&format!("{prefix}_ids"), k)?;
        let leaf_nodes = ints(&format!("{prefix}_nodeids"), k)?;
        let leaf_trees = ints(&format!("{prefix}_treeids"), k)?;
        let leaf_weights: Vec<f32> = node.get_attr_vec(&format!("{prefix}_weights"))?;
        node.expect(leaf_weights.len() == k, "one weight per leaf entry")?;
        node.expect(
            leaf_targets.iter().all(|&t| t < targets),
            "leaf targets within the targets",
        )?;

        // Rows in (tree, node id) order; a tree's node ids are offsets from its root row.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
        let mut leaf_order: Vec<usize> = (0..k).collect();
        leaf_order.sort_by_key(|&i| (leaf_trees[i], leaf_nodes[i]));
        let (mut roots, mut nodes, mut weights) = (Vec::new(), Vec::with_capacity(n), Vec::with_capacity(k));
        let (mut tree, mut root, mut next) = (None, 0u32, 0);
        for i in order {
            if tree != Some(tree_ids[i]) {
                tree = Some(tree_ids[i]);
                root = nodes.len() as u32;
                roots.push(root);
            }
            let row = root as usize + node_ids[i];
            node.expect(
                row == nodes.len(),
                "a tree's node ids to count from 0 without gaps",
            )?;
            let (a, b) = if modes[i] == Mode::Leaf {
                let first = weights.len() as u32;
                while let Some(&l) = leaf_order.get(next)
                    && (leaf_trees[l], leaf_nodes[l]) == (tree_ids[i], node_ids[i])
                {
                    weights.push((leaf_targets[l] as u32, leaf_weights[l].to_bits()));
                    next += 1;
                }
                (first, weights.len() as u32)
            } else {
                (root + true_ids[i] as u32, root + false_ids[i] as u32)
            };
            nodes.push(Node {
                mode: modes[i],
                feature: features[i] as u32,
                threshold: thresholds[i].to_bits(),
                nan_is_true: nan_true[i],
                a,
                b,
            });
        }
        node.expect(
            nodes
                .iter()
                .all(|x| x.mode == Mode::Leaf || (x.a as usize) < n && (x.b as usize) < n),
            "children within their tree",
        )?;
        Ok(Forest {
            roots: Arc::new(roots),
            nodes: Arc::new(nodes),
            weights: Arc::new(weights),
            targets,
            features: features.iter().max().map_or(0, |m| m + 1),
            aggregate,
        })
    }

    /// The leaf `x` reaches in the tree rooted at `root`. A cycle in a malformed graph ends
    /// after as many steps as there are nodes.
    fn leaf(&self, root: u32, x: &[f32]) -> Option<&Node> {
        let mut at = root as usize;
        for _ in 0..=self.nodes.len() {
            let node = &self.nodes[at];
            let v = x[node.feature as usize];
            let t = f32::from_bits(node.threshold);
            let go_true = match node.mode {
                Mode::Leaf => return Some(node),
                _ if v.is_nan() => node.nan_is_true,
                Mode::Leq => v <= t,
                Mode::Lt => v < t,
                Mode::Geq => v >= t,
                Mode::Gt => v > t,
                Mode::Eq => v == t,
                Mode::Neq => v != t,
            };
            at = if go_true { node.a } else { node.b } as usize;
        }
        None
    }

    /// Each target's combined weight for one record, into `out`.
    fn score(&self, x: &[f32], out: &mut [f32], counts: &mut [u32]) -> TractResult<()> {
        out.fill(0.0);
        counts.fill(0);
        for &root in self.roots.iter() {
            let leaf = self
                .leaf(root, x)
                .ok_or_else(|| format_err!("a tree has a cycle"))?;
            for &(target, w) in &self.weights[leaf.a as usize..leaf.b as usize] {
                let (t, w) = (target as usize, f32::from_bits(w));
                let first = counts[t] == 0;
                out[t] = match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => out[t] + w,
                    Aggregate::Min | Aggregate::Max if first => w,
                    Aggregate::Min => out[t].min(w),
                    Aggregate::Max => out[t].max(w),
                };
                counts[t] += 1;
            }
        }
        if self.aggregate == Aggregate::Average {
            for (o, &c) in out.iter_mut().zip(counts.iter()) {
                if c > 0 {
                    *o /= c as f32;
                }
            }
        }
        Ok(())
    }
}

impl Forest {
    /// Wire this ensemble over `inputs`, plus `base` (a `[1, targets]` row) where the
    /// operator has `base_values`: the scores both ONNX tree operators start from.
    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
        base: Option<&Arc<Tensor>>,
    ) -> TractResult<TVec<OutletId>> {
        let y = model.wire_node(format!("{prefix}.trees"), self.clone(), inputs)?;
        let Some(base) = base else { return Ok(y) };
        let base = model.add_const(format!("{prefix}.base"), base.clone())?;
        model.wire_node(
            format!("{prefix}.base_values"),
            tract_core::ops::math::add(),
            &[y[0], base],
        )
    }
}

impl Op for Forest {
    fn name(&self) -> StaticName {
        "ScoriaTreeEnsemble".into()
    }

    op_as_typed_op!();
}

impl EvalOp for Forest {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let input = input.cast_to::<f32>()?;
        let view = input.to_plain_array_view::<f32>()?;
        let width = *view.shape().last().unwrap_or(&1);
        ensure!(
            width >= self.features,
            "the tree ensemble reads feature {}, the input has {width}",
            self.features.saturating_sub(1)
        );
        // A plain tensor is contiguous: read it in place; copy only a strided view.
        let rows: std::borrow::Cow<[f32]> = match view.as_slice() {
            Some(rows) => rows.into(),
            None => view.iter().copied().collect::<Vec<_>>().into(),
        };
        let n = rows.len() / width.max(1);
        let mut out = vec![0f32; n * self.targets];
        let mut counts = vec![0u32; self.targets];
        for (x, o) in rows.chunks(width).zip(out.chunks_mut(self.targets)) {
            self.score(x, o, &mut counts)?;
        }
        Ok(tvec!(Tensor::from_shape(&[n, self.targets], &out)?.into_tvalue()))
    }
}

impl TypedOp for Forest {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let n = inputs[0].shape[0].clone();
        Ok(tvec!(f32::fact(&[n, self.targets.to_dim()])))
    }

    as_op!();
}

/// The post-transforms these operators support.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
enum Post {
    None,
    Softmax,
    Logistic,
}

fn post(node: &NodeProto) -> TractResult<Post> {
    Ok(match node.get_attr_opt("post_transform")?.unwrap_or("NONE") {
        "NONE" => Post::None,
        "SOFTMAX" => Post::Softmax,
        "LOGISTIC" => Post::Logistic,
        other => bail!("post_transform {other} is not supported"),
    })
}

/// `TreeEnsembleRegressor`: the forest's values plus `base_values`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Regressor {
    forest: Forest,
    base: Option<Arc<Tensor>>,
}

pub fn regressor(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    node.expect_attr(
        "post_transform",
        post(node)? == Post::None,
        "NONE for a regressor",
    )?;
    let targets: usize = node.get_attr("n_targets")?;
    let aggregate = match node.get_attr_opt("aggregate_function")?.unwrap_or("SUM") {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Average,
        "MIN" => Aggregate::Min,
        "MAX" => Aggregate::Max,
        other => bail!("aggregate_function {other} is not supported"),
    };
    let base: Option<Vec<f32>> = node.get_attr_opt_vec("base_values")?;
    if let Some(b) = &base {
        node.expect_attr("base_values", b.len() == targets, "one value per target")?;
    }
    Ok((
        expand(Regressor {
            forest: Forest::parse(node, "target", targets, aggregate)?,
            base: base.map(|b| row(&b)).transpose()?,
        }),
        vec![],
    ))
}

impl Expansion for Regressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.forest.targets.to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        self.forest.wire(prefix, model, inputs, self.base.as_ref())
    }
}

/// `TreeEnsembleClassifier`: per-class scores, then `base_values` and the post-transform;
/// outputs the labels (argmax) and the scores.
///
/// The binary form (two classes, every leaf on class 0, as skl2onnx writes gradient boosting)
/// scores the positive class alone: the answer is then `[1 - p, p]`, and a single base value
/// is the positive class's.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Classifier {
    forest: Forest,
    labels: Arc<Tensor>,
    base: Option<Arc<Tensor>>,
    post: Post,
    binary: bool,
}

pub fn classifier(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = match (
        node.get_attr_opt_slice::<i64>("classlabels_int64s")?,
        node.get_attr_opt_tvec::<&str>("classlabels_strings")?,
    ) {
        (Some(l), None) => rctensor1(l),
        (None, Some(l)) => rctensor1(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        _ => bail!("TreeEnsembleClassifier needs one of classlabels_int64s and classlabels_strings"),
    };
    let classes = labels.len();
    let forest = Forest::parse(node, "class", classes, Aggregate::Sum)?;
    let binary = classes == 2 && forest.weights.iter().all(|&(t, _)| t == 0);
    let mut base: Option<Vec<f32>> = node.get_attr_opt_vec("base_values")?;
    if let Some(b) = &mut base {
        if binary && b.len() == 1 {
            b.push(0.0);
        }
        node.expect_attr("base_values", b.len() == classes, "one value per class")?;
    }
    Ok((
        expand(Classifier {
            forest,
            labels,
            base: base.map(|b| row(&b)).transpose()?,
            post: post(node)?,
            binary,
        }),
        vec![],
    ))
}

impl Expansion for Classifier {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&outputs[0].datum_type, self.labels.datum_type())?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.labels.len().to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut scores = self.forest.wire(prefix, model, inputs, self.base.as_ref())?;
        scores = match self.post {
            Post::None => scores,
            Post::Softmax => tract_onnx::tract_hir::ops::nn::LayerSoftmax::new(1, false).wire(
                &format!("{prefix}.softmax"),
                model,
                &scores,
            )?,
            Post::Logistic => model.wire_node(
                format!("{prefix}.logistic"),
                tract_core::ops::nn::sigmoid(),
                &scores,
            )?,
        };
        if self.binary {
            let positive = model.wire_node(format!("{prefix}.positive"), Slice::new(1, 0, 1), &scores)?[0];
            let one = model.add_const(format!("{prefix}.one"), rctensor2(&[[1f32]]))?;
            let negative = model.wire_node(
                format!("{prefix}.negative"),
                tract_core::ops::math::sub(),
                &[one, positive],
            )?[0];
            scores = model.wire_node(
                format!("{prefix}.binary"),
                TypedConcat::new(1),
                &[negative, positive],
            )?;
        }
        let best = model.wire_node(
            format!("{prefix}.argmax"),
            Reduce::new(tvec!(1), Reducer::ArgMax(false)),
            &scores,
        )?;
        let best = model.wire_node(format!("{prefix}.rm_axis"), AxisOp::Rm(1), &best)?;
        let best = model.wire_node(
            format!("{prefix}.to_i32"),
            tract_core::ops::cast::cast(i32::datum_type()),
            &best,
        )?;
        let labels = model.wire_node(
            format!("{prefix}.labels"),
            tract_onnx_opl::ml::DirectLookup::new(
                self.labels.clone(),
                Tensor::zero_dt(self.labels.datum_type(), &[])?.into_arc_tensor(),
            )?,
            &best,
        )?[0];
        Ok(tvec!(labels, scores[0]))
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::AttributeProto;
    use tract_onnx::pb::attribute_proto::AttributeType;

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Ints as i32,
            ints: v.to_vec(),
            ..Default::default()
        }
    }

    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: AttributeType::Floats as i32,
            floats: v.to_vec(),
            ..Default::default()
        }
    }

    /// Two trees over two targets. Tree 0: x0 <= 1 (NaN goes true) ? leaf(t0 += 1, t1 += 10)
    /// : leaf(t0 += 2). Tree 1, listed out of order: x1 < 5 ? leaf(t0 += 4) : leaf(t1 += 8).
    fn forest(aggregate: Aggregate) -> Forest {
        let modes = ["BRANCH_LEQ", "LEAF", "LEAF", "LEAF", "LEAF", "BRANCH_LT"];
        let node = NodeProto {
            attribute: vec![
                ints("nodes_treeids", &[0, 0, 0, 1, 1, 1]),
                ints("nodes_nodeids", &[0, 1, 2, 2, 1, 0]),
                ints("nodes_featureids", &[0, 0, 0, 0, 0, 1]),
                ints("nodes_truenodeids", &[1, 0, 0, 0, 0, 1]),
                ints("nodes_falsenodeids", &[2, 0, 0, 0, 0, 2]),
                floats("nodes_values", &[1.0, 0.0, 0.0, 0.0, 0.0, 5.0]),
                ints("nodes_missing_value_tracks_true", &[1, 0, 0, 0, 0, 0]),
                AttributeProto {
                    name: "nodes_modes".into(),
                    r#type: AttributeType::Strings as i32,
                    strings: modes.iter().map(|m| m.as_bytes().to_vec()).collect(),
                    ..Default::default()
                },
                ints("target_treeids", &[0, 0, 0, 1, 1]),
                ints("target_nodeids", &[1, 1, 2, 1, 2]),
                ints("target_ids", &[0, 1, 0, 0, 1]),
                floats("target_weights", &[1.0, 10.0, 2.0, 4.0, 8.0]),
            ],
            ..Default::default()
        };
        Forest::parse(&node, "target", 2, aggregate).unwrap()
    }

    fn score(f: &Forest, x: [f32; 2]) -> Vec<f32> {
        let mut out = vec![0.0; 2];
        f.score(&x, &mut out, &mut [0; 2]).unwrap();
        out
    }

    #[test]
    fn each_record_walks_every_tree_to_one_leaf() {
        let sum = forest(Aggregate::Sum);
        assert_eq!(score(&sum, [0.5, 1.0]), [5.0, 10.0]);
        assert_eq!(score(&sum, [3.0, 9.0]), [2.0, 8.0]);
        // NaN follows the node's flag: true in tree 0; tree 1's node sends it false.
        assert_eq!(score(&sum, [f32::NAN, f32::NAN]), [1.0, 18.0]);
        // Average over the weights each target got; min and max likewise.
        assert_eq!(score(&forest(Aggregate::Average), [0.5, 1.0]), [2.5, 10.0]);
        assert_eq!(score(&forest(Aggregate::Min), [0.5, 1.0]), [1.0, 10.0]);
        assert_eq!(score(&forest(Aggregate::Max), [0.5, 1.0]), [4.0, 10.0]);
    }
}
