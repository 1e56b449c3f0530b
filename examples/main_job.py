"""The main job: compile a real torchvision model with ``torch.compile(backend="tpu")`` and check every stage.

    python examples/main_job.py [--model resnet18] [--precisions f32,bf16,int8] [--size 224]

For each precision (int8: KL-calibrated first on 16 inputs): compile through the "tpu" backend (resolved by name through the package's entry
point); the compiled function runs the generated Program on the cmodel (C kernels). Print the
stage-by-stage comparison — TOP graph vs eager PyTorch (outputs and every module output by name), TPU graph
vs TOP graph (every named tensor and the outputs), cmodel vs TPU graph (every value probed in the Program,
by stable name, and the outputs) — plus the fallback ops (there should be none) and the compile time. Then
save the Program as a ``.tpu`` file, run the file with ``torch_tpu.run`` (it must give the same outputs as
the compiled function) and print the simulated timing. Exits non-zero when a stage falls below its tolerance.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--precisions", default="f32,bf16,int8")
    p.add_argument("--target", default="bm1684x")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)

    import torch_tpu
    from torch_tpu.backend import recent_compiles
    from torch_tpu.config import STAGE_TOLERANCE
    from torch_tpu.lowering.codegen import codegen
    from torch_tpu.verify import compare, module_outputs

    torch.manual_seed(0)
    model = getattr(torchvision.models, args.model)().eval()
    x = torch.randn(1, 3, args.size, args.size)
    with torch.no_grad():
        ref = model(x)
    print(f"model: torchvision {args.model} (random weights, seed 0), input 1x3x{args.size}x{args.size}, "
          f"target {args.target}")
    ok = True
    for precision in args.precisions.split(","):
        torch._dynamo.reset()
        opts = {"target": args.target, "precision": precision, "cache": False}
        if precision == "int8":
            # KL thresholds from 16 inputs of the same distribution as x (random weights: no real data
            # distribution to match; benchmarks/quant_compare.py calibrates on real photos)
            g = torch.Generator().manual_seed(1)
            data = [torch.randn(1, 3, args.size, args.size, generator=g) for _ in range(16)]
            t0 = time.perf_counter()
            opts["calibration_table"] = torch_tpu.calibrate(model, data, method="kl", num_samples=16, tune_num=0,
                                                            example_inputs=(x,), progress=False)
            print(f"\ncalibrated (kl, 16 samples) in {time.perf_counter() - t0:.1f} s")
        compiled = torch.compile(model, backend="tpu", options=opts)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = compiled(x)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x)
        again = time.perf_counter() - t0
        graph = recent_compiles()[-1]
        n_ops = sum(1 for m in graph.module.modules() if isinstance(m, torch.fx.GraphModule)
                    for n in m.graph.nodes if n.op == "call_function" and "tpu." in str(n.target))
        where = "on the cmodel" if graph.on_cmodel else "with the TPU reference ops"
        print(f"\n=== {precision}: compiled in {graph.seconds:.2f} s (first call {first:.2f} s, next call {again:.2f} s "
              f"{where}), {n_ops} TPU ops, {len(graph.fallbacks)} fallback ops")
        for f in graph.fallbacks:
            print(f"  fallback: {f.op} at '{f.stable_name}' ({f.location})")
        reports = graph.check(x)
        # TOP vs eager per named tensor: nn.Module outputs (forward hooks) meet TOP values by module path
        top_vals = graph.top.named_values(x)
        module_vals = module_outputs(model, (x,))
        common = [n for n in top_vals if n in module_vals]
        reports.insert(1, compare(module_vals, top_vals, STAGE_TOLERANCE["f32"], names=common,
                                  title="TOP vs eager (module outputs by stable name)"))
        for rep in reports:
            print(rep.table(max_rows=12))
            ok &= rep.ok
        cos = torch.nn.functional.cosine_similarity(out.flatten().double(), ref.flatten().double(), dim=0).item()
        same_top1 = bool((out.argmax(-1) == ref.argmax(-1)).all())
        print(f"end to end vs eager: cosine {cos:.6f}, top-1 {'same' if same_top1 else 'DIFFERENT'}")
        # The Program level: the Program the compile made, saved, loaded and run from the file, with timing.
        if not graph.on_cmodel:
            print("NOT ON THE CMODEL: " + "; ".join(f.reason for f in graph.cmodel_fallbacks))
            ok = False
            continue
        program = graph.programs["tpu_0"]
        with tempfile.TemporaryDirectory() as d:
            path = program.save(Path(d) / f"{args.model}_{precision}.tpu")
            t0 = time.perf_counter()
            res = torch_tpu.run(path, [x], cmodel="auto", profile=True)
            run_s = time.perf_counter() - t0
            size = path.stat().st_size
        same = torch.equal(res.outputs["output0"], out)
        print(f"\nProgram {path.name}: {len(program.instructions)} instructions, {size / 2**20:.1f} MiB; "
              f"run from the file in {run_s:.2f} s: {'same outputs as the compiled function' if same else 'DIFFERENT'}")
        print(res.profile.summary())
        _, plan = codegen(graph.module.tpu_0, graph.options.target, return_plan=True)
        print(plan.report())
        ok &= same
    print("\nall stages within tolerance" if ok else "\nSOME STAGE FELL BELOW TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
