//! The feature schema of a tabular model: the `[preprocess]` table of its card, written by
//! `models/tools/sklearn_onnx.py`.
//!
//! It says, for each feature, which graph input and column it fills, whether it is a number
//! or a category (and which categories), and what a missing value does; and whether the
//! model classifies (its class labels, in the order of the probability columns) or regresses.

use serde::Deserialize;
use std::collections::HashMap;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Probabilities per class; the answer names the most probable class.
    Classifier,
    /// One value (or one per target) per record.
    Regressor,
}

/// A feature's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A JSON number, sent to the model as f32.
    Number,
    /// A JSON string, one of the feature's categories, sent as its index (i64).
    Category,
}

/// What a category the model never saw does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// Refused with a 400 (the encoder was fitted with `handle_unknown="error"`).
    #[default]
    Refuse,
    /// Encoded as no category at all, all zeros (`handle_unknown="ignore"`), as
    /// scikit-learn itself does.
    Ignore,
}

/// What a missing value (`null`) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Refused with a 400: the model cannot handle NaN here.
    #[default]
    Refuse,
    /// Sent as NaN, which the model handles (an imputer, or trees that route NaN).
    Allow,
}

/// One feature of a record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub name: String,
    pub kind: Kind,
    /// The graph input this feature is a column of.
    pub input: String,
    pub column: usize,
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub unknown: Unknown,
    #[serde(default)]
    pub missing: Missing,
}

/// The `[preprocess]` table of a tabular model's card.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub task: Task,
    /// The graph output holding probabilities (classifier) or values (regressor).
    pub output: String,
    /// Class labels in the order of the probability columns.
    #[serde(default)]
    pub classes: Vec<String>,
    pub features: Vec<Feature>,
}

/// A graph input as the schema fills it: its name and how many columns it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputLayout {
    pub name: String,
    pub kind: Kind,
    pub width: usize,
}

/// Where records go: the graph inputs, and each feature's place among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The inputs in the order their first feature appears.
    pub inputs: Vec<InputLayout>,
    /// Per feature, in the schema's order: its input's index in `inputs`, and its column.
    pub slots: Vec<(usize, usize)>,
}

impl Schema {
    /// Check that the schema is whole: unique feature names, every input's columns 0..n
    /// filled once by features of one kind, categories where they belong, classes for a
    /// classifier. Computed once per instance; every request's records follow it.
    pub fn layout(&self) -> Result<Layout, String> {
        if self.features.is_empty() {
            return Err("`features` is empty".into());
        }
        if self.task == Task::Classifier && self.classes.is_empty() {
            return Err("a classifier needs `classes`".into());
        }
        let mut names = HashMap::new();
        let mut inputs: Vec<(InputLayout, Vec<bool>)> = Vec::new();
        let mut slots = Vec::with_capacity(self.features.len());
        for f in &self.features {
            if names.insert(f.name.as_str(), ()).is_some() {
                return Err(format!("feature `{}` is declared twice", f.name));
            }
            match (f.kind, f.categories.is_empty()) {
                (Kind::Category, true) => {
                    return Err(format!("category feature `{}` has no `categories`", f.name))
                }
                (Kind::Number, false) => return Err(format!("number feature `{}` has `categories`", f.name)),
                _ => {}
            }
            let at = match inputs.iter().position(|(l, _)| l.name == f.input) {
                Some(at) => at,
                None => {
                    inputs.push((
                        InputLayout {
                            name: f.input.clone(),
                            kind: f.kind,
                            width: 0,
                        },
                        Vec::new(),
                    ));
                    inputs.len() - 1
                }
            };
            let (layout, filled) = &mut inputs[at];
            if layout.kind != f.kind {
                return Err(format!(
                    "input `{}` mixes numbers and categories (feature `{}`)",
                    f.input, f.name
                ));
            }
            if filled.len() <= f.column {
                filled.resize(f.column + 1, false);
            }
            if std::mem::replace(&mut filled[f.column], true) {
                return Err(format!(
                    "column {} of input `{}` is filled twice (feature `{}`)",
                    f.column, f.input, f.name
                ));
            }
            layout.width = filled.len();
            slots.push((at, f.column));
        }
        let inputs = inputs
            .into_iter()
            .map(|(layout, filled)| match filled.iter().position(|&f| !f) {
                Some(c) => Err(format!("column {c} of input `{}` has no feature", layout.name)),
                None => Ok(layout),
            })
            .collect::<Result<_, _>>()?;
        Ok(Layout { inputs, slots })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn schema(text: &str) -> Schema {
        toml::from_str(text).unwrap()
    }

    const MIXED: &str = r#"
task = "classifier"
output = "probabilities"
classes = ["high", "low"]
[[features]]
name = "age"
kind = "number"
input = "age"
column = 0
[[features]]
name = "sex"
kind = "category"
input = "sex"
column = 0
categories = ["1", "2"]
unknown = "ignore"
"#;

    #[test]
    fn a_whole_schema_lays_out_its_inputs() {
        let layout = schema(MIXED).layout().unwrap();
        assert_eq!(layout.slots, [(0, 0), (1, 0)]);
        let layout = layout.inputs;
        assert_eq!(layout.len(), 2);
        assert_eq!(
            (layout[1].name.as_str(), layout[1].kind, layout[1].width),
            ("sex", Kind::Category, 1)
        );
    }

    #[test]
    fn a_broken_schema_is_refused_naming_the_feature() {
        for (from, to, want) in [
            ("name = \"sex\"", "name = \"age\"", "declared twice"),
            ("categories = [\"1\", \"2\"]", "", "has no `categories`"),
            (
                "input = \"sex\"",
                "input = \"age\"",
                "mixes numbers and categories",
            ),
            (
                "column = 0\ncategories",
                "column = 1\ncategories",
                "column 0 of input `sex` has no feature",
            ),
            ("classes = [\"high\", \"low\"]", "", "needs `classes`"),
        ] {
            let e = schema(&MIXED.replacen(from, to, 1)).layout().unwrap_err();
            assert!(e.contains(want), "{from}: {e}");
        }
    }
}
