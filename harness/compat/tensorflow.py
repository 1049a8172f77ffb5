"""TensorFlow internals the harness relies on (written against tensorflow 2.16-2.21).

- `csr_matrix_ops`: TensorFlow's CSR sparse-matrix kernels
  (`tensorflow.python.ops.linalg.sparse.sparse_csr_matrix_ops`), about 2.7x faster than the
  public `tf.sparse.sparse_dense_matmul` for a click batch times a kernel; None when a
  TensorFlow lacks them (`harness.models.sparse_ops` then uses the public op).
- `gradient_registry`: TensorFlow's global table of registered gradient functions
  (`tensorflow.python.framework.ops._gradient_registry._registry`), from which
  `harness.models.sparse_ops.forget_traced_gradients` drops the entries each trace of a
  `tf.custom_gradient` adds and TensorFlow never removes.
"""

from __future__ import annotations

from types import ModuleType

from tensorflow.python.framework import ops

try:
    from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops as _csr_ops
except ImportError:  # a TensorFlow without them
    _csr_ops = None

TESTED = ">=2.16,<3"  # the pyproject pin; tests/test_compat.py checks every function below


def csr_matrix_ops() -> ModuleType | None:
    """The CSR sparse-matrix op module, or None if this TensorFlow has none."""
    return _csr_ops


def gradient_registry() -> dict:
    """The name -> gradient function table (a plain dict, mutated in place)."""
    return ops._gradient_registry._registry
