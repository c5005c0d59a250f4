"""The in-process engine: a federated run with no broker and no subprocess, for experiments.

Every client trains inside this process through the code the MQTT engine runs:

* server side: the strategy, selection and task planning ``fedhft server`` would use
  (``server.pick_clients``, ``plan_round``, ``task_message``), the same validation of the encoded
  update bytes (``server.check_update``), streaming aggregation, state files and metrics line;
* device side: the task passes through the protocol codec as a device receives it,
  ``edge_runtime.train_round`` trains it under the device's battery and deadline, and the update is
  encoded in the task's encoding, as ``fedhft edge`` does.

One session per bundle and worker thread, shared by its clients (torch sessions also cache the
frozen layers' outputs: ``cache_frozen``, the same bits). By design, memory budgets are off, updates
are taken in client order, and a round closes when every selected client has answered (details:
docs/DESIGN-NOTES.md, section "simulate/_inprocess.py").
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections import Counter
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fedhft.datafile import DataError
from fedhft.manifest import BundleError
from fedhft.protocol import PayloadTooLarge, ProtocolError, Task, Topics, Update, decode, encode, payload_budget
from server import ClientRoundStatus
from simulate._config import SimConfig
from simulate._evaluate import EncodedSet, state_file
from simulate._host import usable_cores

FLEET = "sim"
#: The exceptions ``fedhft edge`` reports as an ``error`` outcome of a task (edge_runtime._agent).
DEVICE_ERRORS = (
    BundleError,
    DataError,
    ProtocolError,
    ValueError,
    RuntimeError,
    OSError,
    ImportError,
    FloatingPointError,
    MemoryError,
)


class EngineError(RuntimeError):
    """The in-process run cannot start or go on; the message says why and what to do."""


@dataclass(frozen=True)
class Device:
    """One simulated device: its tier, training backend and data file (what ``fedhft edge --data``
    reads). ``eval_data``: an explicit local evaluation set; None = the device's own validation
    split of ``data``, as ``fedhft edge`` makes it."""

    client: str
    tier: str
    backend: str
    data: Path
    eval_data: Path | None = None


@dataclass
class EngineResult:
    rounds: list[dict]  # per committed round: the server's metrics line (+ accuracy when evaluated)
    records: list[dict]  # per selected client-round, shaped as simulate._monitor.client_rounds rows
    states: dict[int, dict[str, np.ndarray]]  # committed global state per round (keep_states)
    wall_s: float
    phases: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


def devices_for(
    client_files: dict[str, Path],
    tiers: dict[str, str],
    backends: dict[str, str],
    eval_files: dict[str, Path] | None = None,
) -> list[Device]:
    """Devices from a prepared run: client -> data file, client -> tier, tier -> backend."""
    return [
        Device(c, tiers[c], backends[tiers[c]], Path(client_files[c]), (eval_files or {}).get(c))
        for c in sorted(client_files)
    ]


@dataclass
class _Client:
    device: Device
    entry: object  # server.ClientEntry: what the registry would hold for it
    examples: object  # edge_runtime Examples of its data file
    eval_examples: object | None
    battery: object
    prepared: dict = field(default_factory=dict)  # (base model, seq_len) -> PreparedData
    filled: set = field(default_factory=set)  # (bundle dir, batch, seq_len) its rows were cached for


class InProcessEngine:
    """A federated run of ``cfg`` over ``devices`` on the bundles in ``bundles_dir``.

    ``state_dir``: when given, committed states and metrics lines are written there in the layout of
    ``fedhft server``'s state dir (``states/``, ``metrics.jsonl``). ``test``: evaluate each committed
    global model on it. ``threads``: torch threads (default ``cfg.edge_threads``, as each edge).
    ``frozen_cache_mb``: memory per torch session for ``cache_frozen`` (0: off). ``workers``: clients
    trained at once, each worker on its own sessions with a fixed share of the clients (default: half
    the cores over ``threads``, 1 to 4: on 2 vCPUs a second worker measured no gain); updates are
    taken in client order whatever the workers. ``eval_thread``: evaluate each round on a side
    thread during the next (default: when the cores allow it)."""

    #: Default of ``frozen_cache_mb`` (MiniLM at 32 tokens: 48 KB per example and batch shape).
    FROZEN_CACHE_MB = 2048.0

    def __init__(
        self,
        cfg: SimConfig,
        devices: Sequence[Device],
        bundles_dir: Path,
        *,
        state_dir: Path | None = None,
        test: EncodedSet | None = None,
        threads: int | None = None,
        keep_states: bool = True,
        say: Callable[[str], None] = print,
        frozen_cache_mb: float | None = None,
        workers: int | None = None,
        eval_thread: bool | None = None,
    ):
        from simulate._fleet import server_config
        from server import BundleIndex, ServerConfig, build_strategy, new_run_id

        self.cfg, self.say, self.keep_states = cfg, say, keep_states
        self.frozen_cache_mb = self.FROZEN_CACHE_MB if frozen_cache_mb is None else float(frozen_cache_mb)
        self.threads = int(threads or cfg.edge_threads)
        self.config = ServerConfig(**server_config(cfg, Path(bundles_dir), cfg.rounds, FLEET))
        try:
            self.bundles = BundleIndex.scan(bundles_dir)
        except BundleError as exc:
            raise EngineError(str(exc)) from None
        self.strategy = build_strategy(self.config, self.bundles)
        self.run_id = new_run_id()  # in task ids, as a fresh `fedhft server` state dir makes one
        self.topics = Topics(FLEET)
        self.clients = self._load_clients(devices)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        if self.state_dir is not None:
            (self.state_dir / "states").mkdir(parents=True, exist_ok=True)
        self.test, self.evaluator = test, None
        self.sessions: dict[tuple[Path, int], object] = {}
        self.off_budget_mb = replace(cfg, memory_budget="off").memory_budget_mb(0.0)
        self.timings: Counter = Counter()
        self.workers = max(1, int(workers or min(4, usable_cores() // self.threads // 2)))
        # A side thread for the evaluation where cores are left over (on 2 vCPUs it cost 3 %).
        cores = usable_cores()
        self.eval_thread = (cores >= 4 and cores > self.workers * self.threads) if eval_thread is None else eval_thread
        self.worker_of = {cid: i % self.workers for i, cid in enumerate(sorted(self.clients))}
        self._lock, self._open_lock, self._stop = threading.Lock(), threading.Lock(), threading.Event()
        self._imported = False

    # -- set-up ----------------------------------------------------------------------------------
    def _load_clients(self, devices: Sequence[Device]) -> dict[str, _Client]:
        """Every device checked at once (tier, backend, data), as ``fedhft edge`` and the registry would."""
        from edge_runtime import load_examples
        from server import ClientEntry

        problems, out = [], {}
        for d in devices:
            if d.tier not in self.bundles.tiers:
                problems.append(
                    f"{d.client}: tier {d.tier!r} has no bundle in {self.config.bundles_dir} "
                    f"(tiers: {self.bundles.tiers})"
                )
                continue
            if d.backend not in self.bundles.backends(d.tier):
                problems.append(
                    f"{d.client}: tier {d.tier} is exported for {self.bundles.backends(d.tier)}, not {d.backend!r}"
                )
                continue
            try:
                options = self._data_options()
                examples = load_examples(d.data, options)
                extra = load_examples(d.eval_data, options) if d.eval_data is not None else None
            except DataError as exc:
                problems.append(str(exc))
                continue
            entry = ClientEntry(d.client, {}, d.tier, d.backend, [d.backend])
            out[d.client] = _Client(d, entry, examples, extra, self._battery())
        if len({d.client for d in devices}) != len(devices) or len(devices) != self.cfg.clients:
            problems.append(
                f"{len(devices)} devices ({len({d.client for d in devices})} distinct ids) for clients="
                f"{self.cfg.clients}: give one device per client, each with its own id"
            )
        if problems:
            raise EngineError("the in-process run cannot start:\n  - " + "\n  - ".join(problems))
        return out

    @staticmethod
    def _data_options():
        from edge_runtime import AgentConfig, DataOptions

        return DataOptions(val_fraction=AgentConfig.val_fraction)  # what `fedhft edge --data` uses

    def _battery(self):
        from edge_runtime import AgentConfig, SimulatedBattery, SystemBattery

        opts = AgentConfig(simulated_battery=self.cfg.battery).battery_options()
        return SystemBattery() if opts is None else SimulatedBattery(**opts)

    def _session(self, bundle_dir: Path, worker: int):
        """One session per bundle and worker, opened on first use and shared by its clients."""
        if (bundle_dir, worker) not in self.sessions:
            from bundle_runtime import EagerSession, open_session

            t0 = time.perf_counter()
            with self._open_lock:  # one at a time: opening may still import lazily
                session = open_session(bundle_dir, threads=self.threads)
            if isinstance(session, EagerSession) and self.frozen_cache_mb > 0:
                session.cache_frozen(self.frozen_cache_mb)
            self.sessions[(bundle_dir, worker)] = session
            self._tick("open_s", time.perf_counter() - t0)
        return self.sessions[(bundle_dir, worker)]

    def _set_threads(self) -> None:
        """Torch threads for the calling thread: a new thread's OpenMP/MKL pools otherwise start at
        every core (4x slower here, one step at a time, with the cores contended)."""
        import torch

        torch.set_num_threads(self.threads)

    def _tick(self, key: str, secs: float) -> None:
        with self._lock:
            self.timings[key] += secs

    # -- the run ---------------------------------------------------------------------------------
    def run(self, on_round: Callable[[dict], None] | None = None) -> EngineResult:
        """Every round of ``cfg.rounds``; Ctrl-C returns what committed so far (``interrupted``).

        With ``eval_thread``, round r's global evaluation runs on a side thread while round r+1
        trains (a pure function of the committed state: the same numbers); ``on_round`` gets each
        line once its evaluation is in."""
        import torch
        from concurrent.futures import ThreadPoolExecutor

        torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        rounds, records, states, interrupted = [], [], {}, False
        pending: list = []  # [(line, its evaluation or a future of it)]: at most one waits
        side = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedhft-eval") if self.eval_thread else None
        with side or nullcontext():
            try:
                for idx in range(self.strategy.round_idx, self.cfg.rounds):
                    line, recs, files = self._train_round(idx)
                    rounds.append(line)  # committed: it is reported whatever interrupts what follows
                    records += recs
                    if self.keep_states:
                        states[idx] = _global_state(files)
                    evaluation = (
                        side.submit(self._evaluate_timed, idx, _copied(files))
                        if side
                        else functools.partial(self._evaluate_timed, idx, files)
                    )
                    pending.append((line, evaluation))
                    while len(pending) > (1 if side else 0) or (pending and idx == self.cfg.rounds - 1):
                        self._finish_round(*pending[0], on_round)
                        pending.pop(0)  # only once finished: a Ctrl-C during its evaluation leaves it pending
            except KeyboardInterrupt:
                interrupted = True
            except BaseException:
                with suppress(Exception):  # the round committed before the failure still reports
                    while pending:
                        self._finish_round(*pending.pop(0), on_round)
                raise
        if interrupted and pending:  # a committed round still reports its evaluation (the side thread's, or redone)
            self._finish_round(*pending.pop(0), on_round)
        phases = {k: round(v, 3) for k, v in sorted(self.timings.items())}
        return EngineResult(rounds, records, states, time.perf_counter() - t0, phases, interrupted)

    def _import_runtimes(self) -> None:
        """Every library the sessions and the evaluator import, imported once here before any other
        thread starts: transformers' lazy imports are not thread-safe (two workers opening their
        first session at once can fail with an ImportError)."""
        from bundle_runtime import load_runtime

        if self._imported:
            return
        self._imported = True
        used = {c.device.backend for c in self.clients.values()}
        for backend, bundle_dir in sorted(
            {(b.backend, b.dir) for b in self.bundles.by_id.values() if b.backend in used}
        ):
            with suppress(ImportError):  # a missing runtime is each device's error outcome, as before
                load_runtime(backend, bundle_dir)
        if self.test is not None and self.evaluator is None:
            from simulate._evaluate import Evaluator

            t0 = time.perf_counter()
            self.evaluator = Evaluator(self.cfg.model, threads=self.threads)
            self._tick("eval_s", time.perf_counter() - t0)

    def run_round(self, idx: int) -> tuple[dict, list[dict], dict[str, np.ndarray]]:
        """One round: (its metrics line, with the global evaluation, its client records, the
        committed global state)."""
        line, recs, files = self._train_round(idx)
        self._finish_round(line, functools.partial(self._evaluate_timed, idx, files), None)
        return line, recs, _global_state(files)

    def _finish_round(self, line: dict, evaluation, on_round) -> None:
        """Add the round's evaluation (a future of (metrics, seconds), or a call that makes them) to its
        line, say it, report it."""
        out, secs = evaluation.result() if hasattr(evaluation, "result") else evaluation()
        line.update(out)
        self._tick("eval_s", secs)
        self.say(
            f"round {line['round']}: stored {line['stored']}/{line['selected']}, client accuracy "
            f"{_num(line['accuracy_mean'])}, global accuracy {_num(line.get('accuracy'))}, "
            f"{line['round_s']:.1f} s"
        )
        if on_round is not None:
            on_round(line)

    def _train_round(self, idx: int):
        """One round up to its commit: (metrics line, client records, state files). Nothing heavy follows
        the commit here, so a Ctrl-C cannot fall between the metrics line and the caller's record of it."""
        from server import Participant, intake_context, pick_clients, plan_round

        if self.workers > 1 or self.test is not None:
            self._import_runtimes()
        started = time.perf_counter()
        eligible = self._eligible()
        if len(eligible) < self.config.min_clients:
            raise EngineError(
                f"round {idx}: {len(eligible)} of {self.config.min_clients} devices are eligible "
                "(the others' batteries are below their tier's threshold): charge them (battery=) "
                "or run fewer rounds"
            )
        picked, salt = pick_clients(eligible, idx, self.config)
        plan = plan_round(
            self.strategy,
            self.bundles,
            idx,
            salt,
            [Participant(c.client, c.tier, c.backend) for c in picked],
            self.run_id,
        )
        stored: dict[str, str] = {}
        rnd = _RoundLog(idx, plan, self.strategy.aggregator(idx))
        ctx = intake_context(
            self.config, idx, True, plan.expected(self.strategy.dims_for), stored.get, run_id=self.run_id
        )
        deadline = time.time() + self.config.round_deadline_s
        tasks = {cid: self._send(rnd, cid, deadline) for cid in sorted(plan.tasks)}
        answers = self._device_rounds({cid: task for cid, task in tasks.items() if task is not None})
        for cid in sorted(answers):
            self._answer(rnd, cid, answers[cid], ctx, stored)
        rnd.close()  # (idempotent: _commit closes it too) so that the records are the final ones
        records = rnd.records()
        line, files = self._commit(rnd, started)
        return line, records, files

    def _eligible(self) -> list:
        """The registry's rule: a device on battery below its tier's threshold is not selected."""
        from devices import load_catalog

        catalog, out = load_catalog(), []
        for cid, c in sorted(self.clients.items()):
            level, charging = c.battery.read()
            c.entry.battery, c.entry.charging = level, charging
            spec = catalog.get(c.entry.tier)
            if c.entry.eligible(spec.battery_threshold if spec is not None else self.config.battery_threshold):
                out.append(c.entry)
        return out

    def _send(self, rnd: "_RoundLog", cid: str, deadline: float) -> Task | None:
        """The client's task as its device receives it (through the codec); None when it cannot be sent."""
        from server import task_message

        try:
            task = task_message(rnd.plan, cid, self.bundles, self.config, deadline)
            payload = encode(task, max_size=payload_budget(self.config.max_packet_size, self.topics.task(cid)))
        except (BundleError, ProtocolError) as exc:  # the coordinator's _task_failed
            rnd.outcome(cid, "error", f"server could not send the task: {exc}", {})
            return None
        rnd.bytes_down += len(payload)
        return decode(payload, expect=Task)

    def _device_rounds(self, tasks: dict[str, Task]) -> dict[str, object]:
        """Every client's answer (``_device_round``), each worker training its share in turn."""
        from concurrent.futures import ThreadPoolExecutor

        shares: list[list[str]] = [[] for _ in range(self.workers)]
        for cid in tasks:
            shares[self.worker_of[cid]].append(cid)

        def work(w: int) -> dict[str, object]:
            self._set_threads()
            return {
                cid: self._device_round(self.clients[cid], tasks[cid], w)
                for cid in shares[w]
                if not self._stop.is_set()
            }

        if self.workers == 1:
            return work(0)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fedhft-device") as pool:
            futures = [pool.submit(work, w) for w in range(self.workers) if shares[w]]
            try:
                return {cid: answer for f in futures for cid, answer in f.result().items()}
            except BaseException:
                self._stop.set()  # Ctrl-C: the workers stop at their next step
                raise

    def _answer(self, rnd: "_RoundLog", cid: str, answer, ctx, stored: dict[str, str]) -> None:
        """Take in a device's answer: its update PUBLISH, or its outcome."""
        if isinstance(answer, bytes):
            self._intake(rnd, cid, answer, ctx, stored)
        else:
            from edge_runtime import outcome_of

            kind, reason, metrics = outcome_of(answer)
            rnd.outcome(cid, kind, reason[:1024], metrics)

    def _device_round(self, client: _Client, task: Task, worker: int = 0):
        """What ``fedhft edge`` does with a task: the encoded update bytes, or a typed outcome or error."""
        from devices import AdapterPlan
        from edge_runtime import AgentConfig, RoundResult, TrainBudget, train_round

        t0 = time.perf_counter()
        try:
            bundle = self.bundles.by_id[task.bundle_id]
            if bundle.plan != AdapterPlan.from_dict(dict(task.plan)):
                raise BundleError(
                    f"bundle {bundle.dir} was compiled for plan {bundle.plan.to_dict()}, the task "
                    f"says {task.plan}: re-export the tier"
                )
            session = self._session(bundle.dir, worker)
            t0 = time.perf_counter()  # device time from here: opening the session is open_s
            spec_threshold = _tier_threshold(task.tier)
            budget = TrainBudget(
                self.off_budget_mb,
                AgentConfig.memory_margin,
                client.battery,
                spec_threshold,
                AgentConfig.deadline_reserve_s,
                should_stop=self._stop.is_set,
                progress_every=0,
            )
            data = self._prepared(client, session, task, budget)
            result = train_round(session, task, data, budget)
        except DEVICE_ERRORS as exc:
            result = exc
        finally:
            self._tick("device_s", time.perf_counter() - t0)
            self._tick(f"device_s/{client.device.tier}", time.perf_counter() - t0)
        if not isinstance(result, RoundResult):
            return result
        update = Update(
            FLEET,
            client.device.client,
            task.round,
            task.task_id,
            result.num_examples,
            result.metrics,
            task.hyper.encoding,
            result.update,
        )
        try:
            return encode(
                update, max_size=payload_budget(self.config.max_packet_size, self.topics.update(client.device.client))
            )
        except PayloadTooLarge as exc:
            return exc

    def _prepared(self, client: _Client, session, task: Task, budget):
        """The client's token ids at the round's length, made once per (base model, length): the
        device's own train/validation split, or all its data plus its explicit evaluation set."""
        from edge_runtime import DataSource, OverBudget, PreparedData, load_tokenizer, round_shape, tokenize

        shape = round_shape(session, task, budget)
        if isinstance(shape, OverBudget):
            raise MemoryError(shape.reason())
        labels = client.examples.labels
        if labels.size and int(labels.max()) >= session.manifest.dims.num_labels:
            raise DataError(
                f"{client.device.data}: labels go up to {int(labels.max())} but the model has "
                f"{session.manifest.dims.num_labels} classes: pass --label-map or fix the data"
            )
        key = (session.manifest.base_model_id, shape.seq_len)
        if key not in client.prepared:
            t0 = time.perf_counter()
            if client.eval_examples is None:
                local = DataSource(client.examples, self._data_options()).at(session.bundle_dir, shape.seq_len)
                client.prepared[key] = PreparedData(local.train, local.val)
            else:
                tok = load_tokenizer(session.bundle_dir)
                client.prepared[key] = PreparedData(
                    tokenize(tok, client.examples, shape.seq_len), tokenize(tok, client.eval_examples, shape.seq_len)
                )
            self._tick("tokenize_s", time.perf_counter() - t0)
        self._fill_frozen(client, session, client.prepared[key].train, shape.batch_size, task.hyper.local_steps)
        return client.prepared[key]

    def _fill_frozen(self, client: _Client, session, train, batch: int, steps: int) -> None:
        """A torch session's frozen-layer cache gets the client's training rows once, in batches of
        the round's shape, so that later rounds' random batches find all their rows there; when the
        run will train on at least as many rows as the client holds (speed only: exact either way)."""
        from bundle_runtime import EagerSession

        share = self.config.select_count(self.cfg.clients) / max(1, self.cfg.clients)
        worth = steps <= 0 or self.cfg.rounds * share * steps * batch >= len(train)
        key = (session.bundle_dir, batch, train.input_ids.shape[1])
        if worth and isinstance(session, EagerSession) and key not in client.filled:
            t0 = time.perf_counter()
            session.cache_frozen_rows(train.input_ids, train.attention_mask, batch)
            client.filled.add(key)
            self._tick("frozen_fill_s", time.perf_counter() - t0)

    def _intake(self, rnd: "_RoundLog", cid: str, payload: bytes, ctx, stored: dict[str, str]) -> None:
        """The coordinator's intake of one update PUBLISH: validate, record, aggregate."""
        from server import Accepted, check_update

        t0 = time.perf_counter()
        verdict = check_update(cid, payload, ctx)
        if not isinstance(verdict, Accepted):  # a duplicate cannot happen: each client answers once
            rnd.rejected(cid, verdict)
            return
        u = verdict.update
        stored[cid] = verdict.digest
        rnd.stored(cid, u)
        try:
            rnd.aggregator.add(rnd.plan.infos[cid], rnd.plan.assignments[cid], u.tensors, float(max(1, u.num_examples)))
        except Exception as exc:  # as the coordinator: the update leaves the round, the run goes on
            rnd.unstore(cid, f"{type(exc).__name__}: {exc}")
        finally:
            rnd.agg_s += time.perf_counter() - t0

    def _commit(self, rnd: "_RoundLog", started: float) -> tuple[dict, dict]:
        """Close, aggregate, write the state files (with a state dir): (the metrics line, the files)."""
        from server import append_metrics, cluster_sizes, metrics_line, state_files, write_tensors

        t0 = time.perf_counter()
        rnd.close()
        state = rnd.aggregator.finish()
        files = state_files(self.strategy, rnd.idx, state)
        if self.state_dir is not None:
            for kind, (tensors, meta) in files.items():
                write_tensors(state_file(self.state_dir, kind, rnd.idx), tensors, meta)
        agg_s = rnd.agg_s + time.perf_counter() - t0
        extra = {
            "strategy": self.strategy.name,
            "closed_by": "all_answered",
            "round_s": round(time.perf_counter() - started, 4),
            "aggregation_s": round(agg_s, 4),
            "bytes_down": rnd.bytes_down,
            "cluster_sizes": cluster_sizes(rnd.plan.assignments),
        }
        line = metrics_line(rnd.idx, list(rnd.rows.values()), dict(rnd.rejections), extra)
        self._tick("server_s", agg_s)
        if self.state_dir is not None:
            append_metrics(self.state_dir, line)
        return line, files

    def _evaluate_timed(self, idx: int, files: dict) -> tuple[dict, float]:
        """The global model's accuracy on the test set (simulate._evaluate, as for the MQTT
        engine), and the seconds it took."""
        if self.test is None:
            return {}, 0.0
        from simulate._evaluate import Evaluator, evaluate_state

        self._set_threads()
        t0 = time.perf_counter()
        if self.evaluator is None:
            self.evaluator = Evaluator(self.cfg.model, threads=self.threads)
        tensors, meta = files["global"]
        out = evaluate_state(self.evaluator, idx, tensors, files["strategy"][1], self.test, self.cfg.eval_batch)
        return {k: v for k, v in out.items() if k != "round"}, time.perf_counter() - t0


class _RoundLog:
    """The round's client records and counts, as the coordinator's store would hold them."""

    def __init__(self, idx: int, plan, aggregator):
        self.idx, self.plan, self.aggregator = idx, plan, aggregator
        self.rows = {
            cid: {
                "round": idx,
                "client": cid,
                "tier": t.tier,
                "backend": t.backend,
                "status": ClientRoundStatus.TASKED,
                "bytes": None,
                "num_examples": None,
                "metrics": None,
                "outcome": None,
                "reason": None,
            }
            for cid, t in sorted(plan.tasks.items())
        }
        self.rejections: Counter = Counter()
        self.bytes_down, self.agg_s = 0, 0.0

    def stored(self, cid: str, update) -> None:
        self.rows[cid].update(
            status=ClientRoundStatus.STORED,
            bytes=len(update.encoded),
            num_examples=update.num_examples,
            metrics=_json(update.metrics),
        )

    def unstore(self, cid: str, detail: str) -> None:
        self.rows[cid].update(status=ClientRoundStatus.REJECTED, reason="aggregation_error")
        self.rejections["aggregation_error"] += 1
        _ = detail  # the coordinator keeps it in its rejections table; nothing reads it here

    def rejected(self, cid: str, verdict) -> None:
        self.rejections[verdict.reason] += 1
        if verdict.final:
            self.rows[cid].update(status=ClientRoundStatus.REJECTED, reason=verdict.reason)

    def outcome(self, cid: str, kind: str, reason: str, metrics: dict) -> None:
        self.rows[cid].update(status=ClientRoundStatus.OUTCOME, outcome=kind, reason=reason, metrics=_json(metrics))

    def close(self) -> None:
        """As the coordinator closes a round: a task still unanswered is ``dropped``."""
        for row in self.rows.values():
            if row["status"] == ClientRoundStatus.TASKED:
                row["status"] = ClientRoundStatus.DROPPED

    def records(self) -> list[dict]:
        """The rows with metrics parsed, like ``client_rounds``."""
        return [dict(row, metrics=json.loads(row["metrics"] or "{}")) for row in self.rows.values()]


def _tier_threshold(tier: str) -> float:
    """The agent's battery threshold for a tier: the catalog's, else 20 %."""
    from devices import load_catalog

    spec = load_catalog().get(tier)
    return float(spec.battery_threshold) if spec is not None else 20.0


def _global_state(files: dict) -> dict[str, np.ndarray]:
    """The committed global state, copied out of the round's state files."""
    return {k: np.array(v) for k, v in files["global"][0].items()}


def _copied(files: dict) -> dict:
    """The state files' tensors copied, for the evaluation thread (the strategy goes on in this one)."""
    return {kind: ({k: np.array(v) for k, v in tensors.items()}, meta) for kind, (tensors, meta) in files.items()}


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
