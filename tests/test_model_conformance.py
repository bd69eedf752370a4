"""training.model + training.weights against the official MiniMind2 conformance pack (real reference data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from assistant.errors import ModelError  # noqa: E402
from tests.support.conformance import check_against_pack  # noqa: E402
from training.model import MiniMindConfig, MiniMindForCausalLM  # noqa: E402
from training.weights import load_model, save_hf_dir, save_pth  # noqa: E402

PACKS = ["minimind2-dense-tiny", "minimind2-moe-tiny"]
TOL = 1e-4


@pytest.fixture(scope="module")
def pack_dir(reference: Path) -> Path:
    return reference / "minimind2"


def pack_config(pack_dir: Path, name: str) -> MiniMindConfig:
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    return MiniMindConfig.from_dict(manifest[name]["config"])


def load_pack(pack_dir: Path, name: str) -> tuple[MiniMindForCausalLM, MiniMindConfig]:
    # moe-tiny has head_dim 32, which shapes alone cannot tell: pass the pack's config.
    config = pack_config(pack_dir, name) if "moe" in name else None
    return load_model(pack_dir / f"{name}-random.pth", config=config)


@pytest.mark.parametrize("name", PACKS)
def test_pth_matches_pack(pack_dir: Path, name: str) -> None:
    model, config = load_pack(pack_dir, name)
    assert config == pack_config(pack_dir, name)
    check_against_pack(model, np.load(pack_dir / f"{name}-reference.npz"))


@pytest.mark.parametrize("name", PACKS)
def test_hf_dir_matches_pack(pack_dir: Path, name: str, tmp_path: Path) -> None:
    model, config = load_pack(pack_dir, name)
    save_hf_dir(model, config, tmp_path / "hf")
    reloaded, reloaded_config = load_model(tmp_path / "hf")
    assert reloaded_config == config
    check_against_pack(reloaded, np.load(pack_dir / f"{name}-reference.npz"))


def test_dense_config_inferred_from_shapes(pack_dir: Path) -> None:
    _, config = load_model(pack_dir / "minimind2-dense-tiny-random.pth")
    assert config == pack_config(pack_dir, "minimind2-dense-tiny")


def test_pytorch_model_bin_dir(pack_dir: Path, tmp_path: Path) -> None:
    state = torch.load(pack_dir / "minimind2-dense-tiny-random.pth", weights_only=True)
    torch.save(state, tmp_path / "pytorch_model.bin")
    config = pack_config(pack_dir, "minimind2-dense-tiny")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "minimind", **config.to_dict()}))
    _, loaded = load_model(tmp_path)
    assert loaded == config


def test_save_pth_is_official_format(pack_dir: Path, tmp_path: Path) -> None:
    source = pack_dir / "minimind2-dense-tiny-random.pth"
    model, _ = load_model(source)
    save_pth(model, tmp_path / "out.pth")
    original = torch.load(source, weights_only=True)
    written = torch.load(tmp_path / "out.pth", weights_only=True)
    assert list(written) == list(original)
    for key, tensor in original.items():
        assert written[key].dtype == torch.float16
        assert torch.equal(written[key], tensor), key
    assert [p.name for p in tmp_path.iterdir()] == ["out.pth"]  # no temporary left behind


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match="num_layers"):
        MiniMindConfig.from_dict({"hidden_size": 256, "num_layers": 2, "architectures": None})
    assert MiniMindConfig().intermediate_size == 1408  # MiniMind2-Small's FFN by the official rule


# -- strict loading: every defect is a ModelError that names the key or the file


@pytest.fixture()
def dense_state(pack_dir: Path) -> dict:
    return torch.load(pack_dir / "minimind2-dense-tiny-random.pth", weights_only=True)


def save_and_load(state: dict, tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    load_model(path)


def test_missing_key(dense_state: dict, tmp_path: Path) -> None:
    del dense_state["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(
        ModelError, match=r"broken\.pth.*missing key 'model\.layers\.1\.mlp\.up_proj\.weight'"
    ):
        save_and_load(dense_state, tmp_path)


def test_extra_key(dense_state: dict, tmp_path: Path) -> None:
    dense_state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(64)
    with pytest.raises(ModelError, match=r"unexpected key 'model\.layers\.0\.self_attn\.q_norm\.weight'"):
        save_and_load(dense_state, tmp_path)


def test_wrong_shape(dense_state: dict, tmp_path: Path) -> None:
    dense_state["model.layers.0.mlp.down_proj.weight"] = torch.zeros(256, 700)
    with pytest.raises(
        ModelError, match=r"'model\.layers\.0\.mlp\.down_proj\.weight' has shape \(256, 700\)"
    ):
        save_and_load(dense_state, tmp_path)


def test_corrupt_file(pack_dir: Path, tmp_path: Path) -> None:
    data = (pack_dir / "minimind2-dense-tiny-random.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"cut\.pth"):
        load_model(tmp_path / "cut.pth")


def test_corrupt_safetensors(pack_dir: Path, tmp_path: Path) -> None:
    model, config = load_pack(pack_dir, "minimind2-dense-tiny")
    save_hf_dir(model, config, tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ModelError, match=r"model\.safetensors"):
        load_model(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nothere\.pth"):
        load_model(tmp_path / "nothere.pth")


def test_legacy_layout_is_named(tmp_path: Path) -> None:
    legacy = {
        "tok_embeddings.weight": torch.zeros(6400, 64),
        "layers.0.attention.wq.weight": torch.zeros(64, 64),
        "norm.weight": torch.ones(64),
        "output.weight": torch.zeros(6400, 64),
    }
    with pytest.raises(ModelError, match="legacy MiniMind2 layout"):
        save_and_load(legacy, tmp_path)
