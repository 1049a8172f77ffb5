"""Sparse building blocks of the VAE network: batches stay ``tf.SparseTensor`` throughout."""

from __future__ import annotations

import tensorflow as tf

from harness.compat.tensorflow import csr_matrix_ops, gradient_registry

_csr_ops = csr_matrix_ops()  # None on a TensorFlow without them: the slower public op is used


def to_sparse_tensor(rows, cols, values, n_rows, n_cols: int) -> tf.SparseTensor:
    """A (n_rows x n_cols) SparseTensor from COO components (see batching.Components)."""
    indices = tf.stack([tf.cast(rows, tf.int64), tf.cast(cols, tf.int64)], axis=1)
    shape = tf.stack([tf.cast(n_rows, tf.int64), tf.constant(n_cols, tf.int64)])
    return tf.SparseTensor(indices, values, shape)


def _csr_matmul(x: tf.SparseTensor, dense):
    csr = _csr_ops.sparse_tensor_to_csr_sparse_matrix(x.indices, x.values, x.dense_shape)
    return _csr_ops.sparse_matrix_mat_mul(csr, dense)


def sparse_matmul(x: tf.SparseTensor, kernel):
    """x @ kernel for a click batch (rows in order), differentiable in ``kernel`` only.

    TensorFlow's SparseTensorDenseMatMul and its adjoint take ~50 ms per ML-20M-shaped
    batch on 2 cores; the CSR kernels on x and on x transposed take ~18 ms for the same
    forward and backward pass. The CSR ops live in a private module, so without them this
    falls back to ``tf.sparse.sparse_dense_matmul``.
    """
    kernel = tf.convert_to_tensor(kernel)
    if _csr_ops is None:
        return tf.sparse.sparse_dense_matmul(x, kernel)

    @tf.custom_gradient
    def matmul(k):
        def grad(upstream):
            return _csr_matmul(tf.sparse.reorder(tf.sparse.transpose(x)), upstream)

        return _csr_matmul(x, k), grad

    return matmul(kernel)


def gather_clicked(scores, x: tf.SparseTensor):
    """Entries of a dense (users x items) tensor at the stored positions of ``x``."""
    return tf.gather_nd(scores, x.indices)


def row_sum(values, x: tf.SparseTensor):
    """Per-row sum of per-click ``values`` of ``x`` (an empty row gets 0)."""
    return tf.math.unsorted_segment_sum(
        values, x.indices[:, 0], tf.cast(x.dense_shape[0], tf.int32)
    )


def forget_traced_gradients() -> int:
    """Drop the gradient functions ``tf.custom_gradient`` registered while tracing.

    Each trace of ``sparse_matmul`` (one per model built: a new model per sweep trial)
    registers its gradient under a new global name ("CustomGradient-<uid>") that TensorFlow
    never removes, and that entry keeps the traced graph alive: about 29 MiB per Mult-VAE
    (600 hidden units) on ml-100k, in every long-lived process. A traced function never looks
    its gradient up again (the gradient was built into the graph when traced; a new trace
    registers a new one), so the entries can go once the models that traced them are done
    with: call this after a trial or fit. Returns how many were dropped.
    """
    registry = gradient_registry()
    names = [name for name in registry if name.startswith("CustomGradient-")]
    for name in names:
        del registry[name]
    return len(names)
