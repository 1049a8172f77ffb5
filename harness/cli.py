"""Console entry points. Each is a thin forwarder so that `--help` stays fast and
TensorFlow is imported only by the commands that train."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def sweep_main() -> None:
    from harness.sweep.app import main

    main()


def benchmark_main() -> None:
    from harness.run import benchmark_main as main

    main()


def report_main() -> None:
    from harness.run import report_main as main

    main()


def run_main() -> None:
    from harness.run import run_main as main

    main()


def split_main() -> None:
    from harness.data.app import main

    main()
