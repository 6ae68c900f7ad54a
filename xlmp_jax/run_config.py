"""The run config as typed objects, and ``resolve``, which builds them once per run for the trainer.

The config files (``configs/common.py``, assembling each block from its home of defaults: ARCHITECTURE.md)
stay the only schema: these classes have no defaults, so a field the file lacks, or one these classes do not
know, is an error naming it, and a new field is added in both places or not at all. Each class checks its own values on construction (as
``ModelConfig`` does), so holding one means holding a checked one.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

from data_pipelines.config import DataConfig
from xlmp_jax.model.model_config import ModelConfig

_POSITIVE_INTS = ("steps", "batch_size", "grad_accum_steps", "log_every", "checkpoint_every", "eval_batch_size")
_NON_NEGATIVE_INTS = (
    "warmup_steps",
    "keep_checkpoints",
    "eval_every",
    "eval_batches",
    "max_consecutive_nan",
    "stop_after",
    "data_shards",
)
# (field, lowest, highest, whether the lowest itself is allowed); every bound is inclusive but `lowest` may not be.
_FLOATS = (
    ("learning_rate", 0.0, math.inf, False),  # 0 trains nothing: a typo, not a run
    ("weight_decay", 0.0, math.inf, True),
    ("b1", 0.0, 1.0, True),
    ("b2", 0.0, 1.0, True),
    ("eps", 0.0, math.inf, False),
    ("grad_clip", 0.0, math.inf, True),  # 0 = off
    ("label_smoothing", 0.0, 1.0, True),
    ("z_loss", 0.0, math.inf, True),
    ("peak_flops", 0.0, math.inf, True),  # 0 = the device table
)


def from_section(cls: type, section: Mapping[str, Any] | Any, name: str) -> Any:
    """``cls(**section)``, with missing and unknown fields named (``train.stepz``) instead of a TypeError."""
    values = dict(section)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(known))
    missing = [f for f in known if f not in values]
    if unknown or missing:
        parts = [f"unknown field(s) {', '.join(f'{name}.{u}' for u in unknown)}"] if unknown else []
        parts += [f"missing field(s) {', '.join(f'{name}.{m}' for m in missing)}"] if missing else []
        raise ValueError(f"config.{name}: {'; '.join(parts)}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """One entry of ``config.train.param_groups`` (``configs/common.param_group`` writes one with its defaults).

    ``pattern`` must fully match a parameter's path (``pool/.*``, ``layer_\\d+/.*``); -1 for ``warmup_steps`` or
    ``weight_decay`` takes the train section's value; the group trains from update ``trainable_from`` (its
    warm-up starts there) unless ``frozen`` (never)."""

    name: str
    pattern: str
    lr_multiplier: float
    warmup_steps: int  # -1 = train.warmup_steps
    weight_decay: float  # -1 = train.weight_decay
    trainable_from: int  # 0 = from the first update
    frozen: bool

    def __post_init__(self):
        where = f"train.param_groups.{self.name}"
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"{where}.pattern must be a non-empty regular expression, got {self.pattern!r}")
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(f"{where}.pattern={self.pattern!r} is not a regular expression: {e}") from e
        number = isinstance(self.lr_multiplier, int | float) and not isinstance(self.lr_multiplier, bool)
        if not number or not math.isfinite(self.lr_multiplier) or self.lr_multiplier <= 0:
            raise ValueError(
                f"{where}.lr_multiplier must be a finite number > 0 (use frozen=True to hold a group still), "
                f"got {self.lr_multiplier!r}"
            )
        if not _is_int(self.warmup_steps) or self.warmup_steps < -1:
            raise ValueError(
                f"{where}.warmup_steps must be an integer >= 0, or -1 (= train's), got {self.warmup_steps!r}"
            )
        decay = self.weight_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not (decay >= 0 or decay == -1):
            raise ValueError(f"{where}.weight_decay must be a number >= 0, or -1 (= train's), got {decay!r}")
        if not _is_int(self.trainable_from) or self.trainable_from < 0:
            raise ValueError(f"{where}.trainable_from must be a non-negative integer, got {self.trainable_from!r}")
        if not isinstance(self.frozen, bool):
            raise ValueError(f"{where}.frozen must be true or false, got {self.frozen!r}")


def parse_param_groups(section: Mapping[str, Any] | Any) -> tuple[ParamGroup, ...]:
    """``config.train.param_groups`` (name -> fields) as ParamGroups, each checked; ``rest`` is reserved."""
    groups = []
    for name, fields in dict(section).items():
        if name == "rest":
            raise ValueError("train.param_groups.rest: 'rest' names the parameters no group matches; rename the group")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"train.param_groups.{name}: a group name is letters, digits and '_'")
        groups.append(from_section(ParamGroup, {"name": name, **dict(fields)}, f"train.param_groups.{name}"))
    return tuple(groups)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """``config.train``: the optimizer, the loop's cadence, eval, checkpoints (documented in configs/common.py)."""

    steps: int
    batch_size: int  # global, over all hosts
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    b1: float
    b2: float
    eps: float
    grad_clip: float  # 0 = off
    grad_accum_steps: int
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    eval_every: int  # 0 = no periodic eval
    eval_batch_size: int
    eval_batches: int  # 0 = every held-out row
    seed: int
    max_consecutive_nan: int
    label_smoothing: float
    z_loss: float
    stop_after: int  # 0 = off
    pool_report: bool
    data_shards: int  # 0 = one per process
    restore_data: bool
    peak_flops: float  # 0 = the device table
    compilation_cache_dir: str  # '' = off
    lr_schedule: str  # linear | cosine | rsqrt (xlmp_jax.training.optim)
    param_groups: tuple[ParamGroup, ...]  # parsed from the section's name -> fields mapping
    profile_steps: tuple[int, ...]  # (first step, number of steps) to trace; () = off
    profile_all_hosts: bool  # trace on every process, not only process 0
    goodput_cloud_logger: str  # ml-goodput-measurement's Cloud Logging name; '' = goodput.jsonl only

    def __post_init__(self):
        if not isinstance(self.param_groups, tuple) or not all(isinstance(g, ParamGroup) for g in self.param_groups):
            object.__setattr__(self, "param_groups", parse_param_groups(self.param_groups))
        self._check()

    def _check(self):
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        for name in _NON_NEGATIVE_INTS:
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"train.{name} must be a non-negative integer, got {value!r}")
        if not _is_int(self.seed):
            raise ValueError(f"train.seed must be an integer, got {self.seed!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"train.warmup_steps={self.warmup_steps} exceeds train.steps={self.steps}")
        for name, low, high, low_ok in _FLOATS:
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            if not number or not (value >= low if low_ok else value > low) or value > high:
                bounds = f"{'[' if low_ok else '('}{low}, {high}{']' if math.isfinite(high) else ')'}"
                raise ValueError(f"train.{name} must be a finite number in {bounds}, got {value!r}")
        if self.lr_schedule not in ("linear", "cosine", "rsqrt"):
            raise ValueError(f"train.lr_schedule must be one of linear, cosine, rsqrt, got {self.lr_schedule!r}")
        for group in self.param_groups:
            if group.trainable_from >= self.steps and not group.frozen:
                raise ValueError(
                    f"train.param_groups.{group.name}.trainable_from={group.trainable_from} is not before "
                    f"train.steps={self.steps} (set frozen=True for a group that never trains)"
                )
        profile = tuple(self.profile_steps) if isinstance(self.profile_steps, tuple | list) else self.profile_steps
        object.__setattr__(self, "profile_steps", profile)
        if (
            not isinstance(profile, tuple)
            or profile
            and (len(profile) != 2 or not all(_is_int(v) for v in profile) or profile[0] < 1 or profile[1] < 1)
        ):
            raise ValueError(
                f"train.profile_steps must be () (off) or (first step >= 1, number of steps >= 1), got {profile!r}"
            )
        if not isinstance(self.profile_all_hosts, bool):
            raise ValueError(f"train.profile_all_hosts must be true or false, got {self.profile_all_hosts!r}")
        if not isinstance(self.goodput_cloud_logger, str):
            raise ValueError(f"train.goodput_cloud_logger must be a string, got {self.goodput_cloud_logger!r}")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"train.batch_size={self.batch_size} is not divisible by train.grad_accum_steps={self.grad_accum_steps}"
            )

    @property
    def last_step(self) -> int:
        """The step this invocation stops at: ``steps``, or ``stop_after`` when that comes first."""
        return min(self.steps, self.stop_after) if self.stop_after else self.steps


MESH_AXES = ("data", "fsdp", "tensor")
# The logical axis names the model gives its parameters and activations (what ``mesh.logical_rules`` maps).
LOGICAL_AXES = (
    "batch",
    "vocab",
    "heads",
    "mlp",
    "embed_out",
    "embed",
    "length",
    "kv",
    "prompts",
    "prompt_length",
    "layers",
)

# The logical-axis rules: (logical name the model uses, mesh axes), in priority order (flax gives each mesh
# axis to one dimension per array, the first rule that asks for it). ``batch`` over data x fsdp; ``embed``
# over fsdp splits the parameters and optimizer state (FSDP; activations keep ``embed`` whole, since
# ``batch`` took fsdp there); heads/mlp/vocab/embed_out over tensor (Megatron-style); the rest whole.
# The mesh block's default (``configs/common.mesh_config``); ``configs/common.logical_rules(embed=None)`` writes it
# with one rule changed (e.g. no FSDP split of the parameters).
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed_out", "tensor"),
    ("embed", "fsdp"),
    ("length", None),
    ("kv", None),
    ("prompts", None),
    ("prompt_length", None),
    ("layers", None),  # the stacked layer axis of model.scan_layers: every device holds every layer's shard
)


def check_logical_rules(rules: Any) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
    """``mesh.logical_rules`` as a tuple of ``(logical name, mesh axes)`` pairs, or a ValueError naming the bad rule.

    A name must be one the model uses (``LOGICAL_AXES``), once; its axes None (kept whole), a mesh axis
    (``MESH_AXES``) or a tuple of distinct mesh axes. (JSON's lists, from a saved config, become tuples.)
    """
    if isinstance(rules, str | bytes) or not isinstance(rules, list | tuple):
        raise ValueError(f"mesh.logical_rules must be a sequence of (logical name, mesh axes) pairs, got {rules!r}")
    out, seen = [], set()
    for rule in rules:
        if isinstance(rule, str | bytes) or not isinstance(rule, list | tuple) or len(rule) != 2:
            raise ValueError(f"mesh.logical_rules: {rule!r} is not a (logical name, mesh axes) pair")
        name, axes = rule
        if name not in LOGICAL_AXES:
            raise ValueError(
                f"mesh.logical_rules: unknown logical axis name {name!r} (the model's: {', '.join(LOGICAL_AXES)})"
            )
        if name in seen:
            raise ValueError(f"mesh.logical_rules: logical axis name {name!r} has two rules")
        seen.add(name)
        if isinstance(axes, list | tuple):
            axes = tuple(axes)
            names = axes
        elif axes is None or isinstance(axes, str):
            names = () if axes is None else (axes,)
        else:
            raise ValueError(f"mesh.logical_rules: {name!r} -> {axes!r}: mesh axes must be None, a name or a tuple")
        for axis in names:
            if axis not in MESH_AXES:
                raise ValueError(
                    f"mesh.logical_rules: {name!r} -> unknown mesh axis {axis!r} (the mesh's: {', '.join(MESH_AXES)})"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"mesh.logical_rules: {name!r} -> {axes!r} names a mesh axis twice")
        out.append((name, axes))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """``config.mesh``: the axis sizes of one slice (one may be -1: the rest), ``dcn_data`` slices, and the
    logical-axis rules that map the model's axis names onto the mesh (``check_logical_rules``)."""

    data: int
    fsdp: int
    tensor: int
    dcn_data: int
    logical_rules: tuple

    def __post_init__(self):
        object.__setattr__(self, "logical_rules", check_logical_rules(self.logical_rules))
        for axis in ("data", "fsdp", "tensor", "dcn_data"):
            value = getattr(self, axis)
            if not _is_int(value) or (value <= 0 and (value != -1 or axis == "dcn_data")):
                rest = "" if axis == "dcn_data" else " or -1 (= the rest)"
                raise ValueError(f"mesh.{axis} must be a positive integer{rest}, got {value!r}")
        rest = [a for a in ("data", "fsdp", "tensor") if getattr(self, a) == -1]
        if len(rest) > 1:
            sizes = {a: getattr(self, a) for a in (*MESH_AXES, "dcn_data")}
            raise ValueError(
                f"at most one mesh axis may be -1 (only one takes the rest), got "
                f"{', '.join('mesh.' + a for a in rest)} = -1 (mesh={sizes})"
            )


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run, checked: ``resolved`` is the ConfigDict it came from (what ``config.json`` holds)."""

    model: ModelConfig  # the pool is ``model.pool`` (None for the XLM-R baseline)
    data: DataConfig
    train: TrainConfig
    mesh: MeshConfig
    init_from_hf: str  # a transformers XLM-R directory to start from ('' = random init)
    resolved: Any = dataclasses.field(repr=False, compare=False)

    def __post_init__(self):
        if self.data.seq_length > self.model.max_length:
            raise ValueError(
                f"data.seq_length={self.data.seq_length} exceeds the model's position table "
                f"(model.max_position_embeddings={self.model.max_position_embeddings} holds "
                f"{self.model.max_length} tokens)"
            )


SECTIONS = ("model", "data", "train", "mesh", "init_from_hf")

# Fields newer than some saved configs (an old checkpoint's config.json), with the default a section without one
# takes (configs/common.py's). (The data block keeps its own list: data_pipelines.config.ADDED_FIELDS; the
# pool's training options take their old values instead: xlmp_jax.model.prompt_pool.PoolConfig.from_saved.)
ADDED_FIELDS = {"mesh": {"logical_rules": LOGICAL_RULES}}


class ConfigError(ValueError):
    """A config that cannot run; the message names the field and the value."""


def resolve(config: Any) -> RunConfig:
    """Checks a loaded config (an ml_collections ``ConfigDict``) before anything is built and returns it typed:
    the one place a run's config is parsed. Every error is a ``ConfigError`` naming the field and its value."""
    missing = [name for name in SECTIONS if name not in config]
    if missing:
        raise ConfigError(f"config lacks section(s) {missing}; expected {list(SECTIONS)}")
    try:
        train = from_section(TrainConfig, config.train, "train")
        mesh = from_section(MeshConfig, with_added_fields(config.mesh, "mesh"), "mesh")
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    try:
        model = ModelConfig.from_dict(config.model)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad model config: {e}") from e
    try:
        data = DataConfig.from_section(config.data)  # field values only; files are checked at start-up
        return RunConfig(model, data, train, mesh, str(config.init_from_hf), resolved=config)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e


def with_added_fields(section: Mapping[str, Any], name: str) -> dict:
    """``section`` as a dict, with the ``ADDED_FIELDS`` it lacks (a config saved before them) at their defaults."""
    values = dict(section)
    values.update({k: v for k, v in ADDED_FIELDS.get(name, {}).items() if k not in values})
    return values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
