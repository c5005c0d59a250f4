"""LEGEND (Liu et al. 2024) aggregation: each device adapts the top ``depth`` layers with its own
rank distribution (its tier's plan, chosen by the planner in ``devices``); the server averages
each layer's factors over the devices that trained that layer. Within a layer, differing ranks
are zero-padded as in HetLoRA (with LEGEND's shared rank profile a layer has one rank on every
device, so the padding rarely matters)."""

from __future__ import annotations

from server.strategies._factor import FactorStrategy


class Legend(FactorStrategy):
    name = "legend"
    count_padding = True
    pad_missing_layers = False
