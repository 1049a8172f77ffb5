"""Build hook: ship the repository's top-level `conf/` inside the wheel as `harness/conf/`.

Metadata lives in pyproject.toml. The configs stay at the top of the repository (the project's
layout); a non-editable build copies them into the package, with an `__init__.py` so that
Hydra's `pkg://harness.conf` search path finds them (see harness/configs.py). An editable
install copies nothing: it reads the checkout's `conf/` directly.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"
INIT = '"""The harness\' Hydra configs, copied from the repository\'s conf/ at build time."""\n'


class BuildPyWithConf(build_py):
    """`build_py` that also copies conf/**/*.yaml into <build_lib>/harness/conf/."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        if not (CONF / "run.yaml").is_file():
            raise FileNotFoundError(f"{CONF}/run.yaml is missing: the wheel would have no configs")
        target = Path(self.build_lib) / "harness" / "conf"
        for source in sorted(CONF.rglob("*.yaml")):
            dest = target / source.relative_to(CONF)
            self.mkpath(str(dest.parent))
            self.copy_file(str(source), str(dest))
        (target / "__init__.py").write_text(INIT)


setup(cmdclass={"build_py": BuildPyWithConf})
