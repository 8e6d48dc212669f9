"""MTL-LoRA (docs/mtl_lora.md): the layer's formula and init, per-sample routing, per-task merge, both presets."""

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from mtlora_deploy.cli.main import cli
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model import resolve_config
from mtlora_deploy.model.checkpoint import load_checkpoint, save_checkpoint
from mtlora_deploy.model.config import ModelConfig, load_yaml, save_yaml
from mtlora_deploy.model.mtl_lora import MTLLoRALinear, MTLoRAMTLLinear, task_routing
from mtlora_deploy.model.multistream import multistream_block_forward
from mtlora_deploy.model.params import count_parameters
from tests.conftest import full_size_structure, tiny_model
from tests.model.param_formulas import decoder_params, stage_widths, swin_backbone_params
from tests.model.test_lora_math import _attention_output_before_proj, _plain_copy_of, _shared

TASKS = ("semseg", "human_parts", "sal")


def _randomize(module: nn.Module, seed: int = 3, std: float = 0.3) -> None:
    """Random values for every MTL-LoRA tensor (B's, Lambda's, mixture logits), not only the B's."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * std)


def _layer(diagonal: bool = False) -> MTLLoRALinear:
    torch.manual_seed(0)
    kw = {"rank": 3, "num_b": 2, "temperature": 0.5, "alpha": 6.0, "diagonal_lambda": diagonal}
    layer = MTLLoRALinear(nn.Linear(12, 10), TASKS, **kw)
    _randomize(layer)
    return layer.eval()


def _branch(layer, x: torch.Tensor, t: int) -> torch.Tensor:
    """``(alpha / r) B_t Lambda_t A x`` written out: B_t = sum_i softmax(w_t / tau)_i B_i."""
    lam = torch.diag(layer.lora_lambdas[t]) if layer.diagonal_lambda else layer.lora_lambdas[t]
    logits = layer.lora_mix_logits[t] / layer.temperature
    pi = torch.exp(logits) / torch.exp(logits).sum()
    b_t = sum(pi[i] * layer.lora_B[i] for i in range(layer.num_b))
    return (layer.alpha / layer.rank) * x @ layer.lora_A.T @ lam.T @ b_t.T


def _formula(layer, x_frozen: torch.Tensor, x_branch: torch.Tensor, t: int) -> torch.Tensor:
    return x_frozen @ layer.base_layer.weight.T + layer.base_layer.bias + _branch(layer, x_branch, t)


# ---- the layer ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True])
def test_forward_matches_the_formula_per_sample(diagonal):
    layer = _layer(diagonal)
    x, ids = torch.randn(4, 5, 12), torch.tensor([0, 2, 1, 0])
    with torch.no_grad():
        out = layer(x, ids)
        for s in range(4):
            torch.testing.assert_close(out[s], _formula(layer, x[s], x[s], int(ids[s])), rtol=1e-5, atol=1e-5)


def test_init_matches_the_reference_code():
    torch.manual_seed(0)
    layer = MTLLoRALinear(nn.Linear(96, 288), TASKS, rank=16, num_b=5)
    bound = 1 / 96**0.5
    assert 0.9 * bound < layer.lora_A.abs().max() <= bound and layer.lora_A.shape == (16, 96)
    assert torch.equal(layer.lora_lambdas, torch.eye(16).expand(3, 16, 16))
    assert layer.lora_B.shape == (5, 288, 16) and torch.count_nonzero(layer.lora_B) == 0
    logits = layer.lora_mix_logits
    assert logits.shape == (3, 5) and logits.abs().max() <= 1 / 5**0.5 and logits.std() > 0.05
    torch.testing.assert_close(layer.mixture_weights().sum(-1), torch.ones(3))
    assert layer.scaling == 128.0 / 16 and layer.temperature == 0.1
    diagonal = MTLLoRALinear(nn.Linear(96, 288), TASKS, rank=16, diagonal_lambda=True)
    assert torch.equal(diagonal.lora_lambdas, torch.ones(3, 16))
    x = torch.randn(3, 7, 96)
    torch.testing.assert_close(layer(x, torch.tensor([0, 1, 2])), layer.base_layer(x))  # B = 0: the frozen layer


def test_temperature_sharpens_the_mixture():
    layer = _layer()
    peaks = []
    for tau in (100.0, 1.0, 0.01):
        layer.temperature = tau
        weights = layer.mixture_weights()
        torch.testing.assert_close(weights.sum(-1), torch.ones(3))
        peaks.append(weights.max(-1).values)
    assert torch.allclose(peaks[0], torch.full((3,), 0.5), atol=0.01)  # near uniform over n = 2
    assert (peaks[1] < peaks[2]).all() and torch.allclose(peaks[2], torch.ones(3), atol=1e-3)  # near one-hot


def test_mixed_batch_equals_separate_calls_also_for_windows():
    layer = _layer()
    x, ids = torch.randn(3, 5, 12), torch.tensor([0, 1, 0])
    windows = torch.randn(3 * 4, 5, 12)  # 4 windows per sample, sample-major as timm's window_partition
    with torch.no_grad():
        out, out_windows = layer(x, ids), layer(windows, ids)
        for s in range(3):
            one = ids[s : s + 1]
            torch.testing.assert_close(out[s : s + 1], layer(x[s : s + 1], one))
            torch.testing.assert_close(out_windows[4 * s : 4 * s + 4], layer(windows[4 * s : 4 * s + 4], one))


@pytest.mark.parametrize("diagonal", [False, True])
def test_per_task_merged_weight_gives_the_task_output(diagonal):
    layer = _layer(diagonal)
    x = torch.randn(2, 7, 12)
    for index, task in enumerate(TASKS):
        merged = layer.base_layer.weight + layer.get_delta_weight(task)  # W_t = W + (alpha/r) B_t Lambda_t A
        with torch.no_grad():
            got = layer(x, torch.full((2,), index))
        torch.testing.assert_close(got, x @ merged.T + layer.base_layer.bias, rtol=1e-5, atol=1e-5)
        down, up, scale = layer.task_low_rank_pair(task)
        assert down.shape == (3, 12) and up.shape == (10, 3) and scale == 2.0
        torch.testing.assert_close(scale * up @ down, layer.get_delta_weight(task))


def test_task_ids_errors_and_routing_context():
    layer = _layer()
    x = torch.randn(3, 12)
    with pytest.raises(ConfigError, match="no task ids"):
        layer(x)
    with pytest.raises(ConfigError, match="got 2 ids for 3 rows"):
        layer(x, torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="task: got 'edge'"):
        layer.get_delta_weight("edge")
    ids = torch.tensor([2, 0, 1])
    with task_routing(nn.Sequential(layer), ids):
        routed = layer(x)
    assert layer.routed_task_ids is None
    torch.testing.assert_close(routed, layer(x, ids))


def test_dropout_only_touches_the_branch():
    torch.manual_seed(0)
    layer = MTLLoRALinear(nn.Linear(8, 8), TASKS, rank=2, dropout=0.5).train()
    x = torch.randn(4, 8)
    torch.testing.assert_close(layer(x, torch.tensor([0, 1, 2, 0])), layer.base_layer(x))


def test_hybrid_layer_streams_and_shared_fold():
    torch.manual_seed(0)
    kw = {"shared_rank": 4, "shared_scale": 4.0, "rank": 3, "num_b": 2, "alpha": 6.0, "dropout": 0.0}
    layer = MTLoRAMTLLinear(nn.Linear(12, 10), TASKS, **kw)
    _randomize(layer)
    x = torch.randn(2, 5, 12)
    x_tasks = torch.randn(len(TASKS), 2, 5, 12)
    with torch.no_grad():
        shared, outs = layer.forward_streams(x, x_tasks)
        torch.testing.assert_close(shared, _shared(x, layer))
        torch.testing.assert_close(layer(x), shared)
        folded = x @ (layer.base_layer.weight + layer.get_delta_weight()).T + layer.base_layer.bias
        torch.testing.assert_close(shared, folded, rtol=1e-5, atol=1e-5)
        for index, _task in enumerate(TASKS):  # no shared term; W sees the shared x, the branch the task x
            torch.testing.assert_close(outs[index], _formula(layer, x, x_tasks[index], index), rtol=1e-5, atol=1e-5)


# ---- the mtlora-mtl hybrid in the model ---------------------------------------------------------------------


def test_hybrid_stage_final_block_matches_the_spec_formulas():
    model = tiny_model("mtlora-mtl", tasks=("semseg", "sal", "normals"), mtl_rank=2).to(torch.float64).eval()
    _randomize(model, std=0.2)  # float64: exact comparison
    block = model.backbone.layers[2].blocks[-1]
    proj, fc1, fc2, norm2 = block.attn.proj, block.mlp.fc1, block.mlp.fc2, block.norm2
    assert all(isinstance(m, MTLoRAMTLLinear) for m in (proj, fc1, fc2)) and any(block.shift_size)
    u = torch.randn(2, 4, 4, 96, dtype=torch.float64)
    gelu = nn.functional.gelu
    with torch.no_grad():
        x, z = multistream_block_forward(block, u, model.tasks)
        o = _attention_output_before_proj(block, u)
        a = u + _shared(o, proj)
        h = _shared(norm2(a), fc1)
        torch.testing.assert_close(x, a + _shared(gelu(h), fc2), rtol=1e-9, atol=1e-9)
        for t, _task in enumerate(model.tasks):
            a_t = u + _formula(proj, o, o, t)
            h_t = _formula(fc1, norm2(a), norm2(a_t), t)
            m_t = _formula(fc2, gelu(h), gelu(h_t), t)
            torch.testing.assert_close(z[t], a_t + m_t, rtol=1e-9, atol=1e-9)
            assert (z[t] - x).abs().max() > 1e-3


# ---- the task-conditioned mtl-lora model ----------------------------------------------------------------------


def _merged_plain_copy(model, task: str | None):
    """The same weights without adapters, the task's merged ``W_t`` in every adapted linear (None: plain W)."""
    plain = tiny_model("full", tasks=model.tasks).to(torch.float64)
    state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if "lora_" not in k}
    for name, module in model.named_modules():
        if task is not None and isinstance(module, MTLLoRALinear):
            state[f"{name}.weight"] = state[f"{name}.weight"] + module.get_delta_weight(task)
    plain.load_state_dict(state, strict=True)
    return plain.eval()


@pytest.mark.parametrize("diagonal", [False, True])
def test_batched_task_passes_equal_separate_runs_and_merged_models(diagonal, images):
    """In float64 so the comparison is exact: the branch is large here and float32 rounding would be amplified."""
    model = tiny_model("mtl-lora", mtl_rank=4, mtl_diagonal_lambda=diagonal, lora_on_reductions=True)
    model = model.to(torch.float64).eval()
    _randomize(model, std=0.1)
    images = images.to(torch.float64)
    with torch.no_grad():
        batched = model(images)
        for task in model.tasks:
            single = model(images, tasks=(task,))
            assert list(single) == [task]
            torch.testing.assert_close(batched[task], single[task], rtol=1e-9, atol=1e-9)
            merged = _merged_plain_copy(model, task)(images)[task]  # y = x W_t^T + b in every adapted linear
            torch.testing.assert_close(batched[task], merged, rtol=1e-9, atol=1e-9)
        base = _merged_plain_copy(model, None)(images)
    assert all((batched[t] - base[t]).abs().max() > 1e-3 for t in model.tasks)


@pytest.mark.parametrize(
    "preset, overrides", [("mtl-lora", {}), ("mtl-lora", {"lora_on_reductions": True}), ("mtlora-mtl", {})]
)
def test_zero_b_gives_exactly_the_base_model(preset, overrides, images):
    model = tiny_model(preset, mtl_rank=4, **overrides).eval()
    with torch.no_grad():
        out, ref = model(images), _plain_copy_of(model)(images)
    for task in model.tasks:
        torch.testing.assert_close(out[task], ref[task], rtol=0, atol=1e-5)


def test_unknown_task_in_forward_is_a_config_error(images):
    with pytest.raises(ConfigError, match="tasks: got edge"):
        tiny_model("mtl-lora", mtl_rank=2)(images, tasks=("edge",))


@pytest.mark.parametrize("preset", ["mtl-lora", "mtlora-mtl"])
def test_only_trainable_parameters_receive_gradients(preset, images):
    model = tiny_model(preset, mtl_rank=4, lora_dropout=0.0, drop_path_rate=0.0).train()
    _randomize(model, std=0.05)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    sum(v.float().mean() for v in model(images).values()).backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got <= trainable and len(got) >= 0.95 * len(trainable)
    mtl = {n for n in trainable if any(k in n for k in ("lora_A", "lora_lambdas", "lora_B", "lora_mix_logits"))}
    assert mtl and mtl <= got  # every MTL-LoRA tensor learns
    assert not any(".base_layer." in n for n in trainable)
    assert "backbone.layers.1.downsample.reduction.weight" in trainable
    assert "backbone.layers.0.blocks.0.attn.relative_position_bias_table" in trainable
    assert "backbone.patch_embed.proj.weight" in trainable


# ---- counts, CLI, config, checkpoints ------------------------------------------------------------------------


def _mtl_branch(fan_in: int, fan_out: int, rank: int, num_b: int, tasks: int) -> int:
    return rank * fan_in + tasks * rank * rank + num_b * fan_out * rank + tasks * num_b


def _block_linears(c: int) -> list[tuple[int, int]]:
    return [(c, 3 * c), (c, c), (c, 4 * c), (4 * c, c)]  # qkv, proj, fc1, fc2


def _expected_counts(config: ModelConfig) -> tuple[int, int]:
    """(LoRA parameters, deployed-minus-total) from docs/mtl_lora.md, "Layer", per preset."""
    arch, tasks = config.arch, len(config.tasks)
    dims = stage_widths(config)
    r, n, ta = config.mtl_rank, config.mtl_num_b, config.task_agnostic_rank
    lora = deployed = 0
    for c, depth in zip(dims, arch["depths"], strict=True):
        if config.adapter == "mtl-lora":
            lora += depth * sum(_mtl_branch(i, o, r, n, tasks) for i, o in _block_linears(c))
            deployed += depth * sum((tasks - 1) * i * o - _mtl_branch(i, o, r, n, tasks) for i, o in _block_linears(c))
            continue
        lora += 16 * ta * c * depth
        deployed -= 16 * ta * c * (depth - 1) + 4 * ta * c  # every shared pair folds but stage-final proj/fc1/fc2
        lora += sum(_mtl_branch(i, o, r, n, tasks) for i, o in _block_linears(c)[1:])
        deployed += sum(r * (i + tasks * o) - _mtl_branch(i, o, r, n, tasks) for i, o in _block_linears(c)[1:])
    return lora, deployed


@pytest.mark.parametrize("preset", ["mtl-lora", "mtlora-mtl"])
def test_tiny_counts_match_the_shapes(preset):
    model = tiny_model(preset, mtl_rank=3, mtl_num_b=2, tasks=("semseg", "sal", "edge"))
    table = count_parameters(model)
    lora, deployed = _expected_counts(model.config)
    assert table.lora_trainable == lora and table.lora_frozen == 0
    assert table.deployed_params - table.total_params == deployed


@pytest.mark.parametrize("preset", ["mtl-lora", "mtlora-mtl"])
def test_swin_t_counts(preset):
    model = full_size_structure(preset)
    table = count_parameters(model)
    lora, deployed = _expected_counts(model.config)
    assert table.lora_trainable == lora and table.deployed_params - table.total_params == deployed
    assert table.decoders_trainable == decoder_params(model.config)
    assert table.lora_frozen + table.backbone_trainable + table.backbone_frozen == swin_backbone_params(model.config)


@pytest.mark.parametrize("preset", ["mtl-lora", "mtlora-mtl"])
def test_info_reports_the_presets(preset):
    tiny = ["--set", "backbone=swin_test_tiny", "--set", "image_size=64", "--set", "mtl_rank=4"]
    args = ["info", "--preset", preset, *tiny]
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["adapter"] == preset and data["config"]["mtl_rank"] == 4
    assert isinstance(data["deployed_params"], int) and data["trainable_params"] < data["total_params"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0 and "after merging" in table.output


def test_presets_and_yaml_round_trip_of_the_new_fields(tmp_path):
    assert resolve_config("mtl-lora").adapter == "mtl-lora"
    hybrid = resolve_config("mtlora-mtl")
    assert (hybrid.task_agnostic_rank, hybrid.mtl_rank, hybrid.mtl_alpha / hybrid.mtl_rank) == (64, 4, 4.0)
    overrides = {"mtl_rank": 8, "mtl_num_b": 2, "mtl_temperature": 0.5, "mtl_alpha": 16, "mtl_diagonal_lambda": True}
    config = resolve_config("mtl-lora", overrides=overrides)
    assert config.mtl_alpha == 16.0 and isinstance(config.mtl_alpha, float)
    save_yaml(config, tmp_path / "c.yaml")
    assert ModelConfig.from_dict(load_yaml(tmp_path / "c.yaml")) == config
    (tmp_path / "d.yaml").write_text("model:\n  mtl_num_b: 5\n  mtl_diagonal_lambda: true\n")
    from_yaml = resolve_config("mtl-lora", str(tmp_path / "d.yaml"), {"mtl_temperature": 2})
    assert (from_yaml.mtl_num_b, from_yaml.mtl_diagonal_lambda, from_yaml.mtl_temperature) == (5, True, 2.0)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"mtl_rank": 0}, "mtl_rank: got 0"),
        ({"mtl_num_b": 1.5}, "mtl_num_b: got 1.5"),
        ({"mtl_temperature": 0}, "mtl_temperature: got 0"),
        ({"mtl_alpha": -1}, "mtl_alpha: got -1"),
        ({"mtl_diagonal_lambda": "yes"}, "mtl_diagonal_lambda: got 'yes'"),
        ({"adapter": "mtl"}, "adapter: got 'mtl'"),
    ],
)
def test_bad_mtl_fields_give_clear_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config("mtl-lora", overrides=overrides)


def test_checkpoint_round_trip(tmp_path, images):
    model = tiny_model("mtl-lora", mtl_rank=2).eval()
    _randomize(model, std=0.1)
    save_checkpoint(model, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    with torch.no_grad():
        out, again = model(images), loaded(images)
    for task in model.tasks:
        torch.testing.assert_close(out[task], again[task])
