"""cmodel wall time vs PyTorch eager, simulated latency and roofline, per model and kernel set.

    python benchmarks/cmodel_speed.py [--models resnet18,resnet50] [--precisions f32,bf16] [--kernels c,reference]

Per model and precision: deploy the TOP graph to a Program (codegen time), run it on the cmodel with each
kernel set (median of 3 runs after one warm-up), run eager PyTorch f32 in the same process (median of 3),
and report the Program's simulated latency, its roofline bound and the ratio between them, plus the
accuracy of the Program against the TPU graph. Prints a table, writes JSON to
benchmarks/results/cmodel_speed.json. Issue 3's targets: the C cmodel runs resnet50 f32 in at most 3x eager's
wall time (int8: 1.5x, once int8 codegen exists).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _median_time(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--kernels", default="c,reference")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cmodel_speed.json"))
    args = p.parse_args(argv)

    import torch_tpu
    from benchmarks.zoo import build
    from torch_tpu.lowering import lower
    from torch_tpu.verify import similarity

    rows = []
    for name in args.models.split(","):
        model, inputs = build(name)
        with torch.no_grad():
            eager_s = _median_time(lambda: model(*inputs))
        top = torch_tpu.transform(model, inputs)
        for precision in args.precisions.split(","):
            t0 = time.perf_counter()
            program = torch_tpu.deploy(top, precision=precision)
            codegen_s = time.perf_counter() - t0
            with torch.no_grad():
                tpu_out = lower(top.gm, "bm1684x", precision)(*inputs)[0]
            profile = torch_tpu.run(program, list(inputs), profile=True).profile
            summary = profile.as_dict()
            row = {"model": name, "precision": precision, "instructions": len(program.instructions),
                   "codegen_s": codegen_s, "eager_f32_s": eager_s, "profile": summary}
            for kernels in args.kernels.split(","):
                out = {}

                def go():
                    out["y"] = torch_tpu.run(program, list(inputs), cmodel=kernels)["output0"]

                row[f"cmodel_{kernels}_s"] = _median_time(go, repeats=1 if kernels == "reference" else 3)
                row[f"cosine_{kernels}"] = similarity(tpu_out, out["y"]).cosine
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "profile"}), flush=True)

    print(f"\n{'model':<10}{'prec':<6}{'instr':>6}{'eager ms':>10}{'C ms':>9}{'C/eager':>8}{'ref ms':>9}"
          f"{'sim ms':>8}{'roofline':>9}{'cos(C)':>10}")
    for r in rows:
        prof = r["profile"]
        sim_ms = prof.get("latency_ms", prof.get("latency_s", 0) * 1e3)
        ratio = prof.get("roofline_ratio", float("nan"))
        c = r.get("cmodel_c_s", float("nan"))
        ref = r.get("cmodel_reference_s", float("nan"))
        print(f"{r['model']:<10}{r['precision']:<6}{r['instructions']:>6}{r['eager_f32_s'] * 1e3:>10.1f}"
              f"{c * 1e3:>9.1f}{c / r['eager_f32_s']:>8.2f}{ref * 1e3:>9.1f}{sim_ms:>8.3f}{ratio:>9.2f}"
              f"{r.get('cosine_c', float('nan')):>10.6f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
