"""The edge agent: join, await a task, fetch the bundle, check budgets, train, upload, await the ack.

State machine (one task at a time, driven by one main loop over the MQTT inbox)::

    join (Hello + profile) -> idle -> task -> fetching bundle -> budgets -> training -> encode
        -> persist update -> uploading -> Ack(stored|duplicate|rejected) -> idle

Restart safety (``--state DIR``, see ``_checkpoint``): a task is persisted before it is acked to
the broker; an update is persisted before it is published; a re-upload re-sends the persisted
bytes, so the server can dedupe on (client, round, digest); a task for a round that already has a
result is answered from the checkpoint. A kill at any instant therefore never produces two
different uploads for one round and never loses an acknowledged result.
"""

from __future__ import annotations

import collections
import gc
import importlib.util
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path

from devices import AdapterPlan
from fedhft import __version__
from fedhft.config import ConfigError
from fedhft.manifest import BundleError, load_manifest
from fedhft.protocol import (
    Ack,
    AckStatus,
    ClientStatus,
    Hello,
    Outcome,
    OutcomeKind,
    PayloadTooLarge,
    ProtocolError,
    ServerStatus,
    Task,
    TopicError,
    Topics,
    Update,
    decode,
    encode,
)
from edge_runtime._budget import (
    DeadlineMissed,
    LowBattery,
    OverBudget,
    SimulatedBattery,
    SystemBattery,
    check_battery,
    memory_model,
    host_baseline_mb,
    open_estimate_mb,
    process_rss_mb,
    rss_mb,
    set_host_baseline,
    shape_limits,
)
from edge_runtime._bundles import BundleFetcher, BundleFetchError
from edge_runtime._checkpoint import RoundRecord, RoundStatus, StateStore, atomic_write_bytes
from edge_runtime._config import AgentConfig
from edge_runtime._data import DataError, DataOptions, DataSource, load_examples
from edge_runtime._log import EventLog
from edge_runtime._mqtt import CONNECTED, DISCONNECTED, Inbound, MqttLink, MqttOptions, PublishFailed
from edge_runtime._trainer import RoundResult, Stopped, TrainBudget, train_round

_RUNTIME_MODULES = {"torch": "torch", "ort": "onnxruntime", "executorch": "executorch"}


def available_backends(preference: str = "auto") -> list[str]:
    """Backends whose runtime is installed here (checked without importing them)."""
    if preference != "auto":
        return [preference]
    return [b for b in ("executorch", "ort", "torch") if importlib.util.find_spec(_RUNTIME_MODULES[b]) is not None]


def tier_spec(name: str | None):
    """The catalog's TierSpec for ``name`` (None when unknown or when no catalog is installed)."""
    if not name or name == "auto":
        return None
    try:
        from devices import load_catalog

        return load_catalog().get(name)
    except (ImportError, ValueError, OSError):  # the catalog is optional for a device
        return None


class EdgeAgent(BundleFetcher):
    """One device. ``run()`` blocks until SIGTERM/SIGINT (or ``max_rounds``) and returns an exit code."""

    def __init__(self, cfg: AgentConfig, log: EventLog | None = None):
        problems = cfg.problems()
        if problems:
            raise ConfigError("invalid edge settings:\n" + "\n".join(f"  - {p}" for p in problems))
        self.cfg = cfg
        self.log = log or EventLog(cfg.client_id, fmt=cfg.log_format)
        self.stop_event = threading.Event()
        self._install_signals()  # before the slow start-up (profiling, data) so SIGTERM is clean from here on
        self.topics = Topics(cfg.fleet)
        self.client = cfg.client_id
        self.store = StateStore(cfg.state, cfg.client_id, cfg.fleet)
        self.options = DataOptions(
            cfg.text_column, cfg.text_pair_column, cfg.label_column, cfg.label_map_dict(), cfg.val_fraction
        )
        self.source = DataSource(load_examples(cfg.data, self.options), self.options)  # fail fast on bad data
        self.battery = self._make_battery()
        self.link: MqttLink | None = None
        self.rounds_finished = 0
        self._deferred: collections.deque[Inbound] = collections.deque()
        # Items acked while they are being handled, held (not their id()s, which a later message can
        # reuse once an item is freed) so each message is acked exactly once.
        self._acked: list[Inbound] = []
        self._last_sent: dict[int, float] = {}
        self._session = self._session_dir = None
        # bundle dir -> the peak a refused round of it reached (measured): the next task of that bundle
        # is refused on this figure before loading it again, not on the estimate that let it load.
        self._refused_peak_mb: dict[Path, float] = {}
        self._resumed = False
        self._server_state: str | None = None
        self._clock_offset = 0.0
        self._state = ("online", None)
        from devices import profile_device, recommend_tier

        self.profile = profile_device()
        self.tier_hint = cfg.tier if cfg.tier != "auto" else self._recommend(recommend_tier)

    def _recommend(self, recommend_tier) -> str | None:
        try:
            return recommend_tier(self.profile)
        except (ValueError, ImportError, OSError) as exc:
            self.log("no_tier", severity="warning", detail=str(exc))
            return None

    def _make_battery(self):
        opts = self.cfg.battery_options()
        if opts is None:
            return SystemBattery()
        return SimulatedBattery.load_or_create(Path(self.cfg.state) / "battery.json", **opts)

    # ------------------------------------------------------------------ budgets of the assigned tier

    def memory_budget_mb(self, tier: str | None = None) -> float:
        if self.cfg.memory_budget_mb:
            return float(self.cfg.memory_budget_mb)
        spec = tier_spec(tier) or tier_spec(self.tier_hint)
        if spec is not None:
            return float(spec.memory_budget_mb)
        return 0.5 * self.profile.available_memory_mb  # leave the rest to the OS and foreground apps

    def battery_threshold(self, tier: str | None = None) -> float:
        if self.cfg.battery_threshold is not None:
            return float(self.cfg.battery_threshold)
        spec = tier_spec(tier) or tier_spec(self.tier_hint)
        return float(spec.battery_threshold) if spec is not None else 20.0

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        self.link = MqttLink(
            self._mqtt_options(),
            self.topics.client_subscriptions(self.client),
            will=(self.topics.status(self.client), self._status_payload("offline")),
            log=self.log,
        )
        self.log(
            "started",
            fleet=self.cfg.fleet,
            broker=self.cfg.broker,
            tier_hint=self.tier_hint,
            backends=available_backends(self.cfg.backend),
            state_dir=str(self.store.dir),
            memory_budget_mb=self.memory_budget_mb(),
            examples=len(self.source.examples),
        )
        self.link.start()
        if not self.link.wait_connected(15.0):
            self.log("mqtt_waiting", severity="warning", detail=self.link.last_failure or "no CONNACK yet; retrying")
        try:
            while not self.stop_event.is_set():
                item = self._next_item(timeout=0.5)
                if item is not None:
                    self._dispatch(item)
                self._retry_uploads()
                if (
                    self.cfg.max_rounds
                    and self.rounds_finished >= self.cfg.max_rounds
                    and not self.store.pending_uploads()
                ):
                    self.log("max_rounds_reached", rounds=self.rounds_finished)
                    break
        finally:
            self._shutdown()
        return 0

    def _mqtt_options(self) -> MqttOptions:
        c = self.cfg
        return MqttOptions(
            c.broker,
            c.client_id,
            c.username,
            c.password,
            c.tls_ca,
            c.tls_cert,
            c.tls_key,
            c.keepalive,
            c.session_expiry_s,
            c.max_packet_size,
            protocol=c.mqtt_protocol,
        )

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # embedded use (tests): the caller sets stop_event

        def handler(signum, frame):
            self.log("signal", signal=signal.Signals(signum).name)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _shutdown(self) -> None:
        self.log("stopping", rounds=self.rounds_finished)
        if self.link is not None:
            self.link.stop(final=(self.topics.status(self.client), self._status_payload("offline")))
        self.battery.save()
        self.log("stopped")

    def _next_item(self, timeout: float) -> Inbound | None:
        if self._deferred:
            return self._deferred.popleft()
        try:
            return self.link.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def _ack(self, item: Inbound) -> None:
        if not any(seen is item for seen in self._acked):
            self._acked.append(item)
            self.link.ack(item)

    def _dispatch(self, item: Inbound) -> None:
        if item.topic == CONNECTED:
            return self._on_connected(item.session_present)
        if item.topic == DISCONNECTED:
            return self.log("mqtt_disconnected", severity="warning", reason=item.payload.decode(errors="replace"))
        try:
            kind, _ = self.topics.parse(item.topic)
            handler = {"task": self._on_task, "ack": self._on_ack, "server_status": self._on_server_status}.get(kind)
            if handler is not None:
                handler(item)  # bundle chunks outside a download are late duplicates: dropped quietly
        except (ProtocolError, TopicError) as exc:
            self.log("bad_message", severity="warning", topic=item.topic, error=str(exc)[:300])
        except Exception as exc:  # a bug in one handler must not end a week-long run; it is logged in full
            self.log(
                "handler_failed",
                severity="error",
                topic=item.topic,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(limit=8),
            )
        finally:
            self._ack(item)
            self._acked = [seen for seen in self._acked if seen is not item]

    # ------------------------------------------------------------------ messages out

    def _status_payload(self, state: str, round_: int | None = None, detail: str = "") -> bytes:
        level, _ = self.battery.read()
        return encode(
            ClientStatus(
                self.cfg.fleet,
                self.client,
                state,
                round_,
                detail[:1024],
                battery_percent=None if level is None else round(level, 2),
                rss_mb=round(rss_mb(), 1),
                ts=time.time(),
            )
        )

    def _set_state(self, state: str, round_: int | None = None, detail: str = "") -> None:
        if (state, round_) == self._state and not detail:
            return
        self._state = (state, round_)
        self.log("state", state=state, round=round_, detail=detail or None)
        self._publish(self.topics.status(self.client), self._status_payload(state, round_, detail), retain=True)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        try:
            return self.link.publish(topic, payload, qos=1, retain=retain)
        except (PayloadTooLarge, PublishFailed) as exc:
            self.log("publish_refused", severity="error", topic=topic, error=str(exc))
            return None

    def _on_connected(self, session_present: bool) -> None:
        self.log("mqtt_connected", session_present=session_present, max_packet_size=self.link.max_packet_size)
        self._send_hello()
        self._publish(self.topics.status(self.client), self._status_payload(*self._state), retain=True)
        if not self._resumed:
            self._resumed = True
            self._resume()

    def _track_clock(self, server_ts: float) -> None:
        """Round deadlines are server timestamps: a device whose clock is off (a Pi without RTC before
        NTP syncs) would stop too early or too late. A live (not retained) server status tells the
        offset, up to the delivery latency."""
        offset = server_ts - time.time()
        if abs(offset - self._clock_offset) > 1.0:
            self.log("clock_offset", severity="warning" if abs(offset) > 5 else "info", offset_s=round(offset, 2))
        self._clock_offset = offset if abs(offset) > 1.0 else 0.0  # below a second it is latency, not skew

    def _send_hello(self) -> None:
        hello = Hello(
            self.cfg.fleet,
            self.client,
            self.profile.to_dict(),
            available_backends(self.cfg.backend),
            self.tier_hint,
            f"fedhft-edge/{__version__}",
        )
        self._publish(self.topics.hello(self.client), encode(hello))

    def _on_server_status(self, item: Inbound) -> None:
        status = decode(item.payload, expect=ServerStatus)
        previous, self._server_state = self._server_state, status.state
        self.log("server_status", state=status.state, round=status.round)
        if not item.retain and status.ts > 0:
            self._track_clock(status.ts)
        # A server that (re)starts may have missed our hello (it had no subscription yet, or lost
        # its session): say hello again whenever it comes (back) up. A hello sent moments before
        # is no reason to skip: measured here, it is exactly the one a starting server misses.
        if status.state == "running" and previous != "running":
            self._send_hello()

    # ------------------------------------------------------------------ restart

    def _resume(self) -> None:
        """Finish what a previous run left: re-send persisted updates, retrain an unfinished task."""
        for rec in self.store.pending_uploads():
            self.log("resume_upload", round=rec.round, digest=rec.digest[:16])
            self._set_state("uploading", rec.round)
            self._send_update(rec)
        payload = self.store.load_task()
        if payload is None:
            if not self.store.pending_uploads():
                self._set_state("idle")
            return
        try:
            task = decode(payload, expect=Task)
        except ProtocolError as exc:
            self.log("resume_task_unreadable", severity="warning", error=str(exc))
            return self.store.clear_task()
        rec = self.store.get(task.round)
        if rec is not None and rec.status != RoundStatus.TRAINING:
            return self.store.clear_task()
        self.log("resume_task", round=task.round, task_id=task.task_id)
        self._run_task(task)

    # ------------------------------------------------------------------ tasks

    def _on_task(self, item: Inbound) -> None:
        task = decode(item.payload, expect=Task)
        if task.client != self.client or task.fleet != self.cfg.fleet:
            self.log("task_refused", severity="warning", why=f"addressed to {task.fleet}/{task.client}")
            return
        rec = self.store.get(task.round)
        # Only the SAME task is answered from the checkpoint: a new server run re-uses round numbers
        # with new task ids, and must get this run's training, not an earlier run's update.
        if rec is not None and rec.status != RoundStatus.TRAINING and rec.task_id == task.task_id:
            self._ack(item)
            self.log("task_replayed", round=task.round, status=rec.status, task_id=task.task_id)
            return self._answer_from_checkpoint(rec)
        self.store.save_task(item.payload)  # persisted BEFORE the broker forgets it (manual ack)
        self.store.record(RoundRecord(task.round, task.task_id, RoundStatus.TRAINING))
        self._ack(item)
        self.log(
            "task",
            round=task.round,
            task_id=task.task_id,
            tier=task.tier,
            backend=task.backend,
            steps=task.hyper.local_steps,
            epochs=task.hyper.epochs,
            lr=task.hyper.lr,
            deadline_in_s=round(task.deadline_ts - self._clock_offset - time.time(), 1),
        )
        self._run_task(task)

    def _answer_from_checkpoint(self, rec: RoundRecord) -> None:
        """A task for a round that already has a result: re-send the SAME bytes (the server dedupes)."""
        if rec.status in (RoundStatus.UPLOADING, RoundStatus.ACKED):
            self._send_update(rec)
        elif rec.status == RoundStatus.OUTCOME and self.store.outcome_path(rec.round).is_file():
            self._publish(self.topics.outcome(self.client), self.store.outcome_path(rec.round).read_bytes())
        else:
            self.log("task_ignored", round=rec.round, status=rec.status, reason=rec.reason or None)

    def _run_task(self, task: Task) -> None:
        try:
            result = self._attempt(task)
        except (
            BundleFetchError,
            BundleError,
            DataError,
            ProtocolError,
            ValueError,
            RuntimeError,
            OSError,
            ImportError,
            FloatingPointError,
            MemoryError,
        ) as exc:
            self.log(
                "round_error",
                severity="error",
                round=task.round,
                error=f"{type(exc).__name__}: {exc}",
                where=traceback.extract_tb(exc.__traceback__)[-1].name if exc.__traceback__ else None,
            )
            result = exc
        if isinstance(result, Stopped):
            self.log("round_interrupted", round=task.round, steps=result.steps_done)
            return  # task.bin stays: the next start retrains it (nothing was sent)
        if isinstance(result, RoundResult):
            self._finish_update(task, result)
            if not self.stop_event.is_set():
                self._set_state("idle")
            return
        if isinstance(result, OverBudget):
            self._close_session()  # give back what the runtime holds; the next round reopens it
        if not self.stop_event.is_set():
            # Status before the outcome: the outcome may close the round (even end the run), and the
            # server should already know why this device is unavailable (QoS 1 keeps the order).
            self._set_state("low_battery" if isinstance(result, LowBattery) else "idle")
        self._finish_outcome(task, result)

    def _attempt(self, task: Task):
        """Budgets, bundle, session, training: a RoundResult or a typed outcome."""
        threshold = self.battery_threshold(task.tier)
        low = check_battery(self.battery, threshold)
        if low is not None:
            return low
        self._set_state("fetching", task.round)
        bundle = self._ensure_bundle(task)
        if isinstance(bundle, Stopped):
            return bundle
        manifest = load_manifest(bundle, verify_files=False)
        if manifest.plan != AdapterPlan.from_dict(dict(task.plan)):
            raise BundleError(
                f"bundle {bundle} was compiled for plan {manifest.plan.to_dict()}, the task says "
                f"{task.plan}: the server's bundle registry is stale; re-export the tier"
            )
        budget_mb = self.memory_budget_mb(task.tier)
        if self.cfg.memory_accounting == "bundle":
            self._measure_host_baseline(manifest.backend, bundle)
        over = self._precheck_memory(manifest, bundle, budget_mb)
        if over is not None:
            return over
        session = self._open_session(bundle)
        held = rss_mb()
        if held >= self.cfg.memory_margin * budget_mb:
            over = OverBudget(round(held, 1), budget_mb, "open", round(held, 1))
            self._refused_peak_mb[bundle] = over.peak_mb
            self._close_session()
            return over
        labels = self.source.examples.labels
        if labels.size and int(labels.max()) >= manifest.dims.num_labels:
            raise DataError(
                f"{self.cfg.data}: labels go up to {int(labels.max())} but the model has "
                f"{manifest.dims.num_labels} classes: pass label_map=JSON or fix the data"
            )
        self._set_state("training", task.round)
        budget = TrainBudget(
            budget_mb,
            self.cfg.memory_margin,
            self.battery,
            threshold,
            self.cfg.deadline_reserve_s,
            self.stop_event.is_set,
            self.cfg.progress_every,
            self.log,
            self._clock_offset,
        )
        try:
            result = train_round(session, task, self.source, budget)
        finally:
            self.battery.save()
        if isinstance(result, OverBudget) and result.measured:
            self._refused_peak_mb[bundle] = result.peak_mb
        return result

    def _measure_host_baseline(self, backend: str, bundle: Path) -> None:
        """Once, with no bundle loaded: the RSS of this host with the backend's runtime (and every library
        opening ``bundle`` would import) loaded."""
        if host_baseline_mb() > 0 or self._session is not None:
            return
        from bundle_runtime import load_runtime

        load_runtime(backend, bundle)
        gc.collect()
        set_host_baseline(process_rss_mb())
        self.log("memory_baseline", backend=backend, host_baseline_mb=round(host_baseline_mb(), 1), accounting="bundle")

    def _precheck_memory(self, manifest, bundle: Path, budget_mb: float) -> OverBudget | None:
        """Refuse BEFORE loading a bundle that cannot fit (loading it could already exceed the budget)."""
        if self._session_dir == bundle:
            return None
        loaded = _RUNTIME_MODULES[manifest.backend] in sys.modules
        weights = sum(e.size for e in manifest.files.values() if e.role != "tokenizer")
        mm = memory_model(manifest, bundle)
        need = (
            rss_mb()
            + open_estimate_mb(manifest, weights, loaded)
            + mm.optimizer_mb()
            + mm.activations_mb(1, shape_limits(manifest).min_seq)
        )
        need = max(need, self._refused_peak_mb.get(bundle, 0.0))
        if need > self.cfg.memory_margin * budget_mb:
            self.log("over_budget_estimate", need_mb=round(need, 1), budget_mb=budget_mb)
            return OverBudget(round(need, 1), budget_mb, "open", round(rss_mb(), 1))
        return None

    def _open_session(self, bundle: Path):
        if self._session_dir != bundle:
            self._close_session()
            from bundle_runtime import open_session

            started = time.perf_counter()
            self._session = open_session(bundle, threads=self.cfg.threads)
            self._session_dir = bundle
            self.log(
                "session_opened",
                bundle=str(bundle),
                backend=self._session.manifest.backend,
                seconds=round(time.perf_counter() - started, 2),
                rss_mb=round(rss_mb(), 1),
            )
        return self._session

    def _close_session(self) -> None:
        self._session = self._session_dir = None
        gc.collect()

    # ------------------------------------------------------------------ results

    def _finish_update(self, task: Task, result: RoundResult) -> None:
        update = Update(
            self.cfg.fleet,
            self.client,
            task.round,
            task.task_id,
            result.num_examples,
            result.metrics,
            task.hyper.encoding,
            result.update,
        )
        topic = self.topics.update(self.client)
        try:
            payload = encode(update, max_size=self.link.max_payload(topic))
        except PayloadTooLarge as exc:
            return self._finish_outcome(task, exc)
        atomic_write_bytes(self.store.update_path(task.round), payload)  # persisted BEFORE publishing
        rec = RoundRecord(task.round, task.task_id, RoundStatus.UPLOADING, digest=update.digest, metrics=result.metrics)
        self.store.record(rec)
        self.store.clear_task()
        self.log("round_trained", round=task.round, digest=update.digest[:16], bytes=len(payload), **result.metrics)
        self._set_state("uploading", task.round)
        self._send_update(rec)

    def _send_update(self, rec: RoundRecord) -> None:
        path = self.store.update_path(rec.round)
        if not path.is_file():
            self.log("update_missing", severity="error", round=rec.round, path=str(path))
            return
        if self._publish(self.topics.update(self.client), path.read_bytes()) is not None:
            rec.uploads += 1
            self.store.save()
            self._last_sent[rec.round] = time.monotonic()
            self.log("update_sent", round=rec.round, digest=rec.digest[:16], attempt=rec.uploads)

    def _retry_uploads(self) -> None:
        now = time.monotonic()
        for rec in self.store.pending_uploads():
            if now - self._last_sent.get(rec.round, 0.0) >= self.cfg.ack_timeout_s and self.link.connected.is_set():
                self._send_update(rec)

    def _on_ack(self, item: Inbound) -> None:
        """An ack is ours only for the task id AND the digest of a pending upload: a round number
        recurs across server runs, and an identical update (same digest) may answer another task."""
        ack = decode(item.payload, expect=Ack)
        rec = self.store.get(ack.round)
        if rec is None or rec.status != RoundStatus.UPLOADING:
            return self.log(
                "ack_ignored",
                round=ack.round,
                task_id=ack.task_id,
                status=ack.status,
                why="no upload pending for that round",
            )
        if ack.task_id != rec.task_id:
            return self.log(
                "ack_ignored",
                severity="warning",
                round=ack.round,
                task_id=ack.task_id,
                status=ack.status,
                why=f"another task than the pending upload's {rec.task_id}",
            )
        if ack.update_digest != rec.digest:
            return self.log(
                "ack_ignored",
                severity="warning",
                round=ack.round,
                task_id=ack.task_id,
                why="digest differs from the upload",
            )
        stored = ack.status in (AckStatus.STORED, AckStatus.DUPLICATE)
        rec.status = RoundStatus.ACKED if stored else RoundStatus.REJECTED
        rec.reason = ack.reason
        self.store.record(rec)
        self._last_sent.pop(ack.round, None)
        self.rounds_finished += 1
        acked = rec.status == RoundStatus.ACKED
        self.log(
            "round_acked" if acked else "round_rejected",
            severity="info" if acked else "warning",
            round=ack.round,
            ack=ack.status,
            reason=ack.reason or None,
        )
        self._set_state("idle")

    def _finish_outcome(self, task: Task, result) -> None:
        kind, reason, metrics = outcome_of(result)
        outcome = Outcome(self.cfg.fleet, self.client, task.round, task.task_id, kind, reason[:1024], metrics)
        payload = encode(outcome)
        atomic_write_bytes(self.store.outcome_path(task.round), payload)
        self.store.record(
            RoundRecord(task.round, task.task_id, RoundStatus.OUTCOME, kind=kind, reason=reason[:1024], metrics=metrics)
        )
        self.store.clear_task()
        self.rounds_finished += 1
        self.log("round_outcome", severity="warning", round=task.round, kind=kind, reason=reason, **metrics)
        self._publish(self.topics.outcome(self.client), payload)


def outcome_of(result) -> tuple[OutcomeKind, str, dict[str, float]]:
    """(Outcome kind, reason, metrics) of a typed failure or an exception."""
    kinds = {
        OverBudget: OutcomeKind.OVER_BUDGET,
        LowBattery: OutcomeKind.LOW_BATTERY,
        DeadlineMissed: OutcomeKind.DEADLINE,
    }
    for cls, kind in kinds.items():
        if isinstance(result, cls):
            metrics = {
                k: float(v)
                for k, v in asdict(result).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            return kind, result.reason(), metrics
    return OutcomeKind.ERROR, f"{type(result).__name__}: {result}", {}


def run_agent(cfg: AgentConfig) -> int:
    """Run one edge device until stopped (SIGTERM/SIGINT) or ``cfg.max_rounds`` rounds. Returns the exit code."""
    return EdgeAgent(cfg).run()
