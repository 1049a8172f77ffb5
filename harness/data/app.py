"""`harness-split`: compose conf/split.yaml, build or load the split, print its summary."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

# An absolute path: Hydra resolves a relative one against the package, not the file.
_CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base=None, config_path=_CONF_DIR, config_name="split")
def main(cfg: DictConfig) -> None:
    """Entry point; e.g. ``harness-split dataset=ml-1m protocol=weak protocol.seed=1``."""
    from harness.data.protocol import split_from_config
    from harness.data.sources import default_cache_dir
    from harness.errors import guarded

    def work() -> None:
        cache_dir = cfg.cache_dir if cfg.cache_dir is not None else default_cache_dir()
        split = split_from_config(
            OmegaConf.to_container(cfg.dataset, resolve=True),
            OmegaConf.to_container(cfg.protocol, resolve=True),
            cache_dir,
        )
        print(split.summary())

    guarded("harness-split", work)


if __name__ == "__main__":
    main()
