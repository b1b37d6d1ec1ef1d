"""Ten rounds of concurrent `reconguard audit` processes on one output directory (two and three
workers, every other round with a worker SIGKILLed while it holds a claimed unit); each round must
end with the records of one uninterrupted run (see tests/audit/test_concurrency.py)."""

from __future__ import annotations

import pytest

from tests.audit.test_concurrency import check_round, reference, run_round  # noqa: F401 (reference: a fixture)
from tests.audit.test_runner import _write

# (workers, kill, report): 2, 3, 2 + kill, 3 + kill, ...; the last two rounds also write the report.
ROUNDS = [(2 + (i % 2), i % 4 >= 2, i >= 8) for i in range(10)]


@pytest.mark.slow
@pytest.mark.parametrize("workers,kill,report", ROUNDS, ids=[f"round {i + 1}" for i in range(len(ROUNDS))])
def test_repeated_rounds_of_concurrent_audits(workers, kill, report, reference, tiny_data, tmp_path):  # noqa: F811
    config = _write(tmp_path, tiny_data, "shared")
    marker = tmp_path / "killed-unit.json"
    results = run_round(config, workers, kill=kill, marker=marker, report=report)
    check_round(tmp_path / "shared", results, reference, kill=kill, marker=marker)
    if report:  # every surviving process wrote it in turn; no staging directory is left behind
        assert (tmp_path / "shared" / "report" / "index.html").is_file()
        assert not [p for p in (tmp_path / "shared").iterdir() if p.name.startswith(".report")]
