"""The coordinator: registry, rounds, update intake, streaming aggregation, commit, resume.

It knows nothing of paho: messages come in as ``Inbound`` values and leave through a
``Transport`` (``publish`` + ``ack``). ``server._mqtt`` is the paho transport; tests can drive the
coordinator with a fake one. One thread (the caller of ``handle``/``tick``) owns it and the store,
so processing order = write order and nothing needs a lock.

Durability rule: an update's PUBLISH is acknowledged to the broker only after its bytes are
committed to SQLite; until then the broker keeps it and redelivers it after a crash.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from fedhft.protocol import (
    Ack,
    AckStatus,
    BundleRequest,
    ClientStatus,
    Hello,
    Outcome,
    OutcomeKind,
    ProtocolError,
    Reason,
    ServerState,
    ServerStatus,
    Topics,
    decode,
    decode_update,
    encode,
    payload_budget,
)

from fedhft.manifest import BundleError

from server._bundles import BundleIndex
from server._config import ServerConfig
from server._faults import fault_point
from server._log import event
from server._metrics import append_metrics, repair_metrics, round_metrics
from server._registry import Registry
from server._plan_round import (
    Participant,
    RoundPlan,
    cluster_sizes,
    intake_context,
    pick_clients,
    plan_round,
    state_files,
    task_message,
)
from server._rounds import CloseReason, OpenRound
from server._store import (
    ClientRoundStatus,
    RoundState,
    Store,
    StoredUpdate,
    TaskRecord,
    read_tensors,
    write_tensors,
)
from server._task_ids import other_run
from server._validation import Accepted, Duplicate, Rejected, check_update
from server.strategies import STRATEGIES, Strategy, get_strategy

log = logging.getLogger("fedhft.server")

#: A device that says hello again gets its pending task again at most this often.
RETASK_MIN_INTERVAL_S = 5.0
#: Strategies that aggregate across different backbones (ClientInfo.backbone).
MULTI_BACKBONE = ("heterotune",)


@dataclass(frozen=True)
class Inbound:
    """One received PUBLISH: what ``on_message`` enqueues (no decoding on paho's thread)."""

    topic: str
    payload: bytes
    mid: int = 0
    qos: int = 1
    dup: bool = False
    epoch: int = 0  # which connection delivered it (see MqttTransport.ack)


class Transport(Protocol):
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...
    def ack(self, mid: int, qos: int, epoch: int = 0) -> None: ...
    def serve_bundle(self, client: str, chunks) -> None: ...


class ResumeError(RuntimeError):
    """The run cannot go on consistently (resume mismatch); the message says why and what to do."""


def build_strategy(config: ServerConfig, bundles: BundleIndex) -> Strategy:
    """``get_strategy`` with the bundles' dims, the run seed and (if it takes one) warmup_rounds."""
    cls = STRATEGIES.get(config.strategy)
    opts = cls.fleet_options(bundles.plans, config.strategy_options) if cls else dict(config.strategy_options)
    if cls is not None and "warmup_rounds" in inspect.signature(cls.__init__).parameters:
        opts.setdefault("warmup_rounds", config.warmup_rounds)
    if bundles.multi_backbone:
        if config.strategy not in MULTI_BACKBONE:
            raise BundleError(
                f"the bundles use {len(bundles.backbone_dims)} base models ({', '.join(bundles.backbone_dims)}) but "
                f"strategy {config.strategy!r} aggregates one backbone: export every tier from one base model, or "
                f"use strategy=heterotune (cross-model aggregation)"
            )
        opts["backbone_dims"] = bundles.backbone_dims
    return get_strategy(config.strategy, dims=bundles.dims, seed=config.seed, **opts)


class Coordinator:
    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        bundles: BundleIndex,
        transport: Transport,
        strategy: Strategy | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.config, self.store, self.bundles, self.transport = config, store, bundles, transport
        self.strategy = strategy or build_strategy(config, bundles)
        self.clock = clock
        self.topics = Topics(config.fleet)
        self.registry = Registry(store, bundles, config.tier_mode)
        self.round: OpenRound | None = None
        self.next_round = 0
        self.ready_since: float | None = None
        self._batch_digests: dict[str, str] = {}
        self._deferred: list | None = None  # actions waiting for the current batch's commit
        self._resumed = False  # no round starts before resume() has looked at the store
        store.bind_run(
            {
                "fleet": config.fleet,
                "strategy": config.strategy,
                "seed": config.seed,
                "strategy_options": config.strategy_options,
            }
        )
        self.run_id = store.run_id()  # in every task id: another run's messages never match this run's tasks

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.round is None and self.next_round >= self.config.rounds

    def resume(self) -> None:
        """Load the last committed state; re-open the round in flight (stored updates are re-fed
        to a fresh aggregator one at a time, only clients without a stored update are re-tasked)."""
        repair_metrics(self.store)
        point = self.store.resume_point()
        if point.last_committed is not None:
            rec = point.last_committed
            tensors, meta = read_tensors(self.store.path(rec.strategy_file))
            self.strategy.load_state_dict(tensors, meta)
            event(log, logging.INFO, "resumed", committed_round=rec.idx, strategy=self.strategy.name)
        self.next_round = point.next_round
        if point.in_flight is not None and point.next_round < self.config.rounds:
            self._reopen(point.in_flight.idx, point.in_flight.salt, point.tasks)
        self._resumed = True
        self.publish_server_status(ServerState.RUNNING)

    def publish_server_status(self, state: ServerState) -> None:
        rnd = self.round.idx if self.round else (self.next_round if self.next_round < self.config.rounds else None)
        msg = ServerStatus(self.config.fleet, state, rnd, self.clock())
        self.transport.publish(self.topics.server_status, encode(msg), qos=1, retain=True)

    # -- intake --------------------------------------------------------------------------------------
    def handle(self, batch: list[Inbound]) -> None:
        """Process a batch of messages in ONE durable transaction (group commit: one fsync for the
        batch); only after the commit are the PUBLISHes acknowledged and the replies sent, then
        the accepted updates are fed to the aggregator."""
        accepted: list[tuple[Inbound, Accepted]] = []
        self._deferred = []
        try:
            with self.store.batch():
                for item in batch:
                    verdict = self._intake(item)
                    if verdict is not None:
                        accepted.append((item, verdict))
                if accepted:
                    r = self.round
                    self.store.store_updates(
                        [
                            StoredUpdate(
                                r.idx,
                                v.update.client,
                                v.update.task_id,
                                v.digest,
                                v.update.encoding,
                                v.update.num_examples,
                                v.update.encoded,
                                v.update.metrics,
                            )
                            for _, v in accepted
                        ],
                        self.clock(),
                    )
        finally:
            deferred, self._deferred, self._batch_digests = self._deferred, None, {}
        if accepted:
            fault_point("intake")
        for action in deferred:  # the commit is on disk: now tell the broker and the devices
            action()
        for item, v in accepted:
            self.transport.ack(item.mid, item.qos, item.epoch)
            self._send_ack(v.update.client, self.round.idx, v.update.task_id, v.digest, AckStatus.STORED)
        for _, v in accepted:
            self._mark(v.update.client, ClientRoundStatus.STORED)
            self._aggregate(v.update.client, v.update.tensors, v.update.num_examples)

    def _intake(self, item: Inbound) -> Accepted | None:
        """One message: an accepted update is returned (stored by the caller), anything else is
        handled here; its PUBACK and replies wait in ``_deferred`` for the batch's commit."""
        try:
            kind, client = self.topics.parse(item.topic)
        except ProtocolError as exc:
            log.warning("ignoring message on %s: %s", item.topic[:200], exc)
            self._ack(item)
            return None
        if kind == "update":
            verdict = self._check(client, item.payload)
            if isinstance(verdict, Accepted):
                self._batch_digests[client] = verdict.digest  # a second copy in this batch is a duplicate
                return verdict
            self._answer(item, verdict)
            return None
        try:
            self._dispatch(kind, client, item)
        except Exception:  # a bug on one message must not crash-loop the server on redelivery
            log.exception("failed to process %s from %s; dropped", kind, client)
        self._ack(item)
        return None

    def _ack(self, item: Inbound) -> None:
        self._later(lambda: self.transport.ack(item.mid, item.qos, item.epoch))

    def _later(self, action) -> None:
        if self._deferred is not None:
            self._deferred.append(action)
        else:
            action()

    def _check(self, client: str, payload: bytes):
        r = self.round
        ctx = intake_context(
            self.config,
            r.idx if r else None,
            bool(r and r.accepting),
            r.expected(self.strategy.dims_for) if r else {},
            self._stored_digest,
            self.store.task_ids,
            self.store.stored_digest,
            run_id=self.run_id,
        )
        return check_update(client, payload, ctx)

    def _stored_digest(self, client: str) -> str | None:
        r = self.round
        if r is None:
            return None
        if client in self._batch_digests:  # accepted earlier in this batch, not yet committed
            return self._batch_digests[client]
        return self.store.stored_digest(r.idx, client)

    def _mark(self, client: str, status: ClientRoundStatus) -> None:
        if self.round is not None and client in self.round.status:
            self.round.status[client] = status

    def _aggregate(self, client: str, tensors, num_examples: int) -> None:
        r = self.round
        t0 = time.perf_counter()
        try:
            r.aggregator.add(r.infos[client], r.assignments[client], tensors, float(max(1, num_examples)))
        except Exception as exc:
            # Validation should make this impossible; if a strategy still refuses an update, take
            # it out of the round durably, or every restart would re-feed it and fail again.
            log.exception("aggregator refused the stored update of %s", client)
            self.store.unstore(r.idx, client, Reason.AGGREGATION_ERROR, f"{type(exc).__name__}: {exc}", self.clock())
            self._mark(client, ClientRoundStatus.REJECTED)
            return
        finally:
            r.agg_seconds += time.perf_counter() - t0
        r.aggregated += 1

    def _answer(self, item: Inbound, verdict) -> None:
        """A duplicate or a rejection: record, acknowledge the PUBLISH, tell the device."""
        if isinstance(verdict, Duplicate):
            u = verdict.update
            self._ack(item)
            self._send_ack(u.client, u.round, u.task_id, verdict.digest, AckStatus.DUPLICATE)
            return
        assert isinstance(verdict, Rejected)
        own_round = self.round is not None and verdict.round == self.round.idx
        self.store.record_rejection(
            verdict.round,
            verdict.client,
            verdict.task_id,
            verdict.reason,
            verdict.rejection.detail,
            verdict.digest,
            verdict.nbytes,
            self.clock(),
            final=verdict.final and own_round,
        )
        if verdict.final and own_round:
            self._mark(verdict.client, ClientRoundStatus.REJECTED)
        event(
            log,
            logging.WARNING,
            "update_rejected",
            client=verdict.client,
            round=verdict.round,
            reason=verdict.reason,
            bytes=verdict.nbytes,
            detail=verdict.rejection.detail[:200],
        )
        self._ack(item)
        self._send_ack(
            verdict.client,
            verdict.round or 0,
            verdict.task_id or "none",
            verdict.digest,
            AckStatus.REJECTED,
            f"{verdict.reason}: {verdict.rejection.detail}"[:1000],
        )

    def _send_ack(self, client: str, rnd: int, task_id: str, digest: str, status: AckStatus, reason: str = "") -> None:
        msg = Ack(self.config.fleet, client, rnd, task_id, digest, status, reason)
        self._publish(self.topics.ack(client), msg)

    def _publish(self, topic: str, msg, retain: bool = False) -> int:
        """Encode with the broker's packet bound (an oversize QoS 1 message would loop forever)."""
        payload = encode(msg, max_size=payload_budget(self.config.max_packet_size, topic))
        self._later(lambda: self.transport.publish(topic, payload, qos=1, retain=retain))
        return len(payload)

    # -- other messages ------------------------------------------------------------------------------
    def _dispatch(self, kind: str, client: str, item: Inbound) -> None:
        expect = {"hello": Hello, "status": ClientStatus, "outcome": Outcome, "bundle_req": BundleRequest}[kind]
        try:
            msg = decode(item.payload, expect=expect, max_size=self.config.max_packet_size)
        except ProtocolError as exc:
            log.warning("undecodable %s from %s: %s", kind, client, exc)
            return
        if msg.fleet != self.config.fleet or msg.client != client:
            log.warning("%s on %s's topic claims fleet %s client %s: ignored", kind, client, msg.fleet, msg.client)
            return
        now = self.clock()
        if isinstance(msg, Hello):
            self.registry.hello(msg, now)
            self._retask_if_pending(client)
        elif isinstance(msg, ClientStatus):
            self.registry.status(msg, now)
        elif isinstance(msg, Outcome):
            self._outcome(msg, now)
        else:
            self._bundle_request(msg)

    def _retask_if_pending(self, client: str) -> None:
        """A device that (re)joins while it still owes this round an update gets its task again
        (devices dedupe tasks by id)."""
        r = self.round
        if r is None or not r.accepting or r.status.get(client) != ClientRoundStatus.TASKED:
            return
        if self.clock() - r.task_sent.get(client, float("-inf")) >= RETASK_MIN_INTERVAL_S:
            self._publish_task(client)  # rate-limited: a hello storm must not become a task storm

    def _outcome(self, msg: Outcome, now: float) -> None:
        r = self.round
        task = r.tasks.get(msg.client) if r else None
        if r is None or msg.round != r.idx or task is None or task.task_id != msg.task_id:
            stale = other_run(msg.task_id, self.run_id)
            if stale is not None:  # another run's: recorded like a rejected update (the caller acks it)
                self.store.record_rejection(msg.round, msg.client, msg.task_id, Reason.STALE_RUN, stale, None, 0, now)
            log.info(
                "outcome %s from %s for round %s task %s is stale: ignored",
                msg.kind,
                msg.client,
                msg.round,
                msg.task_id,
            )
            return
        if self.store.record_outcome(r.idx, msg.client, msg.kind, msg.reason, msg.metrics, now):
            self._mark(msg.client, ClientRoundStatus.OUTCOME)
            event(log, logging.INFO, "outcome", client=msg.client, round=r.idx, kind=msg.kind, reason=msg.reason[:200])

    def _bundle_request(self, msg: BundleRequest) -> None:
        from fedhft.protocol import chunk_size_for

        topic = self.topics.bundle(msg.client)
        size = min(self.config.chunk_size, chunk_size_for(self.config.max_packet_size, topic))
        if msg.bundle_id not in self.bundles.by_id:
            log.warning("client %s asked for unknown bundle %s", msg.client, msg.bundle_id)
            return
        chunks = self.bundles.chunks(msg.bundle_id, self.config.fleet, size, msg.files, msg.chunks)
        self.transport.serve_bundle(msg.client, chunks)
        if self.round is not None:
            info = self.bundles.by_id[msg.bundle_id]
            files = msg.files if msg.files is not None else list(info.files())
            self.round.bytes_down += sum(info.files().get(f, ("", 0))[1] for f in files)

    # -- rounds --------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Start, close and commit rounds as time and intake allow. Call often (each loop turn)."""
        now = self.clock()
        if not self._resumed:
            return
        if self.round is None:
            if self.next_round < self.config.rounds:
                self._maybe_start(now)
            return
        why = self.round.should_close(now, self.config.quorum)
        if why is not None:
            self._close_and_commit(why)

    def _maybe_start(self, now: float) -> None:
        eligible = self.registry.eligible(self.config.battery_threshold)
        if len(eligible) < self.config.min_clients:
            self.ready_since = None
            return
        if self.ready_since is None:
            self.ready_since = now
        if now - self.ready_since < self.config.start_grace_s:
            return
        idx = self.next_round
        picked, salt = pick_clients(eligible, idx, self.config)
        self._open(
            plan_round(
                self.strategy,
                self.bundles,
                idx,
                salt,
                [Participant(c.client, c.tier, c.backend) for c in picked],
                self.run_id,
            ),
            now,
        )

    def _open(self, plan: RoundPlan, now: float, existing: dict[str, TaskRecord] | None = None) -> None:
        """Persist the configured round (unless ``existing``), publish its tasks."""
        idx = plan.idx
        if existing is not None:
            for cid, t in plan.tasks.items():
                if existing[cid].assignment_digest != t.assignment_digest:
                    raise ResumeError(
                        f"round {idx}: strategy {self.strategy.name} rebuilt a different assignment for {cid} than "
                        "the one stored before the restart (the strategy is not deterministic): start a new "
                        "--state dir"
                    )
        deadline = now + self.config.round_deadline_s
        if existing is None:
            self.store.create_round(idx, plan.salt, deadline, list(plan.tasks.values()), now)
        status = {
            cid: (existing[cid].status if existing is not None else ClientRoundStatus.TASKED) for cid in plan.tasks
        }
        self.round = OpenRound(
            idx,
            plan.salt,
            now,
            deadline,
            plan.infos,
            plan.assignments,
            plan.tasks,
            self.strategy.aggregator(idx),
            status=status,
        )
        self._refeed_stored(idx)
        self.store.set_round_state(idx, RoundState.OPEN, deadline=deadline)
        fault_point("before_tasks")
        for cid, st in sorted(self.round.status.items()):
            if st == ClientRoundStatus.TASKED:
                self._publish_task(cid)
        fault_point("after_publish", settle_s=1.0)
        tasked = self.round.count(ClientRoundStatus.TASKED)
        event(
            log,
            logging.INFO,
            "round_open",
            round=idx,
            clients=len(plan.tasks),
            tasked=tasked,
            already_answered=len(plan.tasks) - tasked,
            deadline_s=self.config.round_deadline_s,
        )
        self.publish_server_status(ServerState.RUNNING)

    def _refeed_stored(self, idx: int) -> None:
        """Stream the round's stored updates (one decoded at a time) into the fresh aggregator."""
        for u in self.store.iter_updates(idx):
            if u.client in self.round.assignments:
                self._aggregate(u.client, decode_update(u.payload, u.encoding), u.num_examples)

    def _reopen(self, idx: int, salt: int, tasks: list[TaskRecord]) -> None:
        participants = []
        for t in tasks:
            entry = self.registry.clients.get(t.client)
            participants.append(Participant(t.client, entry.tier if entry and entry.tier else t.tier, t.backend))
        self._open(
            plan_round(self.strategy, self.bundles, idx, salt, participants, self.run_id),
            self.clock(),
            existing={t.client: t for t in tasks},
        )

    def _publish_task(self, client: str) -> None:
        r = self.round
        try:
            plan = RoundPlan(r.idx, r.salt, r.infos, r.assignments, r.tasks)
            task = task_message(plan, client, self.bundles, self.config, r.deadline)
        except BundleError as exc:
            self._task_failed(client, str(exc))
            return
        try:
            r.bytes_down += self._publish(self.topics.task(client), task)
            r.task_sent[client] = self.clock()
        except ProtocolError as exc:  # too large for the broker: a typed failure of this client only
            self._task_failed(client, str(exc))

    def _task_failed(self, client: str, why: str) -> None:
        event(log, logging.ERROR, "task_failed", client=client, round=self.round.idx, reason=why[:300])
        self.store.record_outcome(
            self.round.idx, client, OutcomeKind.ERROR, f"server could not send the task: {why}", {}, self.clock()
        )
        self._mark(client, ClientRoundStatus.OUTCOME)

    def _close_and_commit(self, why: CloseReason) -> None:
        r = self.round
        now = self.clock()
        r.accepting = False
        dropped = self.store.mark_dropped(r.idx, now)
        self.store.set_round_state(r.idx, RoundState.CLOSED, closed=now)
        t0 = time.perf_counter()
        state = r.aggregator.finish()
        fault_point("aggregate")
        files = self._write_states(r.idx, state)
        self.store.set_round_state(r.idx, RoundState.AGGREGATED)
        agg_s = r.agg_seconds + time.perf_counter() - t0
        extra = {
            "strategy": self.strategy.name,
            "closed_by": why,
            "round_s": round(now - r.started, 4),
            "aggregation_s": round(agg_s, 4),
            "bytes_down": r.bytes_down,
            "cluster_sizes": cluster_sizes(r.assignments),
        }
        metrics = round_metrics(self.store, r.idx, extra)
        self.store.commit_round(r.idx, files, metrics, self.clock())
        append_metrics(self.store.dir, metrics)
        event(
            log,
            logging.INFO,
            "round_committed",
            round=r.idx,
            closed_by=why,
            stored=metrics["stored"],
            dropped=dropped,
            rejections=metrics["rejections"],
            outcomes=metrics["outcomes"],
            round_s=metrics["round_s"],
            aggregation_s=metrics["aggregation_s"],
        )
        self.round, self.next_round, self.ready_since = None, r.idx + 1, None
        self.publish_server_status(ServerState.FINISHED if self.finished else ServerState.RUNNING)

    def _write_states(self, idx: int, state) -> dict:
        """Strategy, global and cluster states, each atomically, before the commit names them."""
        files = {"clusters": None}
        for kind, (tensors, meta) in state_files(self.strategy, idx, state).items():
            files[kind] = write_tensors(self.store.state_path(kind, idx), tensors, meta)
            if kind == "strategy":
                fault_point("write_state")
        return files
