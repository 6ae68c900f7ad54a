"""A run's prepared data: where it lives, preparing it when it is absent, and the mixture over its entries.

`data.prepared_dir` names the folder `python -m data_pipelines.prepare` wrote (local or gs://). When it is
empty, the run prepares there itself with the same pipeline; when the field is '' the folder is a cache
under `data.decompress_dir` (or the temp folder) keyed by the inputs' fingerprints (paths, sizes, modification
times), the vocabulary, seq_length and packing, so changed files are prepared again. On a multi-host run only
process 0 prepares; the others wait for its manifest.

Nothing here imports TensorFlow or SeqIO once the folder is prepared (only preparing does, for TFDS/TFRecord).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Sequence

from data_pipelines import line_sources, shards
from data_pipelines.config import DataConfig
from data_pipelines.mixing import temperature_rates

PREPARE_WAIT_S = 6 * 3600  # how long other hosts wait for process 0's prepare


def _say(message: str) -> None:
    print(message, flush=True)


@dataclasses.dataclass(frozen=True)
class Mixture:
    """The language entries a run mixes (MLM languages, then TLM pairs), their sizes and rates."""

    name: str  # identifies the prepared rows and the rates (an input state is only continued on the same)
    languages: tuple[str, ...]
    sizes: dict
    rates: dict


class PreparedData:
    """An opened prepared folder, checked against the run's data block."""

    def __init__(self, directory: str, cfg: DataConfig, vocab_sha256: str):
        self.directory = directory
        self.manifest = shards.read_manifest(directory)
        shards.check_matches(
            self.manifest, directory, seq_length=cfg.seq_length, packing=cfg.packing, vocab_sha256=vocab_sha256
        )
        self.splits = shards.splits_of(self.manifest)
        self.mixture = _mixture(self.manifest, cfg, directory)
        self.local = directory
        if shards.is_remote(directory):  # the ArrayRecord reader reads local files only: copy this run's shards
            self.local = _local_copy(directory, self.manifest, self.mixture.languages, cache_root(cfg))
        self._open: dict[tuple[str, str], shards.ShardRows] = {}

    def rows(self, entry: str, split: str) -> shards.ShardRows:
        """The rows of `entry`'s `split` (opened once)."""
        if (entry, split) not in self._open:
            self._open[entry, split] = shards.ShardRows(self.local, self.splits[entry, split])
        return self._open[entry, split]

    def all_rows(self, split: str) -> shards.ShardRows:
        """The `split` rows of every entry of the mixture, back to back in its order (one data source)."""
        return shards.ShardRows(self.local, *(self.splits[e, split] for e in self.mixture.languages))


def cache_root(cfg: DataConfig) -> str:
    """Where the run keeps prepared data of its own: `data.decompress_dir`, or the temp folder."""
    return cfg.decompress_dir or os.path.join(tempfile.gettempdir(), "xlmp_data_cache")


def _local_copy(directory: str, manifest: dict, entries: tuple[str, ...], root: str) -> str:
    """The run's shards of a remote prepared folder, copied once into a local folder (whole files only)."""
    from etils import epath

    digest = hashlib.sha1(json.dumps([directory, manifest["splits"]], sort_keys=True).encode()).hexdigest()[:20]
    local = os.path.join(root, "prepared-copies", digest)
    os.makedirs(local, exist_ok=True)
    for s in manifest["splits"]:
        if s["entry"] not in entries:
            continue
        for sh in s["shards"]:
            dest = os.path.join(local, sh["file"])
            if sh["rows"] and not (os.path.exists(dest) and os.path.getsize(dest) == sh["bytes"]):
                _say(f"data: copying {sh['file']} from {directory}")
                epath.Path(directory, sh["file"]).copy(dest + ".tmp", overwrite=True)
                os.replace(dest + ".tmp", dest)
    return local


def _mixture(manifest: dict, cfg: DataConfig, directory: str) -> Mixture:
    prepared = list(manifest["entries"])
    kinds = {s["entry"]: s["kind"] for s in manifest["splits"]}
    mono = list(cfg.languages) or [e for e in prepared if kinds[e] == "lines"]
    if cfg.tlm_rate <= 0:
        pairs = []
    elif cfg.parallel_languages:
        pairs = [f"en-{lang}" for lang in cfg.parallel_languages]
    else:
        pairs = [e for e in prepared if kinds[e] == "pairs"]
    missing = [e for e in mono + pairs if e not in prepared]
    if missing:
        raise shards.PreparedDataError(
            f"{os.path.join(directory, shards.MANIFEST)} has no {missing} (it has {prepared}): prepare again with "
            "this run's data.languages / data.parallel_languages"
        )
    if not mono:
        raise ValueError(f"data.languages={tuple(cfg.languages)!r} gives an empty mixture")
    overrides = dict(cfg.sizes)
    examples = {s["entry"]: s["examples"] for s in manifest["splits"] if s["split"] == "train"}
    sizes = {e: float(overrides.get(e, examples[e])) for e in mono + pairs}
    for entry, n in sizes.items():
        if n <= 0:
            raise ValueError(f"data.languages entry {entry!r} has no training examples")
    rates = {k: (1.0 - cfg.tlm_rate) * r for k, r in temperature_rates({k: sizes[k] for k in mono}, cfg.alpha).items()}
    if pairs:
        rates.update({k: cfg.tlm_rate * r for k, r in temperature_rates({k: sizes[k] for k in pairs}, cfg.alpha).items()})  # fmt: skip
    digest = [[s["entry"], s["split"], s["rows"], s["fingerprint"]] for s in manifest["splits"]]
    blob = json.dumps([digest, mono + pairs, rates], sort_keys=True)
    name = "prepared-" + hashlib.sha1(blob.encode()).hexdigest()[:12]
    return Mixture(name, tuple(mono + pairs), sizes, rates)


# ----------------------------------------------------------------------------------------------------------------
# Where the run's prepared data lives, and preparing it when it is absent
# ----------------------------------------------------------------------------------------------------------------
def default_dir(cfg: DataConfig, vocab_sha256: str, inputs: Sequence[line_sources.Input] | None = None) -> str:
    """The cache folder of a run without `data.prepared_dir`: keyed by what the rows depend on (`inputs`:
    the corpus's, when the caller listed them already)."""
    inputs = line_sources.inputs(cfg) if inputs is None else inputs
    fingerprints = [line_sources.fingerprint(i) for i in inputs]
    blob = json.dumps([shards.FORMAT, fingerprints, vocab_sha256, cfg.seq_length, cfg.packing])
    return os.path.join(cache_root(cfg), "prepared", hashlib.sha1(blob.encode()).hexdigest()[:20])


def _is_empty(directory: str) -> bool:
    if shards.is_remote(directory):
        from etils import epath

        p = epath.Path(directory)
        return not p.exists() or not any(p.iterdir())
    return not os.path.isdir(directory) or not os.listdir(directory)


def has_manifest(directory: str) -> bool:
    """Whether `directory` holds a finished prepare (local or gs://)."""
    path = os.path.join(directory, shards.MANIFEST)
    if shards.is_remote(path):
        from etils import epath

        return epath.Path(path).exists()
    return os.path.exists(path)


def prepare_command(directory: str) -> str:
    return f"python -m data_pipelines.prepare --config=<this run's config and --config.* flags> --out={directory}"


def open_prepared(cfg: DataConfig, vocab_sha256: str, *, process_index: int = 0) -> PreparedData:
    """The run's prepared data, prepared first (by process 0; the others wait) where its folder is empty."""
    explicit = bool(cfg.prepared_dir)
    inputs = None if explicit else line_sources.inputs(cfg)  # the cache key, and what a prepare would read
    directory = cfg.prepared_dir or default_dir(cfg, vocab_sha256, inputs)
    if not has_manifest(directory):
        if explicit and not _is_empty(directory):
            raise shards.PreparedDataError(
                f"{directory}: has files but no {shards.MANIFEST} (a prepare still running, or one that was "
                f"interrupted); finish it, or empty the folder and run `{prepare_command(directory)}`"
            )
        if process_index == 0:
            _say(f"data: preparing {directory} (tokenising and packing; once per corpus)")
            start = time.time()
            _prepare_into(cfg, directory, in_place=explicit, inputs=inputs)
            _say(f"data: prepared in {time.time() - start:.1f} s")
        else:
            _wait_for_manifest(directory)
    return PreparedData(directory, cfg, vocab_sha256)


def _prepare_into(
    cfg: DataConfig, directory: str, *, in_place: bool, inputs: Sequence[line_sources.Input] | None = None
) -> None:
    """Prepares `directory`: the user's folder in place; a cache folder under a temporary name, renamed when
    complete, so two runs that share the cache never see (or remove) each other's half-written shards."""
    from data_pipelines import prepare

    if in_place:
        prepare.prepare(cfg, directory, inputs=inputs)
        return
    if os.path.isdir(directory) and not has_manifest(directory):  # not ours to read: move aside, then remove
        aside = f"{directory}.stale{os.getpid()}"
        os.rename(directory, aside)
        prepare.remove_tree(aside)
    tmp = f"{directory}.tmp{os.getpid()}"
    prepare.prepare(cfg, tmp, inputs=inputs)
    try:
        os.rename(tmp, directory)
    except OSError:  # another run finished the same folder first: its rows are the same
        prepare.remove_tree(tmp)


def _wait_for_manifest(directory: str) -> None:
    start = time.time()
    while not has_manifest(directory):
        if time.time() - start > PREPARE_WAIT_S:
            raise shards.PreparedDataError(
                f"{directory}: process 0 has not finished preparing after {PREPARE_WAIT_S} s (is the folder shared "
                f"by all hosts?); prepare it beforehand with `{prepare_command(directory)}`"
            )
        time.sleep(2.0)
