"""Data: sources of raw interactions and the one evaluation protocol.

No TensorFlow here: this package is imported by the report and the CLI's fast paths.
"""

from harness.data.protocol import Split, make_split, split_from_config
from harness.data.sources import default_cache_dir, load_interactions
from harness.data.synthetic import generate_synthetic

__all__ = [
    "Split",
    "default_cache_dir",
    "generate_synthetic",
    "load_interactions",
    "make_split",
    "split_from_config",
]
