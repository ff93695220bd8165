"""MagvitPipeline: condition -> tokens -> the decoding loop with a sampler -> pixels, for any registered task.

One tokenizer, one multi-task transformer, the configured tasks (paper Sec. 3).
``save``/``from_checkpoint`` use the trainer's checkpoint format (:mod:`magvit.checkpoint`), so a
transformer-stage checkpoint written by ``magvit fit`` loads here directly, and a saved pipeline is a
self-contained file: tokenizer and transformer configs and weights, and the task list with its arguments.

``save_pretrained``/``from_pretrained`` follow the diffusers layout: a folder with ``config.json`` (plain
JSON: the same configs and task list) and ``model.safetensors`` (the weights, ``tokenizer.*`` and
``transformer.*``). ``from_pretrained`` also takes the name of a pipeline registered by magvit or a plugin
(``"demo"``: the shipped tiny model). Both file kinds are read as data, never as code.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from magvit import checkpoint as ckpt
from magvit import registry
from magvit.config import build_part, part_spec, read_spec
from magvit.decoding import decode
from magvit.errors import InputError, MagvitError
from magvit.limits import MAX_VIDEO_PIXELS, check_int
from magvit.masking import TOKEN_RULES, task_token_mask, warn_condition_coverage
from magvit.precision import Precision
from magvit.protocols import Condition, Sampler, Task, Tokenizer
from magvit.safe_load import load_safetensors
from magvit.samplers.base import transformer_options
from magvit.tasks import build_task, build_tasks, transformer_prompts
from magvit.tasks.base import check_video
from magvit.transformer import MaskedTransformer

#: ``config.json`` of a ``save_pretrained`` folder: its format key and the version this code reads and writes.
PRETRAINED_FORMAT, PRETRAINED_VERSION = "magvit-pipeline", 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
#: prefixes of the tokenizer's and the transformer's weights in ``model.safetensors``
WEIGHT_PREFIXES = ("tokenizer.", "transformer.")


def tasks_from_specs(specs: Sequence[dict[str, Any]]) -> list[Task]:
    """The tasks of a saved config (:func:`magvit.config.part_spec` of each); an unknown task or option is
    one :class:`InputError`."""
    return [build_part("task", s) for s in specs]


def sampler_spec(sampler: str | Sampler) -> dict[str, Any]:
    """``{"name": ..., "config": {...}}`` of a sampler (a registered name is its default config); a sampler
    whose options a file cannot hold is one :class:`MagvitError` (:func:`magvit.config.part_spec`)."""
    return part_spec(build_part("sampler", sampler) if isinstance(sampler, str) else sampler)


def build_sampler(spec: str | Mapping[str, Any], **options: Any) -> Sampler:
    """The sampler of a spec ``{"name", "config"}`` (or a registry name), ``options`` overriding its config;
    an unknown sampler or option is one :class:`InputError`."""
    name, config = read_spec("sampler", spec)
    return build_part("sampler", {"name": name, "config": config | options})


def build_tokenizer(spec: dict[str, Any], state: dict[str, Tensor] | None = None) -> Tokenizer:
    """Rebuild a tokenizer from its spec (registry name and config), optionally loading weights.

    The config may come from a file someone else wrote: an unknown tokenizer or option, a value of the
    wrong type or an absurd size is one :class:`MagvitError`, raised before any weight is allocated.
    """
    tokenizer = build_part("tokenizer", spec)
    if state is not None:
        ckpt.load_module_state(tokenizer, state, "tokenizer weights")
    return tokenizer.eval().requires_grad_(False)


def load_tokenizer(path: str | os.PathLike, map_location: str = "cpu") -> tuple[Tokenizer, dict[str, Any]]:
    """The frozen tokenizer of a tokenizer-stage checkpoint: its EMA weights (as the authors'
    ``load_vq_model_params`` in ``videogvt/train_lib/maskgvt_train_lib.py``), and its spec."""
    tokenizer, spec, _ = load_tokenizer_weights(path, map_location)
    return tokenizer, spec


def load_tokenizer_weights(path: str | os.PathLike, map_location: str = "cpu", use_ema: bool = True
                           ) -> tuple[Tokenizer, dict[str, Any], str]:
    """:func:`load_tokenizer` with the choice of weights: the generator's EMA (``use_ema``, the tokenizer's
    default) or its trained weights; returns the tokenizer, its spec and the section used (``"ema"`` or
    ``"models"``; a checkpoint without an EMA gives ``"models"``)."""
    state = ckpt.load(path, map_location)
    if state.get("stage") != "tokenizer":
        raise MagvitError(f"{path} is a {state.get('stage')!r} checkpoint; expected one written by the tokenizer stage")
    spec = _tokenizer_spec(_part(state, "model_config", dict, path), path)
    section = "ema" if use_ema and (state.get("ema") or {}).get("generator") else "models"
    return build_tokenizer(spec, _weights(state, section, "generator", path)), spec, section


def _part(obj: dict[str, Any], key: str, kind: type, path: str | os.PathLike, where: str = "") -> Any:
    """``obj[key]`` of a checkpoint read from ``path``, checked to be a ``kind``: a forged or damaged file
    is one error line naming the entry, never a ``KeyError`` deep in the loading code."""
    value = obj.get(key)
    if not isinstance(value, kind):
        got = type(value).__name__ if key in obj else "nothing"
        raise MagvitError(f"checkpoint {str(path)!r}: its entry {where}{key} should be a {kind.__name__}, got {got}; "
                          "the file was not written by magvit or was edited")
    return value


def _weights(state: dict[str, Any], section: str, name: str, path: str | os.PathLike) -> dict[str, Tensor]:
    """The state dict ``state[section][name]`` of a checkpoint, checked to map names to tensors."""
    weights = _part(_part(state, section, dict, path), name, dict, path, f"{section}.")
    bad = next((k for k, v in weights.items() if not isinstance(v, Tensor)), None)
    if bad is not None:
        raise MagvitError(f"checkpoint {str(path)!r}: {section}.{name}[{bad!r}] should be a tensor, got "
                          f"{type(weights[bad]).__name__}; the file was not written by magvit or was edited")
    return weights


def _tokenizer_spec(model_config: dict[str, Any], path: str | os.PathLike, where: str = "model_config."
                    ) -> dict[str, Any]:
    spec = _part(model_config, "tokenizer", dict, path, where)
    _part(spec, "name", str, path, f"{where}tokenizer.")
    _part(spec, "config", dict, path, f"{where}tokenizer.")
    return spec


def _pipeline_config(state: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The ``model_config`` of a transformer-stage checkpoint, its structure checked (the values are checked
    by the constructors, before anything is allocated; the weights by :func:`_weights`)."""
    return _check_pipeline_config(_part(state, "model_config", dict, path), path, "model_config.")


def _check_pipeline_config(cfg: dict[str, Any], path: str | os.PathLike, where: str) -> dict[str, Any]:
    """``cfg`` (a checkpoint's ``model_config`` or a ``config.json``), its structure checked."""
    _tokenizer_spec(cfg, path, where)
    _part(cfg, "transformer", dict, path, where)
    for i, spec in enumerate(_part(cfg, "tasks", list, path, where)):
        _part({f"tasks[{i}]": spec}, f"tasks[{i}]", dict, path, where)
        _part(spec, "name", str, path, f"{where}tasks[{i}].")
        for key in ("config", "args"):  # read_spec takes "args" as "config"
            if key in spec:
                _part(spec, key, dict, path, f"{where}tasks[{i}].")
    if "sampler" in cfg:
        sampler = _part(cfg, "sampler", dict, path, where)
        _part(sampler, "name", str, path, f"{where}sampler.")
        _part(sampler, "config", dict, path, f"{where}sampler.")
    return cfg


def label_tensor(label: Any, num_classes: int) -> Tensor:
    """Long ``[N]`` class indices of ``label``: an int, a sequence of ints, or an integer numpy array or tensor.

    A string, a float, a bool or a float tensor is an :class:`InputError` rather than being rounded or cast.
    """
    expected = f"label must be an int class index in [0, {num_classes}) (or a sequence or integer tensor of them)"
    if isinstance(label, (Tensor, np.ndarray)):
        labels = torch.as_tensor(label)
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise InputError(f"{expected}, got a {labels.dtype} tensor")
    elif _is_int(label):
        labels = torch.tensor([int(label)])
    elif isinstance(label, Sequence) and not isinstance(label, (str, bytes)) and all(_is_int(v) for v in label):
        labels = torch.tensor([int(v) for v in label], dtype=torch.long)
    else:
        raise InputError(f"{expected}, got {label!r} ({type(label).__name__})")
    labels = labels.reshape(-1).long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"label out of range: got {labels.tolist()}, expected int class indices in [0, {num_classes})")
    return labels


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


class MagvitPipeline:
    """Generate videos for any configured task.

    Args:
        tokenizer: a :class:`~magvit.protocols.Tokenizer` (frozen).
        transformer: the multi-task :class:`~magvit.transformer.MaskedTransformer`.
        tasks: the configured tasks (their prompts must be in the transformer's vocabulary).
        frames, resolution: clip size for tasks without an input video (class-conditional generation).
        token_rule: condition-token rule, ``"supervoxel"`` (paper) or ``"analytic"`` (authors' code).
        tokenizer_name: registry name of the tokenizer, for :meth:`save`.
        sampler: the model's own decoding method, the one it was trained for: a registered sampler name, a
            ``{"name", "config"}`` spec or a :class:`~magvit.protocols.Sampler` (default ``"commit"``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        transformer: MaskedTransformer,
        tasks: Sequence[Task],
        *,
        frames: int = 16,
        resolution: int = 64,
        token_rule: str = "supervoxel",
        tokenizer_name: str | None = None,
        sampler: str | dict[str, Any] | Sampler = "commit",
    ) -> None:
        check_int("MagvitPipeline", "frames", frames, 1)
        check_int("MagvitPipeline", "resolution", resolution, 1)
        if frames * resolution * resolution > MAX_VIDEO_PIXELS:
            raise InputError(f"MagvitPipeline: clips of {frames}x{resolution}x{resolution} exceed the "
                             f"{MAX_VIDEO_PIXELS} pixels this library generates; the config is corrupt or not "
                             "meant for it")
        if token_rule not in TOKEN_RULES:
            raise InputError(f"MagvitPipeline: token_rule must be one of {TOKEN_RULES}, got {token_rule!r}")
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.transformer = transformer.eval()
        self.tasks = {t.name: t for t in tasks}
        self.frames, self.resolution, self.token_rule = frames, resolution, token_rule
        self.tokenizer_name = tokenizer_name or getattr(tokenizer, "name", None)
        self.sampler = sampler_spec(sampler) if not isinstance(sampler, dict) else sampler_spec(build_sampler(sampler))
        grid = tokenizer.token_shape(frames, resolution, resolution)
        if math.prod(grid) != transformer.num_tokens:
            raise InputError(
                f"the tokenizer maps {frames}x{resolution}x{resolution} clips to {grid} = {math.prod(grid)} tokens, "
                f"but the transformer takes {transformer.num_tokens}"
            )
        missing = [t.name for t in tasks if t.prompt not in transformer.vocab.prompts and transformer.vocab.prompts]
        if missing:
            raise InputError(f"tasks {missing} have prompts the transformer was not built with {transformer.vocab.prompts}")
        warn_condition_coverage(tasks, tokenizer.downsample, (frames, resolution, resolution), token_rule)

    @classmethod
    def from_preset(
        cls,
        name: str,
        *,
        tasks: Sequence[str] | str | None = None,
        num_classes: int = 0,
        resolution: int = 64,
        frames: int = 16,
        tokenizer: str = "vq3d",
        prompt_sharing: str = "paper",
        method: str = "commit",
    ) -> MagvitPipeline:
        """A randomly initialised pipeline: the ``name`` preset of tokenizer and transformer (``"tiny"`` for tests).

        ``method``: a registered sampler name (``commit``, ``latent``/``maskgit``, ``prefix``, ``ar``): the
        transformer gets the architecture it needs and the pipeline decodes with it by default.
        """
        sampler = build_part("sampler", method)
        task_list = build_tasks("all" if tasks is None else tasks, prompt_sharing=prompt_sharing)
        tok = registry.get_tokenizer(tokenizer, preset=name, resolution=resolution)
        grid = tok.token_shape(frames, resolution, resolution)
        model = MaskedTransformer.from_preset(
            name, codebook_size=tok.codebook_size, num_classes=num_classes,
            prompts=transformer_prompts(task_list, prompt_sharing), num_tokens=math.prod(grid),
            **transformer_options(sampler),
        )
        return cls(tok, model, task_list, frames=frames, resolution=resolution, tokenizer_name=tokenizer,
                   sampler=sampler)

    # -- generation ---------------------------------------------------------------------------
    @property
    def single_task(self) -> bool:
        """True for a model without task prompts (``prompt_sharing="none"``, as the authors' single-task
        models): it takes the condition of every registered task, not only the configured ones (paper
        Table 4 scores B-FP and B-UNC on all eight tasks)."""
        return not self.transformer.vocab.prompts

    def task(self, task: str | Task) -> Task:
        """The configured task ``task``; a model without prompts (:attr:`single_task`) also takes any other
        registered task (built with its default options) or task object."""
        name = task if isinstance(task, str) else task.name
        if name in self.tasks:
            return self.tasks[name]
        if self.single_task:
            return task if not isinstance(task, str) else build_task(name)
        raise InputError(f"task {name!r} is not configured in this pipeline; configured: {', '.join(self.tasks)} "
                         "(a model built with prompt_sharing 'none' takes any task)")

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def _labels(self, task: Task, label: Tensor | int | Sequence[int] | None, batch: int | None) -> Tensor | None:
        if not task.uses_class:
            return None
        c = self.transformer.vocab.num_classes
        if c == 0:
            raise InputError(f"task {task.name!r} is class-conditional, but this model was trained without classes "
                             "(num_classes 0); use a task without a class label")
        if label is None:
            raise InputError(f"task {task.name!r} is class-conditional: pass label=<class index>")
        labels = label_tensor(label, c)
        if batch is not None and labels.numel() == 1:
            labels = labels.expand(batch)
        if batch is not None and labels.numel() != batch:
            raise InputError(f"got {labels.numel()} labels for a batch of {batch} videos")
        return labels.to(self.device)

    def condition_tokens(self, task: Task, video: Tensor, generator: torch.Generator | None = None
                         ) -> tuple[Condition, Tensor, Tensor]:
        """The task's condition of ``video``, its tokens ``[B, t, h, w]`` and the condition-token mask."""
        cond = task.condition(video, generator)
        tokens = self.tokenizer.encode(cond.video)
        mask = task_token_mask(task, cond.mask, self.tokenizer.downsample, self.token_rule)
        return cond, tokens, mask

    @torch.no_grad()
    def generate(
        self,
        task: str | Task,
        video: Tensor | None = None,
        label: Tensor | int | Sequence[int] | None = None,
        steps: int = 12,
        generator: torch.Generator | None = None,
        *,
        sampler: str | Sampler | None = None,
        guidance_scale: float = 0.0,
        guidance_task: str | None = None,
        paste_condition: bool = False,
        callback: Any = None,
        precision: str = "32",
        **sampler_options: Any,
    ) -> Tensor:
        """Generate ``[B, 3, T, H, W]`` videos in [0, 1] for ``task``.

        Args:
            task: task name or instance (one of the configured tasks).
            video: the clip to condition on, float ``[B, 3, T, H, W]`` in [0, 1]; not needed by ``cg``.
            label: class index (int or ``[B]``) for class-conditional tasks.
            steps: decoding steps (12, paper Algorithm 1).
            generator: seeds the decoding; the same seed gives the same video.
            sampler: the decoding method: None for the model's own (:attr:`sampler`, ``commit`` unless the
                model was trained with another), a registered name (``"commit"``, ``"maskgit"``, ...) or a
                :class:`~magvit.protocols.Sampler`.
            guidance_scale: classifier-free guidance ``s`` (0 = off; the model must have been trained with
                condition dropout).
            guidance_task: the configured task whose prompt the unconditional pass of guidance uses (the
                authors use ``cg``'s, ``videogvt/train_lib/maskgvt_train_lib.py``); None: the task's own.
            paste_condition: paste the interior-condition pixels back (off in the paper's evaluation).
            callback: called with the :class:`~magvit.samplers.DecodeState` after every decoding step.
            precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:class:`~magvit.precision.Precision`): the
                transformer's passes of the decoding loop run under autocast in that dtype (its weights stay
                float32; guidance and sampling take float32 logits). The tokenizer encodes the condition and
                decodes the tokens in float32: the condition tokens are then those the model was trained on, and
                its lean inference route writes into buffers of one dtype.
            sampler_options: the sampler's options (``choice_temperature``, ``temperature``, ``schedule``).
        """
        mode = Precision(precision)
        t = self.task(task)
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0)
        method = self.decoding_sampler(sampler, **sampler_options)
        vocab = self.transformer.vocab
        prompt = vocab.prompt_id(t.prompt) if vocab.prompts else None
        uncond_prompt = None
        if guidance_task is not None and vocab.prompts:
            uncond_prompt = vocab.prompt_id(self.task(guidance_task).prompt)
        if t.needs_video:
            if video is None:
                raise InputError(f"task {t.name!r} needs an input video [B, 3, T, H, W]")
            check_video(video, t.name)
            self._check_size(video)
            video = video.to(self.device, torch.float32)
            labels = self._labels(t, label, video.shape[0])
            cond, cond_tokens, cond_mask = self.condition_tokens(t, video, generator)
            batch = video.shape[0]
        else:
            labels = self._labels(t, label, None if video is None else video.shape[0])
            batch = labels.numel() if labels is not None else (video.shape[0] if video is not None else 1)
            cond = cond_tokens = cond_mask = None
        class_ids = vocab.class_ids(labels, batch, self.device)
        with mode.autocast(self.device):
            tokens = decode(
                self.transformer, method, prompt, class_ids, cond_tokens, cond_mask, generator=generator,
                batch_size=batch, steps=steps, guidance_scale=guidance_scale, uncond_prompt=uncond_prompt,
                callback=callback,
            )
        grid = self.tokenizer.token_shape(self.frames, self.resolution, self.resolution) if video is None \
            else self.tokenizer.token_shape(*video.shape[2:])
        out = self.tokenizer.decode(tokens.reshape(batch, *grid)).clamp(0, 1)
        if paste_condition and cond is not None:
            out = torch.where(cond.mask, video, out)
        return out

    def decoding_sampler(self, sampler: str | Sampler | None = None, **options: Any) -> Sampler:
        """The sampler :meth:`generate` decodes with: the model's own (``None``; ``options`` override its
        config), a registered name built with ``options``, or a sampler object (no ``options``)."""
        if sampler is None:
            return build_sampler(self.sampler, **options)
        if isinstance(sampler, str):
            return build_sampler({"name": sampler}, **options)
        if options:
            raise InputError(f"sampler options {sorted(options)} were given with a sampler object; set them on the "
                             "object or pass the sampler by name")
        return sampler

    def _check_size(self, video: Tensor) -> None:
        _, _, t, h, w = video.shape
        grid = self.tokenizer.token_shape(t, h, w)  # raises on sizes the tokenizer cannot take
        if math.prod(grid) != self.transformer.num_tokens:
            raise InputError(
                f"a {t}x{h}x{w} video gives {math.prod(grid)} tokens; this model takes "
                f"{self.frames}x{self.resolution}x{self.resolution} clips ({self.transformer.num_tokens} tokens)"
            )

    # -- persistence --------------------------------------------------------------------------
    def model_config(self) -> dict[str, Any]:
        if self.tokenizer_name is None:
            raise MagvitError("cannot save: the pipeline does not know the tokenizer's registry name (tokenizer_name=...)")
        return {
            "tokenizer": part_spec(self.tokenizer, self.tokenizer_name),
            "transformer": dict(self.transformer.config),
            "tasks": [part_spec(t) for t in self.tasks.values()],
            "frames": self.frames,
            "resolution": self.resolution,
            "token_rule": self.token_rule,
            "sampler": self.sampler,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a self-contained checkpoint (atomic; the transformer-stage format)."""
        return ckpt.save_atomic(
            {
                "stage": "transformer",
                "model_config": self.model_config(),
                "step": 0,
                "models": {"transformer": self.transformer.state_dict()},
                "ema": {},
                "extra": {"tokenizer": self.tokenizer.state_dict()},
            },
            path,
        )

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str = "cpu", use_ema: bool = True) -> MagvitPipeline:
        """Load a pipeline saved by :meth:`save` or a transformer-stage checkpoint of ``magvit fit``."""
        state = ckpt.load(path, map_location)
        if state.get("stage") != "transformer":
            raise MagvitError(
                f"{path} is a {state.get('stage')!r} checkpoint; generation needs a transformer-stage checkpoint "
                "(magvit fit with a transformer config) or a saved pipeline"
            )
        cfg = _pipeline_config(state, path)
        tokenizer = build_tokenizer(cfg["tokenizer"], _weights(state, "extra", "tokenizer", path))
        transformer = MaskedTransformer.from_config(cfg["transformer"])
        section = "ema" if use_ema and (state.get("ema") or {}).get("transformer") else "models"
        ckpt.load_module_state(transformer, _weights(state, section, "transformer", path), "transformer weights")
        return cls(
            tokenizer, transformer, tasks_from_specs(cfg["tasks"]), frames=cfg.get("frames"),
            resolution=cfg.get("resolution"),
            token_rule=cfg.get("token_rule", "supervoxel"), tokenizer_name=cfg["tokenizer"]["name"],
            sampler=cfg.get("sampler", "commit"),
        )

    def save_pretrained(self, directory: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the pipeline as a folder: ``config.json`` and ``model.safetensors`` (see the module docs).

        The folder is written beside ``directory`` under a temporary name and renamed into place, so a
        reader never sees half of it. An existing non-empty ``directory`` is an error unless ``overwrite``.
        """
        target = Path(directory)
        if target.exists() and not target.is_dir():
            raise MagvitError(f"cannot save the pipeline to {str(target)!r}: it is a file; expected a folder path")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise MagvitError(f"cannot save the pipeline to {str(target)!r}: the folder exists and is not empty; "
                              "pass overwrite=True to replace it, or choose a new folder")
        config = {"format": PRETRAINED_FORMAT, "version": PRETRAINED_VERSION, **self.model_config()}
        try:
            config_text = json.dumps(config, indent=2) + "\n"
        except TypeError as exc:
            raise MagvitError(f"cannot save the pipeline: its config is not plain JSON data ({exc})") from None
        from safetensors.torch import save_file

        weights = {}
        for prefix, module in zip(WEIGHT_PREFIXES, (self.tokenizer, self.transformer)):
            # copies: safetensors refuses tensors that share memory (tied weights, views)
            weights.update({prefix + k: v.detach().to("cpu", copy=True).contiguous()
                            for k, v in module.state_dict().items()})
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            (tmp / CONFIG_NAME).write_text(config_text, encoding="utf-8")
            save_file(weights, tmp / WEIGHTS_NAME, metadata={"format": PRETRAINED_FORMAT})
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                _fsync(tmp / name)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if old.exists() and not target.exists():  # the swap failed half-way: put the old folder back
                os.replace(old, target)
            shutil.rmtree(old, ignore_errors=True)
        return target

    @classmethod
    def from_pretrained(cls, name_or_dir: str | os.PathLike, map_location: str | torch.device = "cpu"
                        ) -> MagvitPipeline:
        """Load a folder written by :meth:`save_pretrained`, or a registered pipeline name (``"demo"``).

        A path to a single-file checkpoint is loaded by :meth:`from_checkpoint`. Nothing is downloaded.
        """
        path = Path(name_or_dir)
        if path.is_dir():
            return cls._from_folder(path, map_location)
        if path.is_file():
            return cls.from_checkpoint(path, map_location)
        names = registry.pipeline_names()
        if str(name_or_dir) not in names:
            raise MagvitError(
                f"{str(name_or_dir)!r} is neither a registered pipeline (registered: {', '.join(names) or 'none'}) "
                f"nor a folder; a pipeline folder holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                "(written by MagvitPipeline.save_pretrained)"
            )
        source = _registered_pipeline_path(str(name_or_dir))
        return cls._from_folder(source, map_location) if source.is_dir() else cls.from_checkpoint(source, map_location)

    @classmethod
    def _from_folder(cls, folder: Path, map_location: str | torch.device) -> MagvitPipeline:
        """Rebuild a pipeline from ``config.json`` (checked like a checkpoint's config) and its weights."""
        config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        for file in (config_path, weights_path):
            if not file.is_file():
                raise MagvitError(f"pipeline folder {str(folder)!r} has no {file.name}; expected a folder written by "
                                  f"MagvitPipeline.save_pretrained ({CONFIG_NAME} and {WEIGHTS_NAME})")
        cfg = _read_pretrained_config(config_path)
        tokenizer_state, transformer_state = _split_weights(
            load_safetensors(weights_path, "pipeline weights"), weights_path)
        tokenizer = build_tokenizer(cfg["tokenizer"], tokenizer_state)
        transformer = MaskedTransformer.from_config(cfg["transformer"])
        ckpt.load_module_state(transformer, transformer_state, "transformer weights")
        pipe = cls(
            tokenizer, transformer, tasks_from_specs(cfg["tasks"]), frames=cfg.get("frames"),
            resolution=cfg.get("resolution"), token_rule=cfg.get("token_rule", "supervoxel"),
            tokenizer_name=cfg["tokenizer"]["name"], sampler=cfg.get("sampler", "commit"),
        )
        return pipe.to(map_location)

    def compile(self, **options: Any) -> MagvitPipeline:
        """Run the transformer's forward pass through ``torch.compile`` from now on (``options`` are
        ``torch.compile``'s, e.g. ``mode="max-autotune"``); returns the pipeline.

        The transformer is compiled in place (``nn.Module.compile``): its class, parameter names and saved
        formats stay as they are. The first generation pays the compilation (tens of seconds on a CPU); later
        ones of the same sizes reuse it. Results agree with the uncompiled model within float32 rounding.
        The tokenizer is not compiled: its CPU inference route already runs hand-written kernels.
        """
        self.transformer.compile(**options)
        return self

    def to(self, device: str | torch.device) -> MagvitPipeline:
        """Move the tokenizer and the transformer to ``device``; returns the pipeline (as ``nn.Module.to``)."""
        self.tokenizer.to(device)
        self.transformer.to(device)
        return self

    __call__ = generate


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk before the folder is renamed into place (magvit.data.atomic does the same for
    single files; importing it would load the whole data package)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _read_pretrained_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a pipeline folder: parsed as JSON, its format, version and structure checked."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MagvitError(f"{str(path)!r} is not valid JSON ({' '.join(str(exc).split())}); expected the "
                          "config.json written by MagvitPipeline.save_pretrained") from None
    if not isinstance(cfg, dict) or cfg.get("format") != PRETRAINED_FORMAT:
        raise MagvitError(f"{str(path)!r} is not a magvit pipeline config (expected a JSON object with "
                          f'"format": "{PRETRAINED_FORMAT}")')
    if cfg.get("version") != PRETRAINED_VERSION:
        raise MagvitError(f"{str(path)!r} has version {cfg.get('version')!r}; this magvit reads version "
                          f"{PRETRAINED_VERSION} (a newer magvit wrote it? upgrade magvit)")
    return _check_pipeline_config(cfg, path, "")


def _split_weights(weights: dict[str, Tensor], path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The tokenizer's and the transformer's state dicts of ``model.safetensors``, by key prefix."""
    parts: tuple[dict[str, Tensor], dict[str, Tensor]] = ({}, {})
    for key, value in weights.items():
        index = next((i for i, p in enumerate(WEIGHT_PREFIXES) if key.startswith(p)), None)
        if index is None:
            raise MagvitError(f"pipeline weights {str(path)!r}: the key {key!r} starts with neither "
                              f"{' nor '.join(WEIGHT_PREFIXES)}; the file was not written by magvit or was edited")
        parts[index][key[len(WEIGHT_PREFIXES[index]):]] = value
    return parts


def _registered_pipeline_path(name: str) -> Path:
    """Where the registered pipeline ``name`` is stored; a plugin factory's failure is one error line."""
    entry = registry.default_registry().entry("pipeline", name)
    try:
        source = entry.factory()
        path = Path(source)
    except Exception as exc:  # noqa: BLE001 - a plugin's factory: report it, whatever it raised
        raise MagvitError(f"pipeline {name!r} of plugin {entry.plugin!r} ({entry.source}): its factory() did not give "
                          f"a path ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    if not path.exists():
        raise MagvitError(f"pipeline {name!r} of plugin {entry.plugin!r} ({entry.source}) is registered at "
                          f"{str(path)!r}, which does not exist; reinstall the package that provides it")
    return path
