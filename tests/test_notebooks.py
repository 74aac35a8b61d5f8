"Every notebook in nbs/ runs as a test (nbdev's own runner: `#| slow` and `#| cuda` cells are skipped)."
from pathlib import Path
import pytest
import nbdev.test as nbtest  # imported as a module: pytest would collect a bare `test_nb` as a test
from nbdev.config import get_config

NBS = Path(__file__).resolve().parent.parent/"nbs"
NOTEBOOKS = sorted(p for p in NBS.rglob("*.ipynb") if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts))
# notebooks whose fast cells still take > ~5 s (measured on 2 CPU cores), and every tutorial (20-90 s each): run by the
# full suite, left out of the fast subset `-m "not slow"`
SLOW = {"01a_synth", "02_models", "03_scoring", "06_train", "06a_trl", "07_compare", "03a_ensemble", "03b_predictor", "08_explore",
        "03c_distributed", "04e_targeted"}
def is_slow(nb:Path)->bool: return nb.stem in SLOW or nb.relative_to(NBS).parts[0] == "tutorials"

@pytest.mark.parametrize("nb", [pytest.param(p, marks=pytest.mark.slow) if is_slow(p) else p for p in NOTEBOOKS],
                         ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb, monkeypatch):
    monkeypatch.chdir(nb.parent)  # nbdev_test runs each notebook from its own folder
    skip = get_config(path=NBS.parent).tst_flags.split()  # "slow cuda": what a default nbdev_test skips
    ok, secs = nbtest.test_nb(nb, skip_flags=skip, force_flags=[], basepath=NBS.parent)
    assert ok, f"{nb.name} failed (see the traceback above)"
