//! The model's output as the answer a client reads: for a classifier, each record's class
//! (the card's label, not an index) and its probability per class, in the card's class
//! order; for a regressor, each record's value.

use crate::schema::{Schema, Task};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// The prediction for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction<'a> {
    Class {
        label: &'a str,
        /// (class, probability), in the card's class order.
        probabilities: Vec<(&'a str, f32)>,
    },
    Value(f32),
    /// A regressor with several targets.
    Values(Vec<f32>),
}

impl Serialize for Prediction<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Ordered<'b, 'a>(&'b [(&'a str, f32)]);
        impl Serialize for Ordered<'_, '_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (k, v) in self.0 {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        match self {
            Prediction::Class { label, probabilities } => {
                m.serialize_entry("label", label)?;
                m.serialize_entry("probabilities", &Ordered(probabilities))?;
            }
            Prediction::Value(v) => m.serialize_entry("value", v)?,
            Prediction::Values(v) => m.serialize_entry("values", v)?,
        }
        m.end()
    }
}

/// Each of `rows` records' prediction from the output values (row-major, `rows` rows).
/// Fails when the output's size does not fit the card (a deployment error).
pub fn predictions<'a>(
    schema: &'a Schema,
    rows: usize,
    output: &[f32],
) -> Result<Vec<Prediction<'a>>, String> {
    if rows == 0 || !output.len().is_multiple_of(rows) {
        return Err(format!(
            "the model gave {} values for {rows} records",
            output.len()
        ));
    }
    let width = output.len() / rows;
    match schema.task {
        Task::Classifier => {
            if width != schema.classes.len() {
                return Err(format!(
                    "the model gave {width} probabilities a record, but the card names {} classes",
                    schema.classes.len()
                ));
            }
            Ok(output
                .chunks(width)
                .map(|p| {
                    // The first of equal maxima, as numpy's argmax (scikit-learn's predict) picks.
                    let best = p
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, &x)| if x > p[b] { i } else { b });
                    Prediction::Class {
                        label: &schema.classes[best],
                        probabilities: schema
                            .classes
                            .iter()
                            .map(String::as_str)
                            .zip(p.iter().copied())
                            .collect(),
                    }
                })
                .collect())
        }
        Task::Regressor if width == 1 => Ok(output.iter().map(|&v| Prediction::Value(v)).collect()),
        Task::Regressor => Ok(output
            .chunks(width)
            .map(|v| Prediction::Values(v.to_vec()))
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(task: &str, classes: &str) -> Schema {
        toml::from_str(&format!(
            "task = \"{task}\"\noutput = \"y\"\nclasses = {classes}\n[[features]]\nname = \"x\"\nkind = \"number\"\ninput = \"x\"\ncolumn = 0\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_classifier_names_the_first_most_probable_class_in_card_order() {
        let s = schema("classifier", r#"["zebra", "ant", "mole"]"#);
        let p = predictions(&s, 2, &[0.2, 0.5, 0.3, 0.4, 0.2, 0.4]).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(
            json,
            r#"[{"label":"ant","probabilities":{"zebra":0.2,"ant":0.5,"mole":0.3}},{"label":"zebra","probabilities":{"zebra":0.4,"ant":0.2,"mole":0.4}}]"#
        );
        assert!(predictions(&s, 2, &[0.5, 0.5, 0.5, 0.5]).is_err());
    }

    #[test]
    fn a_regressor_gives_a_value_a_record() {
        let s = schema("regressor", "[]");
        let json = serde_json::to_string(&predictions(&s, 2, &[1.5, -2.0]).unwrap()).unwrap();
        assert_eq!(json, r#"[{"value":1.5},{"value":-2.0}]"#);
        let json = serde_json::to_string(&predictions(&s, 1, &[1.0, 2.0]).unwrap()).unwrap();
        assert_eq!(json, r#"[{"values":[1.0,2.0]}]"#);
    }
}
