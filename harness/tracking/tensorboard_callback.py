"""TensorBoard: one event-file run per finished trial, its per-epoch curves as scalars.

`<dir>/<study>/trial_<n>/`: `val_ndcg@<k>`, `loss`, `val_loss`, `beta`, `lr` per epoch
(step = epoch counted from 1), written with TensorFlow's own `tf.summary.write` and the
metadata of TensorBoard's scalar plugin, so writing needs no `tensorboard` package (TensorFlow
>= 2.20 no longer installs it); viewing does: `pip install tensorboard`, then
`tensorboard --logdir <dir>`.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from harness.tracking.series import epoch_series, study_k


class TensorBoardCallback:
    """Optuna callback writing each finished trial's per-epoch records as TensorBoard scalars."""

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir).expanduser().resolve()

    def trial_dir(self, study: optuna.Study, trial: FrozenTrial) -> Path:
        return self.log_dir / study.study_name / f"trial_{trial.number:04d}"

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from harness.devices import import_tensorflow

        tf = import_tensorflow()
        k = study_k(study)
        scalar, text = _metadata("scalars"), _metadata("text")
        writer = tf.summary.create_file_writer(str(self.trial_dir(study, trial)))
        with writer.as_default():
            for name, points in epoch_series(trial).items():
                tag = f"val_ndcg@{k}" if name == "val_ndcg" else name
                for step, value in points:
                    if math.isfinite(value):
                        tf.summary.write(tag, tf.constant(value, tf.float32), step, metadata=scalar)
            if trial.value is not None:
                value = tf.constant(trial.value, tf.float32)
                tf.summary.write(f"best_val_ndcg@{k}", value, 0, metadata=scalar)
            params = ", ".join(f"{key}={value}" for key, value in trial.params.items())
            line = f"trial {trial.number} ({trial.state.name}): {params}"
            tf.summary.write("params", tf.constant(line), 0, metadata=text)
        writer.close()


def _metadata(plugin: str) -> bytes:
    """SummaryMetadata naming a TensorBoard plugin (what tensorboard's own writers attach)."""
    from tensorflow.core.framework import summary_pb2

    data = summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin)
    return summary_pb2.SummaryMetadata(plugin_data=data).SerializeToString()
