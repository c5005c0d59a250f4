"""The sweep report's line on the hosts its rows ran on (the host record itself: ``simulate.host_info``)."""

from __future__ import annotations

from simulate import host_label


def hosts_note(rows: list[dict]) -> str:
    """One line on the hosts the rows ran on: how many rows each distinct host made, and how many rows
    predate the host record. Empty when there are no rows."""
    if not rows:
        return ""
    counts: dict[str, int] = {}
    for row in rows:
        label = host_label(row["host"]) if row.get("host") else "not recorded (made before 2026-12-07, fourth session)"
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{n} on {label}" for label, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    return (
        "Hosts of the rows (torch and OpenBLAS pick kernels per CPU, so rows of different hosts can differ in "
        f"their last bits): {'; '.join(parts)}."
    )
