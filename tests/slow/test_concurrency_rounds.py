"""Ten rounds of concurrent `reconguard audit` processes on one output directory (two and three
workers, every other round with a worker SIGKILLed while it holds a claimed unit); each round must
end with the records of one uninterrupted run (see tests/audit/test_concurrency.py)."""

from __future__ import annotations

import pytest

from tests.audit.test_concurrency import check_round, reference, run_round  # noqa: F401 (reference: a fixture)
from tests.audit.test_runner import _write

ROUNDS = [(2 + (i % 2), i % 4 >= 2) for i in range(10)]  # (workers, kill): 2, 3, 2+kill, 3+kill, ...


@pytest.mark.slow
@pytest.mark.parametrize("workers,kill", ROUNDS, ids=[f"round {i + 1}" for i in range(len(ROUNDS))])
def test_repeated_rounds_of_concurrent_audits(workers, kill, reference, tiny_data, tmp_path):  # noqa: F811
    config = _write(tmp_path, tiny_data, "shared")
    marker = tmp_path / "killed-unit.json"
    results = run_round(config, workers, kill=kill, marker=marker)
    check_round(tmp_path / "shared", results, reference, kill=kill, marker=marker)
