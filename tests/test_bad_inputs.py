"""A catalogue of bad inputs, each with the error it must raise; RELIABILITY.md is rendered from it.

Every case builds one bad input in a fresh folder and calls the project the way a user would (in process:
the config loader, the start-up checks, restore, export, load, the eval sweep). The error must be of the
expected type, match the case's pattern and contain the bad value itself. Cases with saved state (a work
directory, an export) also check that the error left its bytes as they were.

    python -m tests.test_bad_inputs --write    # renders RELIABILITY.md from the messages captured now
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib
import json
import lzma
import os
import pathlib
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

if __name__ == "__main__":  # the --write CLI: the same 8 simulated devices as the tests (tests/conftest.py)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DOC = REPO / "RELIABILITY.md"

# When a check runs (the "checked" column of RELIABILITY.md).
LOAD = "config load"
STARTUP = "start-up, before compile"
CALL = "at the call, before any work"
PREPARE = "preparing the data, before the first step"
OPEN = "opening the prepared data, before the first step"


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: ``setup(tmp)`` builds it and returns the call that must fail."""

    id: str
    input: str  # what the user gave, in a few words
    setup: Callable[[pathlib.Path], Callable[[], Any]]
    error: type[BaseException]
    match: str  # regex the message must match
    value: str  # the bad value, verbatim in the message
    when: str = LOAD
    state: str = ""  # a folder under tmp whose bytes the error must leave unchanged


# ----------------------------------------------------------------------------------------------------------------
# Builders


def _config(*overrides: str, spec: str = "configs/tiny.py"):
    from xlmp_jax import config_utils

    return config_utils.load_config(spec, overrides)


def _load(*overrides: str, spec: str = "configs/tiny.py"):
    """A case whose call is loading the config with ``overrides``."""
    return lambda tmp: lambda: _config(*overrides, spec=spec)


def _data_check(*overrides: str, files: dict[str, bytes] | None = None, spec: str = "configs/tiny.py"):
    """A case whose call is the start-up data check; ``files`` are written under tmp/data first.

    Overrides may name ``{data}`` (that folder) and ``{tmp}``.
    """

    def setup(tmp: pathlib.Path):
        data = tmp / "data"
        data.mkdir()
        for name, body in (files or {}).items():
            (data / name).write_bytes(body)
        config = _config(*(o.format(data=data, tmp=tmp) for o in overrides), spec=spec)
        from data_pipelines import data_checks
        from xlmp_jax import config_utils

        return lambda: data_checks.check_run_data(config_utils.resolve(config))

    return setup


def _local_source(source: str, *overrides: str, files: dict[str, bytes]):
    """A local source on the files in tmp/data; languages ('en',) unless an override names them."""
    langs = () if any(o.startswith("data.languages=") for o in overrides) else ("data.languages=('en',)",)
    return _data_check(f"data.source={source}", "data.path={data}", *langs, *overrides, files=files)


def _text_source(*overrides: str, files: dict[str, bytes]):
    return _local_source("text", *overrides, files=files)


def _jsonl_source(*overrides: str, files: dict[str, bytes]):
    return _local_source("jsonl", *overrides, files=files)


def _deep_text_line(tmp: pathlib.Path):
    """A text corpus whose first lines are fine and whose fifth is Latin-1: the start-up check passes, the
    prepare the first `make_train_data` runs stops on that line."""
    data = tmp / "data"
    data.mkdir()
    lines = [b"line %d is fine\n" % i for i in range(1, 41)]
    lines[4] = b"caf\xe9 au lait\n"  # line 5: in the train split (the last lines are held out)
    (data / "en.txt").write_bytes(b"".join(lines))
    config = _config("data.source=text", f"data.path={data}", "data.languages=('en',)",
                     f"data.decompress_dir={tmp / 'cache'}", "data.seq_length=32")  # fmt: skip

    def call():
        from data_pipelines import data_checks
        from data_pipelines.input_pipeline import make_train_data
        from xlmp_jax import config_utils

        data_checks.check_run_data(config_utils.resolve(config))  # passes: the first record is UTF-8
        return next(make_train_data(config.data, global_batch_size=8))

    return call


def _train_data(tmp: pathlib.Path, *overrides: str):
    """The call that opens a run's prepared data: `make_train_data` on the tiny config's English sample."""
    config = _config("data.languages=('en',)", "data.seq_length=32", f"data.decompress_dir={tmp / 'cache'}", *overrides)

    def call():
        from data_pipelines.input_pipeline import make_train_data

        return make_train_data(config.data, global_batch_size=8)

    return call


def _unfinished_prepared_dir(tmp: pathlib.Path):
    """`data.prepared_dir` holding a shard but no manifest.json: a prepare that was interrupted or still runs."""
    folder = tmp / "half-prepared"
    folder.mkdir()
    (folder / "en-train.array_record-00000-of-00002").write_bytes(b"rows of a prepare that did not finish")
    return _train_data(tmp, f"data.prepared_dir={folder}")


def _prepared_for_another_seq_length(tmp: pathlib.Path):
    """`data.prepared_dir` prepared (here, now) with seq_length 64, opened by a run of seq_length 32."""
    from data_pipelines import prepare
    from data_pipelines.config import DataConfig

    folder = tmp / "prepared"
    other = _config("data.languages=('en',)", "data.seq_length=64", f"data.decompress_dir={tmp / 'cache'}")
    prepare.prepare(DataConfig.of(other.data), str(folder))
    return _train_data(tmp, f"data.prepared_dir={folder}")


def _mesh(mesh: dict):
    def setup(tmp):
        import jax
        from helpers import mesh_of

        from xlmp_jax.training import sharding

        return lambda: sharding.make_mesh(mesh_of(**mesh), jax.devices()[:8])

    return setup


def _batch_over_mesh(tmp):
    import jax
    from helpers import mesh_of

    from xlmp_jax.training import sharding

    mesh = sharding.make_mesh(mesh_of(data=8, fsdp=1, tensor=1), jax.devices()[:8])
    return lambda: sharding.check_batch_size(12, mesh)


def _workdir_through_a_file(tmp):
    from xlmp_jax.training import trainer

    (tmp / "notes.txt").write_text("a file, not a folder\n")
    return lambda: trainer.prepare_workdir(str(tmp / "notes.txt" / "work"))


def _abstract_state(*overrides: str):
    """A train state's shapes and shardings on one device (traced, nothing compiled)."""
    import jax

    from xlmp_jax import config_utils
    from xlmp_jax.training import optim, sharding, state

    run = config_utils.resolve(_config("model.pool.size=8", "data.seq_length=32", *overrides))
    mesh = sharding.make_mesh(run.mesh, jax.devices()[:1])
    return state.abstract_train_state(run.model, optim.make_optimizer(run.train).tx, mesh)[0]


def _checkpoint_of_another_size(tmp):
    import jax
    import numpy as np

    from xlmp_jax.training import checkpoint

    # zeros of a 32-wide state's shapes: the shapes are what the restore refuses
    small = jax.tree.map(
        lambda a: jax.device_put(np.zeros(a.shape, a.dtype), a.sharding),
        _abstract_state("model.hidden_size=32", "model.intermediate_size=64"),
    )
    ckpt = checkpoint.Checkpointer(str(tmp / "work"))
    ckpt.save(3, small)
    ckpt.close()
    target = _abstract_state()  # the tiny config as shipped: 64 wide (a resume restores into the abstract state)

    def restore():
        reader = checkpoint.Checkpointer(str(tmp / "work"))
        try:
            reader.restore_latest(target)
        finally:
            reader.close()

    return restore


def _export_over_a_full_folder(tmp):
    from xlmp_jax.hf import writer

    (tmp / "work").mkdir()
    (tmp / "work" / "out").mkdir()
    (tmp / "work" / "out" / "model.safetensors").write_bytes(b"an earlier export")
    return lambda: writer.export(str(tmp / "work"), str(tmp / "work" / "out"))


def _corrupt_pool_export(tmp):
    from xlmp_jax.hf import layout, load
    from xlmp_jax.model.model_config import ModelConfig
    from xlmp_jax.model.prompt_pool import PoolConfig

    config = ModelConfig.preset("tiny", pool=PoolConfig(size=8))
    out = tmp / "work"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(layout.hf_config_dict(config)))
    (out / layout.POOL_CONFIG_FILE).write_text(json.dumps(layout.pool_config_dict(config)))
    (out / "model.safetensors").write_bytes(b"weights would be here")
    (out / layout.POOL_WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00cut off")
    return lambda: load.load_pretrained(str(out))


def _sweep(**values):
    def setup(tmp):
        from xlmp_jax import config_utils, evaluate

        config_utils.ensure_importable()
        sweep = importlib.import_module("configs.eval_sweep").get_config()
        (tmp / "work").mkdir()
        sweep.workdirs, sweep.out = str(tmp / "work"), str(tmp / "evals")
        sweep.update({k: v.format(tmp=tmp) for k, v in values.items()})
        return lambda: evaluate.run_sweep(sweep)

    return setup


def _xtreme(task: str, **values):
    """A case whose call is the XTREME sweep (configs/xtreme.py) with ``task.<field>=<value>`` set; the work
    directory holds no checkpoint, so only a check made before any checkpoint is read can name the field."""

    def setup(tmp):
        from xlmp_jax import config_utils, evaluate

        config_utils.ensure_importable()
        sweep = importlib.import_module("configs.xtreme").get_config()
        (tmp / "work").mkdir()
        sweep.workdirs, sweep.out, sweep.evals = str(tmp / "work"), str(tmp / "evals"), task
        sweep[task].update(values)
        return lambda: evaluate.run_sweep(sweep)

    return setup


def _faults(tmp):
    from xlmp_jax.runtime import faults

    return lambda: faults.FaultInjector("sigterm@after_lunch")


def _token_ids(tmp):
    import numpy as np

    from xlmp_jax.model.model_config import ModelConfig
    from xlmp_jax.model.xlmp import check_inputs

    config = ModelConfig.preset("tiny")
    return lambda: check_inputs(config, np.array([[0, 5, 8002, 2]]))


def _missing_hf_dir(tmp):
    import jax

    from xlmp_jax.hf import load
    from xlmp_jax.model.model_config import ModelConfig

    return lambda: load.load_hf_params(str(tmp / "xlmr-base"), ModelConfig.preset("tiny"), jax.random.key(0))


def _tpu_type(tmp):
    from launch import accelerators

    return lambda: accelerators.tpu_accelerator("v4-7")


def _launch_config(spec: str):
    def setup(tmp):
        from launch import preflight

        return lambda: preflight.load_config(spec)

    return setup


def _xz(body: bytes) -> bytes:
    return lzma.compress(body)


def _errors():
    """Error types, imported late (the module must import without JAX for --help)."""
    from data_pipelines.data_checks import DataPreflightError
    from data_pipelines.packing import ContentError
    from data_pipelines.shards import PreparedDataError
    from launch.preflight import PreflightError
    from xlmp_jax.config_utils import ConfigError
    from xlmp_jax.training.checkpoint import IncompatibleCheckpointError
    from xlmp_jax.training.trainer import TrainError

    return (ConfigError, DataPreflightError, IncompatibleCheckpointError, TrainError, PreflightError, ContentError,
            PreparedDataError)  # fmt: skip


def catalogue() -> list[Case]:
    ConfigError, DataError, Incompatible, TrainError, PreflightError, ContentError, PreparedError = _errors()  # noqa: N806
    return [
        # --- the config: fields, types, ranges (config_utils.load_config / resolve) ---
        Case("unknown-field", "`train.stepz=3` (a typo)", _load("train.stepz=3"), ConfigError,
             r'unknown config field train\.stepz \(did you mean "steps"', "train.stepz"),
        Case("unknown-section", "`mdoel.hidden_size=32`", _load("mdoel.hidden_size=32"), ConfigError,
             r'unknown config field mdoel \(did you mean "model"', "mdoel"),
        Case("wrong-type-int", "`train.steps=abc`", _load("train.steps=abc"), ConfigError,
             r"train\.steps=abc: invalid literal for int", "abc"),
        Case("wrong-type-float", "`train.learning_rate=fast`", _load("train.learning_rate=fast"), ConfigError,
             r"train\.learning_rate=fast", "fast"),
        Case("missing-config-file", "`--config=configs/tiny2.py`", _load(spec="configs/tiny2.py"), ConfigError,
             r"config file not found: 'configs/tiny2\.py'", "configs/tiny2.py"),
        Case("zero-steps", "`train.steps=0`", _load("train.steps=0"), ConfigError,
             r"train\.steps must be a positive integer, got 0", "got 0"),
        Case("negative-batch", "`train.batch_size=-8`", _load("train.batch_size=-8"), ConfigError,
             r"train\.batch_size must be a positive integer, got -8", "-8"),
        Case("zero-learning-rate", "`train.learning_rate=0.0`", _load("train.learning_rate=0.0"), ConfigError,
             r"train\.learning_rate must be a finite number in \(0\.0, inf\), got 0\.0", "0.0"),
        Case("nan-learning-rate", "`train.learning_rate=nan`", _load("train.learning_rate=nan"), ConfigError,
             r"train\.learning_rate must be a finite number .* got nan", "nan"),
        Case("negative-grad-clip", "`train.grad_clip=-1.0`", _load("train.grad_clip=-1.0"), ConfigError,
             r"train\.grad_clip must be a finite number in \[0\.0, inf\), got -1\.0", "-1.0"),
        Case("beta-above-one", "`train.b2=1.5`", _load("train.b2=1.5"), ConfigError,
             r"train\.b2 must be a finite number in \[0\.0, 1\.0\], got 1\.5", "1.5"),
        Case("warmup-beyond-steps", "`train.steps=10 train.warmup_steps=30`",
             _load("train.steps=10", "train.warmup_steps=30"), ConfigError,
             r"train\.warmup_steps=30 exceeds train\.steps=10", "warmup_steps=30"),
        Case("batch-vs-accumulation", "`train.grad_accum_steps=3` with batch 32", _load("train.grad_accum_steps=3"),
             ConfigError, r"train\.batch_size=32 is not divisible by train\.grad_accum_steps=3", "grad_accum_steps=3"),
        Case("unknown-schedule", "`train.lr_schedule=exponential`", _load("train.lr_schedule=exponential"),
             ConfigError, r"train\.lr_schedule must be one of linear, cosine, rsqrt, got 'exponential'", "exponential"),
        Case("profile-steps-shape", "`train.profile_steps=(5,)`", _load("train.profile_steps=(5,)"), ConfigError,
             r"train\.profile_steps must be \(\) \(off\) or \(first step >= 1, number of steps >= 1\), got \(5,\)",
             "(5,)"),
        Case("param-group-bad-regex", "`train.param_groups.pool.pattern=pool/(` in base_from_xlmr",
             _load("train.param_groups.pool.pattern=pool/(", spec="configs/base_from_xlmr.py"), ConfigError,
             r"train\.param_groups\.pool\.pattern='pool/\(' is not a regular expression", "pool/("),
        Case("param-group-starts-after-the-run", "`train.param_groups.encoder.trainable_from=30000` (20,000 steps)",
             _load("train.param_groups.encoder.trainable_from=30000", spec="configs/base_from_xlmr.py"), ConfigError,
             r"train\.param_groups\.encoder\.trainable_from=30000 is not before train\.steps=20000", "30000"),
        Case("param-group-zero-lr", "`train.param_groups.pool.lr_multiplier=0.0`",
             _load("train.param_groups.pool.lr_multiplier=0.0", spec="configs/base_from_xlmr.py"), ConfigError,
             r"train\.param_groups\.pool\.lr_multiplier must be a finite number > 0 \(use frozen=True", "got 0.0"),
        Case("mlm-rate-above-one", "`data.mlm_rate=1.5`", _load("data.mlm_rate=1.5"), ConfigError,
             r"data\.mlm_rate=1\.5: expected 0 < mlm_rate < 1", "1.5"),
        Case("mask-prob-negative", "`data.mask_prob=-0.1`", _load("data.mask_prob=-0.1"), ConfigError,
             r"data\.mask_prob=-0\.1: expected a probability in \[0, 1\]", "-0.1"),
        Case("seq-length-too-small", "`data.seq_length=4`", _load("data.seq_length=4"), ConfigError,
             r"data\.seq_length=4: expected an int >= 8", "seq_length=4"),
        Case("seq-length-beyond-positions", "`data.seq_length=512` on tiny (130 positions)",
             _load("data.seq_length=512"), ConfigError,
             r"data\.seq_length=512 exceeds the model's position table", "512"),
        Case("unknown-source", "`data.source=mc5`", _load("data.source=mc5"), ConfigError,
             r"data\.source='mc5': unknown source", "mc5"),
        Case("pool-size-zero", "`model.pool.size=0` (pool on)", _load("model.pool.size=0"), ConfigError,
             r"model\.pool\.size must be a positive integer, got 0", "got 0"),
        Case("top-k-beyond-pool", "`model.pool.retrieval=topk model.pool.top_k=32` (16 prompts)",
             _load("model.pool.retrieval=topk", "model.pool.top_k=32"), ConfigError,
             r"model\.pool\.top_k=32 exceeds model\.pool\.size=16", "top_k=32"),
        Case("heads-do-not-divide", "`model.num_heads=5` (64 wide)", _load("model.num_heads=5"), ConfigError,
             r"model\.hidden_size=64 is not divisible by model\.num_heads=5", "num_heads=5"),
        Case("two-rest-axes", "`mesh.data=-1 mesh.fsdp=-1`", _load("mesh.fsdp=-1"), ConfigError,
             r"at most one mesh axis may be -1", "'fsdp': -1"),
        # --- the data a run will read (data_pipelines.data_checks, train's config phase) ---
        Case("vocab-smaller-than-data", "`model.vocab_size=4000` with the 8,002-id sample vocabulary",
             _data_check("model.vocab_size=4000"), DataError,
             r"model\.vocab_size=4000 is smaller than the data vocabulary .*8002 ids.*set model\.vocab_size=8002",
             "4000", STARTUP),
        Case("vocab-larger-than-data", "`configs/base.py` as shipped (250,002-row model, sample vocabulary)",
             _data_check(spec="configs/base.py"), DataError,
             r"model\.vocab_size=250002 is larger than the data vocabulary .*\(8002 ids\): <mask> would be id 8001",
             "250002", STARTUP),
        Case("vocab-file-missing", "`data.vocab_path` names no file", _data_check("data.vocab_path={tmp}/spm.model"),
             DataError, r"data\.vocab_path='.*spm\.model': no such file", "spm.model", STARTUP),
        Case("vocab-not-sentencepiece", "`data.vocab_path` is a text file",
             _data_check("data.vocab_path={data}/vocab.txt", files={"vocab.txt": b"hello\nworld\n"}), DataError,
             r"data\.vocab_path='.*vocab\.txt' is not a SentencePiece model", "vocab.txt", STARTUP),
        Case("sample-language-unknown", "`data.languages=('en','qq')` on the sample",
             _data_check("data.languages=('en','qq')"), DataError,
             r"data\.languages entry 'qq' is not in the sample", "'qq'", STARTUP),
        Case("data-path-missing", "`data.source=text data.path=<missing folder>`",
             _data_check("data.source=text", "data.path={tmp}/corpus"), DataError,
             r"data\.path='.*corpus' does not exist", "corpus", STARTUP),
        Case("language-file-missing", "`data.languages=('en','de')`, no de.txt",
             _text_source("data.languages=('en','de')", files={"en.txt": b"hello\n"}), DataError,
             r"data\.languages entry 'de': no de\.txt/de\.txt\.gz/de\.txt\.xz in data\.path=", "'de'", STARTUP),
        Case("empty-text-file", "`en.txt` of 0 bytes", _text_source(files={"en.txt": b""}), DataError,
             r"en\.txt: the file is empty", "en.txt", STARTUP),
        Case("text-not-utf8", "`en.txt` in Latin-1 (`caf\\xe9`)", _text_source(files={"en.txt": b"caf\xe9 au lait\n"}),
             DataError, r"en\.txt:1: not UTF-8 text \(byte b'\\xe9' at offset 3", "en.txt:1", STARTUP),
        Case("text-not-utf8-deep", "`en.txt` of 40 lines whose fifth is Latin-1", _deep_text_line,
             ContentError, r"en\.txt:5: not valid UTF-8 \(byte 3: b'\\xe9", "en.txt:5", PREPARE),
        Case("prepared-dir-unfinished", "`data.prepared_dir` holds shards but no manifest.json (an interrupted prepare)",
             _unfinished_prepared_dir, PreparedError,
             r"half-prepared: has files but no manifest\.json \(a prepare still running, or one that was interrupted\)",
             "half-prepared", OPEN, "half-prepared"),
        Case("prepared-for-another-seq-length", "`data.prepared_dir` prepared with `data.seq_length=64`, run with 32",
             _prepared_for_another_seq_length, PreparedError,
             r"prepared/manifest\.json was prepared with seq_length 64, this run has 32: prepare again",
             "seq_length 64", OPEN, "prepared"),
        Case("remote-token-cache", "`data.decompress_dir=gs://bucket/cache`", _load("data.decompress_dir=gs://bucket/cache"),
             ConfigError, r"data\.decompress_dir='gs://bucket/cache'.*local folder", "gs://bucket/cache"),
        Case("xz-not-utf8", "`en.txt.xz` whose first line is Latin-1",
             _text_source(files={"en.txt.xz": _xz(b"na\xefve\nok\n")}), DataError,
             r"en\.txt\.xz:1: not UTF-8 text", "en.txt.xz:1", STARTUP),
        Case("xz-corrupt", "`en.txt.xz` that is not xz data", _text_source(files={"en.txt.xz": b"plain text\n"}),
             DataError, r"en\.txt\.xz: cannot be read", "en.txt.xz", STARTUP),
        Case("jsonl-without-text-key", "`en.jsonl` whose records hold `body`, not `text`",
             _jsonl_source(files={"en.jsonl": b'\n{"body": "hello", "id": 1}\n'}), DataError,
             r"en\.jsonl:2: no key data\.text_field='text' \(keys: \['body', 'id'\]\)", "'text'", STARTUP),
        Case("jsonl-not-json", "`en.jsonl` that is plain text", _jsonl_source(files={"en.jsonl": b"hello world\n"}),
             DataError, r"en\.jsonl:1: not a JSON object", "en.jsonl:1", STARTUP),
        Case("tfds-unknown-dataset", "`data.source=mc4 data.mc4_tfds_name=c4x/multilingual`",
             _data_check("data.source=mc4", "data.languages=('en',)", "data.mc4_tfds_name=c4x/multilingual"),
             DataError, r"data\.mc4_tfds_name='c4x/multilingual': TFDS has no dataset 'c4x'", "c4x", STARTUP),
        Case("tfds-unknown-config", "`data.source=wiki40b data.languages=('xx',)`",
             _data_check("data.source=wiki40b", "data.languages=('xx',)"), DataError,
             r"data\.wiki40b_tfds_name='wiki40b/xx:1\.3\.0': TFDS dataset 'wiki40b' has no config 'xx'", "'xx'",
             STARTUP),
        # --- devices and the work directory (train's config phase) ---
        Case("mesh-vs-devices", "`mesh.data=3` on 8 devices", _mesh({"data": 3, "fsdp": 1, "tensor": 1}), ValueError,
             r"mesh\.data=3, mesh\.fsdp=1, mesh\.tensor=1 needs 3 devices, but there are 8", "mesh.data=3", STARTUP),
        Case("mesh-rest-does-not-divide", "`mesh.tensor=3` with data=-1 on 8 devices",
             _mesh({"data": -1, "fsdp": 1, "tensor": 3}), ValueError,
             r"the fixed axes \(3\) do not divide the device count 8", "mesh.tensor=3", STARTUP),
        Case("batch-vs-mesh", "`train.batch_size=12` over 8 data-parallel devices", _batch_over_mesh, ValueError,
             r"train\.batch_size=12", "12", STARTUP),
        Case("workdir-not-writable", "`--workdir=notes.txt/work` (a file in the path)", _workdir_through_a_file,
             TrainError, r"work directory '.*notes\.txt/work' is not writable: Not a directory", "notes.txt/work",
             STARTUP),
        # --- saved state: restore, export, load, evaluate ---
        Case("checkpoint-of-another-size", "a 32-wide checkpoint restored into the 64-wide tiny model",
             _checkpoint_of_another_size, Incompatible,
             r"checkpoint .*work/checkpoints/3 is incompatible with this config: '.*' has shape \(.*32.*\) there but",
             "32", "restore, before any step", "work"),
        Case("export-target-not-empty", "`export --out=DIR`, DIR holds an earlier export",
             _export_over_a_full_folder, FileExistsError,
             r"export destination '.*work/out' exists and is not empty \(pass --overwrite\)", "work/out", CALL, "work"),
        Case("export-pool-corrupt", "an export whose `prompt_pool.safetensors` is cut off", _corrupt_pool_export,
             ValueError, r"prompt_pool\.safetensors' is not a readable safetensors file", "prompt_pool.safetensors",
             CALL, "work"),
        Case("init-from-missing-hf-dir", "`init_from_hf=<missing folder>`", _missing_hf_dir, FileNotFoundError,
             r"transformers model directory '.*xlmr-base' does not exist", "xlmr-base", CALL),
        Case("eval-unknown", "`evals=mlm,bleu` in the eval sweep", _sweep(evals="mlm,bleu"), ValueError,
             r"unknown eval 'bleu' \(known: ", "'bleu'", CALL, "work"),
        Case("eval-missing-workdir", "`workdirs=<missing folder>` in the eval sweep",
             _sweep(workdirs="{tmp}/run7"), FileNotFoundError, r"work directory '.*run7' does not exist", "run7",
             CALL),
        Case("finetune-zero-seeds", "`xnli.seeds=0` in configs/xtreme.py", _xtreme("xnli", seeds=0), ValueError,
             r"xnli\.seeds=0 is not a positive number of fine-tuning seeds", "xnli.seeds=0", CALL, "work"),
        Case("finetune-negative-eval-every", "`ner.eval_every=-5`", _xtreme("ner", eval_every=-5), ValueError,
             r"ner\.eval_every=-5 is not a step count >= 0", "ner.eval_every=-5", CALL, "work"),
        Case("finetune-dev-fraction-one", "`pos.dev_fraction=1.0` (nothing left to train on)",
             _xtreme("pos", dev_fraction=1.0), ValueError, r"pos\.dev_fraction=1\.0 is not in \[0, 1\)",
             "pos.dev_fraction=1.0", CALL, "work"),
        Case("finetune-devices-beyond-host", "`pawsx.devices=16` on 8 devices", _xtreme("pawsx", devices=16),
             ValueError, r"pawsx\.devices=16 but this host has 8 local devices", "pawsx.devices=16", CALL, "work"),
        Case("finetune-devices-vs-batch", "`xquad.devices=8` with `xquad.batch_size=12`",
             _xtreme("xquad", devices=8, batch_size=12), ValueError,
             r"xquad\.devices=8 does not divide xquad\.batch_size=12", "xquad.devices=8", CALL, "work"),
        Case("qa-seeds-zero", "`mlqa.seeds=0`", _xtreme("mlqa", seeds=0), ValueError,
             r"mlqa\.seeds=0 is not a positive number", "mlqa.seeds=0", CALL, "work"),
        Case("qa-stride-beyond-window", "`xquad.doc_stride=340` (384-token windows, 64-token questions)",
             _xtreme("xquad", doc_stride=340), ValueError,
             r"xquad\.doc_stride=340 is larger than a window's context \(316 tokens", "xquad.doc_stride=340", CALL,
             "work"),
        Case("qa-question-fills-window", "`tydiqa.max_length=64` with `tydiqa.max_query_length=64`",
             _xtreme("tydiqa", max_length=64), ValueError,
             r"tydiqa\.max_length=64 leaves no room for context after a tydiqa\.max_query_length=64-token question",
             "tydiqa.max_length=64", CALL, "work"),
        Case("qa-zero-stride", "`mlqa.doc_stride=0`", _xtreme("mlqa", doc_stride=0), ValueError,
             r"mlqa\.doc_stride=0 is not a positive number of tokens", "mlqa.doc_stride=0", CALL, "work"),
        # --- the environment and the model's own input checks ---
        Case("faults-bad-entry", "`XLMP_FAULTS=sigterm@after_lunch`", _faults, ValueError,
             r"XLMP_FAULTS: bad entry 'sigterm@after_lunch': the point must be one of", "after_lunch", STARTUP),
        Case("token-id-out-of-range", "id 8002 fed to the 8,002-id tiny model", _token_ids, ValueError,
             r"token id 8002 is outside the vocabulary \[0, 8002\)", "8002", CALL),
        Case("launch-base-with-sample-vocab", "`launch.preflight --config=configs/base.py` as shipped",
             _launch_config("configs/base.py"), PreflightError,
             r"model\.vocab_size=250002 is larger than the data vocabulary", "250002",
             "launch preflight, on the launching machine"),
        Case("launch-bad-tpu-type", "`launch.tpu --accelerator_type=v4-7`", _tpu_type, PreflightError,
             r"v4-7", "v4-7", "launch preflight, on the launching machine"),
    ]  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Running a case


def snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes (files) or its kind (folders, links)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def run_case(case: Case, tmp: pathlib.Path) -> str:
    """Runs ``case`` in ``tmp``; returns its message (raises AssertionError if the contract is broken)."""
    call = case.setup(tmp)
    before = snapshot(tmp / case.state) if case.state else None
    try:
        call()
    except case.error as e:
        message = str(e)
    else:
        raise AssertionError(f"{case.id}: no error raised (expected {case.error.__name__})")
    assert re.search(case.match, message), f"{case.id}: {message!r} does not match {case.match!r}"
    assert case.value in message, f"{case.id}: the bad value {case.value!r} is not in {message!r}"
    if before is not None:
        assert snapshot(tmp / case.state) == before, f"{case.id}: the error changed {tmp / case.state}"
    return message


def normalize(message: str, tmp: pathlib.Path) -> str:
    """The message with this run's temporary folder and the checkout's path replaced (a stable document)."""
    for path, name in ((str(tmp.resolve()), "$TMP"), (str(tmp), "$TMP"), (str(REPO), "$REPO")):
        message = message.replace(path, name)
    return " ".join(message.split())


_MESSAGES: dict[str, str] = {}  # normalized messages captured by the parametrised test, for the document test


def messages() -> dict[str, str]:
    """Every case's normalized message (those the tests already captured, the rest run now)."""
    out = {}
    for case in catalogue():
        if case.id not in _MESSAGES:
            with tempfile.TemporaryDirectory() as tmp:
                _MESSAGES[case.id] = normalize(run_case(case, pathlib.Path(tmp)), pathlib.Path(tmp))
        out[case.id] = _MESSAGES[case.id]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The document

INTRO = """\
# Reliability: what a bad input gets

Bad input fails with one error that names the bad value (and the field or the file), before anything
compiles and without touching saved state. Rendered from the catalogue in `tests/test_bad_inputs.py`:
each row is a case that the tests run, and the message is the one they captured (`$TMP` is the case's
temporary folder, `$REPO` this checkout). Regenerate with `python -m tests.test_bad_inputs --write`;
`test_reliability_md_is_current` fails when this file and the catalogue differ.

When each check runs:

- **config load** (`xlmp_jax.config_utils.load_config`, the trainer's flag parsing, `launch.preflight`):
  unknown fields (with a "did you mean"), wrong types, ranges of every `train`, `model`, `mesh` and `data`
  field. Nothing is read from disk but the config file.
- **start-up, before compile** (`xlmp_jax.training.trainer.train`, before the work directory is created or locked):
  `data_pipelines.data_checks.check_run_data` — the vocabulary file and its size against `model.vocab_size`
  (both directions: they must be equal), each language's local files (exist, not empty, first record UTF-8,
  JSON lines with `data.text_field`), TFDS names (local registry, no network); then the work directory, the
  mesh against the devices and the batch against the mesh, `XLMP_FAULTS`.
- **restore, before any step**: a checkpoint of another model names the first differing parameter and both
  shapes; the checkpoint is left in place.
- **at the call**: export, `load_pretrained`, the eval sweep and the model's own input check refuse before
  they write or compile anything.
- **preparing the data, before the first step** (`data_pipelines.prepare`: `python -m data_pipelines.prepare`
  beforehand, or the run itself when its prepared folder is empty): a line of a train or validation split
  that is not UTF-8 (after a file's first record) stops the prepare naming the file and the line, and no
  manifest is written; remote (`gs://`) files are checked when they are opened.
- **opening the prepared data, before the first step** (`data_pipelines.dataset` / `shards`): a
  `data.prepared_dir` with files but no `manifest.json`, a manifest made for another vocabulary, seq_length or
  packing, or a shard missing or of another size than the manifest says is refused, naming the folder or file;
  nothing is prepared over it.

Cases marked "saved state kept" also assert that the work directory's bytes are unchanged after the error.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(captured: dict[str, str]) -> str:
    rows = [
        "| # | case | input | checked | error | message |",
        "|---|---|---|---|---|---|",
    ]
    for i, case in enumerate(catalogue(), 1):
        when = case.when + ("; saved state kept" if case.state else "")
        rows.append(
            f"| {i} | `{case.id}` | {_cell(case.input)} | {when} | `{case.error.__name__}` | "
            f"{_cell(captured[case.id])} |"
        )
    return INTRO + "\n" + "\n".join(rows) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Tests

CASE_IDS = [case.id for case in catalogue()]


def test_the_catalogue_has_30_distinct_cases():
    assert len(set(CASE_IDS)) == len(CASE_IDS) >= 30


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_names_the_bad_value(case_id, tmp_path):
    (case,) = [c for c in catalogue() if c.id == case_id]
    _MESSAGES[case.id] = normalize(run_case(case, tmp_path), tmp_path)


@pytest.mark.slow
def test_reliability_md_is_current():
    assert DOC.read_text(encoding="utf-8") == render(messages()), (
        "RELIABILITY.md differs from the catalogue: python -m tests.test_bad_inputs --write"
    )


def test_a_case_that_does_not_fail_is_reported(tmp_path):
    """The runner itself: a call that does not raise, or a message without the value, is a failure."""
    quiet = Case("ok", "a good config", _load(), ValueError, "x", "x")
    with pytest.raises(AssertionError, match="no error raised"):
        run_case(quiet, tmp_path)
    vague = Case("vague", "steps=0", _load("train.steps=0"), ValueError, "positive", "steps=0")
    with pytest.raises(AssertionError, match="the bad value 'steps=0' is not in"):
        run_case(vague, tmp_path)


# The command lines, end to end (a few; each starts Python and JAX): exit status 2, one line on stderr that
# names the value, and nothing written.
CLI_CASES = [
    (["--config.train.stepz=3"], r"unknown config field train\.stepz \(did you mean \"steps\""),
    (["--config.model.vocab_size=4000"], r"model\.vocab_size=4000 is smaller than the data vocabulary"),
    (["--config=configs/base.py"], r"model\.vocab_size=250002 is larger than the data vocabulary"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "pattern"), CLI_CASES)
def test_train_cli_refuses_before_writing(args, pattern, tmp_path):
    workdir = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "xlmp_jax.train", *args, f"--workdir={workdir}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("xlmp_jax.train: error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"write {DOC.name} (default: print it)")
    args = parser.parse_args(argv)
    text = render(messages())
    if args.write:
        DOC.write_text(text, encoding="utf-8")
        print(f"wrote {DOC} ({len(catalogue())} cases)")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
