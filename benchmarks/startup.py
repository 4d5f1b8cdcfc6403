"""What the start-up hook costs every Python process: its import time, against a bare interpreter's.

    python benchmarks/startup.py [--runs 7]

Goal: under 5 ms for ``mace_e0_plugin._bootstrap`` (it imports neither torch nor mace; the test
suite checks that). Prints the median of several runs (the first may compile bytecode).
"""

import argparse
import re
import statistics
import subprocess
import sys

GOAL_US = 5_000


def import_times(runs: int):
    hook, total = [], []
    for _ in range(runs):
        result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                                check=True)
        found = [int(m.group(1)) for m in re.finditer(r"\|\s+(\d+) \|\s+mace_e0_plugin\._bootstrap", result.stderr)]
        if not found:
            sys.exit("the start-up hook did not run: is the package installed (pip install .)?")
        hook.append(found[0])
        total.append(sum(int(m.group(1)) for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \|\s{1,2}\S",
                                                              result.stderr, re.M)))
    return hook, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    hook, total = import_times(runs)
    hook_us, total_us = statistics.median(hook), statistics.median(total)
    print(f"command: python benchmarks/startup.py --runs {runs}")
    print(f"{'what':<40} {'median / us':>12}")
    print(f"{'mace_e0_plugin._bootstrap (cumulative)':<40} {hook_us:>12.0f}")
    print(f"{'every import at start-up':<40} {total_us:>12.0f}")
    print(f"hook / start-up imports: {hook_us / total_us:.3f}; goal < {GOAL_US} us: "
          f"{'met' if hook_us < GOAL_US else 'NOT met'}")


if __name__ == "__main__":
    main()
