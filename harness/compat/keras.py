"""Keras internals the harness relies on (written against keras 3.x; tested 3.15.1).

- `adam_slots`: the first and second moment variables Keras' Adam keeps for a variable
  (`Optimizer._get_variable_index`, `Adam._momentums`, `Adam._velocities`), for the
  network's written-out Adam update (`harness.models.vae.VAENetwork._apply_gradients`).
- `has_schedule`: whether an optimizer's learning rate is a schedule rather than a variable
  (`Optimizer._learning_rate`; the public `learning_rate` evaluates the schedule instead).
"""

from __future__ import annotations

from typing import Any

import keras

TESTED = ">=3,<4"  # the pyproject pin; tests/test_compat.py checks every function below


def adam_slots(optimizer: keras.optimizers.Adam, variable: Any) -> tuple[Any, Any]:
    """(first moment, second moment) backend variables of ``variable`` in a built Adam."""
    index = optimizer._get_variable_index(variable)
    return optimizer._momentums[index].value, optimizer._velocities[index].value


def has_schedule(optimizer: keras.optimizers.Optimizer) -> bool:
    """True if the optimizer's learning rate is a `LearningRateSchedule`."""
    return isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
