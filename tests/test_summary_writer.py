"""TensorBoard events without TensorFlow: readable by TensorBoard, the records clu's writer wrote, no TF import."""

import glob
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import REPO
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.util import tensor_util

from xlmp_jax.runtime.summary_writer import TensorBoardWriter
from xlmp_jax.training.metrics import MetricsWriter, top_prompts_markdown


def _accumulator(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, object]]:
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]


def test_scalars_and_texts_read_back(tmp_path):
    writer = TensorBoardWriter(str(tmp_path / "tb"))
    writer.write_scalars(1, {"loss": 2.5, "loss/en": 3.0})
    writer.write_scalars(7, {"loss": 1.25})
    writer.write_texts(7, {"top_prompts": "| en | 3: 0.500 |"})
    writer.close()
    acc = _accumulator(tmp_path / "tb")
    assert sorted(acc.Tags()["tensors"]) == ["loss", "loss/en", "top_prompts"]
    assert _series(acc, "loss") == [(1, 2.5), (7, 1.25)]
    assert _series(acc, "loss/en") == [(1, 3.0)]
    assert _series(acc, "top_prompts") == [(7, b"| en | 3: 0.500 |")]
    assert acc.SummaryMetadata("loss").plugin_data.plugin_name == "scalars"
    assert acc.SummaryMetadata("top_prompts").plugin_data.plugin_name == "text"


def test_metrics_writer_jsonl_and_tensorboard(tmp_path):
    writer = MetricsWriter(str(tmp_path), active=True)
    top = {"en": [[3, 0.5], [1, 0.25]]}
    writer.write(10, {"loss": 4.0, "grad_norm": float("nan")}, {"top_prompts": top})
    writer.write(20, {"loss": 3.5})
    writer.flush()
    writer.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"step": 10, "loss": 4.0, "grad_norm": None, "top_prompts": top}, {"step": 20, "loss": 3.5}]
    acc = _accumulator(tmp_path / "tb")
    assert _series(acc, "loss") == [(10, 4.0), (20, 3.5)]
    assert "grad_norm" not in acc.Tags()["tensors"]  # not finite: left out of TensorBoard
    assert _series(acc, "top_prompts") == [(10, top_prompts_markdown(top).encode())]
    MetricsWriter(str(tmp_path / "other"), active=False).write(1, {"loss": 1.0})
    assert not (tmp_path / "other").exists()


def _events(path) -> list[event_pb2.Event]:
    data, events, i = open(path, "rb").read(), [], 0
    while i < len(data):
        n = int.from_bytes(data[i : i + 8], "little")
        events.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + n]))
        i += n + 16
    return events


def test_same_records_as_clu(tmp_path):
    """Event for event what clu's SummaryWriter (tf.summary) wrote, but for the wall times and the writer's name."""
    metric_writers = pytest.importorskip("clu.metric_writers")
    scalars, texts = {"loss": 1.5, "pool/usage_entropy": np.float32(0.1), "steps": 3}, {"top_prompts": "| a |"}
    clu_writer = metric_writers.SummaryWriter(str(tmp_path / "clu"))
    ours = TensorBoardWriter(str(tmp_path / "ours"))
    for w in (clu_writer, ours):
        w.write_scalars(5, scalars)
        w.write_texts(5, texts)
        w.close()

    def normalized(logdir):
        (path,) = glob.glob(f"{logdir}/events.out.tfevents.*.v2")
        events = _events(path)
        for e in events:
            e.wall_time = 0
            e.ClearField("source_metadata")
        return events

    assert normalized(tmp_path / "ours") == normalized(tmp_path / "clu")


def test_writing_imports_no_tensorflow(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from xlmp_jax.training.metrics import MetricsWriter
        w = MetricsWriter({str(tmp_path)!r}, active=True)
        w.write(1, {{"loss": 2.0}}, {{"top_prompts": {{"en": [[0, 1.0]]}}}})
        w.close()
        from xlmp_jax.evals.results import Result, write_tensorboard
        write_tensorboard({str(tmp_path / "sweep")!r}, [Result("w/tiny", 5, "xlmp", "mlm", "en", "loss", 2.0)])
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "seqio", "clu")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert glob.glob(str(tmp_path / "tb" / "events.out.tfevents.*"))
    assert _series(_accumulator(tmp_path / "sweep" / "tb" / "tiny"), "mlm/loss/en") == [(5, 2.0)]
