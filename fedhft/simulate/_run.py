"""``run_simulation``: a real federated run on this machine.

A broker (private Mosquitto on a free loopback port with the fleet's users and ACL, or the
embedded amqtt broker, or a broker the user runs), the real ``fedhft server`` process and N real
``fedhft edge`` processes, each with its own credentials, data file, tier, backend, simulated
battery and state dir. This process only prepares files, starts and watches the others, evaluates
the server's committed global states on a held-out test set, and writes the report. Every child
is stopped by pid (process group) at the end, on errors and on Ctrl-C.
"""
from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from fedhft.config import to_dict
from fedhft.simulate._bundles import default_cache_dir, ensure_bundle, fit_plan, link_bundles, model_identity
from fedhft.simulate._config import SimConfig
from fedhft.simulate._evaluate import encode_examples
from fedhft.simulate._fleet import (
    SimulationError, start_edges, start_fleet_broker, start_server, wait_server_running,
)
from fedhft.simulate._monitor import EvalWorker, Progress, client_rounds, read_metrics
from fedhft.simulate._preflight import preflight
from fedhft.simulate._prepare import PreparedData, assign_tiers, prepare_data
from fedhft.simulate._procs import Children
from fedhft.simulate._status import RunStatus, RunVerdict, classify_run

POLL_S = 1.0


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


def _export_bundles(cfg: SimConfig, tiers: dict[str, str], num_labels: int, run_dir: Path, say) -> tuple[dict, Path, float]:
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
        links[(need.tier, need.backend)], secs = ensure_bundle(cfg.model, model_id, num_labels, need.tier, need.plan,
                                                               need.backend, cache, cfg.seed, say)
        spent += secs
    return backends, link_bundles(run_dir / "bundles", links), spent


def _check_children(children: Children, broker, server_name: str = "server") -> None:
    dead = children.died()
    if dead:
        c = dead[0]
        what = "the server" if c.name == server_name else f"edge device {c.name}"
        raise SimulationError(f"{what} (pid {c.pid}) exited with code {c.returncode}. Last lines of {c.log_path}:\n"
                              f"{c.tail()}\n(fix the cause above; every other process was stopped)")
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
            raise SimulationError(f"no round started within join_timeout_s={cfg.join_timeout_s:.0f} s: not every "
                                  f"device joined. Check {server.log_path} and logs/dev-*.log; raise join_timeout_s "
                                  "on a slow machine")
        time.sleep(POLL_S)


def _setup(cfg: SimConfig, run_dir: Path, say) -> tuple[list[str], PreparedData, dict[str, str]]:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")
    ids = client_ids(cfg.clients)
    data = prepare_data(cfg, ids, run_dir / "data", say)
    tiers = assign_tiers(ids, list(cfg.tiers), cfg.tier_weights)
    return ids, data, tiers


def run_simulation(cfg: SimConfig, say: Callable[[str], None] = print) -> SimResult:
    """Run one federated simulation end to end; see the module doc. Never leaves a child running."""
    from fedhft.simulate._report import write_outputs

    t0 = time.time()
    run_dir = cfg.run_dir().resolve()
    preflight(cfg, run_dir)  # every config problem at once, before any folder or process exists
    phases: dict[str, float] = {}
    ids, data, tiers = _setup(cfg, run_dir, say)
    backends, bundles_dir, phases["export_s"] = _export_bundles(cfg, tiers, data.dataset.num_labels, run_dir, say)
    test = encode_examples(bundles_dir / tiers[ids[0]] / backends[tiers[ids[0]]] / "tokenizer.json", data.test,
                           cfg.max_seq_len)
    children, broker, evals, error, interrupted = Children(), None, None, None, False
    progress = Progress(cfg.rounds, cfg.clients, cfg.progress)
    old_term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    if _main_thread():  # a SIGTERM to simulate stops the fleet like Ctrl-C does
        signal.signal(signal.SIGTERM, _raise_interrupt)
    t_fed = time.time()
    try:
        broker = start_fleet_broker(cfg, ids, run_dir / "fleet", say)
        server = start_server(children, cfg, broker, bundles_dir, run_dir)
        wait_server_running(broker, server, timeout=cfg.join_timeout_s)
        start_edges(children, cfg, broker, tiers, backends, data.client_files, run_dir, bundles_dir)
        pids = {c.name: c.pid for c in children.items}
        if getattr(broker.broker, "pid", None):
            pids["broker"] = broker.broker.pid
        (run_dir / "pids.json").write_text(json.dumps(pids), encoding="utf-8")
        evals = EvalWorker(cfg.model, run_dir / "server", test, cfg.eval_batch)
        _follow(cfg, children, broker, run_dir / "server", evals, progress)
    except (SimulationError, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        error = "interrupted (Ctrl-C / SIGTERM)" if interrupted else str(exc)
    except Exception as exc:  # a broker that will not start, a bad fleet dir, ...: still stop and report
        error = f"{type(exc).__name__}: {exc}"
    finally:
        killed = children.stop_all()
        if killed:
            say(f"processes {killed} did not stop on SIGTERM and were killed")
        if broker is not None:
            broker.stop()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    phases["federated_s"] = time.time() - t_fed
    if evals is not None:
        evals.finish(timeout=30 if interrupted else 600, cancel=interrupted)
    rounds = _merge_rounds(run_dir / "server", evals)
    progress.close(evals.results if evals else None, rounds)  # after the last evaluation: the final accuracy shows
    verdict = classify_run(client_rounds(run_dir / "server"), rounds, cfg.rounds, None if interrupted else error,
                           interrupted, evals.error if evals else None)
    result = SimResult(run_dir, verdict.status, rounds, time.time() - t0, phases,
                       error or (None if verdict.status is RunStatus.COMPLETED else verdict.headline()), verdict)
    write_outputs(cfg, result, data, tiers, backends, broker.kind if broker else "none",
                  evals.error if evals else None, children.pids, broker.mqtt_protocol if broker else None)
    return result


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
