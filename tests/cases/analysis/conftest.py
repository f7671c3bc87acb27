"""Fixtures of the analysis tests: the catalogue, a catalogue-only classifier, and a case
pipeline over the small demo district (each built once per test session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def catalog():
    from jiedao.catalog.loader import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def catalogue_classifier(catalog):
    from jiedao.cases.analysis.classifier import train

    return train([], catalog, meta={"sources": ["catalogue"]})


@pytest.fixture(scope="session")
def pipeline(demo_db, catalogue_classifier):
    from jiedao.cases.runtime import build_pipeline

    return build_pipeline(demo_db, classifier=catalogue_classifier)
