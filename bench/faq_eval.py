"""FAQ-matching accuracy: Scoria's /faq (sentence embeddings) against a TF-IDF baseline, same run.

For each question of the evaluation file (JSON Lines: {"question": ..., "expected": id or null})
it asks a running `scoria up` for its top 10 with no minimum score, and ranks the same list
with TF-IDF cosine similarity over the FAQ questions (the reference architecture's features,
without its trained classifier). Prints, for both:

- top-1, top-3 and MRR@10 on the questions that have an expected entry;
- on the questions that match nothing, the false-match rate: at the deployed minimum score
  (Scoria), and, for a like-for-like comparison, at the threshold where each method still
  answers 90% of the in-list questions.

Usage (./dev faq-eval runs this): python bench/faq_eval.py --bin-dir target/debug
    [--eval faq/javascript-eval.jsonl] [--list faq/javascript.jsonl] [--min-score 0.5]
"""

import argparse
import json
import math
import os
import re
import urllib.request
from collections import Counter

from common import ROOT, scoria_up


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def scoria_rank(url, question):
    body = json.dumps({"question": question, "k": 10, "min_score": -1}).encode()
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        matches = json.load(r)["matches"]
    return [(m["id"], m["score"]) for m in matches]


class Tfidf:
    """Smoothed TF-IDF with cosine similarity, as scikit-learn's defaults compute it."""

    def __init__(self, docs):
        self.tokens = [self.tokenise(d) for d in docs]
        df = Counter(t for doc in self.tokens for t in set(doc))
        n = len(docs)
        self.idf = {t: math.log((1 + n) / (1 + c)) + 1 for t, c in df.items()}
        self.vectors = [self.vector(doc) for doc in self.tokens]

    @staticmethod
    def tokenise(text):
        return re.findall(r"[a-z0-9]+", text.lower())

    def vector(self, tokens):
        tf = Counter(t for t in tokens if t in self.idf)
        v = {t: c * self.idf[t] for t, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {t: x / norm for t, x in v.items()}

    def rank(self, ids, question, k=10):
        q = self.vector(self.tokenise(question))
        scores = [sum(w * d.get(t, 0.0) for t, w in q.items()) for d in self.vectors]
        order = sorted(range(len(ids)), key=lambda i: -scores[i])[:k]
        return [(ids[i], scores[i]) for i in order]


def metrics(ranked, expected, min_score):
    """ranked: one [(id, score)] list per question, best first; expected: id or None."""
    inlist = [(r, e) for r, e in zip(ranked, expected) if e is not None]
    outside = [r for r, e in zip(ranked, expected) if e is None]
    top1 = sum(r[0][0] == e for r, e in inlist) / len(inlist)
    top3 = sum(e in [i for i, _ in r[:3]] for r, e in inlist) / len(inlist)
    mrr = sum(next((1 / (k + 1) for k, (i, _) in enumerate(r) if i == e), 0.0) for r, e in inlist) / len(inlist)
    best_in = sorted(r[0][1] for r, _ in inlist)
    keep90 = best_in[int(0.1 * len(best_in))]
    false_at = lambda t: sum(r[0][1] >= t for r in outside) / len(outside)  # noqa: E731
    answered_at = lambda t: sum(r[0][1] >= t and r[0][0] == e for r, e in inlist) / len(inlist)  # noqa: E731
    return {
        "n": len(inlist), "n_none": len(outside), "top1": top1, "top3": top3, "mrr": mrr,
        "threshold_90": keep90, "false_at_90": false_at(keep90),
        "false_at_min": false_at(min_score) if min_score is not None else None,
        "correct_at_min": answered_at(min_score) if min_score is not None else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True, help="folder holding the scoria binary")
    ap.add_argument("--eval", default=os.path.join(ROOT, "faq/javascript-eval.jsonl"))
    ap.add_argument("--list", default=os.path.join(ROOT, "faq/javascript.jsonl"))
    ap.add_argument("--min-score", type=float, default=0.5, help="the deployed SCORIA_MIN_SCORE")
    a = ap.parse_args()

    faq = read_jsonl(a.list)
    cases = read_jsonl(a.eval)
    expected = [c["expected"] for c in cases]
    ids = [e["id"] for e in faq]
    tfidf = Tfidf([e["question"] for e in faq])
    baseline = [tfidf.rank(ids, c["question"]) for c in cases]
    with scoria_up(os.path.join(a.bin_dir, "scoria")) as base:
        ours = [scoria_rank(f"{base}/faq", c["question"]) for c in cases]

    rows = [("TF-IDF cosine", metrics(baseline, expected, None)),
            ("Scoria MiniLM", metrics(ours, expected, a.min_score))]
    m = rows[1][1]
    print(f"{os.path.relpath(a.eval, ROOT)}: {m['n']} questions with an expected entry, "
          f"{m['n_none']} that match nothing; list {os.path.relpath(a.list, ROOT)} ({len(faq)} entries)")
    print(f"{'method':<16}{'top-1':>8}{'top-3':>8}{'MRR@10':>8}   false matches at 90% answered (threshold)")
    for name, r in rows:
        print(f"{name:<16}{r['top1']:>8.1%}{r['top3']:>8.1%}{r['mrr']:>8.3f}   "
              f"{r['false_at_90']:.0%} ({r['threshold_90']:.2f})")
    print(f"\nScoria at the deployed min score {a.min_score}: {m['false_at_min']:.0%} false matches on the "
          f"no-match questions; {m['correct_at_min']:.1%} of in-list questions get the right entry first")
    base_top1 = rows[0][1]["top1"]
    print(f"top-1 gain over TF-IDF: {m['top1'] - base_top1:+.1%} points")


if __name__ == "__main__":
    main()
