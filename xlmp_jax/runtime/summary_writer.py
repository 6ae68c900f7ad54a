"""TensorBoard event files written without TensorFlow.

``TensorBoardWriter`` writes what ``clu.metric_writers.SummaryWriter`` (``tf.summary``) wrote, record for record:
a ``brain.Event:2`` file whose scalars are float32 tensors of the ``scalars`` plugin and whose texts are string
tensors of the ``text`` plugin, so TensorBoard reads old and new runs alike. Importing clu's writers imports
TensorFlow, which a training or eval process reading prepared data must not need (accelerator images often lack
it); this uses only the ``tensorboard`` package's protos and record framing.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np
from etils import epath
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.record_writer import RecordWriter

_FILE_IDS = itertools.count()  # several writers of one process never share a file name


def _open_new_file(logdir: str, name: str) -> BinaryIO:
    """A new file in ``logdir`` (created if missing): plain ``open`` on a local disk, ``etils.epath`` for gs://."""
    if "://" in logdir:
        directory = epath.Path(logdir)
        directory.mkdir(parents=True, exist_ok=True)
        return (directory / name).open("wb")
    os.makedirs(logdir, exist_ok=True)
    return open(os.path.join(logdir, name), "wb")


def _value(tag: str, plugin: str, tensor: tensor_pb2.TensorProto) -> summary_pb2.Summary.Value:
    metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=metadata)


class TensorBoardWriter:
    """Scalars and Markdown texts into a new event file in ``logdir``, one event per value."""

    def __init__(self, logdir: str):
        self.logdir = logdir
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.{next(_FILE_IDS)}.v2"
        self._file = _open_new_file(logdir, name)
        self._records = RecordWriter(self._file)
        self._write(event_pb2.Event(wall_time=float(int(now)), file_version="brain.Event:2"))

    def _write(self, event: event_pb2.Event) -> None:
        self._records.write(event.SerializeToString())

    def _write_value(self, step: int, value: summary_pb2.Summary.Value) -> None:
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=[value])))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, v in scalars.items():
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                tensor_content=np.asarray(v, "<f4").tobytes(),
            )
            self._write_value(step, _value(tag, "scalars", tensor))

    def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
        for tag, text in texts.items():
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(),
                string_val=[text.encode("utf-8")],
            )
            self._write_value(step, _value(tag, "text", tensor))

    def flush(self) -> None:
        self._records.flush()

    def close(self) -> None:
        self._records.close()
