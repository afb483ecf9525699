"""Nothing loads what it does not use: `import edgechat` and `edgechat --help` leave torch, ExecuTorch and
llama.cpp unimported (each check runs in a fresh interpreter)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "executorch", "llama_cpp")
DRIVER = """
import json, sys
try:
    {code}
except SystemExit:
    pass
sys.__stdout__.write("\\n" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})))
"""


def heavy_modules_after(code: str) -> list[str]:
    script = DRIVER.format(code=code, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("code", [
    "import edgechat",
    "import edgechat.core.config, edgechat.core.errors, edgechat.core.sources, runtimes, converters, targets",
    "from edgechat.cli import main; sys.argv = ['edgechat', '--help']; main()",
    "from edgechat.cli import main; sys.argv = ['edgechat', 'convert', '--help']; main()",
])
def test_nothing_heavy_is_imported(code):
    assert heavy_modules_after(code) == []


def test_the_public_names_load_on_use():
    # the lazy re-export still gives the real objects (and then torch is loaded, as it must be)
    mods = heavy_modules_after("import edgechat; from edgechat.app.chat import Chat; assert edgechat.Chat is Chat; "
                               "edgechat.load_model")
    assert "llama_cpp" not in mods
    proc = subprocess.run([sys.executable, "-c", "import edgechat; edgechat.nope"], capture_output=True, text=True)
    assert "module 'edgechat' has no attribute 'nope'" in proc.stderr
