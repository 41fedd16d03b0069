"""A pipeline step's reported peak RSS is the child's own, whatever the size of the driver that started it."""

import os
import sys

import numpy as np
import pytest

from end_to_end.steps import Step, run_step

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")


@pytest.mark.parametrize("n_floats, low, high", [(0, 0, 200), (37_500_000, 300, 550)])  # nothing / 300 MB
def test_step_peak_rss_is_the_childs_own(tmp_path, n_floats, low, high):
    held = np.ones(75_000_000)  # the driver holds 600 MB while the step runs
    code = f"import numpy as np, time; a = np.ones({n_floats}) if {n_floats} else None; time.sleep(0.3); print('ok')"
    step = Step("probe", [sys.executable, "-c", code], tmp_path / "probe.done")
    info = run_step(step, tmp_path / "logs", echo=False)
    del held
    assert low < info["peak_rss_mb"] < high
    assert (tmp_path / "logs" / "probe.log").read_text().strip() == "ok"
    assert run_step(step, tmp_path / "logs", echo=False) == {"reused": True}


def test_a_step_whose_program_is_missing_is_a_named_error(tmp_path):
    step = Step("ghost", ["/no/such/program", "--flag"], tmp_path / "ghost.done")
    with pytest.raises(RuntimeError, match=r"step 'ghost': cannot start /no/such/program: No such file"):
        run_step(step, tmp_path / "logs", echo=False)
    assert not step.done.exists()
