"""fedhft server: MQTT coordinator, strategies, client registry, durable state.

``run_server`` is what ``fedhft server`` runs; ``Coordinator`` is the broker-free core (drive it
with any ``Transport``); ``Store`` is the durable state; ``check_update`` the update validation.
``pick_clients``, ``plan_round`` and ``task_message`` turn a round's selection into tasks without
I/O: the coordinator and in-process engines share them. ``read_metrics``, ``read_client_rounds``
and ``count_clients`` read a state dir from another process, read-only, while the server runs.
Strategies (pure numpy) are re-exported from ``server.strategies``. ``ScriptedPeer`` and
``synthetic_update`` are synthetic devices (seeded updates, no training) for tests and benchmarks.
"""

from server._bundles import BundleIndex, BundleInfo, BundleNeed, needed_bundles
from server._config import ServerConfig, ServerConfigError, config_help, load_server_config
from server._coordinator import Coordinator, Inbound, ResumeError, Transport, build_strategy
from server._metrics import (
    append_metrics,
    format_status,
    metrics_line,
    personalized_summary,
    read_metrics,
    round_metrics,
    server_status,
)
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
from server._readers import CLIENT_ROUND_FIELDS, count_clients, read_client_rounds
from server._registry import ClientEntry, Registry
from server._rounds import CloseReason, assignment_digest, select_clients
from server._run import Auth, run_server
from server._store import (
    ClientRoundStatus,
    ResumePoint,
    RoundState,
    Store,
    StoreError,
    StoredUpdate,
    TaskRecord,
    read_tensors,
    write_tensors,
)
from server._synthetic import DEFAULT_PROFILE as SYNTHETIC_PROFILE
from server._synthetic import ScriptedPeer, synthetic_update
from server._task_ids import new_run_id
from server._validation import Accepted, Duplicate, Expected, IntakeContext, Rejected, check_update
from server.strategies import *  # noqa: F401,F403  (the Strategy API and every strategy)
from server.strategies import __all__ as _strategies_all

__all__ = [
    "Accepted",
    "Auth",
    "BundleIndex",
    "BundleInfo",
    "BundleNeed",
    "CLIENT_ROUND_FIELDS",
    "ClientEntry",
    "ClientRoundStatus",
    "CloseReason",
    "Coordinator",
    "Duplicate",
    "Expected",
    "Inbound",
    "IntakeContext",
    "Participant",
    "Registry",
    "Rejected",
    "ResumeError",
    "ResumePoint",
    "RoundPlan",
    "RoundState",
    "SYNTHETIC_PROFILE",
    "ScriptedPeer",
    "ServerConfig",
    "ServerConfigError",
    "Store",
    "StoreError",
    "StoredUpdate",
    "TaskRecord",
    "Transport",
    "append_metrics",
    "assignment_digest",
    "build_strategy",
    "check_update",
    "cluster_sizes",
    "count_clients",
    "config_help",
    "format_status",
    "intake_context",
    "load_server_config",
    "metrics_line",
    "personalized_summary",
    "needed_bundles",
    "new_run_id",
    "pick_clients",
    "plan_round",
    "read_client_rounds",
    "read_metrics",
    "read_tensors",
    "round_metrics",
    "run_server",
    "select_clients",
    "server_status",
    "state_files",
    "synthetic_update",
    "task_message",
    "write_tensors",
    *_strategies_all,
]
