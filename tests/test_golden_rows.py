"""The committed row goldens (tests/golden/rows.json, issue 22) still hold: the fixtures rebuilt in a fresh folder
give the same rows. A failure means the fixtures are not deterministic, or today's rows changed (then say why in
the commit that rewrites the goldens with `python -m tests.golden_rows --write`)."""

import json

import pytest
from golden_rows import compute, diff, dumps, load_golden


@pytest.mark.slow
def test_rows_match_the_goldens(tmp_path):
    new = json.loads(dumps(compute(str(tmp_path))))  # through JSON, as the goldens were written (tuples -> lists)
    assert diff(load_golden(), new) == []
