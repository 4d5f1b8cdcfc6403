"""The README's figure, drawn from numbers already measured in benchmarks/RESULTS.md.

    python benchmarks/readme_figure.py    # writes docs/e0s_first_and_last_epoch.png

Left, the real fine-tunes of `real_finetunes.py`: validation energy error before the first epoch
with mace's E0s and with --E0s=linear_system. Right, the fine-tunes of `refit.py`: the saved
model's validation energy error after the last epoch with the first estimate kept
(--E0s_refit=none) and refitted (final, the default). Nothing is measured here: the numbers are
parsed from the tables those benchmarks wrote, so the figure follows them when they are re-run.
"""

import argparse
import re

from _common import HERE, pyplot, recorded

FIGURE = HERE.parent / "docs" / "e0s_first_and_last_epoch.png"
REFIT_RECIPES = ("plain", "ema", "stagetwo")


def table_rows(text: str) -> list:
    """The cells of every Markdown table row that is not a header rule."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"^\|[-| ]+\|$", line):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def number(cell: str) -> float:
    """The last number in a cell such as 'foundation: 605,838.2'."""
    return float(re.findall(r"[\d,]+\.?\d*", cell)[-1].replace(",", ""))


def first_epoch() -> list:
    """[(label, mace's E0s, linear_system)] before the first epoch, meV/atom."""
    rows = table_rows(recorded("real_finetunes"))
    return [(row[0], number(row[2]), number(row[3])) for row in rows[1:]]


def last_epoch() -> dict:
    """{case title: [(recipe, none, final)]}, the saved model's validation energy RMSE, meV/atom."""
    text = recorded("refit")
    cases = {}
    for part in re.split(r"^### ", text, flags=re.M)[1:]:
        title = part.splitlines()[0].split(": ", 1)[-1]
        errors = {(row[0], row[1]): float(row[2]) for row in table_rows(part)[1:]}
        cases[title] = [(recipe, errors[(recipe, "none")], errors[(recipe, "final")])
                        for recipe in REFIT_RECIPES if (recipe, "none") in errors]
    return cases


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    import numpy as np

    plt = pyplot()

    before, after = first_epoch(), last_epoch()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [2, 6]})
    x = np.arange(len(before))
    left.bar(x - 0.2, [b[1] for b in before], 0.4, color="tab:gray", label="mace's E0s")
    left.bar(x + 0.2, [b[2] for b in before], 0.4, color="tab:green", label="--E0s=linear_system")
    left.set_xticks(x, [b[0].replace(", ", ",\n").replace(" -> ", " ->\n") for b in before], fontsize=7)
    left.set_title("before the first epoch", fontsize=10)
    labels, kept, refitted = [], [], []
    for title, rows in after.items():
        for recipe, none, final in rows:
            labels.append(f"{title.split(':')[0].split(' ->')[0]}\n{recipe}")
            kept.append(none)
            refitted.append(final)
    x = np.arange(len(labels))
    right.bar(x - 0.2, kept, 0.4, color="tab:red", label="first estimate kept (--E0s_refit=none)")
    right.bar(x + 0.2, refitted, 0.4, color="tab:green", label="refitted (final, the default)")
    right.set_xticks(x, labels, fontsize=7)
    right.set_title("saved model, after the last epoch (to PBE ethanol + methanol)", fontsize=10)
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_ylabel("validation energy RMSE / meV/atom", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("E0s: right at the first epoch, off by the last, kept right by the refit "
                 "(numbers: benchmarks/RESULTS.md)", fontsize=10)
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    print(f"figure: {FIGURE.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
