"""How the generator-fidelity measure scores generators whose flaw is known.

``python -m benchmarks.fidelity_cases [--out DIR]``: 1,000 real rows (N(0, I), or 8 Gaussian
modes) against 1,000 generated rows that are real samples, too narrow, too wide, collapsed onto
the modes' centres or missing half of the modes, in 2 to 1,024 dimensions. Each cell: the
fidelity without the reverse density (density and coverage only, the measure before it) ->
the fidelity now. Prints a Markdown table and writes ``fidelity_cases.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gananomaly.fidelity import harmonic_mean, manifold_metrics

DIMS = (2, 8, 30, 100, 1024)
N = 1000


def _without_reverse(m: dict) -> float:
    return harmonic_mean(min(m["density"], 1.0), m["coverage"])


def cases(d: int, rng: np.random.RandomState) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    real = rng.randn(N, d)
    centres = 3 * rng.randn(8, d)

    def modes(n, which=range(8)):
        return centres[rng.choice(list(which), n)] + 0.5 * rng.randn(n, d)

    real_modes = modes(N)
    return {
        "real samples (N(0, I))": (real, rng.randn(N, d)),
        "0.9x the spread": (real, 0.9 * rng.randn(N, d)),
        "0.6x the spread": (real, 0.6 * rng.randn(N, d)),
        "1.25x the spread": (real, 1.25 * rng.randn(N, d)),
        "8 modes: real samples": (real_modes, modes(N)),
        "8 modes: every sample near its mode's centre": (real_modes, centres[rng.randint(0, 8, N)]
                                                           + 0.05 * rng.randn(N, d)),
        "8 modes: 4 of them": (real_modes, modes(N, range(4))),
    }


def run(dims=DIMS, seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for d in dims:
        for name, (real, fake) in cases(d, rng).items():
            m = manifold_metrics(real, fake)
            table.setdefault(name, {})[str(d)] = {"before": _without_reverse(m), **m}
    return {"dims": list(dims), "n_rows": N, "seed": seed, "cases": table}


def markdown(result: dict) -> str:
    dims = result["dims"]
    lines = ["| generated rows | " + " | ".join(f"{d}-D" for d in dims) + " |", "|---|" + "---|" * len(dims)]
    for name, cells in result["cases"].items():
        lines.append(f"| {name} | " + " | ".join(f"{cells[str(d)]['before']:.2f} -> {cells[str(d)]['fidelity']:.2f}"
                                                 for d in dims) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fidelity_cases")
    parser.add_argument("--out", default="benchmarks/out")
    args = parser.parse_args(argv)
    result = run()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "fidelity_cases.json").write_text(json.dumps(result, indent=2))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
