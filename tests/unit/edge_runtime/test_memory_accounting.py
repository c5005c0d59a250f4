"""'process' vs 'bundle' memory accounting of the budget guard."""

import subprocess
import sys

import pytest

from edge_runtime import _budget


@pytest.fixture(autouse=True)
def _reset_baseline():
    yield
    _budget.set_host_baseline(0.0)


def test_process_accounting_counts_the_whole_rss():
    assert _budget.host_baseline_mb() == 0.0
    assert abs(_budget.rss_mb() - _budget.process_rss_mb()) < 5.0


def test_bundle_accounting_subtracts_the_host_baseline():
    whole = _budget.process_rss_mb()
    _budget.set_host_baseline(whole - 10.0)
    assert 5.0 <= _budget.rss_mb() <= 40.0  # what was allocated since the baseline (plus noise)
    _budget.set_host_baseline(whole + 1000.0)
    assert _budget.rss_mb() == 0.0  # never negative


def test_watcher_trips_on_accounted_memory():
    _budget.set_host_baseline(_budget.process_rss_mb() - 1.0)
    watcher = _budget.RssWatcher(budget_mb=1000.0)
    assert watcher.check() < 100 and not watcher.tripped.is_set()


def test_unknown_accounting_is_a_config_error():
    from edge_runtime import AgentConfig

    cfg = AgentConfig(broker="mqtt://127.0.0.1:1", client_id="dev-000", data="x.tsv", memory_accounting="native")
    assert any("memory_accounting must be 'process' or 'bundle'" in p for p in cfg.problems())


def test_load_runtime_imports_ort_without_torch():
    pytest.importorskip("onnxruntime")
    code = "import sys\nfrom bundle_runtime import load_runtime\nload_runtime('ort')\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_torch_baseline_leaves_nothing_for_the_open_to_import(tiny_bundle):
    # 'bundle' accounting charges whatever the open imports to the bundle; transformers imports its
    # model code lazily (~140 MB), which a baseline taken after a bare `import transformers` missed.
    code = (
        "import sys\nfrom bundle_runtime import load_runtime, open_session\n"
        f"load_runtime('torch', {str(tiny_bundle)!r})\nbefore = set(sys.modules)\n"
        f"open_session({str(tiny_bundle)!r})\n"
        "print(sorted(m for m in set(sys.modules) - before if not m.startswith(('fedhft', 'edge_runtime'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
