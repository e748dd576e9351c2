"""Every dalib module imports on its own: an import circle (a imports b, which imports a) fails here.

One fresh interpreter imports each module with no dalib module loaded before it (third-party packages
stay loaded, so this takes seconds rather than one interpreter per module).
"""
import pkgutil
import subprocess
import sys

import dalib

MODULES = sorted(m.name for m in pkgutil.walk_packages(dalib.__path__, "dalib.") if not m.name.endswith("__main__"))

CHECK = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "dalib" or m.startswith("dalib.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ":\\n" + traceback.format_exc(limit=-3))
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_module_list_covers_the_packages():
    packages = {"dalib.data.serve", "dalib.shards", "dalib.distributed", "dalib.synth.render", "dalib.train.loop"}
    assert packages <= set(MODULES)


def test_each_module_imports_alone():
    proc = subprocess.run([sys.executable, "-c", CHECK, *MODULES], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"modules that fail to import alone:\n{proc.stdout}\n{proc.stderr[-2000:]}"
