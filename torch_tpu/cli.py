"""``torch-tpu``: the steps from the shell, shaped like TPU-MLIR's tools.

    torch-tpu transform --torchvision resnet18 --input-shape 1,3,224,224 -o out/resnet18
    torch-tpu transform --model model.onnx -o out/model          # writes out/model.pt2 + out/model.txt
    torch-tpu compare ref.npz out.npz --tolerance 0.99,0.90      # like npz_tool compare

Exit status: 0 on success, 1 when a comparison fails, 2 on bad input (with a one-line error).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from torch_tpu.errors import TorchTpuError


def _floats(text: str) -> tuple[float, float]:
    parts = [float(x) for x in text.split(",")]
    if len(parts) != 2:
        raise argparse.ArgumentTypeError("expected COS,EUCLID, e.g. 0.99,0.90")
    return parts[0], parts[1]


def _shape(text: str) -> list[int]:
    return [int(x) for x in text.replace("x", ",").split(",") if x]


def _cmd_compare(args: argparse.Namespace) -> int:
    from torch_tpu.verify.compare import compare, load_npz
    a, b = load_npz(args.reference), load_npz(args.target)
    rep = compare(a, b, args.tolerance, title=f"{args.target} vs {args.reference}")
    print(rep.table(max_rows=None if args.verbose else 60))
    return 0 if rep.ok else 1


def _cmd_transform(args: argparse.Namespace) -> int:
    import torch_tpu
    from torch_tpu.verify.compare import compare, load_npz, save_npz

    if args.torchvision:
        import torchvision
        try:
            builder = getattr(torchvision.models, args.torchvision)
        except AttributeError:
            raise TorchTpuError(f"torchvision has no model '{args.torchvision}'") from None
        torch.manual_seed(args.seed)
        model = builder().eval()
        shape = args.input_shape or [1, 3, 224, 224]
        x = load_npz(args.test_input)[next(iter(load_npz(args.test_input)))] if args.test_input else torch.randn(shape)
        top = torch_tpu.transform(model, (x,), dump_dir=args.dump_dir)
        with torch.no_grad():
            ref = model(x)
        got = top(x)
        source = "eager PyTorch"
    elif args.model:
        shapes = None
        if args.input_shapes:
            shapes = {k: _shape(v) for k, v in (item.split(":") for item in args.input_shapes)}
        top = torch_tpu.transform(args.model, weights=args.weights, input_shapes=shapes, dump_dir=args.dump_dir)
        x = None
        ref = got = None
        source = ""
        if not args.no_validate:
            from torch_tpu.frontends import validate as validate_mod
            x = (tuple(load_npz(args.test_input).values()) if args.test_input else top.example_inputs())
            ref, source = validate_mod.run_source(args.model, x, weights=args.weights)
            got = top.run_flat(*x)
    else:
        raise TorchTpuError("transform needs --model FILE or --torchvision NAME")
    out = top.save(args.output)
    print(f"wrote {out} and {out.with_suffix('.txt')}")
    if ref is not None:
        def flat(v):
            return list(v) if isinstance(v, (tuple, list)) else [v]
        names = top.output_names
        rep = compare(dict(zip(names, flat(ref))), dict(zip(names, flat(got))), args.tolerance,
                      title=f"TOP vs {source}")
        print(rep.table())
        if args.save_outputs:
            save_npz(args.save_outputs, dict(zip(names, flat(got))))
        return 0 if rep.ok else 1
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import torch_tpu
    from torch_tpu.graph.top import load_top

    top = load_top(args.top)
    extra = {"percentile": args.percentile} if args.percentile is not None else {}
    table = torch_tpu.calibrate(top, args.data, method=args.method, num_samples=args.input_num,
                                tune_num=args.tune_num, **extra)
    table.save(args.output)
    print(f"wrote {args.output} ({len(table.entries)} tensors, method {args.method}, "
          f"{args.input_num} samples, tune {args.tune_num})")
    return 0


def _cmd_round_weights(args: argparse.Namespace) -> int:
    import torch_tpu
    from torch_tpu.graph.top import load_top

    top = torch_tpu.round_weights(load_top(args.top), args.data, num_samples=args.input_num)
    pt2 = top.save(args.output)
    print(f"wrote {pt2} (int8 weights rounded with error feedback over {args.input_num} samples; "
          "calibrate and deploy this graph)")
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    import torch_tpu
    from torch_tpu.graph.top import load_top

    top = load_top(args.top)
    prog, plan = torch_tpu.deploy(top, target=args.target, precision=args.precision,
                                  calibration_table=args.calibration_table, qtable=args.qtable,
                                  asymmetric=args.asymmetric, name=Path(args.output).stem, return_plan=True)
    path = prog.save(args.output)
    print(f"wrote {path}: {len(prog.instructions)} instructions, target {args.target}, precision {args.precision}")
    print(plan.report())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import torch_tpu
    from torch_tpu.verify.compare import load_npz, save_npz

    inputs = load_npz(args.input)
    res = torch_tpu.run(args.program, inputs, cmodel=args.cmodel, profile=bool(args.profile))
    outputs = res if isinstance(res, dict) else res.outputs
    save_npz(args.output, outputs)
    print(f"wrote {args.output} ({', '.join(outputs)})")
    if args.profile:
        res.profile.save_trace(args.profile)
        print(res.profile.summary())
        print(f"trace: {args.profile}")
    return 0


def _cmd_qtable(args: argparse.Namespace) -> int:
    from torch_tpu.graph.top import load_top
    from torch_tpu.quant.mixed_precision import qtable_main

    report = qtable_main(load_top(args.top), args.calibration_table, args.data, args.output,
                         expected_cos=args.expected_cos, max_float=args.max_float, mode=args.mode,
                         num_samples=args.input_num)
    print(report)
    print(f"wrote {args.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="torch-tpu", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="compare two .npz files of named tensors")
    c.add_argument("reference")
    c.add_argument("target")
    c.add_argument("--tolerance", type=_floats, default=(0.99, 0.99), help="min cosine,min euclidean")
    c.add_argument("-v", "--verbose", action="store_true", help="print every row")
    c.set_defaults(fn=_cmd_compare)

    t = sub.add_parser("transform", help="a model -> TOP graph (.pt2 + .txt), validated against its source")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help=".onnx, .prototxt (with --weights), .tflite, or .pt2")
    src.add_argument("--torchvision", help="a torchvision model name (random weights, --seed)")
    t.add_argument("--weights", help="the .caffemodel of a .prototxt")
    t.add_argument("--input-shape", type=_shape, help="for --torchvision, e.g. 1,3,224,224")
    t.add_argument("--input-shapes", nargs="*", help="NAME:1x3x224x224 for dynamic model inputs")
    t.add_argument("--test-input", help=".npz with the input tensors")
    t.add_argument("--save-outputs", help="write the TOP outputs to this .npz")
    t.add_argument("--tolerance", type=_floats, default=(0.99999, 0.999))
    t.add_argument("--no-validate", action="store_true")
    t.add_argument("--dump-dir")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("-o", "--output", required=True, help="output path without suffix")
    t.set_defaults(fn=_cmd_transform)

    k = sub.add_parser("calibrate", help="TOP graph + data folder -> calibration table (TPU-MLIR text format)")
    k.add_argument("top", help="a TOP graph .pt2 written by transform")
    k.add_argument("--data", required=True, help="folder of .npy/.npz samples (one array per graph input), or of "
                                                 "images read with the graph's preprocessing config")
    k.add_argument("--method", default="kl", choices=["kl", "max", "percentile", "mse", "search"])
    k.add_argument("--percentile", type=float, help="for --method percentile (default 99.99)")
    k.add_argument("--input-num", type=int, default=100)
    k.add_argument("--tune-num", type=int, default=5)
    k.add_argument("-o", "--output", required=True, help="calibration table path")
    k.set_defaults(fn=_cmd_calibrate)

    w = sub.add_parser("round-weights", help="TOP graph + data folder -> TOP graph with data-aware int8 weight "
                                             "rounding (GPTQ-style)")
    w.add_argument("top", help="a TOP graph .pt2 written by transform")
    w.add_argument("--data", required=True, help="folder of .npy/.npz samples or images, as for calibrate")
    w.add_argument("--input-num", type=int, default=64)
    w.add_argument("-o", "--output", required=True, help="output path without suffix")
    w.set_defaults(fn=_cmd_round_weights)

    q = sub.add_parser("qtable", help="mixed precision: the fewest float layers reaching an output cosine")
    q.add_argument("top", help="a TOP graph .pt2")
    q.add_argument("--calibration-table", required=True)
    q.add_argument("--data", required=True, help="folder of .npy/.npz samples")
    q.add_argument("--expected-cos", type=float, default=0.99)
    q.add_argument("--max-float", type=int)
    q.add_argument("--mode", default="F32", choices=["F32", "BF16"])
    q.add_argument("--input-num", type=int, default=5)
    q.add_argument("-o", "--output", required=True, help="the qtable file")
    q.set_defaults(fn=_cmd_qtable)

    d = sub.add_parser("deploy", help="TOP graph -> Program (.tpu) for a target and precision")
    d.add_argument("top", help="a TOP graph .pt2")
    d.add_argument("--target", default="bm1684x")
    d.add_argument("--precision", default="f32", choices=["f32", "bf16", "f16", "int8"])
    d.add_argument("--calibration-table")
    d.add_argument("--qtable")
    d.add_argument("--asymmetric", action="store_true", help="int8 activations with zero points")
    d.add_argument("-o", "--output", required=True, help="the .tpu file")
    d.set_defaults(fn=_cmd_deploy)

    r = sub.add_parser("run", help="run a Program on the cmodel")
    r.add_argument("program", help="a .tpu file")
    r.add_argument("--input", required=True, help=".npz of named inputs")
    r.add_argument("-o", "--output", required=True, help=".npz for the outputs")
    r.add_argument("--cmodel", default="auto", choices=["auto", "c", "triton", "reference"])
    r.add_argument("--profile", help="also write a Chrome/Perfetto trace JSON here and print the timing summary")
    r.set_defaults(fn=_cmd_run)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except TorchTpuError as e:
        print(f"torch-tpu {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
