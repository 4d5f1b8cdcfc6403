"""Shared by the benchmarks: real inputs from ../shared, the machine's description, and the
RESULTS.md section each benchmark rewrites with its figures."""

import contextlib
import datetime
import io
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared"
RESULTS = HERE / "RESULTS.md"

for noise in ("Environment variable TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "The TorchScript type system",
              "'pin_memory' argument"):
    warnings.filterwarnings("ignore", message=noise)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        sys.exit(f"this benchmark needs ../shared/{'/'.join(parts)} (real models and data), which is absent")
    return path


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model_names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = model_names[0] if model_names else cpu
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        text += ", no GPU"
    return text


def versions() -> str:
    import mace
    import torch

    import mace_e0_plugin

    return (f"python {platform.python_version()}, torch {torch.__version__}, mace-torch {mace.__version__}, "
            f"mace-e0-plugin {mace_e0_plugin.__version__}")


def best_of_interleaved(repeats: int, *functions) -> list:
    """The fastest of a few runs of each function, in seconds, run in turn (a, b, a, b, ...) so
    that a slow spell of the machine hits all of them alike."""
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, spent in zip(functions, times):
            started = time.perf_counter()
            function()
            spent.append(time.perf_counter() - started)
    return [min(spent) for spent in times]


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def record(name: str, command: str, body: str) -> None:
    """Replace this benchmark's section of RESULTS.md (created if absent) and print it."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (f"<!-- {name} -->\n## {name}\n\n`{command}`, {stamp}\n\n- machine: {machine()}\n"
               f"- versions: {versions()}\n\n{body.strip()}\n<!-- /{name} -->\n")
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmark results\n\nEach section is rewritten by the command it names; ratios are measured "
        "within one run of that command.\n\n")
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text + section + "\n"
    RESULTS.write_text(text)
    print(section)
