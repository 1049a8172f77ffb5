"""Which device trains: GPU selection, memory growth, worker pinning, quiet TensorFlow start-up.

TensorFlow places every op on the first visible GPU by itself; what the harness adds:

- `sweep.gpus=[0,1]`: worker i of `sweep.n_workers` is pinned to GPU `gpus[i % len(gpus)]`
  (a spawned worker sets `CUDA_VISIBLE_DEVICES` from `worker_device_env` before TensorFlow
  starts; an in-process run uses `tf.config.set_visible_devices`);
- memory growth on every visible GPU, so several workers can share one GPU;
- a `sweep.gpus` entry that names no visible GPU is an error listing the visible ones;
- TensorFlow's start-up lines (oneDNN notice, CUDA probing, "E0000 ... cpu_feature_guard")
  are dropped unless asked for with `VAE_SWEEP_TF_LOGS=1` (or `TF_CPP_MIN_LOG_LEVEL` < 2 set
  by the user).

Selection logic is pure functions over a list of visible device names, so CPU-only CI tests
it; only `visible_gpus`, `configure_tensorflow` and `describe_device` touch TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

QUIET_ENV = "VAE_SWEEP_TF_LOGS"


class DeviceConfigError(ValueError):
    """A device setting (`sweep.gpus`) is invalid; the message lists the visible devices."""


# --- pure selection logic -------------------------------------------------------------------


def parse_gpus(gpus: Any) -> tuple[int, ...] | None:
    """`sweep.gpus` as a tuple of GPU indices; None/empty = no pinning.

    Accepts a list of ints (or digit strings), a single int, or a comma-separated string.

    Raises:
        DeviceConfigError: An entry that is not a non-negative integer, or a repeated one.
    """
    if gpus is None or gpus == "" or gpus == []:
        return None
    if isinstance(gpus, str):
        items: list[Any] = [g.strip() for g in gpus.split(",") if g.strip()]
    elif isinstance(gpus, int):
        items = [gpus]
    else:
        items = list(gpus)
    out = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit():
            raise DeviceConfigError(
                f"sweep.gpus: entry {item!r} is not a GPU index; use indices as listed by "
                "nvidia-smi, e.g. sweep.gpus=[0,1] (or null to use the default device)."
            )
        out.append(int(text))
    if len(set(out)) != len(out):
        raise DeviceConfigError(f"sweep.gpus={out}: an index is repeated; list each GPU once.")
    return tuple(out)


def check_gpus(gpus: Sequence[int] | None, visible: Sequence[str]) -> None:
    """Raise unless every index of `gpus` names one of the `visible` GPUs.

    Args:
        gpus: Requested indices (None = nothing requested: always fine).
        visible: Visible GPU names in index order, e.g. ["/physical_device:GPU:0", ...].

    Raises:
        DeviceConfigError: Naming the bad index and listing the visible devices.
    """
    if not gpus:
        return
    for index in gpus:
        if not 0 <= index < len(visible):
            shown = ", ".join(f"{i}: {name}" for i, name in enumerate(visible)) or "none"
            raise DeviceConfigError(
                f"sweep.gpus: GPU {index} is not visible; visible GPUs: {shown}. Pick indices "
                "from that list, or set sweep.gpus=null to train on the default device"
                + (
                    " (the CPU here). No GPU visible: the default install is CPU-only; "
                    "pip install 'vae-sweep[gpu]' installs TensorFlow with CUDA."
                    if not visible
                    else "."
                )
            )


def gpu_for_worker(worker_id: int | None, gpus: Sequence[int] | None) -> int | None:
    """The GPU index worker `worker_id` trains on: round-robin over `gpus` (None: no pinning).

    A run without worker ids (one in-process worker) takes the first listed GPU.
    """
    if not gpus:
        return None
    return gpus[(worker_id or 0) % len(gpus)]


def worker_device_env(worker_id: int | None, gpus: Sequence[int] | None) -> dict[str, str]:
    """Environment variables that pin a spawned worker to its GPU before TensorFlow starts.

    Set them in the child process before it imports TensorFlow (or pass them to a subprocess).
    Indices are those of the parent's visible devices: when the parent itself runs with
    `CUDA_VISIBLE_DEVICES=a,b,...`, index i maps to the i-th entry of that list.
    """
    gpu = gpu_for_worker(worker_id, gpus)
    if gpu is None:
        return {}
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    if parent:
        listed = [d.strip() for d in parent.split(",") if d.strip()]
        if gpu < len(listed):
            return {"CUDA_VISIBLE_DEVICES": listed[gpu]}
    return {"CUDA_VISIBLE_DEVICES": str(gpu)}


def n_workers_for(visible: Sequence[str], gpus: Sequence[int] | None = None) -> int:
    """Workers for `sweep.n_workers=auto`: one per used GPU (listed, else visible), else 1."""
    if gpus:
        return len(gpus)
    return max(len(visible), 1)


# --- TensorFlow -----------------------------------------------------------------------------


def tf_logs_wanted() -> bool:
    """True when the user asked for TensorFlow's own log lines."""
    if os.environ.get(QUIET_ENV, "").strip() not in ("", "0"):
        return True
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip()
    return level in ("0", "1")


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Send fd 2 (where TensorFlow's C++ logs go) to a temp file; replay it on an error."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a replaced stderr (pytest capture, IDEs)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            sink.seek(0)
            os.write(fd, sink.read())
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def import_tensorflow() -> Any:
    """`import tensorflow`, its start-up lines silenced unless `tf_logs_wanted()`."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if tf_logs_wanted():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _native_stderr_captured():
        import absl.logging
        import tensorflow as tf

        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel("ERROR")
    return tf


def visible_gpus() -> list[str]:
    """Names of the GPUs TensorFlow sees (respects `CUDA_VISIBLE_DEVICES`); [] on a CPU."""
    tf = import_tensorflow()
    return [d.name for d in tf.config.list_physical_devices("GPU")]


def configure_tensorflow(*, gpu: int | None = None, memory_growth: bool = True) -> str:
    """Start TensorFlow on the chosen device; returns `describe_device()`.

    Args:
        gpu: Index among the visible GPUs to train on alone (None = TensorFlow's default: the
            first GPU if any, else the CPU).
        memory_growth: Allocate GPU memory as needed instead of all of it, so several workers
            can share one GPU.

    Raises:
        DeviceConfigError: `gpu` is not visible (listing the visible GPUs).
    """
    tf = import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if gpu is not None:
        check_gpus([gpu], [d.name for d in gpus])
    with contextlib.suppress(RuntimeError):  # already initialised: the first setting stays
        if gpu is not None:
            tf.config.set_visible_devices([gpus[gpu]], "GPU")
        for device in tf.config.get_visible_devices("GPU"):
            tf.config.experimental.set_memory_growth(device, memory_growth)
    return describe_device()


def describe_device() -> str:
    """What this process trains on, e.g. "GPU:0 (NVIDIA A100, compute 8.0)" or "CPU (...)".

    Never imports TensorFlow itself: a process that did not load it says so.
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return "TensorFlow not loaded by this process"
    try:
        gpus = tf.config.get_visible_devices("GPU")
    except Exception:  # a half-initialised runtime: describe what we can
        gpus = []
    if not gpus:
        return f"CPU ({_cpu_name()})"
    names = []
    for device in gpus:
        details = {}
        with contextlib.suppress(Exception):
            details = tf.config.experimental.get_device_details(device)
        label = device.name.replace("/physical_device:", "")
        extra = details.get("device_name")
        if details.get("compute_capability"):
            major, minor = details["compute_capability"]
            extra = f"{extra}, compute {major}.{minor}"
        names.append(f"{label} ({extra})" if extra else label)
    return ", ".join(names)


def _cpu_name() -> str:
    import platform

    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def setup_worker(worker_id: int | None, gpus: Sequence[int] | None) -> str:
    """Pin this process to its GPU of `gpus` (if any), start TensorFlow, describe the device.

    A spawned worker that has not loaded TensorFlow yet is pinned with `CUDA_VISIBLE_DEVICES`
    (the other GPUs stay invisible to it); otherwise `tf.config.set_visible_devices` is used.
    """
    if worker_id is not None and "tensorflow" not in sys.modules:
        os.environ.update(worker_device_env(worker_id, gpus))
        return configure_tensorflow()
    return configure_tensorflow(gpu=gpu_for_worker(worker_id, gpus))


def free_model_memory() -> None:
    """Release what the models built in this process keep after they are gone: Keras' global
    graph state (``clear_session``) and the gradient functions their traces registered
    (``harness.models.sparse_ops.forget_traced_gradients``; each kept its model's graph, ~29
    MiB per ml-100k trial). Run after every sweep trial and benchmark fit, so a long-lived
    worker's memory stays flat. A no-op in a process that never imported Keras."""
    keras = sys.modules.get("keras")
    if keras is None:
        return
    keras.backend.clear_session()
    from harness.models.sparse_ops import forget_traced_gradients

    forget_traced_gradients()
