"""A second clone run with the first clone's environment is named, not silently imported."""

import subprocess
import sys

from nejm_b2txt_utils.checkout import PACKAGE_ROOT, enclosing_checkout, warn_if_other_checkout


def test_the_checkout_in_use_gives_no_warning(recwarn):
    assert enclosing_checkout(PACKAGE_ROOT / "model_training") == PACKAGE_ROOT
    assert warn_if_other_checkout(PACKAGE_ROOT / "tests") is None
    assert warn_if_other_checkout("/") is None  # outside any checkout: nothing to say
    assert not recwarn.list


def test_a_second_checkout_is_named(tmp_path):
    """Issue case: the environments' .pth points at the checkout that created them, so `python -m ...` in another
    clone imported the first one silently."""
    other = tmp_path / "clone"
    (other / "nejm_b2txt_utils").mkdir(parents=True)
    (other / "nejm_b2txt_utils" / "__init__.py").write_text("")
    (other / "model_training").mkdir()
    out = subprocess.run([sys.executable, "-c", "import nejm_b2txt_utils"], cwd=other / "model_training",
                         capture_output=True, text=True, env={"PYTHONPATH": str(PACKAGE_ROOT), "PATH": "/usr/bin"})
    assert out.returncode == 0
    assert f"running the code of {PACKAGE_ROOT}" in out.stderr and str(other) in out.stderr
