"""Category classifier over the responsibility list (职责清单).

Features: character n-grams (1–3) and jieba words, each TF-IDF weighted (sublinear tf, l2
normalised), concatenated. Model: a class-balanced linear SVM (one-vs-rest) whose decision
scores are turned into probabilities by temperature scaling fitted on cross-validated scores,
so that "confidence 0.9" means roughly "right nine times in ten".

Training rows come from three places (see :func:`catalogue_rows` and
:mod:`jiedao.cases.analysis.training`): the district's labelled history, the catalogue's own
names, keywords and examples (so a fresh install with no history still classifies), and the
operators' dispatch overrides. When the model is unsure, a keyword match from the catalogue
may decide (``method="keywords"``).

Prediction for one text does not go through scikit-learn: the text's few non-zero features
index rows of the weight matrix directly, which keeps one classification well under a
millisecond.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from jiedao.catalog.loader import Catalog

_DIGITS_RE = re.compile(r"\d+")
_SPACE_RE = re.compile(r"\s+")
_WIDTH = {i: i - 0xFEE0 for i in range(0xFF01, 0xFF5F)}
_WIDTH[0x3000] = 0x20
_jieba = None


def _tokenizer():
    global _jieba
    if _jieba is None:
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    return _jieba


def prepare(text: str) -> str:
    """Half-width, lower case, digits collapsed to 0, no whitespace."""
    s = (text or "").translate(_WIDTH).lower()
    return _SPACE_RE.sub("", _DIGITS_RE.sub("0", s))


def char_terms(s: str, n_max: int = 3) -> list[str]:
    n = len(s)
    return [s[i:i + k] for k in range(1, n_max + 1) for i in range(n - k + 1)]


def word_terms(s: str) -> list[str]:
    words = [w for w in _tokenizer().lcut(s, HMM=False) if w.strip()]
    return ["w:" + w for w in words] + ["b:" + a + "|" + b for a, b in zip(words, words[1:], strict=False)]


class Featurizer:
    """TF-IDF of character n-grams and jieba words (and word bigrams), two l2-normed blocks."""

    def __init__(self, char_vocab: dict[str, int] | None = None, word_vocab: dict[str, int] | None = None,
                 idf: np.ndarray | None = None):
        self.char_vocab = char_vocab or {}
        self.word_vocab = word_vocab or {}
        self.idf = idf if idf is not None else np.zeros(0, dtype=np.float32)

    @property
    def n_features(self) -> int:
        return len(self.char_vocab) + len(self.word_vocab)

    @classmethod
    def fit(cls, texts: Sequence[str], *, min_df: int = 1, max_char: int = 150_000,
            max_word: int = 100_000) -> tuple[Featurizer, list[tuple[list[str], list[str]]]]:
        """Build vocabularies and idf; returns the featurizer and the texts' terms (reused)."""
        terms = [(char_terms(s), word_terms(s)) for s in map(prepare, texts)]
        cdf: Counter = Counter()
        wdf: Counter = Counter()
        for c, w in terms:
            cdf.update(set(c))
            wdf.update(set(w))

        def vocab(df: Counter, cap: int, offset: int) -> dict[str, int]:
            keep = sorted((t for t, n in df.items() if n >= min_df), key=lambda t: (-df[t], t))[:cap]
            return {t: offset + i for i, t in enumerate(sorted(keep))}

        cv = vocab(cdf, max_char, 0)
        wv = vocab(wdf, max_word, len(cv))
        n = len(texts)
        idf = np.zeros(len(cv) + len(wv), dtype=np.float32)
        for v, df in ((cv, cdf), (wv, wdf)):
            for t, j in v.items():
                idf[j] = math.log((1 + n) / (1 + df[t])) + 1.0
        return cls(cv, wv, idf), terms

    def _block(self, terms: list[str], vocab: dict[str, int]) -> tuple[list[int], list[float]]:
        counts: Counter = Counter(j for t in terms if (j := vocab.get(t)) is not None)
        if not counts:
            return [], []
        idx = list(counts)
        vals = [(1.0 + math.log(counts[j])) * float(self.idf[j]) for j in idx]
        norm = math.sqrt(sum(v * v for v in vals)) or 1.0
        return idx, [v / norm for v in vals]

    def vector(self, text: str, terms: tuple[list[str], list[str]] | None = None) -> tuple[list[int], list[float]]:
        """Sparse feature vector of one text as (indices, values)."""
        c, w = terms if terms is not None else (char_terms(prepare(text)), word_terms(prepare(text)))
        ci, cv = self._block(c, self.char_vocab)
        wi, wv = self._block(w, self.word_vocab)
        return ci + wi, cv + wv

    def matrix(self, texts: Sequence[str], terms: list | None = None) -> sp.csr_matrix:
        """CSR matrix (n_texts × n_features)."""
        indptr, indices, data = [0], [], []
        for i, text in enumerate(texts):
            idx, vals = self.vector(text, terms[i] if terms is not None else None)
            indices.extend(idx)
            data.extend(vals)
            indptr.append(len(indices))
        return sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                              np.asarray(indptr, dtype=np.int64)), shape=(len(texts), self.n_features))


# ---------------------------------------------------------------- keywords


class KeywordMatcher:
    """Catalogue keywords found in a text, scored per matter (longer and rarer keywords weigh more)."""

    def __init__(self, catalog: Catalog):
        self.by_kw: dict[str, set[str]] = {}
        for m in catalog.matters:
            for kw in (*m.keywords, m.name):
                k = prepare(kw)
                if len(k) >= 2:
                    self.by_kw.setdefault(k, set()).add(m.code)
        self.lengths = sorted({len(k) for k in self.by_kw}, reverse=True)

    def hits(self, text: str) -> list[str]:
        """Keywords in the text (longest match at each position, overlaps allowed)."""
        s = prepare(text)
        found: list[str] = []
        for i in range(len(s)):
            for ln in self.lengths:
                if i + ln <= len(s) and s[i:i + ln] in self.by_kw:
                    found.append(s[i:i + ln])
                    break
        return list(dict.fromkeys(found))

    def scores(self, text: str) -> tuple[dict[str, float], dict[str, list[str]]]:
        """matter → score, and matter → the keywords that matched."""
        scores: dict[str, float] = {}
        which: dict[str, list[str]] = {}
        for kw in self.hits(text):
            codes = self.by_kw[kw]
            w = len(kw) / len(codes)
            for c in codes:
                scores[c] = scores.get(c, 0.0) + w
                which.setdefault(c, []).append(kw)
        return scores, which


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class CategoryResult:
    """The category of one text: best matter, its probability, the runners-up, how decided."""

    matter_code: str | None
    confidence: float
    candidates: tuple[tuple[str, float], ...] = ()
    method: str = "model"  # model / keywords / none
    keywords: tuple[str, ...] = ()


@dataclass
class Thresholds:
    """Confidence thresholds (configurable per pipeline)."""

    confirm_below: float = 0.6  # below: the operator confirms the category
    keywords_below: float = 0.5  # below: a catalogue keyword match may decide
    keyword_confidence: float = 0.62  # confidence given to a decisive keyword match
    top_k: int = 5


@dataclass
class TextClassifier:
    """A trained category model: featurizer, weights (classes × features), bias, temperature."""

    featurizer: Featurizer
    classes: list[str]
    weights: np.ndarray  # float32, features × classes (row per feature: fast sparse lookup)
    bias: np.ndarray  # float32, classes
    temperature: float = 1.0
    meta: dict = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    keywords: KeywordMatcher | None = field(default=None, repr=False)
    _mask: np.ndarray | None = field(default=None, repr=False)

    def attach_catalog(self, catalog: Catalog) -> None:
        """Use the catalogue's keywords; classes no longer in the catalogue are never predicted."""
        self.keywords = KeywordMatcher(catalog)
        known = np.array([c in catalog.by_code for c in self.classes])
        self._mask = None if known.all() else known

    # -- scores

    def _probs(self, scores: np.ndarray) -> np.ndarray:
        z = scores * self.temperature
        if self._mask is not None:
            z = np.where(self._mask, z, -np.inf)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)

    def proba_one(self, text: str) -> np.ndarray:
        idx, vals = self.featurizer.vector(text)
        if idx:
            scores = np.asarray(vals, dtype=np.float32) @ self.weights[idx] + self.bias
        else:
            scores = self.bias.copy()
        return self._probs(scores.astype(np.float64))

    def proba_many(self, texts: Sequence[str]) -> np.ndarray:
        X = self.featurizer.matrix(texts)
        scores = np.asarray(X @ self.weights) + self.bias
        return self._probs(scores.astype(np.float64))

    # -- decisions

    def decide(self, text: str, probs: np.ndarray) -> CategoryResult:
        """Model probabilities + catalogue keywords → the category of ``text``."""
        th = self.thresholds
        k = min(th.top_k, len(self.classes))
        order = np.argsort(-probs, kind="stable")[:k]
        cands = [(self.classes[i], round(float(probs[i]), 4)) for i in order]
        if not cands or not np.isfinite(probs[order[0]]):
            return CategoryResult(None, 0.0, (), "none")
        best, conf = cands[0]
        if conf >= th.keywords_below or self.keywords is None:
            return CategoryResult(best, conf, tuple(cands), "model")
        kscores, which = self.keywords.scores(text)
        if not kscores:
            return CategoryResult(best, conf, tuple(cands), "model")
        ranked = sorted(kscores.items(), key=lambda t: (-t[1], t[0]))
        top, top_score = ranked[0]
        runner = ranked[1][1] if len(ranked) > 1 else 0.0
        pos = {c: i for i, c in enumerate(self.classes)}
        if top not in pos or (self._mask is not None and not self._mask[pos[top]]):
            return CategoryResult(best, conf, tuple(cands), "model")
        p_top = float(probs[pos[top]])
        if top == best:  # model and keywords agree: two signals
            conf2 = max(conf, th.keyword_confidence if top_score >= 3 and top_score > runner else conf)
            return CategoryResult(best, round(conf2, 4), tuple(cands), "model+keywords",
                                  tuple(which[top]))
        if top_score > runner and top_score >= 2 and top in [c for c, _ in cands[:3]]:
            # the keywords decide, but an unsure model plus keywords is still for a person
            # to confirm: the confidence stays below the confirmation threshold
            kconf = min(th.confirm_below - 0.01, max(p_top, conf) + 0.1)
            rest = [c for c in cands if c[0] != top]
            return CategoryResult(top, round(kconf, 4), ((top, round(p_top, 4)), *rest)[:k],
                                  "keywords", tuple(which[top]))
        return CategoryResult(best, conf, tuple(cands), "model")

    def classify(self, text: str) -> CategoryResult:
        """Category of one text."""
        return self.decide(text, self.proba_one(text))

    def classify_many(self, texts: Sequence[str]) -> list[CategoryResult]:
        """Category of many texts (one vectorised matrix product)."""
        if not texts:
            return []
        P = self.proba_many(texts)
        return [self.decide(t, P[i]) for i, t in enumerate(texts)]

    def predict(self, texts: Sequence[str]) -> list[str | None]:
        return [r.matter_code for r in self.classify_many(texts)]


# ---------------------------------------------------------------- training


def catalogue_rows(catalog: Catalog) -> list[tuple[str, str]]:
    """Training rows from the catalogue itself: names, keywords, examples, descriptions."""
    rows: list[tuple[str, str]] = []
    for m in catalog.matters:
        texts = [m.name, f"{m.level2}{m.name}", "、".join(m.keywords), *m.keywords, *m.examples]
        if m.description:
            rows.append((m.description, m.code))
        rows += [(t, m.code) for t in texts if t and t.strip()]
    return rows


DEFAULT_TEMPERATURE = 12.0


def _fit_svm(X, y, C: float, seed: int):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=C, class_weight="balanced", random_state=seed, max_iter=3000, tol=1e-2).fit(X, y)


def _fit_temperature(X, y: np.ndarray, classes: np.ndarray, C: float, seed: int,
                     max_rows: int = 6_000) -> float:
    """Temperature for softmax(scores·t) minimising log-loss on 3-fold out-of-fold scores."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax
    from sklearn.model_selection import StratifiedKFold

    rng = np.random.default_rng(seed)
    idx = np.arange(len(y))
    if len(idx) > max_rows:
        idx = np.sort(rng.choice(idx, max_rows, replace=False))
    Xs, ys = X[idx], y[idx]
    counts = Counter(ys.tolist())
    ok = np.array([counts[c] >= 3 for c in ys])
    Xs, ys = Xs[ok], ys[ok]
    if len(set(ys.tolist())) < 2:
        return 5.0
    dec = np.full((len(ys), len(classes)), -10.0)
    pos = {c: i for i, c in enumerate(classes)}
    for tr, te in StratifiedKFold(3, shuffle=True, random_state=seed).split(Xs, ys):
        m = _fit_svm(Xs[tr], ys[tr], C, seed)
        cols = [pos[c] for c in m.classes_]
        d = m.decision_function(Xs[te])
        if d.ndim == 1:
            d = np.stack([-d, d], axis=1)
        dec[np.ix_(te, cols)] = d
    target = np.array([pos[c] for c in ys])

    def nll(log_t: float) -> float:
        return float(-log_softmax(dec * math.exp(log_t), axis=1)[np.arange(len(ys)), target].mean())

    res = minimize_scalar(nll, bounds=(-2.0, 4.0), method="bounded")
    return float(math.exp(res.x))


def train(rows: Iterable[tuple[str, str]], catalog: Catalog, *, include_catalogue: bool = True,
          per_class_cap: int = 600, C: float = 0.5, seed: int = 0,
          thresholds: Thresholds | None = None, meta: dict | None = None) -> TextClassifier:
    """Train a classifier from (text, matter code) rows plus (by default) the catalogue's rows.

    History rows are capped at ``per_class_cap`` per matter (a fixed-seed sample) so that a
    year of appeals trains in seconds and no large class drowns the others.
    """
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[str]] = {}
    n_history = 0
    for text, code in rows:
        if code in catalog.by_code and text and text.strip():
            by_class.setdefault(code, []).append(text)
            n_history += 1
    texts: list[str] = []
    labels: list[str] = []
    for code in sorted(by_class):
        items = by_class[code]
        if len(items) > per_class_cap:
            pick = np.sort(rng.choice(len(items), per_class_cap, replace=False))
            items = [items[i] for i in pick]
        texts += items
        labels += [code] * len(items)
    if include_catalogue:
        for t, c in catalogue_rows(catalog):
            texts.append(t)
            labels.append(c)
    if len(set(labels)) < 2:
        from jiedao.errors import Problem, ValidationError

        raise ValidationError(Problem("训练数据至少需要两个事项分类", field="label"))
    min_df = 2 if len(texts) > 20_000 else 1
    feat, terms = Featurizer.fit(texts, min_df=min_df)
    X = feat.matrix(texts, terms)
    y = np.asarray(labels)
    model = _fit_svm(X, y, C, seed)
    classes = np.asarray(model.classes_)
    # With little history the catalogue rows are too few to fit a temperature on: use the
    # value measured on the shipped catalogue by 3-fold cross-validation.
    temp = _fit_temperature(X, y, classes, C, seed) if n_history >= 1000 else DEFAULT_TEMPERATURE
    coef = model.coef_ if model.coef_.shape[0] == len(classes) else np.vstack([-model.coef_, model.coef_])
    bias = model.intercept_ if len(model.intercept_) == len(classes) else np.r_[-model.intercept_, model.intercept_]
    clf = TextClassifier(
        featurizer=feat, classes=[str(c) for c in classes],
        weights=np.ascontiguousarray(coef.T, dtype=np.float32), bias=bias.astype(np.float32),
        temperature=temp, thresholds=thresholds or Thresholds(),
        meta={"n_rows": len(texts), "n_history": n_history, "n_classes": len(classes),
              "n_features": feat.n_features, "temperature": round(temp, 4), **(meta or {})},
    )
    clf.attach_catalog(catalog)
    return clf
