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

Prediction does not go through scikit-learn: the texts' terms are looked up in the
vocabularies and the TF-IDF rows built with a few numpy operations per batch (one text is a
batch of one, so it gets exactly the probabilities it would get in a batch), then one sparse ×
dense product with the weights. jieba segmentation is memoised per block of CJK/alphanumeric
characters (the unit jieba segments independently), so a repeated clause is segmented once.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse._sparsetools import csr_matvecs as _csr_matvecs

from jiedao.catalog.loader import Catalog

_DIGITS_RE = re.compile(r"\d+")
_SPACE_RE = re.compile(r"\s+")
_WIDTH = {i: i - 0xFEE0 for i in range(0xFF01, 0xFF5F)}
_WIDTH[0x3000] = 0x20
_HAN_SPLIT = re.compile("([\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]+)").split  # jieba's re_han_default
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


# jieba segments each run of CJK/alphanumerics (and each run of other characters) on its own,
# so segmenting a text block by block through a memo gives exactly its segmentation; the
# clauses of appeals repeat a lot ("您好", "请尽快处理", a road name), so most blocks are known
_WORDS: dict[str, tuple[str, ...]] = {}
WORD_CACHE_SIZE = 300_000


def words(s: str) -> list[str]:
    """jieba words (no HMM, whitespace dropped) of a prepared text, memoised per block."""
    cache = _WORDS
    out: list[str] = []
    for blk in _HAN_SPLIT(s):
        if not blk:
            continue
        ws = cache.get(blk)
        if ws is None:
            if len(cache) >= WORD_CACHE_SIZE:
                cache.clear()
            ws = cache[blk] = tuple(w for w in _tokenizer().cut(blk, HMM=False) if w.strip())
        out += ws
    return out


def word_terms(s: str) -> list[str]:
    ws = words(s)
    return ["w:" + w for w in ws] + ["b:" + a + "|" + b for a, b in zip(ws, ws[1:], strict=False)]


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
            max_word: int = 100_000) -> tuple[Featurizer, None]:
        """Build vocabularies and idf from ``texts`` (returns the featurizer and None)."""
        prepared = [prepare(t) for t in texts]
        # character n-grams: document frequencies of the integer keys, counted by numpy
        keys, rows = _gram_keys(prepared)
        order = np.lexsort((keys, rows))
        keys, rows = keys[order], rows[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = (keys[1:] != keys[:-1]) | (rows[1:] != rows[:-1])  # once per text
        gk, gdf = np.unique(keys[first], return_counts=True)
        cdf = {_key_str(int(k)): int(d) for k, d in zip(gk, gdf, strict=True) if d >= min_df}
        wdf: Counter = Counter()
        for s in prepared:
            wdf.update(set(word_terms(s)))

        def vocab(df, cap: int, offset: int) -> dict[str, int]:
            keep = [t for t, n in df.items() if n >= min_df]
            if len(keep) > cap:
                keep = sorted(keep, key=lambda t: (-df[t], t))[:cap]
            return {t: offset + i for i, t in enumerate(sorted(keep))}

        cv = vocab(cdf, max_char, 0)
        wv = vocab(wdf, max_word, len(cv))
        n = len(texts)
        idf = np.zeros(len(cv) + len(wv), dtype=np.float32)
        for v, df in ((cv, cdf), (wv, wdf)):
            for t, j in v.items():
                idf[j] = math.log((1 + n) / (1 + df[t])) + 1.0
        return cls(cv, wv, idf), None

    def terms(self, text: str) -> tuple[list[str], list[str]]:
        s = prepare(text)
        return char_terms(s), word_terms(s)

    def vector(self, text: str) -> tuple[list[int], list[float]]:
        """Sparse feature vector of one text as (indices, values)."""
        X = self.matrix([text])
        return X.indices.tolist(), X.data.tolist()

    def _char_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The character vocabulary as sorted integer n-gram keys and their columns (built once)."""
        idx = self.__dict__.get("_char_idx")
        if idx is None:
            items = sorted((_str_key(t), j) for t, j in self.char_vocab.items() if 1 <= len(t) <= 3)
            idx = (np.fromiter((k for k, _ in items), np.uint64, len(items)),
                   np.fromiter((j for _, j in items), np.int64, len(items)))
            self.__dict__["_char_idx"] = idx
        return idx

    def matrix(self, texts: Sequence[str]) -> sp.csr_matrix:
        """CSR matrix (n_texts × n_features) of all texts at once: sublinear TF-IDF, the character
        block and the word block of each row l2-normed separately.

        Character n-grams are looked up as integer keys (code points packed into 63 bits) in the
        sorted vocabulary with one ``searchsorted`` for the whole batch; words through the dict."""
        data, cols, indptr = self.csr_parts(texts)
        return sp.csr_matrix((data, cols, indptr), shape=(len(indptr) - 1, self.n_features))

    def csr_parts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(data float32, indices int32, indptr int64) of :meth:`matrix`, without building the
        scipy object (whose format checks cost more than the product for a single text)."""
        prepared = [prepare(t) for t in texts]
        n = len(prepared)
        keys, rows = _gram_keys(prepared)
        vk, vcol = self._char_index()
        if len(vk) and len(keys):
            pos = np.minimum(np.searchsorted(vk, keys), len(vk) - 1)
            hit = vk[pos] == keys
            c_rows, c_cols = rows[hit], vcol[pos[hit]]
        else:
            c_rows = c_cols = np.zeros(0, dtype=np.int64)
        wget = self.word_vocab.get
        wids: list[int] = []
        wptr = [0]
        for s in prepared:
            wids += [j for j in map(wget, word_terms(s)) if j is not None]
            wptr.append(len(wids))
        w_rows = np.repeat(np.arange(n), np.diff(np.asarray(wptr)))
        nf = self.n_features
        # (row, column) pairs as one sorted key: unique → the counts, rows in order, columns sorted
        lin, tf = np.unique(np.concatenate([c_rows * nf + c_cols, w_rows * nf + np.asarray(wids, dtype=np.int64)]),
                            return_counts=True)
        rows, cols = np.divmod(lin, nf)
        data = (1.0 + np.log(tf)) * self.idf[cols]
        group = 2 * rows + (cols >= len(self.char_vocab))
        norm = np.sqrt(np.bincount(group, weights=data * data, minlength=2 * n))
        norm[norm == 0] = 1.0
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        return (data / norm[group]).astype(np.float32), cols.astype(np.int32), indptr

    def state(self) -> dict:
        """What a saved model keeps of the featurizer."""
        return {"char_vocab": self.char_vocab, "word_vocab": self.word_vocab, "idf": self.idf}


_B21 = np.uint64(21)
_B42 = np.uint64(42)
_M21 = (1 << 21) - 1


def _str_key(t: str) -> int:
    """Integer key of a 1–3 character n-gram: code points + 1, 21 bits each (n is implied by
    the magnitude: a 2-gram key is ≥ 2**21, a 3-gram key ≥ 2**42)."""
    k = 0
    for ch in t:
        k = (k << 21) | (ord(ch) + 1)
    return k


def _key_str(k: int) -> str:
    out = []
    while k:
        out.append(chr((k & _M21) - 1))
        k >>= 21
    return "".join(reversed(out))


def _gram_keys(prepared: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Keys of every 1-, 2- and 3-gram of every text (no gram spans two texts) and their rows."""
    lens = np.fromiter(map(len, prepared), np.int64, len(prepared))
    total = int(lens.sum())
    if not total:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    cp = np.frombuffer("".join(prepared).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
    row = np.repeat(np.arange(len(prepared)), lens)
    k2 = (cp[:-1] << _B21) | cp[1:]
    ok2 = row[:-1] == row[1:]
    k3 = (cp[:-2] << _B42) | (cp[1:-1] << _B21) | cp[2:]
    ok3 = row[:-2] == row[2:]
    keys = np.concatenate([cp, k2[ok2], k3[ok3]])
    rows = np.concatenate([row, row[:-1][ok2], row[:-2][ok3]])
    return keys, rows


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
        # the batch path for one row: a text gets the same probabilities alone or in a batch
        return self.proba_many([text])[0]

    def proba_many(self, texts: Sequence[str]) -> np.ndarray:
        data, cols, indptr = self.featurizer.csr_parts(texts)
        # ``csr_matrix @ weights`` without the scipy objects: the very kernel scipy runs for
        # it (csr_matvecs: same accumulation order, so the same float32 scores to the bit)
        n, w = len(indptr) - 1, self.weights
        scores = np.zeros((n, w.shape[1]), dtype=np.result_type(data, w))
        _csr_matvecs(n, w.shape[0], w.shape[1], indptr, cols, data, w.ravel(), scores.ravel())
        return self._probs((scores + self.bias).astype(np.float64))

    # -- decisions

    def decide(self, text: str, probs: np.ndarray, order: np.ndarray | None = None) -> CategoryResult:
        """Model probabilities + catalogue keywords → the category of ``text`` (``order``: the
        classes by falling probability, when already known)."""
        th = self.thresholds
        k = min(th.top_k, len(self.classes))
        order = (np.argsort(-probs, kind="stable") if order is None else order)[:k]
        cands = [(self.classes[i], round(p, 4)) for i, p in zip(order.tolist(), probs[order].tolist(), strict=True)]
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
        order = np.argsort(-P, axis=1, kind="stable")[:, :min(self.thresholds.top_k, len(self.classes))]
        return [self.decide(t, P[i], order[i]) for i, t in enumerate(texts)]

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
    feat, _ = Featurizer.fit(texts, min_df=min_df)
    X = feat.matrix(texts)
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
