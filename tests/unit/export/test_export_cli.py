"""`fedhft export`: comma lists of tiers and backends, and clean errors (exit 2, no traceback) for a
bad request, checked before any bundle is compiled."""

from __future__ import annotations

import pytest

from fedhft.cli import main


@pytest.fixture
def exported(monkeypatch):
    """The (tiers, backends) that `fedhft export` would compile, instead of compiling them."""
    import export._api

    calls = []

    def fake_export_all(model, num_labels, tiers, backends, out, progress=print):
        calls.append((list(tiers), list(backends)))
        return []

    monkeypatch.setattr(export._api, "export_all", fake_export_all)
    monkeypatch.setattr(export._api, "backend_compiler", lambda backend: None)  # no runtime imports
    return calls


@pytest.mark.parametrize(
    "tier, backend, tiers, backends",
    [
        ("android-low,android-mid", "torch,ort", ["android-low", "android-mid"], ["torch", "ort"]),
        ("rpi5", "all", ["rpi5"], ["torch", "ort", "executorch"]),
        (
            "all",
            " ort , torch ",
            ["android-low", "android-mid", "rpi5", "android-high", "jetson-orin-nano"],
            ["ort", "torch"],
        ),
    ],
)
def test_tier_and_backend_take_comma_lists_and_all(tmp_path, exported, tier, backend, tiers, backends):
    assert (
        main(["export", "--model", "tiny:layers=6", "--tier", tier, "--backend", backend, "--out", str(tmp_path)]) == 0
    )
    assert exported == [(tiers, backends)]


def test_unknown_names_are_refused_naming_the_known_ones(tmp_path, exported, capsys):
    assert (
        main(
            [
                "export",
                "--model",
                "tiny:layers=6",
                "--tier",
                "rpi5,pixel9",
                "--backend",
                "torch,tflite",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("fedhft export: ") and "Traceback" not in err
    assert "unknown tier 'pixel9'; use one of android-low, android-mid, rpi5, android-high, jetson-orin-nano" in err
    assert "unknown backend 'tflite'; use one of torch, ort, executorch" in err
    assert not exported


def test_plans_deeper_than_the_model_name_every_tier_and_the_fix(tmp_path, capsys):
    """The catalog is sized for 6-layer MiniLM; a 2-layer model fits only the shallow tiers. Today this
    exported the tiers that fit, then died with a ValueError traceback at the first that did not."""
    rc = main(["export", "--model", "tiny:layers=2", "--tier", "all", "--backend", "torch", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    assert "rpi5 (depth 3), android-high (depth 4), jetson-orin-nano (depth 6)" in err
    assert "--model tiny:layers=6" in err and "--tier android-low,android-mid" in err
    assert not any(tmp_path.iterdir())  # nothing was exported


def test_a_bad_model_is_a_clean_error(tmp_path, capsys):
    assert main(["export", "--model", str(tmp_path / "nowhere"), "--backend", "torch", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "neither 'minilm', 'tiny' nor an existing directory" in err and "Traceback" not in err


def test_verify_without_bundles_is_a_clean_error(tmp_path, capsys):
    assert main(["export", "verify", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedhft export verify: no bundles") and "Traceback" not in err
