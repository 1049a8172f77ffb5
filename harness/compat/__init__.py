"""The only place that touches private attributes of third-party libraries.

One module per library (`optuna`, `keras`, `tensorflow`). Each function wraps one private
attribute or module the harness needs and names the versions it was written against; a test
in tests/test_compat.py checks every one on the installed version, so an upgrade that moves an
attribute fails there, with the function's name, instead of deep inside a sweep. The tested
ranges are the upper-bounded pins in pyproject.toml; the exact versions CI ran with are in
constraints.txt.
"""
