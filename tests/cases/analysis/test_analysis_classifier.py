"""Category classifier: catalogue-only generalisation, training from CSV/XLSX history with
codes or names, evaluation report, overrides as training signal, model store round trip."""

from __future__ import annotations

import csv
import random

import pytest
from paraphrases import PARAPHRASES
from typer.testing import CliRunner

from jiedao.cases.analysis.classifier import train
from jiedao.cases.analysis.training import (
    current_model_path,
    evaluate,
    format_report,
    load_model,
    mark_overrides_used,
    read_labelled,
    save_model,
    train_from_sources,
)
from jiedao.errors import ValidationError


def test_paraphrases_are_distinct_matters_and_not_catalogue_examples(catalog):
    examples = {e for m in catalog.matters for e in m.examples}
    assert len(PARAPHRASES) >= 30
    assert len({c for _, c in PARAPHRASES}) == len(PARAPHRASES)
    assert all(t not in examples and c in catalog.by_code for t, c in PARAPHRASES)


def test_catalogue_only_model_classifies_unseen_paraphrases(catalogue_classifier):
    results = catalogue_classifier.classify_many([t for t, _ in PARAPHRASES])
    right = [r.matter_code == c for r, (_, c) in zip(results, PARAPHRASES, strict=True)]
    assert sum(right) / len(right) >= 0.85, [
        (t, r.matter_code, c) for r, (t, c) in zip(results, PARAPHRASES, strict=True) if r.matter_code != c]
    # confident answers are mostly right: the confidence means something
    sure = [ok for ok, r in zip(right, results, strict=True) if r.confidence >= 0.6]
    assert len(sure) >= len(right) // 2 and sum(sure) / len(sure) >= 0.95
    # single and batch prediction agree
    one = catalogue_classifier.classify(PARAPHRASES[0][0])
    assert (one.matter_code, round(one.confidence, 3)) == (results[0].matter_code,
                                                           round(results[0].confidence, 3))


def test_result_shape_and_keywords(catalogue_classifier):
    r = catalogue_classifier.classify("楼道里一股很浓的煤气味，是不是燃气泄漏了")
    assert r.matter_code == "GY0201" and 0 < r.confidence <= 1
    assert len(r.candidates) == 5 and r.candidates[0][0] == r.matter_code
    assert r.method in ("model", "model+keywords", "keywords")
    empty = catalogue_classifier.classify("")
    assert empty.matter_code is None or empty.confidence < 0.6


def _history(catalog, n_per=6, seed=1):
    """A small 'history': the paraphrases and noisy variants of them."""
    rng = random.Random(seed)
    pre = ["你好，", "我要反映一下，", "麻烦你们管一下：", "", "师傅，"]
    post = ["", "，谢谢", "，请尽快处理", "，已经好多天了", "！"]
    rows = []
    for text, code in PARAPHRASES:
        for _ in range(n_per):
            rows.append((rng.choice(pre) + text + rng.choice(post), code))
    rng.shuffle(rows)
    return rows


def _write_csv(path, rows, header=("编号", "内容", "事项编码"), encoding="utf-8-sig"):
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        for i, r in enumerate(rows, 1):
            w.writerow((i, *r))


def test_read_labelled_csv_codes_names_and_unknown_rows(tmp_path, catalog):
    rows = _history(catalog, n_per=1)
    named = [(t, catalog.by_code[c].name if i % 2 else c) for i, (t, c) in enumerate(rows)]
    named += [("这条的分类不存在", "XX9999"), ("", "CG0101"), ("分类写成了名称但不存在", "外星人入侵")]
    p = tmp_path / "history.csv"
    _write_csv(p, named)
    data = read_labelled(p, catalog)
    assert len(data.rows) == len(rows)
    assert {c for _, c in data.rows} <= set(catalog.by_code)
    bad = {(pr.row, pr.field) for pr in data.skipped}
    n = len(rows) + 1
    assert (n + 1, "事项编码") in bad and (n + 3, "事项编码") in bad and (n + 2, "内容") in bad
    with pytest.raises(ValidationError) as e:
        read_labelled(p, catalog, on_unknown="fail")
    assert {pr.row for pr in e.value.problems} == {n + 1, n + 3}
    assert "XX9999" in str(e.value)
    # by code only: names are unknown
    assert len(read_labelled(p, catalog, label_by="code").rows) == (len(rows) + 1) // 2


def test_bad_files_and_columns_are_named(tmp_path, catalog):
    p = tmp_path / "h.csv"
    _write_csv(p, [("路灯坏了", "CG0603")])
    with pytest.raises(ValidationError) as e:
        read_labelled(p, catalog, text_col="诉求内容")
    assert "诉求内容" in str(e.value) and "内容" in str(e.value)
    with pytest.raises(ValidationError, match="不存在"):
        read_labelled(tmp_path / "nope.csv", catalog)
    (tmp_path / "h.json").write_text("{}")
    with pytest.raises(ValidationError, match="不支持"):
        read_labelled(tmp_path / "h.json", catalog)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValidationError, match="为空"):
        read_labelled(tmp_path / "empty.csv", catalog)
    gbk = tmp_path / "gbk.csv"
    _write_csv(gbk, [("路灯坏了", "CG0603")], encoding="gb18030")
    assert read_labelled(gbk, catalog).rows == [("路灯坏了", "CG0603")]


def test_train_and_evaluate_from_xlsx_and_csv_via_cli(tmp_path, monkeypatch, catalog, database):
    from openpyxl import Workbook

    from jiedao.cli import _mount, app
    from jiedao.config import get_settings

    monkeypatch.setenv("JIEDAO_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    try:
        rows = _history(catalog)
        wb = Workbook()
        ws = wb.active
        ws.append(["工单号", "诉求描述", "分类名称"])
        for i, (t, c) in enumerate(rows[:200]):
            ws.append([i, t, catalog.by_code[c].name])
        wb.save(tmp_path / "history.xlsx")
        _write_csv(tmp_path / "test.csv", rows[200:])
        _mount()
        runner = CliRunner()
        res = runner.invoke(app, ["train", "--from", str(tmp_path / "history.xlsx"), "--text-col", "诉求描述",
                                  "--label-col", "分类名称", "--label-by", "name"])
        assert res.exit_code == 0, res.output
        assert "训练完成" in res.output and current_model_path() is not None
        res = runner.invoke(app, ["evaluate", "--test", str(tmp_path / "test.csv")])
        assert res.exit_code == 0, res.output
        for label in ("准确率 accuracy", "宏平均F1 macro-F1", "最常混淆"):
            assert label in res.output
        acc = float(res.output.split("accuracy = ")[1].split()[0])
        assert acc >= 0.9
        res = runner.invoke(app, ["train", "--from", str(tmp_path / "history.xlsx")])
        assert res.exit_code != 0 and "内容" in str(res.exception or res.output)
    finally:
        get_settings.cache_clear()


def test_evaluate_metrics_and_report(catalogue_classifier, catalog):
    m = evaluate(catalogue_classifier, PARAPHRASES)
    assert m["n"] == len(PARAPHRASES) and 0.8 <= m["accuracy"] <= 1 and 0 < m["macro_f1"] <= 1
    assert len(m["per_class"]) == 10 and m["per_class"][0]["f1"] <= m["per_class"][-1]["f1"]
    text = format_report(m, catalog)
    assert "macro-F1" in text and "→" in text or "(无)" in text


def test_history_model_beats_catalogue_on_its_own_phrasing(catalog, tmp_path):
    rows = _history(catalog, n_per=4, seed=3)
    clf = train(rows, catalog, seed=0)
    assert clf.meta["n_history"] == len(rows)
    assert evaluate(clf, _history(catalog, n_per=2, seed=9))["accuracy"] >= 0.97
    path = save_model(clf, tmp_path)
    again = load_model(path, catalog)
    texts = [t for t, _ in PARAPHRASES]
    assert again.predict(texts) == clf.predict(texts)
    assert (tmp_path / "current").read_text().strip() == path.name
    assert again.meta["n_history"] == len(rows) and again.classes == clf.classes


def test_dispatch_overrides_train_the_next_model(fresh_db, catalog):
    from sqlalchemy import select

    from jiedao.cases import service
    from jiedao.cases.models import DispatchOverride
    from jiedao.clock import now

    odd = "小区西北角那台共享充电宝柜子老是吞币不吐宝"
    with fresh_db.session() as s:
        case, _ = service.create_case(s, text=odd, channel="hotline", actor="operator01")
        for _ in range(3):
            s.add(DispatchOverride(case_id=case.id, at=now(), actor="operator01", text=odd,
                                   suggested_matter="CG0101", chosen_matter="SC0201"))
        s.flush()
        clf, ids = train_from_sources(catalog, session=s)
        assert len(ids) == 3 and clf.classify(odd).matter_code == "SC0201"
        assert mark_overrides_used(s, ids) == 3
        assert all(s.scalars(select(DispatchOverride.used_in_training)))
