"""`harness-split`: compose conf/split.yaml, build or load the split, print its summary."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from harness.configs import hydra_config_path


def _task(cfg: DictConfig) -> None:
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


def main(config_path: str | None = None) -> None:
    """Run `harness-split` on `sys.argv`; `config_path`: the checkout's conf/, or
    pkg://harness.conf in an installed wheel, or a user folder searched first
    (`harness.configs.user_dirs_first`)."""
    hydra.main(version_base=None, config_path=config_path or hydra_config_path(),
               config_name="split")(_task)()  # fmt: skip


if __name__ == "__main__":
    main()
