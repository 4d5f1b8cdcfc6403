"""The solve and the memory do not grow with the data: the statistics are an
(n_elements + 1)^2 Gram matrix, whatever the number of configs or atoms. Against a dense
least-squares fit that keeps A (n_configs x n_elements), as upstream does. On CUDA it also checks
the rank-deficient solve, where torch.linalg.lstsq (driver gels) is not to be trusted.

    python benchmarks/solve_scaling.py [--elements 89] [--device cpu|cuda]
"""

import argparse
import time

from _common import record

import numpy as np
import torch

from mace_e0_plugin.math import E0LinearSystem


def fill(system: E0LinearSystem, n_configs: int, atoms_per_config: int, rng: np.random.Generator) -> float:
    """Random compositions in batches of 10 000; returns the seconds spent in update()."""
    n = len(system.atomic_numbers)
    spent = 0.0
    for start in range(0, n_configs, 10_000):
        batch = min(10_000, n_configs - start)
        elements = torch.as_tensor(rng.integers(0, n, size=(batch, atoms_per_config)), device=system.device)
        counts = torch.zeros(batch, n, dtype=torch.float64, device=system.device)
        counts.scatter_add_(1, elements, torch.ones_like(elements, dtype=torch.float64))
        residuals = counts @ torch.linspace(-1, 1, n, dtype=torch.float64, device=system.device)
        began = time.perf_counter()
        system.update(counts, residuals, torch.ones(batch, dtype=torch.float64, device=system.device))
        spent += time.perf_counter() - began
    return spent


def timed_solve(system: E0LinearSystem, repeats: int = 5) -> float:
    n = len(system.atomic_numbers)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        system.solve([0.0] * n, [0.0] * n)
        times.append(time.perf_counter() - began)
    return min(times)


def rank_deficient_check(device: str) -> str:
    """CaCO3 + 98 H2O in every frame: rank 1 of 4."""
    counts = torch.tensor([[196.0, 1.0, 101.0, 1.0]] * 30, dtype=torch.float64, device=device)
    truth = torch.tensor([-13.9, -1028.0, -2043.0, -18420.0], dtype=torch.float64, device=device)
    residuals = counts @ truth
    system = E0LinearSystem([1, 6, 8, 20], device=device)
    system.update(counts, residuals, torch.ones(30, dtype=torch.float64, device=device))
    anchored = system.solve([0.0] * 4, truth.tolist())
    lstsq = torch.linalg.lstsq(counts, residuals.unsqueeze(1)).solution.squeeze(1)
    driver = "gels (the only CUDA driver)" if device.startswith("cuda") else "gelsy (CPU default)"
    return (f"rank-deficient CaCO3(H2O)98 on {device}: plugin E0s {np.round(anchored.e0s, 3).tolist()} "
            f"(truth {truth.tolist()}), torch.linalg.lstsq {driver}: {lstsq.cpu().numpy().round(3).tolist()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=89)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n_configs, atoms in [(1_000, 10), (100_000, 10), (100_000, 1_000), (1_000_000, 10)]:
        system = E0LinearSystem(list(range(1, options.elements + 1)), device=options.device)
        update_s = fill(system, n_configs, atoms, rng)
        solve_s = timed_solve(system)
        state = system.flat().numel() * 8
        dense = n_configs * options.elements * 8
        rows.append(f"| {n_configs:,} | {atoms:,} | {update_s / n_configs * 1e6:.2f} us | {solve_s * 1e3:.2f} ms "
                    f"| {state / 1024:.0f} KiB | {dense / 2**20:,.0f} MiB |")
        print(rows[-1], flush=True)
    check = rank_deficient_check(options.device)
    print(check)
    record("solve_scaling", f"python benchmarks/solve_scaling.py --elements {options.elements} "
                            f"--device {options.device}", f"""
{options.elements} elements, random compositions, device {options.device}.

| configs | atoms per config | update per config | solve | statistics kept | a dense A would be |
|---|---|---|---|---|---|
""" + "\n".join(rows) + f"""

The solve time is flat in the number of configs and atoms; the statistics are the same size throughout.

{check}
""")


if __name__ == "__main__":
    main()
