//! Lexical matching: Okapi BM25 over the embedding model's own WordPiece tokens.
//!
//! Sentence embeddings miss what a question shares word for word with an entry (an error
//! message, an API name such as `structuredClone`); BM25 catches exactly that. Using the
//! tokenizer the embedding model already has means no second vocabulary, no stemmer and the
//! same lower-casing and accent stripping, in the guest and in `scoria index` alike.
//!
//! [`LexicalIndex::build`] runs once per list (in `scoria index`) and stores, for each token of
//! the list, its inverse document frequency and its BM25 weight in every entry that has it.
//! [`LexicalIndex::scores`] is then a sum of weights per entry. Scores are divided by the most
//! the query's tokens could score (every token found, at its saturation), so they lie in
//! `[0, 1]` on every list: a question whose words no entry has scores 0, which is what lets a
//! fixed fusion weight and a fixed minimum score hold across lists.

use serde::{Deserialize, Serialize};

/// BM25's term-frequency saturation (the usual 1.2).
pub const K1: f32 = 1.2;
/// BM25's length normalisation (the usual 0.75).
pub const B: f32 = 0.75;

/// One token of the list: its inverse document frequency and its weight in each entry that
/// has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub token: u32,
    pub idf: f32,
    /// `(entry, weight)`, entries in list order.
    pub postings: Vec<(u32, f32)>,
}

/// The BM25 weights of a list, as `scoria index` writes them (`lexical.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LexicalIndex {
    pub entries: u32,
    /// The idf a query token gets when no entry has it: that of a token in no document, so an
    /// unknown word still counts against the query's coverage.
    pub unseen_idf: f32,
    /// Sorted by token, for binary search.
    pub terms: Vec<Term>,
}

impl LexicalIndex {
    /// Weigh the tokens of each entry's text (special tokens left out).
    pub fn build(docs: &[Vec<u32>]) -> Self {
        let n = docs.len() as f32;
        let avg_len = (docs.iter().map(Vec::len).sum::<usize>() as f32 / n.max(1.0)).max(1.0);
        let mut by_token: std::collections::BTreeMap<u32, Vec<(u32, f32)>> = Default::default();
        for (entry, doc) in docs.iter().enumerate() {
            let mut counts: std::collections::BTreeMap<u32, f32> = Default::default();
            for &t in doc {
                *counts.entry(t).or_default() += 1.0;
            }
            let norm = K1 * (1.0 - B + B * doc.len() as f32 / avg_len);
            for (t, f) in counts {
                let tf = f * (K1 + 1.0) / (f + norm);
                by_token.entry(t).or_default().push((entry as u32, tf));
            }
        }
        let idf = |df: f32| (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
        let terms = by_token
            .into_iter()
            .map(|(token, mut postings)| {
                let w = idf(postings.len() as f32);
                for p in &mut postings {
                    p.1 *= w;
                }
                Term {
                    token,
                    idf: w,
                    postings,
                }
            })
            .collect();
        Self {
            entries: docs.len() as u32,
            unseen_idf: idf(0.0),
            terms,
        }
    }

    /// Each entry's BM25 score for `query` (its tokens, special ones left out), divided by the
    /// most those tokens could score: from 0 (no token shared) towards 1.
    pub fn scores(&self, query: &[u32]) -> Vec<f32> {
        let mut scores = vec![0f32; self.entries as usize];
        let mut tokens = query.to_vec();
        tokens.sort_unstable();
        tokens.dedup();
        let mut most = 0f32;
        for t in tokens {
            match self.terms.binary_search_by_key(&t, |term| term.token) {
                Ok(i) => {
                    let term = &self.terms[i];
                    most += term.idf * (K1 + 1.0);
                    for &(entry, w) in &term.postings {
                        if let Some(s) = scores.get_mut(entry as usize) {
                            *s += w;
                        }
                    }
                }
                Err(_) => most += self.unseen_idf * (K1 + 1.0),
            }
        }
        if most > 0.0 {
            for s in &mut scores {
                *s /= most;
            }
        }
        scores
    }
}

/// `dense + weight * lexical`, entry by entry: the score `faq-match` ranks by.
pub fn fuse(dense: &[f32], lexical: &[f32], weight: f32) -> Vec<f32> {
    dense
        .iter()
        .zip(lexical.iter().chain(std::iter::repeat(&0.0)))
        .map(|(d, l)| d + weight * l)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_rare_tokens_score_and_unknown_ones_count_against() {
        // Entry 0 has the rare token 7; every entry has token 1.
        let index = LexicalIndex::build(&[vec![1, 7, 8], vec![1, 9], vec![1, 9, 9]]);
        let s = index.scores(&[7]);
        assert!(s[0] > 0.3 && s[1] == 0.0 && s[2] == 0.0, "{s:?}");
        // A token shared by all weighs little beside a rare one; a token no entry has lowers
        // every score.
        let mixed = index.scores(&[1, 7]);
        assert!(mixed[0] > 4.0 * mixed[1] && mixed[1] > 0.0, "{mixed:?}");
        let diluted = index.scores(&[7, 42]);
        assert!(diluted[0] < s[0] && diluted[0] > 0.0, "{diluted:?}");
        assert!(index.scores(&[42]).iter().all(|&x| x == 0.0));
        assert!(index.scores(&[]).iter().all(|&x| x == 0.0));
        // Scores are bounded by 1, repeated query tokens change nothing.
        assert!(s.iter().all(|&x| x <= 1.0));
        assert_eq!(index.scores(&[7, 7]), s);
    }

    #[test]
    fn it_round_trips_through_json_and_fuses() {
        let index = LexicalIndex::build(&[vec![3, 4], vec![5]]);
        let back: LexicalIndex = serde_json::from_str(&serde_json::to_string(&index).unwrap()).unwrap();
        assert_eq!(back, index);
        assert_eq!(fuse(&[0.5, 0.25], &[1.0, 0.0], 0.5), vec![1.0, 0.25]);
    }
}
