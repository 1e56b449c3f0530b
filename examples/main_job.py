"""The main job: compile a real torchvision model with ``torch.compile(backend="tpu")`` and check every stage.

    python examples/main_job.py [--model resnet18] [--precisions f32,bf16] [--size 224]

For each precision: compile through the "tpu" backend (resolved by name through the package's entry
point), run it, and print the stage-by-stage comparison — TOP graph vs eager PyTorch (outputs and every
module output by name), TPU graph vs TOP graph (every named tensor and the outputs) — plus the fallback ops
(there should be none) and the compile time. Then deploy the TOP graph to a Program, run it on the cmodel,
compare it with the TPU graph and print the simulated timing. Exits non-zero when a stage falls below its
tolerance.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torchvision


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--precisions", default="f32,bf16")
    p.add_argument("--target", default="bm1684x")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)

    from torch_tpu.backend import recent_compiles
    from torch_tpu.config import STAGE_TOLERANCE
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
        compiled = torch.compile(model, backend="tpu", options=opts)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = compiled(x)
        first = time.perf_counter() - t0
        graph = recent_compiles()[-1]
        n_ops = sum(1 for m in graph.module.modules() if isinstance(m, torch.fx.GraphModule)
                    for n in m.graph.nodes if n.op == "call_function" and "tpu." in str(n.target))
        print(f"\n=== {precision}: compiled in {graph.seconds:.2f} s (first call {first:.2f} s), "
              f"{n_ops} TPU ops, {len(graph.fallbacks)} fallback ops")
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
    # The Program level: the TOP graph deployed for the target and run on the cmodel (C kernels), with timing.
    import torch_tpu
    from torch_tpu.config import STAGE_TOLERANCE as TOL
    from torch_tpu.lowering import lower

    top = torch_tpu.transform(model, (x,))
    for precision in args.precisions.split(","):
        t0 = time.perf_counter()
        program = torch_tpu.deploy(top, target=args.target, precision=precision)
        t1 = time.perf_counter()
        res = torch_tpu.run(program, [x], cmodel="auto", profile=True)
        t2 = time.perf_counter()
        with torch.no_grad():
            tpu_out = lower(top.gm, args.target, precision)(x)[0]
        rep = torch_tpu.compare({"output": tpu_out}, {"output": res.outputs["output0"]}, TOL[precision],
                                title=f"Program on the cmodel vs TPU graph ({precision})")
        print(f"\n=== Program {precision}: {len(program.instructions)} instructions, codegen {t1 - t0:.2f} s, "
              f"cmodel run {t2 - t1:.2f} s")
        print(rep.table())
        print(res.profile.summary())
        ok &= rep.ok
    print("\nall stages within tolerance" if ok else "\nSOME STAGE FELL BELOW TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
