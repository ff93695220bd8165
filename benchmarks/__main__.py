"""``python -m benchmarks [--quick] [--json FILE] [--compile] [--only NAME ...]``: the speed and memory suite.

Each measurement runs in a fresh process, so its peak RSS is its own: ``python -m benchmarks.<module>``,
or with ``--quick`` (``--fork``) a child forked from a ``multiprocessing`` forkserver that has torch and
the benchmark modules imported (and has run no torch op, so no thread pool is inherited), which saves
~3 s of imports per child; such a child's RSS leaves out the library pages it never touches (a fresh
process counts them: about 0.3 GB more). Each child measures the fp32 matmul rate right before each of its timed runs (see
:mod:`benchmarks.common`). This process only starts the children, combines their results, prints a
table and writes the json.

Combined figures (ratios of two children) compare load-neutral quantities: a time multiplied by the
reference GFLOP/s measured next to it (``GFLOP at the reference rate``), so a change of machine load
between the two children cancels.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import run_module

ROOT = Path(__file__).resolve().parent.parent

#: (child module, what it measures), in run order; "matmul" runs first and last.
BENCHMARKS: tuple[tuple[str, str], ...] = (
    ("matmul", "fp32 matmul reference"),
    ("transformer_forward", "transformer forward, batch 1 and 4"),
    ("generate", "COMMIT generation, 12 steps"),
    ("autoregressive", "autoregressive decode (KV cache)"),
    ("vq", "3D-VQ encode + decode"),
    ("train_tokenizer", "tokenizer training step (G + D)"),
    ("train_transformer", "transformer training step"),
    ("loader", "shard reader"),
    ("video_shards", "frames vs video store: bytes per clip, reader clips/s per core"),
    ("activation_checkpointing", "activation checkpointing off vs on: step memory and time"),
)

#: Targets: key -> (comparison, threshold).
TARGETS: dict[str, tuple[str, float]] = {
    "transformer_forward_frac": (">=", 0.85),
    "decode_overhead_frac": ("<=", 0.05),
    "vq_frac": (">=", 0.60),
    "train_step_frac.tokenizer": (">=", 0.70),
    "train_step_frac.transformer": (">=", 0.70),
    "loader_over_train": (">=", 5.0),
    "generate_peak_rss_gb": ("<", 1.5),
}


def _module(name: str) -> str:
    return "benchmarks." + ("token_cache_child" if name == "token_cache" else name)


def run_child(ctx: Any, name: str, args: argparse.Namespace, tmp: Path, tag: str = "") -> dict[str, Any]:
    """Run one measurement in a fresh process: ``python -m benchmarks.<module>``, or a forkserver child."""
    out = tmp / f"{name}{tag}.json"
    argv = ["--out", str(out)] + ["--quick"] * args.quick + ["--compile"] * args.compile
    argv += [] if args.threads is None else ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    if ctx is None:
        code = subprocess.run([sys.executable, "-m", _module(name), *argv], cwd=ROOT).returncode
    else:
        proc = ctx.Process(target=run_module, args=(_module(name), argv), name=f"bench-{name}")
        proc.start()
        proc.join()
        code = proc.exitcode
    wall = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"benchmark {name} failed (exit code {code}); its traceback is above")
    result = json.loads(out.read_text())
    result["process_seconds"] = wall
    print(f"  {name:<20} done in {wall:6.1f} s", file=sys.stderr, flush=True)
    return result


def machine() -> dict[str, Any]:
    import torch  # version only: this process runs no torch op (the forkserver must not inherit threads)

    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "loadavg_start": load,
            "python": platform.python_version()}


def combine(res: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The json of the targets from the children's results (fractions in [0, 1], ratios plain numbers)."""
    from benchmarks.common import sizes

    cfg = sizes(args.quick)
    out: dict[str, Any] = {"preset": cfg.preset, "resolution": cfg.resolution,
                           "device": "cuda" if _cuda() else "cpu", "compile": args.compile}
    clamp = lambda x: min(1.0, max(0.0, float(x)))  # noqa: E731  (a fraction can exceed 1 only by noise)
    if "matmul" in res:
        rates = [r["matmul_gflops"] for k, r in res.items() if k.startswith("matmul")]
        out["matmul_gflops"] = sorted(rates)[len(rates) // 2]
    if "transformer_forward" in res:
        out["transformer_forward_frac"] = clamp(res["transformer_forward"]["transformer_forward_frac"])
    if "generate" in res:
        out["decode_overhead_frac"] = clamp(res["generate"]["decode_overhead_frac"])
        out["tokenizer_frac"] = clamp(res["generate"]["tokenizer_frac"])
        out["generate_peak_rss_gb"] = res["generate"]["generate_peak_rss_gb"]
    if "vq" in res:
        out["vq_frac"] = clamp(res["vq"]["vq_frac"])
    if "train_tokenizer" in res or "train_transformer" in res:
        out["train_step_frac"] = {k: clamp(res[f"train_{k}"]["frac"]) for k in ("tokenizer", "transformer")
                                  if f"train_{k}" in res}
    if "loader" in res and "train_transformer" in res:
        # clips per reference-GFLOP: (clips/s) / (reference GFLOP/s) of each child, so load changes cancel.
        out["loader_over_train"] = (res["loader"]["clips_per_peak_gflop"]
                                    / res["train_transformer"]["clips_per_peak_gflop"])
    if "autoregressive" in res and "generate" in res:
        # both walls in GFLOP at the reference rate (seconds x GFLOP/s measured next to them)
        out["ar_over_commit_wall"] = res["autoregressive"]["ar_peak_gflop"] / res["generate"]["commit_decode_peak_gflop"]
        out["ar_extrapolated"] = res["autoregressive"]["extrapolated"]
    if "token_cache" in res:
        out["token_cache_speedup"] = res["token_cache"]["token_cache_speedup"]
    if "video_shards" in res:
        v = res["video_shards"]
        out["video_shards"] = {store: {"bytes_per_clip": v[store]["bytes_per_clip"],
                                       "clips_per_cpu_second": v[store]["clips_per_cpu_second"]}
                               for store in ("frames", "video")}
    if "activation_checkpointing" in res:
        a = res["activation_checkpointing"]
        out["activation_checkpointing"] = {
            k: {"saved_gb": None if a[k]["memory"] is None else a[k]["memory"]["saved_gb"],
                "saved_frac": None if a[k]["memory"] is None else a[k]["memory"]["saved_frac"],
                "time_overhead_frac": a[k]["time"]["overhead_frac"]}
            for k in ("transformer", "tokenizer")}
    out["peak_rss_gb"] = {k: r["peak_rss_gb"] for k, r in res.items() if "peak_rss_gb" in r and not k.startswith("matmul")}
    return out


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()  # does not initialise CUDA


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def table(summary: dict[str, Any], res: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def add(label: str, key: str, value: str, extra: str = "") -> None:
        target = TARGETS.get(key)
        verdict = ""
        if target is not None and _get(summary, key) is not None:
            op, thr = target
            ok = _get(summary, key) >= thr if op == ">=" else (_get(summary, key) <= thr if op == "<=" else
                                                                 _get(summary, key) < thr)
            verdict = f"{op} {thr:g}  {'met' if ok else 'MISSED'}"
        rows.append((label, value, verdict, extra))

    s, r = summary, res
    if "matmul_gflops" in s:
        add("fp32 matmul (reference)", "matmul_gflops", f"{s['matmul_gflops']:.1f} GFLOP/s",
            "runs: " + ", ".join(f"{x['matmul_gflops']:.1f}" for k, x in r.items() if k.startswith("matmul")))
    if "transformer_forward_frac" in s:
        tf = r["transformer_forward"]
        add("transformer forward (min of b1, b4)", "transformer_forward_frac", f"{s['transformer_forward_frac']:.1%}",
            f"b1 {tf['batch1']['fraction']:.1%} ({tf['batch1']['seconds']:.2f} s), "
            f"b4 {tf['batch4']['fraction']:.1%} ({tf['batch4']['seconds']:.2f} s); "
            f"{tf['batch1']['flops'] / 1e9:.1f} GFLOP/clip")
    if "decode_overhead_frac" in s:
        g = r["generate"]
        add("COMMIT generate: decode overhead", "decode_overhead_frac", f"{s['decode_overhead_frac']:.2%}",
            f"wall {g['wall_seconds']:.2f} s, commit_decode {g['commit_decode_seconds']:.2f} s")
        add("COMMIT generate: tokenizer share", "tokenizer_frac", f"{s['tokenizer_frac']:.1%}")
        add("COMMIT generate: peak RSS", "generate_peak_rss_gb", f"{s['generate_peak_rss_gb']:.2f} GB")
    if "ar_over_commit_wall" in s:
        a = r["autoregressive"]
        how = (f"extrapolated from {a['timed_steps']} of 1024 steps" if a["extrapolated"] else "all 1024 steps timed")
        add("AR (KV cache) / COMMIT wall", "ar_over_commit_wall", f"{s['ar_over_commit_wall']:.2f}x",
            f"AR {a['ar_seconds']:.2f} s ({a['ms_per_step']:.1f} ms/step, {how})")
    if "vq_frac" in s:
        v = r["vq"]
        add("3D-VQ encode + decode", "vq_frac", f"{s['vq_frac']:.1%}",
            f"encode {v['encode_frac']:.1%} ({v['encode_flops'] / 1e9:.0f} GFLOP), "
            f"decode {v['decode_frac']:.1%} ({v['decode_flops'] / 1e9:.0f} GFLOP)")
    for k in ("tokenizer", "transformer"):
        if k in s.get("train_step_frac", {}):
            t = r[f"train_{k}"]
            extra = f"{t['seconds']:.2f} s/step"
            if "executed_frac" in t:
                extra += f"; executed FLOPs (FlopCounterMode) {t['executed_frac']:.1%}"
            add(f"training step: {k} (3x fwd)", f"train_step_frac.{k}", f"{s['train_step_frac'][k]:.1%}", extra)
    if "loader_over_train" in s:
        add("reader / training consumption", "loader_over_train", f"{s['loader_over_train']:.1f}x",
            f"reader {r['loader']['clips_per_second']:.1f} clips/s, train step "
            f"{r['train_transformer']['clips_per_second']:.2f} clips/s")
    if "token_cache_speedup" in s:
        add("token cache speed-up", "token_cache_speedup", f"{s['token_cache_speedup']:.2f}x")
    for store, v in s.get("video_shards", {}).items():
        add(f"{store} store: bytes per clip", f"video_shards.{store}.bytes_per_clip", f"{v['bytes_per_clip']:.0f} B",
            f"reader {v['clips_per_cpu_second']:.0f} clips per CPU second (one worker)")
    for k, v in s.get("activation_checkpointing", {}).items():
        m, t = r["activation_checkpointing"][k]["memory"], r["activation_checkpointing"][k]["time"]
        saved = "n/a" if m is None else f"{v['saved_gb'] * 1e3:.0f} MB ({v['saved_frac']:.0%})"
        extra = "" if m is None else f"step peak above base {m['off_gb'] * 1e3:.0f} -> {m['on_gb'] * 1e3:.0f} MB; "
        add(f"activation checkpointing: {k} saves", f"activation_checkpointing.{k}.saved_gb", saved,
            extra + f"time {v['time_overhead_frac']:+.0%} ({t['off_seconds']:.2f} -> {t['on_seconds']:.2f} s/step)")
    for name, gb in s.get("peak_rss_gb", {}).items():
        add(f"peak RSS: {name}", f"peak_rss_gb.{name}", f"{gb:.2f} GB")
    widths = [max(len(row[i]) for row in rows + [("measurement", "value", "target", "detail")]) for i in range(3)]
    lines = [f"{'measurement':<{widths[0]}}  {'value':>{widths[1]}}  {'target':<{widths[2]}}  detail"]
    lines.append("-" * (sum(widths) + 12))
    lines += [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny presets at 32 px, one thread (under a minute)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer forward")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: all cores; 1 with --quick)")
    parser.add_argument("--fork", action=argparse.BooleanOptionalAction, default=None,
                        help="start children from a forkserver with torch imported (default with --quick); "
                             "their peak RSS then leaves out library pages they never touch")
    parser.add_argument("--only", nargs="+", choices=[b for b, _ in BENCHMARKS] + ["token_cache"],
                        help="run only these measurements (the matmul reference always runs)")
    args = parser.parse_args(argv)
    names = [b for b, _ in BENCHMARKS if args.only is None or b in args.only or b == "matmul"]
    if (ROOT / "benchmarks" / "token_cache.py").exists() and (args.only is None or "token_cache" in args.only):
        names.append("token_cache")
    info = machine()
    print(f"magvit benchmarks: {'quick (tiny presets)' if args.quick else 'B presets'} on {info['cpu']}, "
          f"{info['cores']} cores, torch {info['torch']}, load average {info['loadavg_start']}", file=sys.stderr)
    res: dict[str, dict[str, Any]] = {}
    errors = []
    t0 = time.perf_counter()
    ctx = None
    if args.fork if args.fork is not None else args.quick:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "benchmarks.common"] + sorted({_module(n) for n in names}))
    with tempfile.TemporaryDirectory(prefix="magvit-bench-") as tmp:
        for name in names + ["matmul"]:  # the reference once more at the end
            key = "matmul_end" if name == "matmul" and "matmul" in res else name
            try:
                res[key] = run_child(ctx, name, args, Path(tmp), "" if key == name else "_end")
            except Exception as e:  # report every failure, keep measuring the rest
                errors.append(str(e))
                print(str(e), file=sys.stderr)
    summary = combine(res, args)
    threads = {r.get("threads") for r in res.values()}
    summary["machine"] = info | {"threads": threads.pop() if len(threads) == 1 else sorted(threads),
                                 "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None}
    summary["total_seconds"] = time.perf_counter() - t0
    summary["details"] = res
    if errors:
        summary["errors"] = errors
    print(table(summary, res))
    print(f"total {summary['total_seconds']:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
