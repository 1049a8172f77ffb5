"""Console entry points. Each is a thin forwarder so that `--help` stays fast and
TensorFlow is imported only by the commands that train.

Before Hydra starts, each checks the config folders given with `--config-dir` or
`hydra.searchpath` (a missing one is one clear error, not a silent "config not found"), and
TensorFlow's C++ start-up lines are switched off unless the user asked for them
(`VAE_SWEEP_TF_LOGS=1`, or their own `TF_CPP_MIN_LOG_LEVEL`; see harness/devices.py).
"""

from __future__ import annotations

import os

os.environ.setdefault(
    "TF_CPP_MIN_LOG_LEVEL", "3" if not os.environ.get("VAE_SWEEP_TF_LOGS") else "0"
)


def _check(command: str) -> str:
    """Check the arguments (one line and exit 2 on a mistake), put the user's config folders
    first (harness.configs.user_dirs_first) and return Hydra's `config_path`."""
    import sys

    from harness.argv_checks import check_argv_or_exit
    from harness.secrets import hide_argv_secrets

    # Hydra never sees a password: it is taken off the command line here (see harness.secrets)
    args = hide_argv_secrets(sys.argv[1:])
    if command != "harness-split":
        from harness.sweep.app import add_search_space_keys, quote_search_space_args

        args = add_search_space_keys(quote_search_space_args(args))
    config_path, args = check_argv_or_exit(command, args)
    sys.argv = [sys.argv[0], *args]
    return config_path


def sweep_main() -> None:
    import sys

    from harness.secrets import hide_argv_secrets

    sys.argv = [sys.argv[0], *hide_argv_secrets(sys.argv[1:])]
    from harness.sweep.app import main

    main()  # checks its own arguments (it also rewrites search_space overrides)


def benchmark_main() -> None:
    config_path = _check("harness-benchmark")
    from harness.run import benchmark_main as main

    main(config_path)


def report_main() -> None:
    config_path = _check("harness-report")
    from harness.run import report_main as main

    main(config_path)


def run_main() -> None:
    config_path = _check("harness-run")
    from harness.run import run_main as main

    main(config_path)


def split_main() -> None:
    config_path = _check("harness-split")
    from harness.data.app import main

    main(config_path)
