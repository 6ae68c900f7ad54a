"""Shared builder for the run configs (see ARCHITECTURE.md): one function, six thin config files.

Every field the trainer reads is present in the config it builds, with a value of the right type, so
ml_collections can type-check command-line overrides (``--config.train.steps=200``) and reject unknown fields.
Each block's defaults have one home: the model's are ``xlmp_jax.model.model_config`` (``SIZES``, ``ModelConfig``), the
pool's ``xlmp_jax.model.prompt_pool.PoolConfig``, the data block's ``data_pipelines.config.default_data_config``; this module
assembles those and is itself the home of the train, mesh and ``init_from_hf`` defaults (the mesh block's default
logical-axis rules are ``xlmp_jax.run_config.LOGICAL_RULES``, next to the names they map, and re-exported here).
Values that could not be checked against the XLM-P / XLM-R papers offline are marked "our choice".
"""

from __future__ import annotations

import dataclasses

import ml_collections

from data_pipelines.config import default_data_config
from xlmp_jax.model.model_config import ModelConfig
from xlmp_jax.model.prompt_pool import PoolConfig
from xlmp_jax.run_config import LOGICAL_RULES
from xlmp_jax.runtime import compile_cache


def model_config(size: str, *, pool: bool, pool_overrides: dict | None = None) -> ml_collections.ConfigDict:
    """The ``config.model`` block: every ``ModelConfig`` field, plus ``pool`` with an ``enabled`` switch.

    Its defaults are the size's (``model_config.SIZES`` over ``ModelConfig``'s) and ``PoolConfig``'s own. The
    baseline keeps the pool's fields (``enabled=False``) so that the same overrides parse for both.
    """
    fields = dataclasses.asdict(ModelConfig.preset(size, pool=False))
    fields.pop("pool")
    pool_fields = {"enabled": pool, **dataclasses.asdict(PoolConfig(**(pool_overrides or {})))}
    model = ml_collections.ConfigDict(fields)
    model.pool = ml_collections.ConfigDict(pool_fields)
    return model


def train_config(**overrides) -> ml_collections.ConfigDict:
    """The ``config.train`` block. AdamW betas/eps/weight decay are XLM-R's (RoBERTa's) values."""
    train = ml_collections.ConfigDict(
        dict(
            steps=1000,
            batch_size=32,  # global, over all hosts
            learning_rate=1e-3,
            warmup_steps=100,  # linear warm-up, then linear decay to 0 at `steps`
            weight_decay=0.01,
            b1=0.9,
            b2=0.98,
            eps=1e-6,
            grad_clip=1.0,  # global-norm clipping; 0 = off
            grad_accum_steps=1,
            log_every=50,
            checkpoint_every=500,
            keep_checkpoints=3,  # the last N, plus the best by eval loss
            eval_every=500,  # 0 = no periodic eval
            eval_batch_size=32,
            eval_batches=0,  # eval budget in batches, split equally over the trained languages; 0 = every held-out row
            seed=0,
            max_consecutive_nan=10,  # stop after this many NaN/Inf steps in a row
            label_smoothing=0.0,
            z_loss=0.0,
            stop_after=0,  # stop (with a checkpoint) after this step, e.g. for a scheduler's time limit; 0 = off
            pool_report=False,  # after training: print what the pool learned on held-out lines (sample source)
            data_shards=0,  # input shards (a multiple of the process count); 0 = one per process
            # resume the input position with the weights; False: weights only, the input continues at batch
            # <step> (for a checkpoint whose input state cannot be read, e.g. one of the old tf.data pipeline)
            restore_data=True,
            peak_flops=0.0,  # per device, FLOP/s, for MFU; 0 = look the device up in xlmp_jax.training.metrics.PEAK_FLOPS
            # JAX's persistent compilation cache, so a restart loads its programs; '' = off. A set
            # JAX_COMPILATION_CACHE_DIR environment variable wins (xlmp_jax/runtime/compile_cache.py).
            compilation_cache_dir=compile_cache.DEFAULT_DIR,
            lr_schedule="linear",  # linear | cosine | rsqrt: warm-up, then that decay (xlmp_jax/training/optim.py)
            # name -> param_group(...): own learning-rate multiplier, warm-up, weight decay, start or freezing
            # for the parameters a pattern matches (the rest keep the values above); {} = one group
            param_groups=ml_collections.ConfigDict(),
            profile_steps=(),  # (first step, number of steps): a jax.profiler trace in DIR/profile; () = off
            profile_all_hosts=False,  # trace every process, not only process 0
            goodput_cloud_logger="",  # also record goodput with ml-goodput-measurement under this name; '' = off
        )
    )
    train.update(overrides)
    return train


def param_group(
    pattern: str,
    *,
    lr_multiplier: float = 1.0,
    warmup_steps: int = -1,
    weight_decay: float = -1.0,
    trainable_from: int = 0,
    frozen: bool = False,
) -> ml_collections.ConfigDict:
    """One ``train.param_groups`` entry: the parameters whose path ``pattern`` fully matches
    (``pool/.*``), their learning rate as a multiple of ``train.learning_rate``, their own warm-up and weight
    decay (-1: the train section's), the update they start training at (their warm-up starts there), or
    ``frozen`` for good (no optimizer state, no gradients)."""
    return ml_collections.ConfigDict(
        dict(
            pattern=pattern,
            lr_multiplier=float(lr_multiplier),
            warmup_steps=warmup_steps,
            weight_decay=float(weight_decay),
            trainable_from=trainable_from,
            frozen=frozen,
        )
    )


def logical_rules(**changes) -> tuple:
    """``LOGICAL_RULES`` with the named rules' mesh axes replaced, in the same order (``embed=None``)."""
    unknown = sorted(set(changes) - {name for name, _ in LOGICAL_RULES})
    if unknown:
        raise ValueError(f"unknown logical axis name(s) {unknown}; the names: {[n for n, _ in LOGICAL_RULES]}")
    return tuple((name, changes.get(name, axes)) for name, axes in LOGICAL_RULES)


def mesh_config(**overrides) -> ml_collections.ConfigDict:
    """Mesh axis sizes; -1 = the rest of the devices. ``dcn_data`` > 1 splits `data` across slices.

    ``logical_rules`` maps the model's logical axis names onto the mesh axes (``LOGICAL_RULES``).
    """
    mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, dcn_data=1, logical_rules=LOGICAL_RULES))
    mesh.update(overrides)
    return mesh


# The full-size pre-training budget shared by base and large (they differ in learning rate, remat and
# mesh): RoBERTa/XLM-R style at a smaller budget. Our choice.
PRETRAIN_TRAIN = dict(
    steps=125_000,
    batch_size=2048,
    warmup_steps=10_000,
    log_every=100,
    checkpoint_every=2000,
    keep_checkpoints=3,
    eval_every=2000,
    eval_batch_size=256,
    eval_batches=16,
)


def make_config(
    size: str,
    *,
    pool: bool,
    seq_length: int,
    train: dict,
    mesh: dict | None = None,
    pool_overrides: dict | None = None,
    model_overrides: dict | None = None,
) -> ml_collections.ConfigDict:
    """A full run config (model, data, train, mesh, init_from_hf)."""
    config = ml_collections.ConfigDict()
    config.model = model_config(size, pool=pool, pool_overrides=pool_overrides)
    config.model.update(model_overrides or {})
    config.data = default_data_config()
    config.data.seq_length = seq_length
    config.train = train_config(**train)
    config.mesh = mesh_config(**(mesh or {}))
    config.init_from_hf = ""  # a transformers XLM-R directory to start from ('' = random init)
    return config


def without_pool(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The no-pool (XLM-R) twin of a config: same everything, ``model.pool.enabled=False``."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.pool.enabled = False
    return config
