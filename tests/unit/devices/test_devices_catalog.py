"""The packaged tier catalog, its validation, and tier lookup."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import (
    AdapterPlan,
    CatalogError,
    ModelShape,
    TierSpec,
    default_rank_profile,
    estimate,
    get_tier,
    load_catalog,
)
from devices._catalog import parse_catalog

REQUIRED = {
    "android-low": "executorch",
    "android-mid": "executorch",
    "android-high": "executorch",
    "rpi5": "ort",
    "jetson-orin-nano": "torch",
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_required_tiers_and_backends(catalog):
    for name, backend in REQUIRED.items():
        assert catalog[name].default_backend == backend


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_plan_is_valid_for_a_6_layer_model(catalog, name):
    plan = catalog[name].plan
    assert plan.problems(6) == []
    assert plan.max_seq_len <= 128 and plan.batch_size <= 16  # keeps CPU tests fast
    # ranks are the top `depth` entries of the one shared profile
    assert plan.ranks == default_rank_profile(6)[6 - plan.depth :]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_plan_fits_its_budget_by_the_estimate(catalog, name):
    tier = catalog[name]
    est = estimate(tier.plan, ModelShape.minilm(), backend=tier.default_backend, gflops=tier.compute_gflops)
    assert est.peak_mb <= tier.memory_budget_mb
    assert est.step_ms < 10_000  # a step a device of the tier can do in seconds, not minutes


def test_low_tiers_are_int8_and_smaller(catalog):
    for name in ("android-low", "android-mid", "rpi5"):
        assert catalog[name].plan.precision == "int8"
    low, high = catalog["android-low"].plan, catalog["jetson-orin-nano"].plan
    assert low.depth < high.depth and low.mask_density < high.mask_density
    by_memory = sorted(catalog.values(), key=lambda t: t.memory_budget_mb)
    depths = [t.plan.depth for t in by_memory]
    assert depths == sorted(depths), "a tier with more memory must not train fewer layers"


def test_a_layer_has_one_rank_on_every_tier(catalog):
    seen: dict[int, int] = {}
    for tier in catalog.values():
        for layer, rank in zip(tier.plan.adapted_layers(6), tier.plan.ranks):
            assert seen.setdefault(layer, rank) == rank


def test_tierspec_fields_document_themselves():
    for f in dataclasses.fields(TierSpec):
        assert f.metadata.get("help"), f.name


def test_get_tier_unknown_names_the_known_tiers(catalog):
    assert get_tier("rpi5").plan.depth == catalog["rpi5"].plan.depth
    with pytest.raises(ValueError) as err:
        get_tier("nokia-3310")
    msg = str(err.value)
    assert "'nokia-3310'" in msg and all(name in msg for name in REQUIRED)


def _write(tmp_path, doc) -> str:
    path = tmp_path / "tiers.yaml"
    path.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(path)


def _good_tier(**over):
    tier = {
        "description": "x",
        "memory_budget_mb": 300,
        "battery_threshold": 20,
        "compute_gflops": 5,
        "default_backend": "ort",
        "plan": {"depth": 2, "ranks": [8, 8], "mask_density": 0.5, "precision": "int8"},
    }
    tier.update(over)
    return tier


def _doc(**tiers):
    return {"schema_version": 1, "num_layers": 6, "rank_profile": [2, 2, 4, 4, 8, 8], "tiers": tiers}


def test_custom_catalog_loads(tmp_path):
    cat = load_catalog(_write(tmp_path, _doc(mine=_good_tier())))
    assert list(cat) == ["mine"] and cat["mine"].plan == AdapterPlan(2, (8, 8), 0.5, "int8")


def test_bad_catalog_reports_every_error_at_once(tmp_path):
    doc = _doc(
        a=_good_tier(memory_budget_mb=-1, battery_threshold=150),
        b=_good_tier(default_backend="tflite", colour="red"),
        c=_good_tier(plan={"depth": 2, "ranks": [8, 4], "mask_density": 0.5}),
        d={k: v for k, v in _good_tier().items() if k != "compute_gflops"},
        e=_good_tier(plan={"depth": 2, "ranks": [4, 8], "mask_density": 0.5}),
    )
    doc["surprise"] = 1
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, doc))
    errors = err.value.errors
    expected = [
        "tiers.a.memory_budget_mb",
        "tiers.a.battery_threshold",
        "tiers.b.default_backend",
        "'colour'",
        "tiers.c.plan",
        "tiers.d: missing field(s) ['compute_gflops']",
        "rank_profile's top 2",
        "'surprise'",
    ]
    for text in expected:
        assert any(text in e for e in errors), (text, errors)
    assert len(errors) >= len(expected)
    assert str(len(errors)) + " error(s)" in str(err.value)


def test_depth_beyond_the_model_names_the_fix(tmp_path):
    doc = _doc(deep=_good_tier(plan={"depth": 7, "ranks": [1, 2, 2, 4, 4, 8, 8], "mask_density": 1.0}))
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, doc))
    assert "use depth <= 6" in str(err.value)


@pytest.mark.parametrize("text", ["tiers: [unclosed", "- just\n- a list\n", "schema_version: 2\nnum_layers: 0\n"])
def test_malformed_documents_raise_catalog_error(tmp_path, text):
    with pytest.raises(CatalogError):
        load_catalog(_write(tmp_path, text))


@pytest.mark.parametrize(
    "kwargs, fix",
    [
        (dict(depth=7, ranks=(1,) * 7, mask_density=1.0), "use depth <= 6"),
        (dict(depth=2, ranks=(8,), mask_density=1.0), "give one rank per adapted layer"),
        (dict(depth=2, ranks=(8, 4), mask_density=1.0), "non-decreasing"),
        (dict(depth=1, ranks=(8,), mask_density=0.0), "mask_density must be in (0, 1]"),
    ],
)
def test_adapter_plan_validation_names_the_fix(kwargs, fix):
    try:
        problems = AdapterPlan(**kwargs).problems(6)
    except ValueError as exc:
        problems = [str(exc)]
    assert any(fix in p for p in problems), problems


_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-5, 3000)
    | st.floats(allow_nan=True)
    | st.sampled_from(["qv", "int8", "ort", ""])
)
_plan_doc = st.dictionaries(
    st.sampled_from(["depth", "ranks", "mask_density", "precision", "targets", "alpha", "zz"]),
    _scalar | st.lists(_scalar, max_size=3),
    max_size=7,
)
_tier_doc = st.dictionaries(st.sampled_from(sorted(_good_tier()) + ["zz"]), _scalar | _plan_doc, max_size=8)


@settings(max_examples=200, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "schema_version": _scalar,
            "num_layers": _scalar,
            "rank_profile": st.lists(_scalar, max_size=7) | _scalar,
            "tiers": st.dictionaries(st.text(max_size=4), _tier_doc, max_size=3) | _scalar,
        }
    )
)
def test_any_document_gives_tiers_or_catalog_error(doc):
    try:
        parse_catalog(doc)
    except CatalogError as exc:
        assert exc.errors
