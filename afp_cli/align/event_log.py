"""TensorBoard events written by afp itself, at each log step, through afp's appending writer.

torch's ``SummaryWriter`` writes from a background thread that only logs its write errors: a full disk there went
unseen, or surfaced later as a traceback from another thread. Here each log step's scalars are framed as TFRecord
events (tensorboard's own record format and protobufs) and appended whole, in the training process, before the step
goes on: a disk that refuses them is afp's one-line DiskFault, like metrics.jsonl's, and a refused append is cut off
the file again, so the file holds whole events only.

The event file is a log for TensorBoard, not the run's record (``metrics.jsonl`` is, and --resume truncates it to
the checkpoint): a resumed run starts a new event file beside the old one, which keeps the steps logged after the
checkpoint it resumed from.
"""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from afp_cli.text_files import append_bytes

_FILE_VERSION = "brain.Event:2"  # what TensorBoard expects as the first event of a file


class EventLog:
    """One event file under ``folder`` (``events.out.tfevents.<time>.<host>.<pid>``, the name TensorBoard looks
    for); ``log(record)`` appends one scalar per number in the record at its ``step``."""

    def __init__(self, folder: Path):
        from tensorboard.compat.proto.event_pb2 import Event

        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._write([Event(wall_time=time.time(), file_version=_FILE_VERSION)])

    def log(self, record: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [
            Summary.Value(tag=key, simple_value=float(value))
            for key, value in record.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
        ]
        self._write([Event(wall_time=time.time(), step=int(record["step"]), summary=Summary(value=values))])

    def close(self) -> None:
        """Nothing is held open: every event is on disk once ``log`` returns."""

    def _write(self, events: list) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        framed = io.BytesIO()
        records = RecordWriter(framed)
        for event in events:
            records.write(event.SerializeToString())
        append_bytes(self.path, framed.getvalue(), "the TensorBoard events")
