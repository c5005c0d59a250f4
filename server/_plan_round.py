"""A round from selection to tasks, and its update intake, with no I/O.

The MQTT coordinator and the in-process engine of ``fedhft simulate`` both run rounds through
these functions, so the two engines select the same clients, build the same assignments, task
ids and ``Task`` messages, and check updates against the same expectations:

* ``pick_clients``: which eligible clients a round takes, and the round's salt, both drawn from
  one generator seeded by (run seed, round);
* ``plan_round``: the strategy's assignments for those clients and their task records;
* ``task_message``: the ``Task`` a client is sent (its plan's bundle for its backend);
* ``intake_context``: what ``check_update`` needs to judge an update of the round.

Nothing here touches the store, the broker or the clock: callers pass what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from fedhft.protocol import Hyper, Task

from server._bundles import BundleIndex
from server._config import ServerConfig
from server._registry import ClientEntry
from server._rounds import assignment_digest, select_clients, task_id_for
from server._store import TaskRecord
from server._validation import Expected, IntakeContext
from server.strategies import ClientAssignment, ClientInfo, Strategy


@dataclass(frozen=True)
class Participant:
    """A selected client as a round plans it: its device tier and the backend it trains with."""

    client: str
    tier: str
    backend: str


@dataclass
class RoundPlan:
    """Round ``idx`` configured: per selected client its info, assignment and task record."""

    idx: int
    salt: int
    infos: dict[str, ClientInfo]
    assignments: dict[str, ClientAssignment]
    tasks: dict[str, TaskRecord]

    def expected(self, dims_for: Callable[[ClientInfo], object]) -> dict[str, Expected]:
        """What each client's update must look like (``check_update``'s expectations)."""
        return {
            cid: Expected(
                cid,
                self.idx,
                t.task_id,
                self.assignments[cid].plan,
                dims_for(self.infos[cid]),
                self.assignments[cid].mask,
            )
            for cid, t in self.tasks.items()
        }


def pick_clients(eligible: Sequence[ClientEntry], idx: int, config: ServerConfig) -> tuple[list[ClientEntry], int]:
    """(the clients round ``idx`` selects, the round's salt). Deterministic in (seed, round, the
    eligible set): a restarted server, or another engine, draws the same."""
    rng = np.random.default_rng([config.seed, idx])
    picked = select_clients(list(eligible), config.select_count(len(eligible)), rng)
    return picked, int(rng.integers(2**62))


def plan_round(
    strategy: Strategy, bundles: BundleIndex, idx: int, salt: int, participants: Sequence[Participant], run_id: str = ""
) -> RoundPlan:
    """Configure the strategy for round ``idx`` (its generator seeded by ``salt``) and name each
    task: the task id depends only on (run, round, client, assignment digest)."""
    infos = {p.client: bundles.client_info(p.client, p.tier) for p in participants}
    backends = {p.client: p.backend for p in participants}
    assignments = strategy.configure(idx, list(infos.values()), np.random.default_rng(salt))
    tasks = {}
    for cid, a in assignments.items():
        digest = assignment_digest(a)
        tasks[cid] = TaskRecord(idx, cid, task_id_for(idx, cid, digest, run_id), infos[cid].tier, backends[cid], digest)
    return RoundPlan(idx, salt, infos, assignments, tasks)


def round_lr(config: ServerConfig, idx: int) -> float:
    """The learning rate of round ``idx``'s tasks: ``lr`` decayed per round by ``lr_decay``."""
    return config.lr * config.lr_decay**idx


def task_message(plan: RoundPlan, client: str, bundles: BundleIndex, config: ServerConfig, deadline: float) -> Task:
    """The ``Task`` for ``client``: its assigned plan's bundle for its backend, the run's
    hyper-parameters and its start state and mask. Raises ``BundleError`` when no bundle
    compiles the assigned plan for that backend."""
    t, a = plan.tasks[client], plan.assignments[client]
    bundle = bundles.find(a.plan, t.backend, plan.infos[client].tier)
    hyper = Hyper(
        round_lr(config, plan.idx),
        config.local_steps,
        config.local_epochs,
        a.plan.batch_size,
        a.plan.max_seq_len,
        config.update_encoding,
    )
    return Task(
        config.fleet,
        client,
        plan.idx,
        t.task_id,
        t.tier,
        t.backend,
        bundle.bundle_id,
        bundle.sha256,
        a.plan.to_dict(),
        hyper,
        deadline,
        a.start_state,
        a.mask,
    )


def intake_context(
    config: ServerConfig,
    idx: int | None,
    accepting: bool,
    expected: Mapping[str, Expected],
    stored_digest: Callable[[str], str | None],
    known_tasks: Callable[[str], Mapping[str, int]] = lambda client: {},
    stored_in_round: Callable[[int, str], str | None] | None = None,
    run_id: str | None = None,
) -> IntakeContext:
    """``check_update``'s view of the round: the run's fleet, norm bound, packet bound and update
    encoding, and the caller's record of what is stored (``stored_digest(client)`` for this round)."""
    return IntakeContext(
        fleet=config.fleet,
        round=idx,
        accepting=accepting,
        expected=expected,
        stored_digest=stored_digest,
        known_tasks=known_tasks,
        norm_bound=config.norm_bound,
        max_payload=config.max_packet_size,
        stored_in_round=stored_in_round,
        encoding=config.update_encoding,
        run_id=run_id,
    )


def cluster_sizes(assignments: Mapping[str, ClientAssignment]) -> list[int] | None:
    """Clients per cluster (each counted in its strongest cluster); None for unclustered strategies."""
    members = [a.membership for a in assignments.values() if a.membership is not None]
    if not members:
        return None
    counts = np.bincount([int(np.argmax(m)) for m in members], minlength=len(members[0]))
    return [int(c) for c in counts]


def state_files(strategy: Strategy, idx: int, state) -> dict[str, tuple[dict[str, np.ndarray], dict | None]]:
    """What a committed round writes, by kind (``strategy``, ``global``, and ``clusters`` for a
    clustered strategy), in write order: (tensors, metadata) each, for ``write_tensors``."""
    tensors, meta = strategy.state_dict()
    out = {
        "strategy": (tensors, meta),
        "global": (state.global_state, {"round": idx, "strategy": strategy.name, "dims": state.dims.to_dict()}),
    }
    if state.cluster_states:
        flat = {f"cluster{k}/{n}": v for k, c in enumerate(state.cluster_states) for n, v in c.items()}
        if state.cluster_weights is not None:
            flat["cluster_weights"] = np.asarray(state.cluster_weights, dtype=np.float64)
        out["clusters"] = (flat, {"round": idx})
    return out
