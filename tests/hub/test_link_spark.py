"""The same linkage on Splink's Spark backend (pyspark, local mode) gives the same clusters as
on DuckDB. Starting the JVM takes a while, hence `slow`; it stays in the default run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from link_toy import toy_records  # noqa: E402

pytest.importorskip("pyspark")
if shutil.which("java") is None:  # pragma: no cover - CI and the dev machine have Java
    pytest.skip("Java is not installed", allow_module_level=True)

from jiedao.hub.link import link_frame, load_linkage_config, pairwise_scores  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    from jiedao.hub.link import spark_session

    s = spark_session()
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def test_duckdb_and_spark_give_the_same_clusters(spark):
    df, truth = toy_records()
    cfg = load_linkage_config()
    # fewer EM iterations keep the JVM part short; the comparison stays like for like
    cfg = dict(cfg, training=dict(cfg["training"], em_max_iterations=8))
    duck = link_frame(df, cfg, backend="duckdb")
    spk = link_frame(df, cfg, backend="spark", spark=spark)
    assert spk.stats["backend"] == "spark" and spk.stats["scored_pairs"] > 0
    assert spk.clusters == duck.clusters
    assert {(r["record_a"], r["record_b"]) for r in spk.review} == {
        (r["record_a"], r["record_b"]) for r in duck.review}
    assert spk.model["prior"] == duck.model["prior"]
    for comp, levels in duck.model["comparisons"].items():
        for label, mu in levels.items():
            other = spk.model["comparisons"][comp][label]
            assert other["u"] == pytest.approx(mu["u"], rel=1e-6), (comp, label)
            assert other["m"] == pytest.approx(mu["m"], rel=1e-4, abs=1e-6), (comp, label)
    assert pairwise_scores(spk.clusters, truth)["precision"] >= 0.95
    # the model trained on one backend scores the same on the other
    again = link_frame(df, cfg, backend="spark", spark=spark, model=duck.model)
    assert again.clusters == duck.clusters
    assert {k: v[0] for k, v in again.links.items()} == {k: v[0] for k, v in duck.links.items()}
