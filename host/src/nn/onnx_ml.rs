//! `ai.onnx.ml` operators that tract lacks and scikit-learn pipelines use, registered into
//! tract's ONNX front-end so that a CPU pool serves the common pipelines without ONNX Runtime.
//!
//! tract has `LinearClassifier`, `LinearRegressor`, `TreeEnsembleClassifier`, `Normalizer`
//! and `CategoryMapper`. skl2onnx also writes `Scaler` (StandardScaler and friends),
//! `Imputer` (SimpleImputer), `OneHotEncoder` and `TreeEnsembleRegressor` (forests and
//! boosted trees). The first three are expansions into tract's own operators; both tree
//! ensembles, tract's classifier replaced too, run on Scoria's evaluator ([`super::trees`]).
//! Their outputs are checked against ONNX Runtime's by `host/tests/tabular.rs`.
//!
//! [`unsupported`] names the operators of a graph that no registered builder covers, so that
//! a model tract cannot run is refused with their names before tract tries.

use super::trees::{self, row};
use tract_onnx::model::{OnnxOpRegister, ParsingContext};
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::binary::TypedBinOp;
use tract_onnx::tract_hir::tract_core::ops::logic::{Iff, comp_eq};

/// Add this module's operators to tract's ONNX registry.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("Scaler", scaler);
    reg.insert("Imputer", imputer);
    reg.insert("OneHotEncoder", one_hot_encoder);
    reg.insert("TreeEnsembleRegressor", trees::regressor);
    reg.insert("TreeEnsembleClassifier", trees::classifier);
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

/// `x` as `to`, cast only when it is another type (skl2onnx feeds these operators doubles or
/// ints in some pipelines).
fn as_type(prefix: &str, model: &mut TypedModel, x: OutletId, to: DatumType) -> TractResult<OutletId> {
    if model.outlet_fact(x)?.datum_type == to {
        return Ok(x);
    }
    Ok(model.wire_node(
        format!("{prefix}.to_{to:?}"),
        tract_core::ops::cast::cast(to),
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
        let x = as_type(prefix, model, inputs[0], f32::datum_type())?;
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
        let x = as_type(prefix, model, inputs[0], f32::datum_type())?;
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
        let x = as_type(prefix, model, inputs[0], i64::datum_type())?;
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
