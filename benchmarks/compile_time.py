"""Compile time and latency: torch.compile(backend="tpu") vs the default Inductor backend, same process.

    python benchmarks/compile_time.py [--models resnet18,resnet50,...] [--out benchmarks/results/compile_time.json]

Per model, each measurement in a fresh subprocess (cold caches; Inductor gets an empty cache dir):
  * tpu: first call (dynamo + capture + passes + lowering + first run), the backend's own compile time
    (capture to TPU graph), steady-state latency (median of 5 calls);
  * tpu, repeated compile in a new process with the on-disk cache warm: the backend's compile time;
  * inductor: first call (cold compile) and steady-state latency;
  * eager: steady-state latency.
Targets (issue 2): resnet50 tpu compile <= 1/4 of Inductor's cold compile; repeated compile < 1 s.

    python benchmarks/compile_time.py --codegen [--models resnet50]

times ``codegen`` alone (TPU graph -> Program; median of 3) at f32 and int8 (calibrated on the example input)
in this process; target (issue 3): int8 within ~2x of f32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _measure(model_name: str, backend: str, cache_dir: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks.zoo import build

    model, inputs = build(model_name)
    result: dict = {}
    with torch.no_grad():
        if backend == "eager":
            fn = model
        elif backend == "tpu":
            fn = torch.compile(model, backend="tpu", options={"cache_dir": cache_dir})
        else:
            fn = torch.compile(model)
        t0 = time.perf_counter()
        fn(*inputs)
        result["first_call_s"] = time.perf_counter() - t0
        if backend == "tpu":
            from torch_tpu.backend import recent_compiles
            c = recent_compiles()[-1]
            result["backend_compile_s"] = c.seconds
            result["from_cache"] = c.from_cache
            result["fallbacks"] = len(c.fallbacks)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn(*inputs)
            times.append(time.perf_counter() - t0)
        result["steady_s"] = statistics.median(times)
    return result


def _codegen_seconds(model_name: str) -> dict:
    """Median seconds of ``codegen`` of the model's TPU graph at f32 and at int8 (same process)."""
    sys.path.insert(0, str(ROOT))
    import torch

    import torch_tpu
    from benchmarks.zoo import build
    from torch_tpu.lowering import lower
    from torch_tpu.lowering.codegen import codegen

    model, inputs = build(model_name)
    top = torch_tpu.transform(model, inputs)
    table = torch_tpu.calibrate(top, [inputs], method="max", tune_num=0, progress=False)
    result = {}
    for prec in ("f32", "int8"):
        tpu = lower(top.gm, "bm1684x", prec, **({"calibration_table": table} if prec == "int8" else {}))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            codegen(tpu, "bm1684x")
            times.append(time.perf_counter() - t0)
        result[f"codegen_{prec}_s"] = statistics.median(times)
    result["int8_over_f32"] = result["codegen_int8_s"] / result["codegen_f32_s"]
    result["torch_threads"] = torch.get_num_threads()
    return result


def _run_child(model: str, backend: str, cache_dir: str, env_extra: dict | None = None) -> dict:
    env = dict(os.environ, **(env_extra or {}))
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.compile_time import _measure; "
            f"print('RESULT' + json.dumps(_measure({model!r}, {backend!r}, {cache_dir!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,bert_2layer")
    p.add_argument("--skip-inductor", action="store_true")
    p.add_argument("--codegen", action="store_true", help="time codegen alone (f32 and int8) and exit")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile_time.json"))
    args = p.parse_args(argv)
    if args.codegen:
        for name in args.models.split(","):
            print(json.dumps({"model": name, **_codegen_seconds(name)}), flush=True)
        return 0

    rows = []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tpu_cache, tempfile.TemporaryDirectory() as ind_cache:
            row = {"model": name}
            row["eager"] = _run_child(name, "eager", tpu_cache)
            row["tpu_cold"] = _run_child(name, "tpu", tpu_cache)
            row["tpu_warm_new_process"] = _run_child(name, "tpu", tpu_cache)
            if not args.skip_inductor:
                row["inductor_cold"] = _run_child(name, "inductor", tpu_cache,
                                                  {"TORCHINDUCTOR_CACHE_DIR": ind_cache})
            rows.append(row)
            print(json.dumps(row), flush=True)

    def g(d: dict, k: str) -> str:
        v = d.get(k)
        return f"{v:8.2f}" if isinstance(v, (int, float)) else f"{'-':>8}"

    print(f"\n{'model':<22}{'tpu 1st':>9}{'tpu comp':>9}{'tpu rep':>9}{'ind 1st':>9}{'ratio':>7}"
          f"{'eager ms':>9}{'tpu ms':>9}{'ind ms':>9}")
    for r in rows:
        tc, tw, ic = r["tpu_cold"], r["tpu_warm_new_process"], r.get("inductor_cold", {})
        ratio = (tc.get("first_call_s", 0) / ic["first_call_s"]) if ic.get("first_call_s") else float("nan")
        ms = lambda d: f"{d['steady_s'] * 1e3:9.1f}" if "steady_s" in d else f"{'-':>9}"  # noqa: E731
        print(f"{r['model']:<22}{g(tc, 'first_call_s')} {g(tc, 'backend_compile_s')} {g(tw, 'backend_compile_s')} "
              f"{g(ic, 'first_call_s')}{ratio:7.3f}{ms(r['eager'])}{ms(tc)}{ms(ic)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "python": sys.version, "cpus": os.cpu_count()}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
