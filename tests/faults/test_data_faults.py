"""Fault suite, data: paths that are URLs, shard members that are pickles, two writers of one token folder,
a tokenize run killed or failing half-way, a collapsed tokenizer, truncated videos and shards.

Each test names the fault it covers and asserts the exact outcome: exit code, one ``magvit: error:`` line,
nothing executed (a marker file a payload would create does not exist), files byte-identical, every lost
sample counted once and named.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import webdataset as wds

from magvit.cli import main
from magvit.data import make_eval_loader, make_loader, write_synthetic
from magvit.data.shard_format import DatasetMeta, ShardInfo, read_meta, write_meta
from magvit.data.synthetic import synthetic_clips
from magvit.errors import MagvitError
from magvit.train.token_cache import make_token_loader, read_token_meta
from tests.faults.conftest import CONFIGS, FRAMES, SIZE, fit_args, transformer_args
from tests.helpers.cli import one_line_error

LOCAL_ONLY = ("is not a local file or folder", "local paths only")


def _pipe(tmp_path: Path) -> tuple[str, Path]:
    """A ``pipe:`` url whose command would create a marker file, and the marker."""
    marker = tmp_path / "MARKER"
    return f"pipe:touch {marker}", marker


def _tokenize_args(tokenizer: Path | str, src: Path | str, out: Path | str, *extra: str,
                   tasks: str = "fp,cg") -> list[str]:
    return ["data", "tokenize", "--tokenizer_checkpoint", str(tokenizer), "--src", str(src), "--out", str(out),
            "--tasks", tasks, "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def clips4(tmp_path_factory) -> Path:
    """4 clips in one shard: what the tokenize cases read (fast)."""
    root = tmp_path_factory.mktemp("four-clips")
    write_synthetic(root, num_clips=4, num_val_clips=1, frames=FRAMES, size=SIZE)
    return root / "train"


@pytest.fixture(scope="module")
def opc_tokens(clips4, tokenizer_run, tmp_path_factory) -> Path:
    """A complete token folder of :func:`clips4` (task opc)."""
    out = tmp_path_factory.mktemp("opc-tokens") / "tokens"
    assert main(_tokenize_args(tokenizer_run / "last.pt", clips4, out, tasks="opc")) == 0
    return out


# -- a data path can run a shell command ----------------------------------------------------------------


def test_fit_refuses_a_pipe_url_given_as_data_train(tmp_path, capsys):
    """``--data.train "pipe:..."`` would run the command through webdataset: refused, nothing runs."""
    url, marker = _pipe(tmp_path)
    assert main(fit_args("tiny/tokenizer.yaml", url, tmp_path / "run")) == 2
    one_line_error(capsys, "data path 'pipe:touch", *LOCAL_ONLY)
    assert not marker.exists()


@pytest.mark.parametrize("train", ["pipe:touch {marker}", "{shard}::pipe:touch {marker}",
                                   "{train}/shard-{{000000..000000}}.tar::pipe:touch {marker}"],
                         ids=["pipe", "joined-list", "brace-pattern"])
def test_fit_refuses_a_pipe_url_in_a_shared_yaml_config(synthetic, tmp_path, capsys, train):
    """A YAML config whose ``data.train`` is (or hides, in a ``::`` list or brace pattern) a pipe: url."""
    marker = tmp_path / "MARKER"
    value = train.format(marker=marker, shard=synthetic / "train" / "shard-000000.tar", train=synthetic / "train")
    config = tmp_path / "shared.yaml"
    config.write_text(json.dumps({"data": {"train": value}}))  # JSON is YAML
    argv = ["fit", "--config", str(CONFIGS / "tiny/tokenizer.yaml"), "--config", str(config),
            "--data.batch_size", "2", "--trainer.max_steps", "1", "--trainer.out_dir", str(tmp_path / "run"),
            "--trainer.progress", "false", "--trainer.tensorboard", "false"]
    assert main(argv) == 2
    one_line_error(capsys, "pipe:touch", *LOCAL_ONLY)
    assert not marker.exists()


def test_transformer_refuses_pipe_token_shards(synthetic, tokenizer_run, tmp_path, capsys):
    """``token_shards`` of a transformer config is a data path too."""
    url, marker = _pipe(tmp_path)
    argv = transformer_args(tokenizer_run / "last.pt", synthetic / "train", tmp_path / "run",
                            "--model.init_args.token_shards", url)
    assert main(argv) == 2
    one_line_error(capsys, "'pipe:touch", *LOCAL_ONLY)
    assert not marker.exists()


def test_evaluate_refuses_a_pipe_url(transformer_run, tmp_path, capsys):
    url, marker = _pipe(tmp_path)
    assert main(["evaluate", "--checkpoint", str(transformer_run / "last.pt"), "--data", url, "--no_fvd"]) == 2
    one_line_error(capsys, "data path 'pipe:touch", *LOCAL_ONLY)
    assert not marker.exists()


@pytest.mark.parametrize("command", ["tokenize-src", "tokenize-out", "inspect", "shards-src", "shards-out"])
def test_data_commands_refuse_pipe_urls(synthetic, tmp_path, capsys, command):
    """Every ``magvit data`` path, read or written, must be local."""
    url, marker = _pipe(tmp_path)
    ckpt = tmp_path / "tokenizer.pt"  # never read: the paths are checked first
    argv = {
        "tokenize-src": _tokenize_args(ckpt, url, tmp_path / "tokens"),
        "tokenize-out": _tokenize_args(ckpt, synthetic / "train", url),
        "inspect": ["data", "inspect", url],
        "shards-src": ["data", "shards", "--src", url, "--out", str(tmp_path / "shards")],
        "shards-out": ["data", "shards", "--src", str(tmp_path), "--out", url],
    }[command]
    assert main(argv) == 2
    one_line_error(capsys, "'pipe:touch", *LOCAL_ONLY)
    assert not marker.exists()
    assert not (tmp_path / "tokens").exists() and not (tmp_path / "shards").exists()


def test_loaders_refuse_urls_in_lists_and_patterns(synthetic, tmp_path):
    """The Python API: a url anywhere in a shard list, a ``::`` list or a brace pattern is refused before
    any shard is opened; so are network schemes and a token folder url."""
    url, marker = _pipe(tmp_path)
    shard = str(synthetic / "train" / "shard-000000.tar")
    for source in ([shard, url], f"{shard}::{url}", url, "https://example.com/shard-{000..009}.tar",
                   "s3://bucket/shard.tar", "file:" + shard):
        with pytest.raises(MagvitError, match="local paths only"):
            make_loader(source, 2)
        with pytest.raises(MagvitError, match="local paths only"):
            make_eval_loader(source, 2)
    with pytest.raises(MagvitError, match="local paths only"):
        make_token_loader(url, 2)
    assert not marker.exists()


# -- a shard member can never be unpickled ----------------------------------------------------------------


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def _evil_members(marker: Path, clip: np.ndarray) -> list[dict[str, object]]:
    """Samples that would run code if any member were unpickled (webdataset's default decoders unpickle
    ``.pyd`` and ``.pickle``; ``np.load(allow_pickle=True)`` unpickles an object array)."""
    payload = pickle.dumps(_Payload(marker))
    objects = np.array([_Payload(marker)], dtype=object)
    return [
        {"__key__": "evil-pyd", "pyd": payload, "cls": b"0"},  # no clip: skipped
        {"__key__": "evil-pickle", "npy": _npy(clip), "pickle": payload, "cls": b"1"},  # the clip reads fine
        {"__key__": "evil-object-npy", "npy": _npy(objects, allow_pickle=True), "cls": b"2"},  # skipped
    ]


def test_pickled_shard_members_never_run(tmp_path, capsys):
    """``.pyd`` / ``.pickle`` members and an object-dtype ``.npy`` clip: nothing executes; the samples without
    a readable clip are skipped and named (``data inspect`` and the loader), the others read normally."""
    marker = tmp_path / "MARKER"
    clips, _ = synthetic_clips(2, frames=FRAMES, size=SIZE, num_classes=8)
    folder = tmp_path / "evil"
    folder.mkdir()
    with wds.TarWriter(str(folder / "shard-000000.tar"), encoder=False) as tar:
        tar.write({"__key__": "good", "npy": _npy(clips[0]), "cls": b"3"})
        for sample in _evil_members(marker, clips[1]):
            tar.write(sample)
    write_meta(folder, DatasetMeta(class_names=[f"c{i}" for i in range(8)], clip_shape=(FRAMES, SIZE, SIZE, 3),
                                   shards=[ShardInfo("shard-000000.tar", 4)],
                                   clips_per_class={"c0": 1, "c1": 1, "c2": 1, "c3": 1}))
    assert main(["data", "inspect", str(folder), "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "verified: read 2 clips, 2 corrupt" in out
    assert "#evil-pyd: missing member .npy" in out and "#evil-object-npy: ValueError: clip must be uint8" in out
    assert not marker.exists()

    with pytest.warns(UserWarning, match="data: skipped"):
        loader = make_eval_loader(folder, 4)
        keys = [k for batch in loader for k in batch.keys]
    assert keys == ["good", "evil-pickle"]
    assert sorted(s.key for s in loader.report.skipped) == ["evil-object-npy", "evil-pyd"]
    assert not marker.exists()


def test_pickled_token_shard_members_never_run(opc_tokens, tmp_path):
    """The token-shard reader: an object-dtype ``tok.npy`` and a ``.pyd`` member are never unpickled."""
    marker = tmp_path / "MARKER"
    out = tmp_path / "tokens"
    shutil.copytree(opc_tokens, out)
    shard = out / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    payload = pickle.dumps(_Payload(marker))
    objects = _npy(np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    with wds.TarWriter(str(shard), encoder=False) as tar:
        tar.write({"__key__": "evil-tok", "tok.npy": objects, "cls": b"0"})
        tar.write({"__key__": "evil-pyd", "pyd": payload, "cls": b"0"})
    with tarfile.open(shard, "a") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.warns(UserWarning, match="data: skipped"):
        loader = make_token_loader(out, 4, shuffle=False)
        keys = [k for batch in loader for k in batch.keys]
    assert len(keys) == 4 and not any(k.startswith("evil") for k in keys)
    assert sorted(s.key for s in loader.report.skipped) == ["evil-pyd", "evil-tok"]
    assert not marker.exists()


# -- two writers of one token folder; a tokenize run killed half-way ----------------------------------------

#: Runs ``magvit`` with the encoder stalling inside the second shard (after the pre-run check's batch, the
#: first shard's two batches of one clip and the second shard's first): the run holds its lock and a
#: half-written temporary shard when killed.
STALLING_TOKENIZE = """
import pathlib, sys, time
from magvit.train import tokenize
real = tokenize._ShardTokenizer.samples
calls = []
def stalls(self, batch, grid):
    calls.append(len(batch.keys))
    if len(calls) == 5:
        pathlib.Path(sys.argv[1]).write_text("stalled")
        time.sleep(600)
    return real(self, batch, grid)
tokenize._ShardTokenizer.samples = stalls
from magvit.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def three_shards(tmp_path_factory) -> Path:
    """6 clips in three shards of 2 (a run can be killed between and inside shards)."""
    root = tmp_path_factory.mktemp("three-shards")
    write_synthetic(root, num_clips=6, num_val_clips=1, frames=FRAMES, size=SIZE, shard_size=2)
    return root / "train"


def test_tokenize_second_writer_refused_and_sigkill_resumes_byte_identical(three_shards, tokenizer_run, tmp_path,
                                                                          capsys):
    """Two ``data tokenize`` into one ``--out``: the second is refused at once, naming the first's pid. The
    first, killed with SIGKILL inside its second shard, is resumed by the same command to shards and a
    meta.json byte-identical to an uninterrupted run, with no temporary file left behind. (The in-process
    interruption case is tests/train/test_tokenize.py::test_interrupted_run_resumes_without_duplicates.)"""
    out, whole, stalled = tmp_path / "tokens", tmp_path / "whole", tmp_path / "stalled"
    args = _tokenize_args(tokenizer_run / "last.pt", three_shards, out, "--batch_size", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", STALLING_TOKENIZE, str(stalled), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    try:
        deadline = time.time() + 120
        while not stalled.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.time() < deadline, "the tokenize run never reached its second shard"
            time.sleep(0.05)
        assert main(args) == 2  # the second writer
        one_line_error(capsys, f"token folder {out}", f"pid {proc.pid}", "in use")
        assert (out / "shard-000000.tar").exists() and not (out / "shard-000001.tar").exists()
        assert list(out.glob(".shard-000001.tar.partial-*")), "the killed writer should hold a temporary shard"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not read_token_meta(out, require_complete=False).complete

    torch.set_num_threads(1)  # as the killed run (OMP_NUM_THREADS=1): the same kernels, the same rounding
    try:
        assert main(args) == 0
        assert main(_tokenize_args(tokenizer_run / "last.pt", three_shards, whole, "--batch_size", "1")) == 0
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    names = ["meta.json", "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == names
    assert not list(out.glob("*partial*")), "a temporary shard of the killed writer was left behind"
    for name in names:
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name


# -- a failed tokenize leaves nothing that refuses the corrected command -------------------------------------


def test_a_failed_tokenize_leaves_no_meta_json(clips4, tokenizer_run, tmp_path, capsys):
    """Options that fail only once the encoder runs (fp conditioned on 99 of 16 frames) are found before
    anything is written; the corrected command then runs in the same folder."""
    out = tmp_path / "tokens"
    bad = _tokenize_args(tokenizer_run / "last.pt", clips4, out, "--task_options",
                         '{"fp": {"cond_frames": 99}}')
    assert main(bad) == 2
    one_line_error(capsys, "task 'fp'", "too small")
    assert not (out / "meta.json").exists() and not list(out.glob("shard-*"))
    good = _tokenize_args(tokenizer_run / "last.pt", clips4, out, "--task_options",
                          '{"fp": {"cond_frames": 2}}')
    assert main(good) == 0, capsys.readouterr().err
    meta = read_token_meta(out)
    assert meta.complete and meta.num_clips == 4 and meta.tasks[0]["config"]["cond_frames"] == 2


def test_a_meta_json_without_finished_shards_is_a_fresh_start(clips4, opc_tokens, tokenizer_run, tmp_path,
                                                              capsys):
    """A folder holding a meta.json of another job (opc) but no finished shard (a run killed before its
    first shard) does not refuse a new command (fp, cg)."""
    out = tmp_path / "tokens"
    meta = json.loads((opc_tokens / "meta.json").read_text())
    out.mkdir()
    (out / "meta.json").write_text(json.dumps({**meta, "shards": [], "complete": False}))
    assert main(_tokenize_args(tokenizer_run / "last.pt", clips4, out)) == 0, capsys.readouterr().err
    assert read_token_meta(out).task_names == ("fp", "cg")


@pytest.mark.parametrize(("options", "fragments"), [
    ('{"fp": {"cond_framez": 2}}', ("task 'fp' has no option 'cond_framez'; its options:", "cond_frames")),
    ('{"fpx": {"cond_frames": 2}}', ("options given for tasks that are not in the task list: ['fpx']",)),
], ids=["unknown-key", "unknown-task"])
def test_unknown_task_options_are_one_line(clips4, tokenizer_run, tmp_path, capsys, options, fragments):
    """An unknown ``--task_options`` key (a traceback before) or task names the task, the bad key and the
    valid ones; nothing is written."""
    out = tmp_path / "tokens"
    assert main(_tokenize_args(tokenizer_run / "last.pt", clips4, out, "--task_options", options)) == 2
    one_line_error(capsys, *fragments)
    assert not out.exists()


# -- a collapsed tokenizer ------------------------------------------------------------------------------------


def test_a_collapsed_tokenizer_is_refused(clips4, tokenizer_run, tmp_path, capsys):
    """A tokenizer that maps every clip to one code (its codebook zeroed: every token is code 0) is refused
    before any shard is written, instead of a "complete" folder of zeros."""
    state = torch.load(tokenizer_run / "last.pt", weights_only=True)
    for part in ("ema", "models"):
        state[part]["generator"]["quantizer.codebook"].zero_()
    collapsed = tmp_path / "collapsed.pt"
    torch.save(state, collapsed)
    out = tmp_path / "tokens"
    assert main(_tokenize_args(collapsed, clips4, out)) == 2
    one_line_error(capsys, "maps every token of the first batch", "to code 0", "has collapsed", "magvit evaluate")
    assert not (out / "meta.json").exists() and not list(out.glob("shard-*"))


# -- truncated videos and shards ------------------------------------------------------------------------------


def _faststart_mp4(path: Path, frames: np.ndarray) -> None:
    """An H.264 mp4 with its index (and frame count) at the start: a cut file still decodes up to the cut."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def test_a_truncated_mp4_is_reported(tmp_path, capsys):
    """An mp4 cut in half whose header still promises 32 frames: ingested short, with a warning naming it,
    a line in the summary and an entry in meta.json."""
    src = tmp_path / "videos" / "walk"
    src.mkdir(parents=True)
    clips, _ = synthetic_clips(2, frames=32, size=SIZE, num_classes=2)
    _faststart_mp4(src / "whole.mp4", clips[0])
    _faststart_mp4(tmp_path / "cut.mp4", clips[1])
    with av.open(str(tmp_path / "cut.mp4")) as container:
        packets = [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
    pos, size = packets[12]  # cut after the 13th frame's packet: the 13 frames before decode cleanly
    (src / "cut.mp4").write_bytes((tmp_path / "cut.mp4").read_bytes()[: pos + size])
    argv = ["data", "shards", "--src", str(tmp_path / "videos"), "--out", str(tmp_path / "shards"), "--frames", "8",
            "--size", str(SIZE)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "magvit: warning: data: walk/cut.mp4: header says 32 frames, decoded 13 (truncated file?)" in err
    assert "1 videos decoded fewer frames than their header states" in out
    meta = read_meta(tmp_path / "shards")
    (short,) = meta.truncated
    assert (short.path, short.header_frames, short.decoded_frames) == ("walk/cut.mp4", 32, 13)
    assert "  walk/cut.mp4: header says 32 frames, decoded 13" in out
    assert meta.clips_per_class["walk"] == 4 + 1  # 32 // 8 clips of the whole file, 13 // 8 of the cut one
    assert not meta.skipped


def test_truncated_and_garbage_shards_count_each_loss_once(tmp_path, capsys):
    """A shard cut in the middle of its last sample loses that one clip (counted once, named by its key,
    not three times); a shard of garbage bytes is one skipped shard, named. (Corrupt samples inside a shard:
    tests/data/test_reader.py::test_corrupt_samples_and_shards_are_skipped_and_reported; corrupt video
    files in ``data shards``: tests/data/test_ingest.py::test_bad_files_are_skipped_and_reported.)"""
    folder = tmp_path / "data"
    write_synthetic(folder, num_clips=8, num_val_clips=1, frames=FRAMES, size=SIZE, shard_size=4)
    train = folder / "train"
    first = train / "shard-000000.tar"
    with tarfile.open(first) as tar:
        last = [m for m in tar.getmembers() if m.name.endswith(".npy")][-1]
    lost = last.name.split(".", 1)[0]
    first.write_bytes(first.read_bytes()[: last.offset_data + last.size // 2])
    (train / "shard-000001.tar").write_bytes(os.urandom(10_000))

    with pytest.warns(UserWarning, match="data: skipped"):
        loader = make_eval_loader(train, 4)
        assert sum(len(b) for b in loader) == 3
    skipped = loader.report.skipped
    assert [(Path(s.shard).name, s.key) for s in skipped] == [("shard-000000.tar", lost), ("shard-000001.tar", None)]
    assert skipped[0].reason == "the shard breaks off in this sample (ReadError: unexpected end of data)"

    assert main(["data", "inspect", str(train), "--grid", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "verified: read 3 clips, 2 corrupt; DOES NOT match meta.json" in out
    assert f"corrupt {first}#{lost}: the shard breaks off in this sample" in out


def test_tokenize_names_a_truncated_input_sample_once(clips4, tokenizer_run, tmp_path, capsys):
    """``data tokenize`` over a clip shard cut inside its last sample: 3 of 4 clips written, 1 skipped."""
    src = tmp_path / "src"
    shutil.copytree(clips4, src)
    shard = src / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        last = [m for m in tar.getmembers() if m.name.endswith(".npy")][-1]
    shard.write_bytes(shard.read_bytes()[: last.offset_data + last.size // 2])
    lost = last.name.split(".", 1)[0]
    assert main(_tokenize_args(tokenizer_run / "last.pt", src, tmp_path / "tokens")) == 0
    out, err = capsys.readouterr()
    assert "wrote 1 shards (3 clips), kept 0 finished shards, skipped 1 corrupt samples" in out
    assert f"{shard} {lost}: the shard breaks off in this sample" in err
    assert "magvit: warning: tokenize: skipped 1 corrupt samples" in err
    assert read_token_meta(tmp_path / "tokens").num_clips == 3
