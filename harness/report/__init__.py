"""Report generation: figures, tables, Markdown + self-contained HTML, manifest.

Light on purpose (no TensorFlow): it reads Optuna studies and benchmark files only.
"""

from harness.report.build import build_report
from harness.report.manifest import collect_manifest

__all__ = ["build_report", "collect_manifest"]
