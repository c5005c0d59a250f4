"""HeteroFL-style nested sub-adapters (Diao et al. 2021, applied to LoRA rank): a client of rank r
trains the first r components of each site (the top-left sub-block of the global factors); every
element is averaged over the clients whose sub-block covers it, so unlike HetLoRA a low-rank
client does not pull the high-rank components towards 0."""

from __future__ import annotations

from server.strategies._factor import FactorStrategy


class HeteroFL(FactorStrategy):
    name = "heterofl"
    count_padding = False
