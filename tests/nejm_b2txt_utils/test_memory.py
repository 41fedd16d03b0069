"""Peak RSS of a process and of a child: a large parent must not leak into the child's figure.

The reported case (CI, stop 18): the synthetic generator, run as a subprocess of a 1.5 GB pytest
process, read 1,501 MB from ``ru_maxrss``; on its own it peaks at ~280 MB.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from nejm_b2txt_utils.memory import ChildPeakRss, peak_rss_mb

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")

_CHILD = ("import resource\n"
          "from nejm_b2txt_utils.memory import peak_rss_mb\n"
          "import numpy as np\n"
          "a = np.ones({n}) if {n} else None\n"
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_rss_mb())\n")


@pytest.fixture
def big_parent():
    """This process holds 600 MB of touched pages while the test starts children."""
    block = np.ones(75_000_000)  # 600 MB, float64
    yield block
    del block


def test_own_peak_grows_with_what_the_process_touches():
    # in fresh processes: this test process's own high-water mark may already be far above 200 MB
    peaks = []
    for n_floats in (0, 25_000_000):  # nothing / 200 MB
        out = subprocess.run([sys.executable, "-c", _CHILD.format(n=n_floats)], capture_output=True, text=True,
                             check=True).stdout
        peaks.append(float(out.split()[1]))
    assert peaks[0] < 150 and peaks[1] - peaks[0] > 180, peaks


def test_a_small_child_of_a_big_parent_reports_its_own_peak(big_parent):
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(n=0)], stdout=subprocess.PIPE, text=True)
    ru_maxrss_mb, own_mb = map(float, proc.communicate()[0].split())
    assert ru_maxrss_mb > 550  # the kernel passed the parent's high-water mark on (the reported bug)
    assert own_mb < 200


def test_child_peak_rss_sampled_while_it_runs(big_parent):
    for n_floats, low, high in ((0, 0, 200), (37_500_000, 300, 550)):  # nothing / 300 MB touched
        proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(n=n_floats) + "import time; time.sleep(0.5)\n"],
                                stdout=subprocess.PIPE, text=True)
        memory = ChildPeakRss(proc.pid, interval_s=0.05)
        proc.communicate()
        peak = memory.stop()
        assert low < peak < high, (n_floats, peak)


def test_wait4_figure_is_used_only_where_it_cannot_be_the_parents(big_parent):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    memory = ChildPeakRss(proc.pid)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    assert usage.ru_maxrss / 1024 > 550  # inherited
    assert memory.stop(usage.ru_maxrss) < 200  # the sampled figure instead
    memory = ChildPeakRss(os.getpid())  # any live pid: the rule, not the sampling, is under test
    assert memory.stop(int((memory.parent_peak_mb + 100) * 1024)) == pytest.approx(memory.parent_peak_mb + 100)


def test_a_grandchild_is_measured_too(big_parent):
    """``sh -c "python ...; true"``: the work is in a grandchild (as in the performance report's steps)."""
    inner = _CHILD.format(n=37_500_000) + "import time; time.sleep(0.5)\n"  # 300 MB
    proc = subprocess.Popen(["sh", "-c", f'"{sys.executable}" -c "$0" > /dev/null; true', inner])
    memory = ChildPeakRss(proc.pid, interval_s=0.05)
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    assert 300 < memory.stop(usage.ru_maxrss) < 550


def test_bad_arguments_are_clear_errors():
    for pid in ("abc", 0, -3, 1.5, True):
        with pytest.raises(ValueError, match="pid: expected a positive int"):
            peak_rss_mb(pid)
        with pytest.raises(ValueError, match="pid: expected a positive int"):
            ChildPeakRss(pid)
    with pytest.raises(ValueError, match="interval_s"):
        ChildPeakRss(os.getpid(), interval_s=0)
    assert peak_rss_mb(2**22 + 12345) is None  # above pid_max: no such process


def test_a_child_gone_before_the_first_sample_is_unknown_not_zero(big_parent):
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: nothing left to sample
    memory = ChildPeakRss(proc.pid)
    assert memory.stop() is None
