"""Fixtures of the edge runtime unit tests: one tiny torch bundle per session and toy data files."""
from __future__ import annotations

from pathlib import Path

import pytest

from devices import AdapterPlan
from tests._helpers import write_toy_data

PLAN = AdapterPlan(depth=2, ranks=(4, 8), mask_density=0.5, max_seq_len=32, batch_size=8)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from export import export_bundle

    out = tmp_path_factory.mktemp("edge-bundles")
    return export_bundle("tiny", 2, "unit", PLAN, "torch", out, progress=lambda s: None).bundle_dir


@pytest.fixture(scope="session")
def tiny_session(tiny_bundle):
    from bundle_runtime import open_session

    return open_session(tiny_bundle, threads=1)


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_toy_data(tmp_path / "toy.csv", 80, 0)
