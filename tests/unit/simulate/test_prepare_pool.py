"""The tune and eval halves of a training file: disjoint, fixed across seeds, together the whole."""

from __future__ import annotations

from simulate import Example
from simulate._prepare import pool_of


def test_halves_are_disjoint_fixed_and_cover_the_file():
    examples = [Example(f"t{i}", i % 2) for i in range(101)]
    tune, evals = pool_of(examples, "tune"), pool_of(examples, "eval")
    assert len(tune) == 50 and len(evals) == 51
    assert not {e.text for e in tune} & {e.text for e in evals}
    assert sorted(e.text for e in tune + evals) == sorted(e.text for e in examples)
    assert pool_of(examples, "tune") == tune  # the same halves every time (no run seed involved)
    assert pool_of(examples, "all") == examples
