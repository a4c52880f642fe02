"""bf16 against float32 on this CPU: where bf16 weights and autocast pay off, and where they do not.

    python benchmarks/cpu_precision.py [--repeats 200]

Times matrix products of the quickstart tiny model's shapes (one thread, as the tests run, and
all threads) in float32 and bfloat16, and reports whether the CPU computes bf16 natively
(``agents.precision.native_bf16``: AVX-512 BF16 or AMX), which is what ``model.dtype:
bf16_if_fast`` and ``sft.bf16: auto`` decide by. Prints a table and writes
benchmarks/results/cpu_precision.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHAPES = [(512, 128, 384), (512, 384, 128), (2048, 128, 768), (32, 576, 576)]  # rows x inner x cols


def seconds_per_product(m: int, k: int, n: int, dtype, repeats: int) -> float:
    import torch

    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    for _ in range(5):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return (time.perf_counter() - start) / repeats


def main() -> None:
    import torch

    from agents.precision import native_bf16

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    args = p.parse_args()
    rows = []
    for threads in (1, torch.get_num_threads()):
        torch.set_num_threads(threads)
        for m, k, n in SHAPES:
            f32 = seconds_per_product(m, k, n, torch.float32, args.repeats)
            bf16 = seconds_per_product(m, k, n, torch.bfloat16, max(3, args.repeats // 20))
            rows.append(
                {
                    "threads": threads,
                    "shape": [m, k, n],
                    "float32_us": f32 * 1e6,
                    "bfloat16_us": bf16 * 1e6,
                    "bf16_over_float32": bf16 / f32,
                }
            )
    result = {
        "cpu": platform.processor() or platform.machine(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16("cpu"),
        "torch": torch.__version__,
        "products": rows,
    }
    print(f"CPU capability {result['capability']}, native bf16: {result['native_bf16']}")
    print("| threads | m x k x n | float32 (us) | bfloat16 (us) | bf16 / float32 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['threads']} | {' x '.join(map(str, r['shape']))} | {r['float32_us']:.0f} | {r['bfloat16_us']:.0f} | "
            f"{r['bf16_over_float32']:.1f}x |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu_precision.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS / 'cpu_precision.json'}")


if __name__ == "__main__":
    main()
