"""Training data in and models out: labelled history files, dispatch overrides, evaluation,
and the model store under ``$JIEDAO_HOME/models``.

History files are CSV (UTF-8, UTF-8 with BOM or GB18030, as hotline systems export them) or
XLSX (first sheet), one header row. Columns are chosen by name; labels are matter codes or
matter names (``label_by="auto"`` accepts either). A bad file, a missing column or an unknown
label is reported with the file, row number and column.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jiedao import clock
from jiedao.cases.analysis.classifier import TextClassifier, Thresholds, train
from jiedao.catalog.loader import Catalog
from jiedao.config import get_settings
from jiedao.errors import Problem, ValidationError
from jiedao.tables import read_rows

MODEL_FORMAT = 1


@dataclass
class LabelledData:
    """Rows read from a labelled file, with what was skipped and why."""

    rows: list[tuple[str, str]]  # (text, matter code)
    source: str
    sha256: str
    skipped: list[Problem] = field(default_factory=list)


def _read_table(path: Path) -> list[list[str]]:
    """All rows of a CSV or XLSX file (first sheet) as lists of stripped strings (row 1 = header)."""
    return [["" if v is None else str(v).strip() for v in row] for row in read_rows(path)]


def label_index(catalog: Catalog) -> tuple[dict[str, str], dict[str, str]]:
    """Lookup tables: code (upper) → code, and name/path → code (unique names only)."""
    by_code = {m.code.upper(): m.code for m in catalog.matters}
    names: dict[str, list[str]] = {}
    for m in catalog.matters:
        for key in (m.name, f"{m.level2}/{m.name}", f"{m.level1}/{m.level2}/{m.name}", m.path):
            names.setdefault(key.replace(" ", ""), []).append(m.code)
    by_name = {k: v[0] for k, v in names.items() if len(set(v)) == 1}
    return by_code, by_name


def read_labelled(path: str | Path, catalog: Catalog, *, text_col: str = "内容",
                  label_col: str = "事项编码", label_by: str = "auto",
                  on_unknown: str = "skip") -> LabelledData:
    """Read (text, matter code) rows from a labelled CSV/XLSX.

    ``label_by``: ``code``, ``name`` or ``auto``. ``on_unknown``: ``skip`` (report and go on)
    or ``fail`` (raise ValidationError listing every bad row). Empty texts are skipped with a
    note; a missing column is always an error naming the columns that exist.
    """
    if label_by not in ("code", "name", "auto"):
        raise ValidationError(Problem("label_by 必须是 code / name / auto", field="label_by"))
    if on_unknown not in ("skip", "fail"):
        raise ValidationError(Problem("on_unknown 必须是 skip / fail", field="on_unknown"))
    path = Path(path)
    name = str(path)
    table = _read_table(path)
    if not table or not any(table[0]):
        raise ValidationError(Problem("文件为空，缺少表头", source=name, row=1))
    header = table[0]
    missing = [c for c in (text_col, label_col) if c not in header]
    if missing:
        raise ValidationError([Problem(f"缺少列 {c!r}（文件中的列：{', '.join(h for h in header if h)}）",
                                       source=name, row=1, field=c) for c in missing])
    ti, li = header.index(text_col), header.index(label_col)
    by_code, by_name = label_index(catalog)
    rows: list[tuple[str, str]] = []
    bad: list[Problem] = []
    notes: list[Problem] = []
    for n, row in enumerate(table[1:], start=2):
        if not any(c for c in row):
            continue
        text = row[ti] if ti < len(row) else ""
        label = (row[li] if li < len(row) else "").strip()
        if not text:
            notes.append(Problem("内容为空，已跳过", source=name, row=n, field=text_col))
            continue
        code = None
        if label_by in ("code", "auto"):
            code = by_code.get(label.upper())
        if code is None and label_by in ("name", "auto"):
            code = by_name.get(label.replace(" ", ""))
        if code is None:
            what = "事项编码" if label_by == "code" else "事项名称" if label_by == "name" else "事项编码或名称"
            bad.append(Problem(f"未知的{what} {label!r}" if label else "分类为空",
                               source=name, row=n, field=label_col))
            continue
        rows.append((text, code))
    if bad and on_unknown == "fail":
        raise ValidationError(bad)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LabelledData(rows, name, digest, bad + notes)


# ---------------------------------------------------------------- overrides


def override_rows(session: Session) -> tuple[list[tuple[str, str]], list[int]]:
    """(text, chosen matter) rows from operators' dispatch overrides, and their ids."""
    from jiedao.cases.models import DispatchOverride

    rows, ids = [], []
    for oid, text, chosen in session.execute(
        select(DispatchOverride.id, DispatchOverride.text, DispatchOverride.chosen_matter)
        .where(DispatchOverride.chosen_matter.is_not(None)).order_by(DispatchOverride.id)
    ):
        if text and chosen:
            rows.append((text, chosen))
            ids.append(oid)
    return rows, ids


def mark_overrides_used(session: Session, ids: Sequence[int]) -> int:
    from jiedao.cases.models import DispatchOverride

    n = 0
    for i in range(0, len(ids), 500):
        n += session.execute(update(DispatchOverride).where(DispatchOverride.id.in_(ids[i:i + 500]))
                             .values(used_in_training=True)).rowcount
    return n


# ---------------------------------------------------------------- evaluation


def evaluate(clf: TextClassifier, rows: Sequence[tuple[str, str]], *, worst: int = 10,
             top_pairs: int = 10) -> dict:
    """Accuracy, macro-F1, per-class F1 (worst first) and the most confused pairs."""
    if not rows:
        raise ValidationError(Problem("测试集没有可用的行", field="test"))
    from sklearn.metrics import accuracy_score, f1_score

    y = [c for _, c in rows]
    pred = [p or "" for p in clf.predict([t for t, _ in rows])]
    labels = sorted(set(y))
    per = f1_score(y, pred, labels=labels, average=None, zero_division=0)
    support = Counter(y)
    pairs = Counter((a, b) for a, b in zip(y, pred, strict=True) if a != b)
    return {
        "n": len(rows),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(np.mean(per)) if len(per) else 0.0,
        "per_class": sorted(({"matter": c, "f1": float(f), "support": support[c]}
                             for c, f in zip(labels, per, strict=True)), key=lambda d: (d["f1"], d["matter"]))[:worst],
        "confused": [{"true": a, "pred": b, "count": n} for (a, b), n in pairs.most_common(top_pairs)],
    }


def format_report(metrics: dict, catalog: Catalog | None = None) -> str:
    """Human-readable evaluation report (Chinese labels)."""
    def nm(code: str) -> str:
        if catalog is not None and code in catalog.by_code:
            return f"{code} {catalog.by_code[code].name}"
        return code or "(无)"

    lines = [f"样本数 n = {metrics['n']}",
             f"准确率 accuracy = {metrics['accuracy']:.4f}",
             f"宏平均F1 macro-F1 = {metrics['macro_f1']:.4f}",
             "F1 最低的事项 worst classes:"]
    lines += [f"  {d['f1']:.3f}  (n={d['support']})  {nm(d['matter'])}" for d in metrics["per_class"]]
    lines.append("最常混淆 top confusions (真实 → 预测):")
    lines += [f"  {d['count']:>4}  {nm(d['true'])} → {nm(d['pred'])}" for d in metrics["confused"]] or ["  (无)"]
    return "\n".join(lines)


# ---------------------------------------------------------------- model store


def models_dir() -> Path:
    return get_settings().home / "models"


def catalogue_hash(catalog: Catalog) -> str:
    h = hashlib.sha256()
    for m in catalog.matters:
        h.update(json.dumps([m.code, m.name, m.level2, list(m.keywords), list(m.examples),
                             m.description], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def save_model(clf: TextClassifier, directory: Path | None = None, *, make_current: bool = True) -> Path:
    """Write ``classifier-<timestamp>.joblib`` and (by default) point ``current`` at it."""
    d = directory or models_dir()
    d.mkdir(parents=True, exist_ok=True)
    stamp = clock.now().strftime("%Y%m%d-%H%M%S-%f")
    path = d / f"classifier-{stamp}.joblib"
    state = {"format": MODEL_FORMAT, "featurizer": clf.featurizer.state(), "classes": clf.classes,
             "weights": clf.weights, "bias": clf.bias, "temperature": clf.temperature, "meta": clf.meta}
    tmp = path.with_suffix(".tmp")
    joblib.dump(state, tmp, compress=3)
    tmp.replace(path)
    if make_current:
        cur = d / "current"
        tmp_cur = d / "current.tmp"
        tmp_cur.write_text(path.name + "\n", encoding="utf-8")
        tmp_cur.replace(cur)
    return path


def load_model(path: Path, catalog: Catalog, thresholds: Thresholds | None = None) -> TextClassifier:
    """Load a saved classifier and attach the catalogue's keywords."""
    from jiedao.cases.analysis.classifier import Featurizer

    try:
        state = joblib.load(path)
    except Exception as e:
        raise ValidationError(Problem(f"无法读取模型文件：{e}", source=str(path))) from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise ValidationError(Problem("模型文件格式不符", source=str(path)))
    feat = Featurizer()
    feat.__dict__.update(state["featurizer"])
    clf = TextClassifier(feat, list(state["classes"]), state["weights"], state["bias"],
                         float(state["temperature"]), dict(state["meta"]), thresholds or Thresholds())
    clf.attach_catalog(catalog)
    return clf


def current_model_path(directory: Path | None = None) -> Path | None:
    d = directory or models_dir()
    cur = d / "current"
    if not cur.is_file():
        return None
    p = d / cur.read_text(encoding="utf-8").strip()
    return p if p.is_file() else None


def load_or_train(catalog: Catalog, *, thresholds: Thresholds | None = None,
                  directory: Path | None = None, save: bool = True) -> TextClassifier:
    """The current model; without one, a catalogue-only model (trained once, then saved)."""
    d = directory or models_dir()
    path = current_model_path(d)
    chash = catalogue_hash(catalog)
    if path is not None:
        clf = load_model(path, catalog, thresholds)
        # a catalogue-only model of an older catalogue is stale: retrain it
        if clf.meta.get("n_history", 0) or clf.meta.get("catalogue_hash") == chash:
            return clf
    cached = d / f"catalogue-{chash}.joblib"
    if cached.is_file():
        try:
            return load_model(cached, catalog, thresholds)
        except ValidationError:
            pass
    clf = train([], catalog, thresholds=thresholds,
                meta={"trained_at": clock.now().isoformat(timespec="seconds"),
                      "sources": ["catalogue"], "catalogue_hash": chash})
    if save:
        try:
            p = save_model(clf, d, make_current=False)
            p.replace(cached)
        except OSError:  # a read-only home still classifies, just without the cache
            pass
    return clf


def train_from_sources(catalog: Catalog, *, files: Sequence[LabelledData] = (),
                       session: Session | None = None, thresholds: Thresholds | None = None,
                       seed: int = 0) -> tuple[TextClassifier, list[int]]:
    """Train from labelled files + catalogue + (when a session is given) dispatch overrides.

    Returns the classifier and the override ids used (mark them after saving the model).
    """
    rows: list[tuple[str, str]] = []
    sources = []
    h = hashlib.sha256()
    for f in files:
        rows += f.rows
        sources.append({"file": f.source, "rows": len(f.rows), "sha256": f.sha256})
        h.update(f.sha256.encode())
    ids: list[int] = []
    if session is not None:
        orows, ids = override_rows(session)
        # overrides are the operators' corrections: let them count as much as a few history rows
        rows += orows * 3
        sources.append({"overrides": len(orows)})
        h.update(json.dumps(ids).encode())
    chash = catalogue_hash(catalog)
    h.update(chash.encode())
    clf = train(rows, catalog, thresholds=thresholds, seed=seed,
                meta={"trained_at": clock.now().isoformat(timespec="seconds"), "sources": sources,
                      "source_hash": h.hexdigest()[:16], "catalogue_hash": chash})
    return clf, ids
