"""The shard reader: batches, deterministic evaluation order, shuffling, node/worker splits, corrupt data."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from magvit.data.reader import make_eval_loader, make_loader
from magvit.data.synthetic import synthetic_clips, write_synthetic
from magvit.errors import InputError, MagvitError

N = 64  # train clips: 8 shards of 8


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic(out, num_clips=N, num_val_clips=8, frames=4, size=8, num_classes=4, shard_size=8)
    return out / "train"


def all_keys(loader) -> list[str]:
    return [key for batch in loader for key in batch.keys]


def test_batches_hold_the_stored_clips_as_floats(dataset: Path) -> None:
    clips, labels = synthetic_clips(N, frames=4, size=8, num_classes=4)
    batches = list(make_eval_loader(dataset, batch_size=10))
    assert [len(b) for b in batches] == [10] * 6 + [4]
    video = torch.cat([b.video for b in batches])
    assert video.dtype == torch.float32 and video.shape == (N, 3, 4, 8, 8) and video.is_contiguous()
    assert 0.0 <= video.min() and video.max() <= 1.0
    expected = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255
    torch.testing.assert_close(video, expected, rtol=0, atol=0)
    label = torch.cat([b.label for b in batches])
    assert label.dtype == torch.long and label.tolist() == labels.tolist()


def test_eval_order_is_fixed_and_complete(dataset: Path) -> None:
    loader = make_eval_loader(dataset, batch_size=7)
    first, second = all_keys(loader), all_keys(loader)
    assert first == second == sorted(first) and len(set(first)) == N
    assert loader.report.samples == 2 * N and loader.report.skipped == ()


def test_shuffle_depends_on_seed_and_epoch_and_covers_everything(dataset: Path) -> None:
    def order(seed: int, epoch: int) -> list[str]:
        return all_keys(make_loader(dataset, 8, seed=seed, start_epoch=epoch, shuffle_buffer=20))

    reference = order(0, 0)
    assert sorted(reference) == all_keys(make_eval_loader(dataset, 8))
    assert reference == order(0, 0)
    assert reference != order(0, 1) and reference != order(1, 0)
    loader = make_loader(dataset, 8, seed=0, shuffle_buffer=20)
    assert all_keys(loader) == reference and loader.epoch == 1  # iter() advances the epoch (resume: start_epoch)


def test_drop_last(dataset: Path) -> None:
    assert [len(b) for b in make_loader(dataset, 10, drop_last=True)] == [10] * 6


def test_node_and_worker_splits_are_disjoint_and_complete(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # webdataset's pytorch_worker_info reads these (torchrun sets RANK/WORLD_SIZE).
    parts = []
    for rank in range(2):
        for worker in range(2):
            monkeypatch.setenv("RANK", str(rank))
            monkeypatch.setenv("WORLD_SIZE", "2")
            monkeypatch.setenv("WORKER", str(worker))
            monkeypatch.setenv("NUM_WORKERS", "2")
            parts.append(all_keys(make_loader(dataset, 4, seed=3)))
    assert all(len(p) == N // 4 for p in parts)
    union = [k for p in parts for k in p]
    assert len(set(union)) == N == len(union)


def test_dataloader_workers_read_everything_once(dataset: Path) -> None:
    keys = all_keys(make_eval_loader(dataset, 8, num_workers=2))
    assert sorted(keys) == all_keys(make_eval_loader(dataset, 8))


def test_resampled_stream_is_reproducible_and_bounded(dataset: Path) -> None:
    def run(epoch: int) -> list[str]:
        return all_keys(make_loader(dataset, 4, resampled=True, batches_per_epoch=5, start_epoch=epoch))

    assert len(run(0)) == 20 and run(0) == run(0) and run(0) != run(1)
    with pytest.raises(InputError, match="batches_per_epoch"):
        make_loader(dataset, 4, resampled=True)


def _write_corrupt_shards(folder: Path) -> list[str]:
    clips, _ = synthetic_clips(4, frames=4, size=8)

    def npy(array: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, array)
        return buf.getvalue()

    mixed = folder / "mixed.tar"
    with wds.TarWriter(str(mixed), encoder=False) as tar:
        tar.write({"__key__": "good0", "npy": npy(clips[0]), "cls": b"1"})
        tar.write({"__key__": "garbage", "npy": b"\x93NUMPY garbage", "cls": b"1"})
        tar.write({"__key__": "nolabel", "npy": npy(clips[1])})
        tar.write({"__key__": "badshape", "npy": npy(clips[2][:2]), "cls": b"0"})
        tar.write({"__key__": "good1", "npy": npy(clips[3]), "cls": b"2"})
    whole = folder / "whole.tar"
    with wds.TarWriter(str(whole), encoder=False) as tar:
        for i in range(4):
            tar.write({"__key__": f"t{i}", "npy": npy(clips[i]), "cls": b"0"})
    truncated = folder / "truncated.tar"
    truncated.write_bytes(whole.read_bytes()[:4000])  # sample t0 (2560 bytes), then a cut inside t1
    (folder / "notatar.tar").write_bytes(b"this is not a tar file" * 40)
    return [str(mixed), str(truncated), str(folder / "notatar.tar"), str(folder / "missing.tar")]


def test_corrupt_samples_and_shards_are_skipped_and_reported(tmp_path: Path) -> None:
    urls = _write_corrupt_shards(tmp_path)
    with pytest.warns(UserWarning, match="data: skipped"):
        loader = make_eval_loader(urls, batch_size=8)
        keys = all_keys(loader)
    # The truncated shard's sample cut by the end of the file is lost, but reported (once, by its key).
    assert keys == ["good0", "good1"]
    skipped = {(Path(s.shard).name, s.key): s.reason for s in loader.report.skipped}
    assert len(loader.report.skipped) == len(skipped) == 6  # one record per lost sample or unreadable shard
    assert "missing member .cls" in skipped[("mixed.tar", "nolabel")]
    assert "differs from the dataset's (4, 8, 8, 3)" in skipped[("mixed.tar", "badshape")]
    assert ("mixed.tar", "garbage") in skipped
    assert skipped[("truncated.tar", "t0")] == "the shard breaks off in this sample (ReadError: unexpected end of data)"
    assert skipped[("notatar.tar", None)].startswith("ReadError")
    assert skipped[("missing.tar", None)].startswith("FileNotFoundError")
    assert "skipped" in str(loader.report)


def test_nothing_readable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"x" * 2000)
    with pytest.warns(UserWarning), pytest.raises(MagvitError, match="delivered no batch"):
        list(make_eval_loader([str(tmp_path / "bad.tar")], 4))


def test_bad_sources(tmp_path: Path, dataset: Path) -> None:
    with pytest.raises(MagvitError, match="does not exist"):
        make_loader(tmp_path / "nope", 4)
    with pytest.raises(MagvitError, match="splits train, val"):
        make_loader(dataset.parent, 4)
    (tmp_path / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(MagvitError, match="no meta.json"):
        make_loader(tmp_path, 4)
    with pytest.raises(InputError):
        make_loader(dataset, 0)
