"""``run_simulation``: a federated run on this machine, on one of two engines (``cfg.engine``).

Both engines share the preflight, the data preparation, the tier assignment, the bundle export,
the evaluation on the held-out test set, the run status and the outputs.

``mqtt`` (the default, the real system): a broker (private Mosquitto on a free loopback port with the
fleet's users and ACL, or the embedded amqtt broker, or a broker the user runs), the real ``fedhft
server`` process and N real ``fedhft edge`` processes, each with its own credentials, data file, tier,
backend, simulated battery and state dir. This process only prepares files, starts and watches the others, evaluates
the server's committed global states on a held-out test set, and writes the report. Every child
is stopped by pid (process group) at the end, on errors and on Ctrl-C.

``inprocess`` (for experiments): ``InProcessEngine`` runs the same strategy, update validation and
edge training code for every client in this process, one after another; see _inprocess.py for
what differs.
"""

from __future__ import annotations

import json
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from fedhft.config import to_dict
from server import ClientRoundStatus
from simulate._bundles import default_cache_dir, ensure_bundle, fit_plan, link_bundles, model_identity
from simulate._config import SimConfig
from simulate._evaluate import EncodedSet, encode_examples
from simulate._fleet import (
    SimulationError,
    start_edges,
    start_fleet_broker,
    start_server,
    wait_server_running,
)
from simulate._monitor import EvalWorker, Progress, client_rounds, read_metrics
from simulate._preflight import preflight
from simulate._prepare import PreparedData, assign_tiers, prepare_data
from simulate._procs import Children
from simulate._status import RunStatus, RunVerdict, classify_run

POLL_S = 1.0
INTERRUPTED = "interrupted (Ctrl-C / SIGTERM)"


@dataclass
class SimResult:
    run_dir: Path
    status: RunStatus
    rounds: list[dict]  # per committed round: server metrics + evaluation
    wall_s: float
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    verdict: RunVerdict | None = None  # which client-rounds did not store, and why

    @property
    def ok(self) -> bool:
        """Every round committed and every selected client stored an update in each."""
        return self.status is RunStatus.COMPLETED

    @property
    def interrupted(self) -> bool:
        """Ctrl-C / SIGTERM: a caller running many simulations should stop too."""
        return self.status is RunStatus.INTERRUPTED

    @property
    def accuracies(self) -> list[float | None]:
        return [r.get("accuracy") for r in self.rounds]

    @property
    def final_accuracy(self) -> float | None:
        acc = [a for a in self.accuracies if a is not None]
        return acc[-1] if acc else None


def client_ids(n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"dev-{i:0{width}d}" for i in range(n)]


def _export_bundles(
    cfg: SimConfig, tiers: dict[str, str], num_labels: int, run_dir: Path, say
) -> tuple[dict, Path, float]:
    """(tier -> backend, the run's bundles dir, seconds spent exporting).

    Every bundle the strategy will use is exported before round 0: each tier's own plan and the
    plan the strategy assigns its devices (another tier's, under FedAvg-LoRA), for that tier's
    backend. The server refuses to start on a bundles dir that lacks one."""
    from devices import load_catalog
    from server import needed_bundles

    catalog = load_catalog()
    unknown = sorted(set(cfg.tiers) - set(catalog))
    if unknown:
        raise SimulationError(f"unknown tiers {unknown}: use catalog tiers {sorted(catalog)} (fedhft devices list)")
    model_id, layers = model_identity(cfg.model, num_labels)
    present = sorted(set(tiers.values()))
    backends = {tier: cfg.tier_backend(tier, catalog[tier].default_backend) for tier in present}
    plans = {tier: fit_plan(catalog[tier].plan, layers, cfg.max_seq_len, cfg.batch_size) for tier in present}
    links, spent = {}, 0.0
    cache = Path(cfg.bundle_cache).expanduser() if cfg.bundle_cache else default_cache_dir()
    for need in needed_bundles(cfg.strategy, cfg.strategy_options, plans, {t: [b] for t, b in backends.items()}):
        links[(need.tier, need.backend)], secs = ensure_bundle(
            cfg.model, model_id, num_labels, need.tier, need.plan, need.backend, cache, cfg.seed, say
        )
        spent += secs
    return backends, link_bundles(run_dir / "bundles", links), spent


def _check_children(children: Children, broker, server_name: str = "server") -> None:
    dead = children.died()
    if dead:
        c = dead[0]
        what = "the server" if c.name == server_name else f"edge device {c.name}"
        raise SimulationError(
            f"{what} (pid {c.pid}) exited with code {c.returncode}. Last lines of {c.log_path}:\n"
            f"{c.tail()}\n(fix the cause above; every other process was stopped)"
        )
    if broker.broker is not None and getattr(broker.broker, "running", True) is False:
        raise SimulationError(f"the {broker.kind} broker stopped. Its log:\n{broker.log_tail()}")


def _follow(cfg: SimConfig, children: Children, broker, state_dir: Path, evals: EvalWorker, progress: Progress) -> None:
    """Poll until the server exits after its last round; evaluate each round as it commits."""
    submitted, started = set(), time.monotonic()
    server = next(c for c in children.items if c.name == "server")
    while True:
        committed = read_metrics(state_dir)
        for m in committed:
            if m["round"] not in submitted:
                submitted.add(m["round"])
                evals.submit(m["round"])
        records = client_rounds(state_dir)
        progress.update(state_dir, committed, records, evals.results)
        if not server.alive and server.returncode == 0:
            return
        _check_children(children, broker)
        if not records and time.monotonic() - started > cfg.join_timeout_s:
            raise SimulationError(
                f"no round started within join_timeout_s={cfg.join_timeout_s:.0f} s: not every "
                f"device joined. Check {server.log_path} and logs/dev-*.log; raise join_timeout_s "
                "on a slow machine"
            )
        time.sleep(POLL_S)


def _setup(cfg: SimConfig, run_dir: Path, say) -> tuple[list[str], PreparedData, dict[str, str]]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    ids = client_ids(cfg.clients)
    data = prepare_data(cfg, ids, run_dir / "data", say)
    tiers = assign_tiers(ids, list(cfg.tiers), cfg.tier_weights)
    return ids, data, tiers


@dataclass
class _Fleet:
    """What both engines start from: the prepared data, tiers, exported bundles and test set."""

    run_dir: Path
    ids: list[str]
    data: PreparedData
    tiers: dict[str, str]
    backends: dict[str, str]
    bundles_dir: Path
    test: EncodedSet


@dataclass
class _EngineRun:
    """What an engine hands back: committed rounds (metrics + evaluation), the client records of
    those rounds (``client_rounds`` rows), and how it ended."""

    rounds: list[dict]
    records: list[dict]
    error: str | None = None
    interrupted: bool = False
    eval_error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    broker_kind: str = "none"
    mqtt_protocol: str | None = None
    pids: list[int] = field(default_factory=list)


def run_simulation(cfg: SimConfig, say: Callable[[str], None] = print) -> SimResult:
    """Run one federated simulation end to end on ``cfg.engine``; see the module doc. Never leaves
    a child running."""
    from simulate._report import write_outputs

    t0 = time.time()
    run_dir = cfg.run_dir().resolve()
    preflight(cfg, run_dir)  # every config problem at once, before any folder or process exists
    phases: dict[str, float] = {}
    ids, data, tiers = _setup(cfg, run_dir, say)
    cfg = cfg.with_partition_groups(data.client_groups)  # validated: groups=partition comes with partition=natural
    backends, bundles_dir, phases["export_s"] = _export_bundles(cfg, tiers, data.dataset.num_labels, run_dir, say)
    tier0 = tiers[ids[0]]
    test = encode_examples(bundles_dir / tier0 / backends[tier0] / "tokenizer.json", data.test, cfg.max_seq_len)
    fleet = _Fleet(run_dir, ids, data, tiers, backends, bundles_dir, test)
    t_fed = time.time()
    with _sigterm_as_interrupt():
        ran = (_run_inprocess if cfg.engine == "inprocess" else _run_mqtt)(cfg, fleet, say)
    phases["federated_s"] = time.time() - t_fed
    phases.update(ran.phases)
    verdict = classify_run(
        ran.records, ran.rounds, cfg.rounds, None if ran.interrupted else ran.error, ran.interrupted, ran.eval_error
    )
    result = SimResult(
        run_dir,
        verdict.status,
        ran.rounds,
        time.time() - t0,
        phases,
        ran.error or (None if verdict.status is RunStatus.COMPLETED else verdict.headline()),
        verdict,
    )
    write_outputs(
        cfg,
        result,
        data,
        tiers,
        backends,
        ran.broker_kind,
        ran.eval_error,
        ran.pids,
        ran.mqtt_protocol,
        records=ran.records,
    )
    return result


def _run_mqtt(cfg: SimConfig, fleet: _Fleet, say) -> _EngineRun:
    """A broker, the ``fedhft server`` process and one ``fedhft edge`` process per client; the
    committed rounds are evaluated on a thread as they appear. Every child is stopped at the end."""
    run_dir, state_dir = fleet.run_dir, fleet.run_dir / "server"
    children, broker, evals, error, interrupted = Children(), None, None, None, False
    progress = Progress(cfg.rounds, cfg.clients, cfg.progress)
    t_fed = time.time()
    try:
        broker = start_fleet_broker(cfg, fleet.ids, run_dir / "fleet", say)
        server = start_server(children, cfg, broker, fleet.bundles_dir, run_dir)
        wait_server_running(broker, server, timeout=cfg.join_timeout_s)
        start_edges(
            children, cfg, broker, fleet.tiers, fleet.backends, fleet.data.client_files, run_dir, fleet.bundles_dir
        )
        pids = {c.name: c.pid for c in children.items}
        if getattr(broker.broker, "pid", None):
            pids["broker"] = broker.broker.pid
        (run_dir / "pids.json").write_text(json.dumps(pids), encoding="utf-8")
        evals = EvalWorker(cfg.model, state_dir, fleet.test, cfg.eval_batch)
        _follow(cfg, children, broker, state_dir, evals, progress)
    except (SimulationError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        error = INTERRUPTED if interrupted else str(exc)
    except Exception as exc:  # a broker that will not start, a bad fleet dir, ...: still stop and report
        error = f"{type(exc).__name__}: {exc}"
    finally:
        killed = children.stop_all()
        if killed:
            say(f"processes {killed} did not stop on SIGTERM and were killed")
        if broker is not None:
            broker.stop()
    federated_s = time.time() - t_fed  # before the last evaluations finish
    if evals is not None:
        evals.finish(timeout=30 if interrupted else 600, cancel=interrupted)
    rounds = _merge_rounds(state_dir, evals)
    progress.close(evals.results if evals else None, rounds)  # after the last evaluation: the final accuracy shows
    return _EngineRun(
        rounds,
        client_rounds(state_dir),
        error,
        interrupted,
        evals.error if evals else None,
        {"federated_s": federated_s},
        broker.kind if broker else "none",
        broker.mqtt_protocol if broker else None,
        children.pids,
    )


def _run_inprocess(cfg: SimConfig, fleet: _Fleet, say) -> _EngineRun:
    """Every client in this process (``InProcessEngine``): no broker, no child process. The engine
    writes the server's state layout (states/, metrics.jsonl) under server/ and evaluates each
    committed round itself; Ctrl-C returns the rounds committed so far."""
    from simulate._inprocess import EngineError, InProcessEngine, devices_for

    state_dir = fleet.run_dir / "server"
    progress = Progress(cfg.rounds, cfg.clients, cfg.progress)
    committed: list[dict] = []  # what survives an engine error: the rounds its callback saw
    evals: dict[int, dict] = {}

    def on_round(line: dict) -> None:
        committed.append(line)
        evals[line["round"]] = {k: line[k] for k in ("round", "accuracy", "eval_s", "error") if k in line}
        markers = _markers(line["round"], line["selected"], ClientRoundStatus.STORED)
        progress.update(state_dir, committed, markers, evals)

    ran = _EngineRun(committed, [])
    try:
        engine = InProcessEngine(
            cfg,
            devices_for(fleet.data.client_files, fleet.tiers, fleet.backends),
            fleet.bundles_dir,
            state_dir=state_dir,
            test=fleet.test,
            threads=cfg.engine_threads,
            say=_quiet if cfg.progress else say,
        )  # with progress on, Progress prints the rounds
        tasked = _markers(0, engine.config.select_count(cfg.clients), ClientRoundStatus.TASKED)
        progress.update(state_dir, [], tasked, {})
        out = engine.run(on_round=on_round)
        ran.rounds, ran.records, ran.interrupted, ran.phases = out.rounds, out.records, out.interrupted, out.phases
    except KeyboardInterrupt:  # while the engine loads: run() itself returns on Ctrl-C
        ran.interrupted = True
    except EngineError as exc:
        ran.error = str(exc)
    except Exception as exc:  # a failure the engine does not type: still report what committed
        ran.error = f"{type(exc).__name__}: {exc}"
    if ran.interrupted:
        ran.error = INTERRUPTED
    progress.close(evals, ran.rounds)
    return ran


def _markers(idx: int, n: int, status: str) -> list[dict]:
    """Client records for Progress, which reads only their round and status (the in-process engine
    reports a round's records when it commits)."""
    return [{"round": idx, "status": status}] * max(1, int(n))


def _quiet(line: str) -> None:
    pass


@contextmanager
def _sigterm_as_interrupt():
    """A SIGTERM to simulate stops the run like Ctrl-C does (only the main thread may set handlers)."""
    if not _main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


def _merge_rounds(state_dir: Path, evals: EvalWorker | None) -> list[dict]:
    out = []
    for m in read_metrics(state_dir):
        row = dict(m)
        ev = evals.results.get(m["round"], {}) if evals else {}
        row.update({k: v for k, v in ev.items() if k != "round"})
        out.append(row)
    return out


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt
