"""INT8 quantization side by side: torch_tpu vs torchao PT2E vs onnxruntime ``quantize_static``.

Same models, same calibration images, same held-out images for every tool:

* models: torchvision resnet18 and mobilenet_v2 at 224x224 with random weights (seed 0) whose BatchNorm
  statistics are re-estimated on photo crops (:func:`recalibrate_bn`: with untouched random BN statistics
  mobilenet_v2's logits are ~1e-9 and no tool quantizes anything meaningful), and a small CNN trained here
  on scikit-learn's digits (real accuracy);
* calibration / held-out data: real photos (scikit-learn's ``china``/``flower`` and scikit-image's
  ``astronaut``/``coffee``/``chelsea``/``rocket``), random crops resized to the input size and
  ImageNet-normalised; calibration, held-out and BN crops use different seeds; for the digits CNN,
  training digits for calibration and test digits for evaluation;
* metrics vs the FP32 eager outputs on the held-out images: SQNR (dB, over all outputs) and mean cosine
  per image; top-1 accuracy for digits.

torch_tpu: ``calibrate`` (kl, kl + tune 5, search; and kl / search after ``round_weights``, the GPTQ-style
data-aware weight rounding, rows ``+gptq``), then the real INT8 lowering
(``lowering.lower(top.gm, target, "int8", calibration_table=...)``) and the TPU graph run with its reference
ops (integer arithmetic), with symmetric activations (the default) and asymmetric ones
(``asymmetric=True``, as both peers quantize activations); the fake-quantization simulation of the same
table is an extra row.
torchao: PT2E with the XNNPACK-style symmetric per-channel quantizer of ``torchao.testing`` and
``X86InductorQuantizer`` (its failure on torchvision resnets is recorded). onnxruntime: ``quant_pre_process``
then QDQ, symmetric int8 weights (per-channel, and per-tensor minmax as a reference row), int8 activations,
entropy / minmax / percentile. Entropy ranges are computed with 1024 histogram bins and 255 quantized bins
(ORT's own default, 128 and 128, leaves the KL search one candidate, so it equals minmax). ORT rows are
evaluated with Q/DQ executed as written (the quantized model's exact semantics); the output of ORT's fused
integer CPU kernels is recorded too (``cpu_kernels_sqnr_db``): on AVX2 CPUs without VNNI they saturate
int16 pair sums and lose up to ~20 dB with per-channel weights, which is why per-channel looked worse
than per-tensor before.

Targets checked: torch_tpu's best method matches the best peer's SQNR on every model (``parity``);
calibrating resnet50 on 100 samples with kl + tune 5 takes at most 3x the time of 100 eager forward passes
(``calibration_speed``); peak RSS at 1000 samples within 10 % of that at 10 (``calibration_memory``,
resnet18 at a small input size; each size in a fresh process; the peak during calibration alone is
recorded too).

Run: ``python benchmarks/quant_compare.py [--models resnet18,mobilenet_v2,digits_cnn --cal 100 --held 20
--sizes 10,100,1000 --speed-model resnet50 --timing-hw 64 --threads 2]``; prints a table and writes
``benchmarks/results/quant_compare.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

RESULTS = Path(__file__).resolve().parent / "results" / "quant_compare.json"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# -- data -----------------------------------------------------------------------------------------
def sample_photos() -> dict[str, torch.Tensor]:
    """Real RGB photos in [0, 1], ``(3, H, W)``: scikit-learn's ``china``/``flower`` and scikit-image's bundled
    ``astronaut``, ``coffee``, ``chelsea`` and ``rocket`` (both from the ``[test]`` extra). Without
    scikit-image the run stops: fewer photos would silently change every number it compares."""
    from sklearn.datasets import load_sample_images

    try:
        import skimage.data
    except ImportError as e:
        raise SystemExit("quant_compare: needs scikit-image for its sample photos "
                         "(pip install -e '.[test]')") from e
    ims = dict(zip(("china", "flower"), load_sample_images().images))
    ims |= {name: getattr(skimage.data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket")}
    return {k: torch.from_numpy(v.copy()).permute(2, 0, 1).float() / 255 for k, v in ims.items()}


_PHOTOS: dict[str, torch.Tensor] = {}


def photo_crops(n: int, hw: int, seed: int) -> list[torch.Tensor]:
    """``n`` random crops (side 25-100 % of the shorter edge, random flip) of the sample photos (cycled),
    resized to ``hw`` and ImageNet-normalised; different seeds give different crops."""
    if not _PHOTOS:
        _PHOTOS.update(sample_photos())
    photos = list(_PHOTOS.values())
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        im = photos[(i + seed) % len(photos)]
        h, w = im.shape[1:]
        side = int(min(h, w) * (0.25 + 0.75 * torch.rand((), generator=g).item()))
        y0 = int(torch.randint(0, h - side + 1, (), generator=g))
        x0 = int(torch.randint(0, w - side + 1, (), generator=g))
        crop = im[None, :, y0:y0 + side, x0:x0 + side]
        if torch.rand((), generator=g).item() < 0.5:
            crop = crop.flip(3)
        crop = nn.functional.interpolate(crop, size=(hw, hw), mode="bilinear", antialias=True, align_corners=False)
        out.append((crop - MEAN) / STD)
    return out


def recalibrate_bn(model: nn.Module, n: int = 64, hw: int = 224, batch: int = 16) -> nn.Module:
    """Give a randomly initialised torchvision model trained-like BatchNorm statistics, in place.

    With ``weights=None`` every BN has running mean 0 / var 1, so activations shrink or grow layer by
    layer: mobilenet_v2's logits come out near 1e-9, below the smallest scale torchao's observers allow
    (``torch.finfo(float32).eps``), and every tool would be quantizing noise. Re-estimating the running
    statistics (cumulative average, ``momentum=None``) on ``n`` photo crops of their own seed (not the
    calibration or held-out crops) makes every BN output roughly unit-variance, as in a trained network.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, n, batch):
            model(torch.cat(photo_crops(min(batch, n - i), hw, seed=1000 + i)))
    return model.eval()


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def digits_setup(n_cal: int):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(8):
        for idx in train.split(50):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    cal = [x[i:i + 1] for i in train[:n_cal]]
    held = [x[i:i + 1] for i in test]
    return model, cal, held, y[test]


def models(args) -> dict[str, tuple[nn.Module, list, list, torch.Tensor | None]]:
    import torchvision

    out = {}
    cal224, held224 = photo_crops(args.cal, 224, seed=1), photo_crops(args.held, 224, seed=2)
    for name in args.models.split(","):
        if name == "digits_cnn":
            out[name] = digits_setup(args.cal)
            continue
        torch.manual_seed(0)
        out[name] = (recalibrate_bn(getattr(torchvision.models, name)(weights=None)), cal224, held224, None)
    return out


# -- metrics --------------------------------------------------------------------------------------
def metrics(ref: list[torch.Tensor], got: list[torch.Tensor], labels: torch.Tensor | None) -> dict[str, float]:
    r = torch.cat([t.flatten(1) for t in ref]).double()
    g = torch.cat([t.flatten(1) for t in got]).double()
    err = ((r - g) ** 2).sum()
    sqnr = float(10 * torch.log10((r ** 2).sum() / err)) if err > 0 else math.inf
    cos = float(nn.functional.cosine_similarity(r, g, dim=1).mean())
    out = {"sqnr_db": round(sqnr, 2), "cosine": round(cos, 6)}
    if labels is not None:
        out["top1"] = round(float((g.argmax(1) == labels).double().mean()), 4)
    return out


# -- the three tools ------------------------------------------------------------------------------
Outputs = list[torch.Tensor]


def run_torch_tpu(top, cal, held, method: str, tune: int, target: str, rounding: str | None = None
                  ) -> dict[str, Any]:
    """(Round the weights,) calibrate, lower to the INT8 TPU graph and run it on ``held``; also the fake-quant
    simulation. ``rounding="gptq"``: :func:`torch_tpu.round_weights` on the calibration samples first (its
    time is part of ``calib_s``).

    Returns ``{"int8": outputs of the lowered TPU graph (its reference ops: integer arithmetic),
    "int8_asym": the same table lowered with asymmetric activations (zero points; like both peers' int8
    activations), "sim": outputs of the fake-quantization simulation of the table, "calib_s": seconds}``.
    """
    import torch_tpu
    from torch_tpu.lowering import lower
    from torch_tpu.quant.mixed_precision import SimulationEvaluator

    t0 = time.perf_counter()
    if rounding == "gptq":
        top = torch_tpu.round_weights(top, cal, num_samples=len(cal), progress=False)
    table = torch_tpu.calibrate(top, cal, method=method, num_samples=len(cal), tune_num=tune, progress=False)
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"calib_s": seconds}
    for key, asym in (("int8", False), ("int8_asym", True)):
        tpu = lower(top.gm, target, "int8", calibration_table=table, asymmetric=asym)
        with torch.no_grad():
            out[key] = [_first(tpu(x)) for x in held]
    out["sim"] = [o[0] for o in SimulationEvaluator(top, table, held)(frozenset())]
    return out


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def run_torchao(model, cal, held, quantizer: str) -> Outputs:
    """PT2E: export (eval-mode model) -> prepare -> calibrate on ``cal`` -> convert -> run ``held``."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if quantizer == "xnnpack_per_channel":
        from torchao.testing.pt2e._xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
        q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    else:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        q = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    gm = torch.export.export(model.eval(), (cal[0],)).module()
    prepared = prepare_pt2e(gm, q)
    with torch.no_grad():
        for x in cal:
            prepared(x)
        converted = convert_pt2e(prepared)
        return [converted(x) for x in held]


# ORT's Entropy calibrator defaults to 128 histogram bins and 128 quantized bins: its KL search then has
# one candidate, the full range, so "entropy" silently equals minmax. quantize_static does not pass bin
# counts through, so the ranges are computed here with real settings and handed over as a cache file.
ORT_ENTROPY_BINS = {"num_bins": 1024, "num_quantized_bins": 255}


def ort_session(path: Path, fused: bool):
    """``fused=False``: Q/DQ run as written (the quantized model's exact semantics); ``True``: ORT's full
    graph optimisations, which fuse DQ-Conv-Q into integer kernels (on AVX2 CPUs without VNNI these
    saturate int16 pair sums, hurting full-range per-channel weights most)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if fused
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def run_onnxruntime(model, cal, held, method: str, workdir: Path, per_channel: bool = True) -> dict[str, Outputs]:
    """QDQ, int8 weights (symmetric, per-channel or per-tensor) and int8 activations (ORT's default
    asymmetric), after ``quant_pre_process``. Returns the held-out outputs with the exact QDQ semantics
    (``"qdq"``) and with ORT's fused CPU kernels (``"cpu_kernels"``)."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, pre = workdir / "model.onnx", workdir / "model_pre.onnx"
    if not pre.exists():
        torch.onnx.export(model.eval(), (cal[0],), str(fp32), input_names=["input"], output_names=["output"],
                          dynamo=False)
        quant_pre_process(str(fp32), str(pre))

    class Reader(CalibrationDataReader):       # a fresh reader per use: ORT reads it once, to the end
        def __init__(self):
            self.it = iter(cal)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x.numpy()}

    calib = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
             "percentile": CalibrationMethod.Percentile}[method]
    reader, cache = Reader(), None
    if method == "entropy":
        ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
        calibrator = create_calibrator(pre, ops, augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=calib, extra_options=ORT_ENTROPY_BINS)
        calibrator.collect_data(reader)
        cache, reader = workdir / "entropy_ranges.json", None
        save_tensors_data(calibrator.compute_data(), cache)
    q = workdir / f"model_{method}_{'pc' if per_channel else 'pt'}.onnx"
    quantize_static(str(pre), str(q), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, calibrate_method=calib,
                    calibration_cache_path=cache)
    out = {}
    for key, fused in (("qdq", False), ("cpu_kernels", True)):
        sess = ort_session(q, fused)
        out[key] = [torch.from_numpy(sess.run(None, {"input": x.numpy()})[0]) for x in held]
    return out


# -- calibration time and memory ------------------------------------------------------------------
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def calib_only(model_name: str, n: int, hw: int, tune: int, eager_n: int) -> None:
    """In this (fresh) process: calibrate ``model_name`` (BN-recalibrated random weights) at ``hw`` on ``n``
    photo crops made lazily (kl, ``tune``), and time ``eager_n`` eager forward passes before and after it
    (``eager_s`` is their mean); print JSON. Wall time and process CPU time are both recorded: on a shared
    machine the CPU-time ratio is the steadier one.

    Memory: ``peak_rss_mb`` is the process's peak RSS (``ru_maxrss``, which includes model set-up and
    capture); ``calib_peak_rss_mb`` is the peak during calibration alone (peak reset just before it), and
    ``rss_before_calib_mb`` the resident set at that moment.
    """
    import torchvision
    import torch_tpu

    torch.manual_seed(0)
    model = recalibrate_bn(getattr(torchvision.models, model_name)(weights=None), hw=hw)
    top = torch_tpu.transform(model, (photo_crops(1, hw, seed=3)[0],))
    data = (c for c in _crop_stream(n, hw))          # generated lazily: memory is the calibration's own

    def eager_run() -> tuple[float, float]:
        crops = list(_crop_stream(eager_n, hw))
        with torch.no_grad():
            model(crops[0])                               # warm-up, not timed
            t1, c1 = time.perf_counter(), time.process_time()
            for c in crops:
                model(c)
            return time.perf_counter() - t1, time.process_time() - c1

    before = eager_run()                                  # eager timed before and after: on a shared
    reset = _reset_peak()                                 # machine the load drifts during a long run
    rss0 = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    torch_tpu.calibrate(top, data, method="kl", num_samples=n, tune_num=tune, progress=False)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    calib_peak = _status_kb("VmHWM") if reset else None
    after = eager_run()
    eager, eager_cpu = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
    print(json.dumps({"model": model_name, "samples": n, "hw": hw, "tune": tune, "calib_s": round(seconds, 2),
                      "eager_forwards": eager_n, "eager_s": round(eager, 2),
                      "eager_s_before_after": [round(before[0], 2), round(after[0], 2)],
                      "calib_over_eager": round(seconds / eager, 2), "calib_cpu_s": round(cpu, 2),
                      "eager_cpu_s": round(eager_cpu, 2), "calib_over_eager_cpu": round(cpu / eager_cpu, 2),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "calib_peak_rss_mb": None if calib_peak is None else round(calib_peak / 1024, 1),
                      "rss_before_calib_mb": round(rss0 / 1024, 1)}))


def _crop_stream(n: int, hw: int):
    for i in range(0, n, 50):
        yield from photo_crops(min(50, n - i), hw, seed=100 + i)


def run_calib_only(model: str, n: int, hw: int, tune: int, eager_n: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--calib-only", str(n), "--calib-model", model, "--timing-hw", str(hw),
           "--calib-tune", str(tune), "--eager-n", str(eager_n), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- main -----------------------------------------------------------------------------------------
#: (label, threshold method, tune samples, weight rounding: "gptq" runs ``round_weights`` on the cal samples first)
TORCH_TPU_METHODS = (("kl", "kl", 0, None), ("kl+tune5", "kl", 5, None), ("search", "search", 0, None),
                     ("kl+gptq", "kl", 0, "gptq"), ("search+gptq", "search", 0, "gptq"))
ORT_CONFIGS = (("per-channel", "entropy", True), ("per-channel", "minmax", True),
               ("per-channel", "percentile", True), ("per-tensor", "minmax", False))


def compare(args) -> list[dict[str, Any]]:
    import torch_tpu

    rows = []
    for name, (model, cal, held, labels) in models(args).items():
        with torch.no_grad():
            ref = [model(x) for x in held]
        base = {"model": name, "cal": len(cal), "held": len(held)}
        if labels is not None:
            rows.append({**base, "tool": "fp32", "method": "eager", **metrics(ref, ref, labels)})
            print(_fmt(rows[-1]), flush=True)

        def add(tool: str, method: str, got: Outputs, **extra) -> None:
            rows.append({**base, "tool": tool, "method": method, **metrics(ref, got, labels), **extra})
            print(_fmt(rows[-1]), flush=True)

        def attempt(tool: str, method: str, fn: Callable[[], None]) -> None:
            try:
                fn()
            except Exception as e:       # a peer that fails is recorded, not fatal (the benchmark reports it)
                rows.append({**base, "tool": tool, "method": method, "error": f"{type(e).__name__}: {e}"[:200]})
                print(_fmt(rows[-1]), flush=True)

        top = torch_tpu.transform(model, (cal[0],))
        for label, method, tune, rounding in TORCH_TPU_METHODS:
            def tpu_rows(label=label, method=method, tune=tune, rounding=rounding):
                t0 = time.perf_counter()
                r = run_torch_tpu(top, cal, held, method, tune, args.target, rounding)
                total = round(time.perf_counter() - t0, 1)
                add("torch_tpu int8", label, r["int8"], calib_s=round(r["calib_s"], 2), total_s=total)
                add("torch_tpu int8 asym", label, r["int8_asym"])
                add("torch_tpu fake-quant sim", label, r["sim"])
            attempt("torch_tpu int8", label, tpu_rows)
        for quantizer, label in (("xnnpack_per_channel", "xnnpack sym per-channel"), ("x86", "x86 inductor")):
            def ao_rows(quantizer=quantizer, label=label):
                t0 = time.perf_counter()
                got = run_torchao(model, cal, held, quantizer)
                add("torchao pt2e", label, got, total_s=round(time.perf_counter() - t0, 1))
            attempt("torchao pt2e", label, ao_rows)
        with tempfile.TemporaryDirectory() as tmp:
            for gran, method, pc in ORT_CONFIGS:
                def ort_rows(gran=gran, method=method, pc=pc):
                    t0 = time.perf_counter()
                    got = run_onnxruntime(model, cal, held, method, Path(tmp), per_channel=pc)
                    cpu = metrics(ref, got["cpu_kernels"], labels)
                    add(f"onnxruntime QDQ {gran}", method, got["qdq"], total_s=round(time.perf_counter() - t0, 1),
                        cpu_kernels_sqnr_db=cpu["sqnr_db"], cpu_kernels_cosine=cpu["cosine"])
                attempt(f"onnxruntime QDQ {gran}", method, ort_rows)
    return rows


def parity(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model: torch_tpu's best lowered INT8 SQNR (symmetric or asymmetric) vs the best peer's (ORT with
    QDQ semantics), gap in dB."""
    out = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == model and "sqnr_db" in r]
        ours = [r for r in ok if r["tool"] in ("torch_tpu int8", "torch_tpu int8 asym")]
        peers = [r for r in ok if r["tool"].startswith(("torchao", "onnxruntime"))]
        if not ours or not peers:
            continue
        a, b = max(ours, key=lambda r: r["sqnr_db"]), max(peers, key=lambda r: r["sqnr_db"])
        out[model] = {"torch_tpu": f"{a['tool']} {a['method']} {a['sqnr_db']} dB",
                      "best_peer": f"{b['tool']} {b['method']} {b['sqnr_db']} dB",
                      "gap_db": round(a["sqnr_db"] - b["sqnr_db"], 2),
                      "pass": a["sqnr_db"] >= b["sqnr_db"]}
    return out


def _source_state() -> str:
    """The git commit of the torch_tpu checkout, ``+dirty`` when torch_tpu/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "torch_tpu"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _fmt(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['model']:<13} {r['tool']:<28} {r['method']:<24} ERROR {r['error']}"
    top1 = f" top1 {r['top1']:.4f}" if "top1" in r else ""
    cpu = f"  (ORT fused CPU kernels: {r['cpu_kernels_sqnr_db']:.2f} dB)" if "cpu_kernels_sqnr_db" in r else ""
    cal = f"  calib {r['calib_s']:.1f} s" if "calib_s" in r else ""
    return (f"{r['model']:<13} {r['tool']:<28} {r['method']:<24} SQNR {r['sqnr_db']:>7.2f} dB  "
            f"cos {r['cosine']:.6f}{top1}{cal}{cpu}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,mobilenet_v2,digits_cnn", help="comma list ('' to skip)")
    p.add_argument("--cal", type=int, default=100, help="calibration images per model")
    p.add_argument("--held", type=int, default=20, help="held-out photo crops (224 models)")
    p.add_argument("--target", default="bm1684x", help="torch_tpu target of the INT8 lowering")
    p.add_argument("--sizes", default="10,100,1000", help="sample counts for the memory runs ('' to skip)")
    p.add_argument("--timing-hw", type=int, default=64, help="input size of the memory runs")
    p.add_argument("--speed-model", default="resnet50", help="model of the 3x time target ('' to skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output path")
    p.add_argument("--calib-only", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--calib-model", default="resnet18", help=argparse.SUPPRESS)
    p.add_argument("--calib-tune", type=int, default=5, help=argparse.SUPPRESS)
    p.add_argument("--eager-n", type=int, default=100, help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.calib_only is not None:
        calib_only(args.calib_model, args.calib_only, args.timing_hw, args.calib_tune, args.eager_n)
        return
    result: dict[str, Any] = {"rows": compare(args) if args.models else []}
    result["parity"] = parity(result["rows"])
    for model, v in result["parity"].items():
        print(f"parity {model:<13} torch_tpu {v['torch_tpu']} vs {v['best_peer']}: gap {v['gap_db']:+.2f} dB "
              f"-> {'PASS' if v['pass'] else 'FAIL'}")
    if args.speed_model:
        r = run_calib_only(args.speed_model, 100, 224, 5, 100, args.threads)
        r["target"] = "calib_s <= 3 x eager_s"
        r["pass"] = r["calib_over_eager"] <= 3
        result["calibration_speed"] = r
        print(f"\n{args.speed_model} kl+tune5 on 100 samples: {r['calib_s']:.1f} s vs 100 eager forwards "
              f"{r['eager_s']:.1f} s = {r['calib_over_eager']:.2f}x (CPU time {r['calib_over_eager_cpu']:.2f}x; "
              f"target <= 3x) -> {'PASS' if r['pass'] else 'FAIL'}")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        mem = [run_calib_only("resnet18", n, args.timing_hw, 5, 10, args.threads) for n in sizes]
        first, last = mem[0], mem[-1]
        result["calibration_memory"] = {
            "setup": f"resnet18 at {args.timing_hw}x{args.timing_hw}, kl + tune 5, each size in a fresh process",
            "rows": mem, "target": f"peak RSS at {last['samples']} within 10 % of that at {first['samples']}",
            "peak_ratio": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
            "calib_peak_ratio": (round(last["calib_peak_rss_mb"] / first["calib_peak_rss_mb"], 3)
                                 if last["calib_peak_rss_mb"] and first["calib_peak_rss_mb"] else None)}
        result["calibration_memory"]["pass"] = result["calibration_memory"]["peak_ratio"] <= 1.10
        print("\ncalibration memory (" + result["calibration_memory"]["setup"] + ")")
        for r in mem:
            print(f"  {r['samples']:>5} samples: {r['calib_s']:>7.1f} s  peak RSS {r['peak_rss_mb']:.0f} MB, during "
                  f"calibration {r['calib_peak_rss_mb']} MB (from {r['rss_before_calib_mb']:.0f} MB before)")
        m = result["calibration_memory"]
        print(f"  peak ratio {m['peak_ratio']} (calibration-only {m['calib_peak_ratio']}) -> "
              f"{'PASS' if m['pass'] else 'FAIL'}")
    result["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                          if k not in ("calib_only", "calib_model", "calib_tune", "eager_n")}
    result["settings"] |= {"torch": torch.__version__, "photos": list(sample_photos()),
                           "ort_entropy": ORT_ENTROPY_BINS, "torch_tpu_source": _source_state()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
