//! `ai.onnx.ml` operators that tract lacks and scikit-learn pipelines use, registered into
//! tract's ONNX front-end so that a CPU pool serves the common pipelines without ONNX Runtime.
//!
//! tract has `LinearClassifier`, `LinearRegressor`, `TreeEnsembleClassifier`, `Normalizer`
//! and `CategoryMapper`. skl2onnx also writes `Scaler` (StandardScaler and friends),
//! `Imputer` (SimpleImputer), `OneHotEncoder` and `TreeEnsembleRegressor` (forests and
//! boosted trees). Each is an expansion into tract's own operators, except the regressor,
//! which reuses tract's tree-ensemble evaluator; tract's `TreeEnsembleClassifier` is wrapped
//! to read the binary gradient-boosting form. Their outputs are checked against ONNX
//! Runtime's by the tabular tests (`host/tests/tabular.rs`).
//!
//! [`unsupported`] names the operators of a graph that no registered builder covers, so that
//! a model tract cannot run is refused with their names before tract tries.

use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::tract_core::ops::logic::{Iff, comp_eq};
use tract_onnx_opl::ml::tree::{Aggregate, Cmp, TreeEnsemble, TreeEnsembleData};

/// Add this module's operators to tract's ONNX registry.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
    reg.insert("Imputer", imputer);
    reg.insert("OneHotEncoder", one_hot_encoder);
    reg.insert("TreeEnsembleRegressor", tree_ensemble_regressor);
    reg.insert("TreeEnsembleClassifier", tree_ensemble_classifier);
}

/// tract's `TreeEnsembleClassifier`, given the binary form skl2onnx writes for gradient
/// boosting: two class labels, every leaf on class 0 and one base value (the positive class's
/// initial log-odds). tract wants a base value per class; the second class's is 0, since
/// tract's binary layout reads the positive class from the first score column.
fn tree_ensemble_classifier(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let tract = tract_onnx::onnx();
    let Some(build) = tract.op_register.0.get("TreeEnsembleClassifier") else {
        bail!("tract has no TreeEnsembleClassifier")
    };
    let labels = node
        .get_attr_opt_slice::<i64>("classlabels_int64s")?
        .map(<[i64]>::len)
        .or(node
            .get_attr_opt_tvec::<&str>("classlabels_strings")?
            .map(|l| l.len()));
    let base = node.attribute.iter().position(|a| a.name == "base_values");
    match base {
        Some(at) if labels == Some(2) && node.attribute[at].floats.len() == 1 => {
            let mut node = node.clone();
            node.attribute[at].floats.push(0.0);
            build(ctx, &node)
        }
        _ => build(ctx, node),
    }
}

/// tract's ONNX front-end with this module's operators.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    register(&mut onnx.op_register);
    onnx
}

/// The operator types of `model`'s main graph that `onnx` has no builder for, sorted and
/// without repeats (`domain.Op` for operators outside the default domain).
pub fn unsupported(onnx: &tract_onnx::Onnx, model: &tract_onnx::pb::ModelProto) -> Vec<String> {
    let mut missing: Vec<String> = model
        .graph
        .iter()
        .flat_map(|g| &g.node)
        .filter(|n| !onnx.op_register.0.contains_key(&n.op_type))
        .map(|n| match n.domain.as_str() {
            "" | "ai.onnx" => n.op_type.clone(),
            d => format!("{d}.{}", n.op_type),
        })
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// A rank-2 `[1, n]` constant, which broadcasts over a `[batch, n]` input.
fn row(values: &[f32]) -> TractResult<Arc<Tensor>> {
    Ok(tensor1(values).into_shape(&[1, values.len()])?.into_arc_tensor())
}

/// The input as f32 (skl2onnx feeds these operators doubles or ints in some pipelines).
fn as_f32(prefix: &str, model: &mut TypedModel, x: OutletId) -> TractResult<OutletId> {
    if model.outlet_fact(x)?.datum_type == f32::datum_type() {
        return Ok(x);
    }
    Ok(model.wire_node(
        format!("{prefix}.to_f32"),
        tract_core::ops::cast::cast(f32::datum_type()),
        &[x],
    )?[0])
}

/// Shape rules shared by the element-wise operators here: f32 out, the input's shape.
fn same_shape_f32<'r, 'p: 'r>(
    s: &mut Solver<'r>,
    inputs: &'p [TensorProxy],
    outputs: &'p [TensorProxy],
) -> InferenceResult {
    check_input_arity(inputs, 1)?;
    check_output_arity(outputs, 1)?;
    s.equals(&outputs[0].datum_type, DatumType::F32)?;
    s.equals(&inputs[0].shape, &outputs[0].shape)?;
    Ok(())
}

/// `Scaler`: `(x - offset) * scale`, per column.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Scaler {
    offset: Arc<Tensor>,
    scale: Arc<Tensor>,
}

fn scaler(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset: Vec<f32> = node.get_attr_opt_vec("offset")?.unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    Ok((
        expand(Scaler {
            offset: row(&offset)?,
            scale: row(&scale)?,
        }),
        vec![],
    ))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_f32(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = as_f32(prefix, model, inputs[0])?;
        let offset = model.add_const(format!("{prefix}.offset"), self.offset.clone())?;
        let scale = model.add_const(format!("{prefix}.scale"), self.scale.clone())?;
        let centred = model.wire_node(
            format!("{prefix}.sub"),
            tract_core::ops::math::sub(),
            &[x, offset],
        )?;
        model.wire_node(
            format!("{prefix}.mul"),
            tract_core::ops::math::mul(),
            &[centred[0], scale],
        )
    }
}

/// `Imputer`: values equal to `replaced_value_float` (NaN in skl2onnx's graphs) become the
/// column's `imputed_value_floats`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct Imputer {
    imputed: Arc<Tensor>,
    /// `None`: NaN is what gets replaced (NaN never equals itself, so it needs `IsNan`).
    replaced: Option<u32>,
}

fn imputer(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let imputed: Vec<f32> = node
        .get_attr_opt_vec("imputed_value_floats")?
        .ok_or_else(|| format_err!("Imputer: only imputed_value_floats is supported"))?;
    let replaced: f32 = node.get_attr_opt("replaced_value_float")?.unwrap_or(0.0);
    Ok((
        expand(Imputer {
            imputed: row(&imputed)?,
            replaced: (!replaced.is_nan()).then_some(replaced.to_bits()),
        }),
        vec![],
    ))
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        same_shape_f32(s, inputs, outputs)
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let x = as_f32(prefix, model, inputs[0])?;
        let mask = match self.replaced {
            None => model.wire_node(format!("{prefix}.is_nan"), tract_core::ops::math::is_nan(), &[x])?[0],
            Some(bits) => {
                let value =
                    model.add_const(format!("{prefix}.replaced"), rctensor2(&[[f32::from_bits(bits)]]))?;
                model.wire_node(format!("{prefix}.eq"), TypedBinOp(comp_eq(), None), &[x, value])?[0]
            }
        };
        let imputed = model.add_const(format!("{prefix}.imputed"), self.imputed.clone())?;
        tract_core::ops::change_axes::wire_with_rank_broadcast(
            format!("{prefix}.iff"),
            model,
            Iff,
            &[mask, imputed, x],
        )
    }
}

/// `OneHotEncoder` over integer categories: `[.., C]` in, `[.., C, k]` f32 out. String
/// categories are rewritten to integer indices by `models/tools/sklearn_onnx.py`, since
/// wasi-nn carries no string tensors. A value outside the categories encodes as zeros
/// (`zeros = 0` asks for an error instead, which the tabular function raises before compute).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct OneHotEncoder {
    categories: Arc<Tensor>,
}

fn one_hot_encoder(_: &ParsingContext, node: &NodeProto) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let cats: Vec<i64> = node.get_attr_opt_vec("cats_int64s")?.ok_or_else(|| {
        format_err!("OneHotEncoder: only cats_int64s is supported (string categories: convert with models/tools/sklearn_onnx.py)")
    })?;
    Ok((
        expand(OneHotEncoder {
            categories: rctensor1(&cats),
        }),
        vec![],
    ))
}

impl Expansion for OneHotEncoder {
    fn name(&self) -> StaticName {
        "OneHotEncoder".into()
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
        s.equals(&outputs[0].rank, inputs[0].rank.bex() + 1)?;
        let k = self.categories.len();
        s.given(&inputs[0].shape, move |s, shape| {
            let mut out = shape.clone();
            out.push(k.to_dim());
            s.equals(&outputs[0].shape, out)
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        if model.outlet_fact(x)?.datum_type != i64::datum_type() {
            x = model.wire_node(
                format!("{prefix}.to_i64"),
                tract_core::ops::cast::cast(i64::datum_type()),
                &[x],
            )?[0];
        }
        let rank = model.outlet_fact(x)?.rank();
        let x = model.wire_node(format!("{prefix}.add_axis"), AxisOp::Add(rank), &[x])?[0];
        let mut shape = vec![1; rank];
        shape.push(self.categories.len());
        let cats = model.add_const(
            format!("{prefix}.categories"),
            self.categories
                .clone()
                .into_tensor()
                .into_shape(&shape)?
                .into_arc_tensor(),
        )?;
        let hot = model.wire_node(format!("{prefix}.eq"), TypedBinOp(comp_eq(), None), &[x, cats])?;
        model.wire_node(
            format!("{prefix}.to_f32"),
            tract_core::ops::cast::cast(f32::datum_type()),
            &hot,
        )
    }
}

/// `TreeEnsembleRegressor`: tract's tree-ensemble evaluator (the one its classifier uses)
/// over the regressor's `target_*` leaves, plus `base_values`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct TreeEnsembleRegressor {
    ensemble: TreeEnsemble,
    base_values: Option<Arc<Tensor>>,
}

fn tree_ensemble_regressor(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let post: String = node
        .get_attr_opt("post_transform")?
        .unwrap_or_else(|| "NONE".into());
    node.expect_attr(
        "post_transform",
        post == "NONE",
        "NONE (the only one regressors use)",
    )?;
    let n_targets: usize = node.get_attr("n_targets")?;
    let base_values: Option<Vec<f32>> = node.get_attr_opt_vec("base_values")?;
    if let Some(b) = &base_values {
        node.expect_attr("base_values", b.len() == n_targets, "one value per target")?;
    }
    let aggregate = match node.get_attr_opt("aggregate_function")?.unwrap_or("SUM") {
        "SUM" => Aggregate::Sum,
        "AVERAGE" => Aggregate::Avg,
        "MAX" => Aggregate::Max,
        "MIN" => Aggregate::Min,
        other => bail!("TreeEnsembleRegressor: unknown aggregate_function {other}"),
    };
    let (data, max_feature) = tree_data(node)?;
    Ok((
        expand(TreeEnsembleRegressor {
            ensemble: TreeEnsemble::build(data, max_feature, n_targets, aggregate)?,
            base_values: base_values.map(|b| row(&b)).transpose()?,
        }),
        vec![],
    ))
}

fn node_mode(s: &str) -> TractResult<Option<Cmp>> {
    Ok(Some(match s {
        "BRANCH_LEQ" => Cmp::LessEqual,
        "BRANCH_LT" => Cmp::Less,
        "BRANCH_GTE" => Cmp::GreaterEqual,
        "BRANCH_GT" => Cmp::Greater,
        "BRANCH_EQ" => Cmp::Equal,
        "BRANCH_NEQ" => Cmp::NotEqual,
        "LEAF" => return Ok(None),
        _ => bail!("unsupported tree node mode {s}"),
    }))
}

/// The trees of a regressor in the packed layout of [`TreeEnsembleData`]: a root row per
/// tree; per node five u32 (feature, true row, false row, threshold bits, NaN flag and
/// comparison), or for a leaf its range of (target, weight) pairs. Follows tract's parser of
/// `TreeEnsembleClassifier`, over `target_*` instead of `class_*`.
fn tree_data(node: &NodeProto) -> TractResult<(TreeEnsembleData, usize)> {
    let vec = |name: &str, n: usize| -> TractResult<Vec<usize>> {
        let v: Vec<usize> = node.get_attr_vec(name)?;
        node.expect_attr(name, v.len() == n, || format!("{n} values, got {}", v.len()))?;
        Ok(v)
    };
    let n_nodes = node.get_attr_slice::<i64>("nodes_featureids")?.len();
    node.expect_attr("nodes_featureids", n_nodes > 0, "at least one node")?;
    let node_ids = vec("nodes_nodeids", n_nodes)?;
    let tree_ids = vec("nodes_treeids", n_nodes)?;
    let feature_ids = vec("nodes_featureids", n_nodes)?;
    let true_ids = vec("nodes_truenodeids", n_nodes)?;
    let false_ids = vec("nodes_falsenodeids", n_nodes)?;
    let values: Vec<f32> = node.get_attr_vec("nodes_values")?;
    node.expect_attr("nodes_values", values.len() == n_nodes, "one per node")?;
    let nan_true: Vec<bool> = node
        .get_attr_opt_vec("nodes_missing_value_tracks_true")?
        .unwrap_or_else(|| vec![false; n_nodes]);
    let modes: Vec<Option<Cmp>> = node
        .get_attr_vec::<String>("nodes_modes")?
        .iter()
        .map(|s| node_mode(s))
        .collect::<TractResult<_>>()?;
    node.expect_attr(
        "nodes_modes",
        modes.len() == n_nodes && nan_true.len() == n_nodes,
        "one per node",
    )?;

    let n_leaves = node.get_attr_slice::<i64>("target_ids")?.len();
    let leaf_node_ids = vec("target_nodeids", n_leaves)?;
    let leaf_tree_ids = vec("target_treeids", n_leaves)?;
    let leaf_targets = vec("target_ids", n_leaves)?;
    let leaf_weights: Vec<f32> = node.get_attr_vec("target_weights")?;
    node.expect_attr("target_weights", leaf_weights.len() == n_leaves, "one per leaf")?;

    let mut node_order: Vec<usize> = (0..n_nodes).collect();
    node_order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
    let mut leaf_order: Vec<usize> = (0..n_leaves).collect();
    leaf_order.sort_by_key(|&i| (leaf_tree_ids[i], leaf_node_ids[i]));

    let (mut trees, mut nodes, mut leaves) = (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let (mut current, mut root, mut next_leaf) = (None, 0u32, 0);
    for i in node_order {
        if current != Some(tree_ids[i]) {
            current = Some(tree_ids[i]);
            root = nodes.len() as u32 / 5;
            trees.push(root);
        }
        let row = match modes[i] {
            Some(mode) => [
                feature_ids[i] as u32,
                true_ids[i] as u32 + root,
                false_ids[i] as u32 + root,
                values[i].to_bits(),
                (0x0100 * nan_true[i] as u32) | mode as u32,
            ],
            None => {
                let first = leaves.len() as u32 / 2;
                while let Some(&l) = leaf_order.get(next_leaf)
                    && leaf_tree_ids[l] == tree_ids[i]
                    && leaf_node_ids[l] == node_ids[i]
                {
                    leaves.extend([leaf_targets[l] as u32, leaf_weights[l].to_bits()]);
                    next_leaf += 1;
                }
                [first, leaves.len() as u32 / 2, 0, 0, 0]
            }
        };
        nodes.extend(row);
    }
    let n_rows = nodes.len() / 5;
    let n_pairs = leaves.len() / 2;
    let data = TreeEnsembleData {
        trees: rctensor1(&trees),
        nodes: tensor1(&nodes).into_shape(&[n_rows, 5])?.into_arc_tensor(),
        leaves: tensor1(&leaves).into_shape(&[n_pairs, 2])?.into_arc_tensor(),
    };
    Ok((data, feature_ids.iter().copied().max().unwrap_or(0)))
}

impl Expansion for TreeEnsembleRegressor {
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
        s.equals(&outputs[0].shape[1], self.ensemble.n_classes.to_dim())?;
        Ok(())
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        let mut y = model.wire_node(
            format!("{prefix}.trees"),
            tract_onnx_opl::ml::tree_ensemble_classifier::TreeEnsembleClassifier {
                ensemble: self.ensemble.clone(),
            },
            inputs,
        )?;
        if let Some(base) = &self.base_values {
            let base = model.add_const(format!("{prefix}.base"), base.clone())?;
            y = model.wire_node(
                format!("{prefix}.base_values"),
                tract_core::ops::math::add(),
                &[y[0], base],
            )?;
        }
        Ok(y)
    }
}
