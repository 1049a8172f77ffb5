"""The test ledger's reuse key: split, configuration, seed and the code fingerprint."""

from __future__ import annotations

import json
import logging

import numpy as np

from harness.benchmark.ledger import TestLedger, code_fingerprint


def _append(ledger: TestLedger, seed: int = 0) -> dict:
    return ledger.append(
        fingerprint="split",
        config="config",
        model="mult_vae",
        variant="final",
        seed=seed,
        per_user={"ndcg@100": np.array([0.1, 0.2])},
        coverage=0.5,
    )


def test_code_fingerprint_covers_model_code_and_package_versions():
    assert len(code_fingerprint()) == 64 and code_fingerprint() == code_fingerprint()


def test_scores_are_reused_only_with_the_same_code_fingerprint(tmp_path):
    old = TestLedger(tmp_path, code="a" * 64)
    _append(old)
    assert old.find("split", "config", 0) is not None
    new = TestLedger(tmp_path, code="b" * 64)
    assert new.find("split", "config", 0) is None  # a model fix: score again
    assert "model code or package versions changed" in new.stale_reason("split", "config", 0)
    assert new.stale_reason("split", "other", 0) is None  # never scored: nothing stale
    _append(new)
    assert new.find("split", "config", 0)["code"] == "b" * 64
    assert new.exposure("split") == {"configurations": 1, "scorings": 2}
    assert new.exposure("elsewhere") == {"configurations": 0, "scorings": 0}


def test_entries_without_fingerprint_are_stale_with_one_warning(tmp_path, caplog):
    ledger = TestLedger(tmp_path, code="a" * 64)
    entry = _append(ledger)
    del entry["code"]  # as an older harness wrote it
    ledger.path.write_text(json.dumps(entry) + "\n" + json.dumps({**entry, "seed": 1}) + "\n")
    with caplog.at_level(logging.WARNING, logger="harness.benchmark.ledger"):
        assert ledger.find("split", "config", 0) is None
        for seed in (0, 1):
            reason = ledger.stale_reason("split", "config", seed)
            assert reason == "stored by an older harness without a code fingerprint"
    assert sum("without a code fingerprint" in r.message for r in caplog.records) == 1
