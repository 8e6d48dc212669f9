"""The private APIs of other libraries that the code relies on, called directly: an upgrade that moves or changes
one fails here, in CI, instead of silently for a user. pyproject caps each of these libraries below its next major
version (checked below too); raise a cap only together with these tests passing on the new version.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.version import Version
from timm.models.swin_transformer import SwinTransformerBlock

from mtlora_deploy.model.multistream import window_attention_core

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PRIVATE_USES = {  # library -> what of its private API the code uses, and where
    "timm": "WindowAttention._get_rel_pos_bias() in model/multistream.window_attention_core",
    "torch": "torch._dynamo.config's recompile limit (profile/api), torch._dynamo.exc (engines/torch_compiled)",
}


@pytest.mark.parametrize("library", sorted(PRIVATE_USES))
def test_libraries_with_private_uses_are_capped_below_their_next_major(library):
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    dependencies = [Requirement(d) for d in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]]
    requirement = next(r for r in dependencies if r.name == library)
    installed = Version(importlib.metadata.version(library))
    assert requirement.specifier.contains(installed), f"{library} {installed} is outside pyproject's {requirement}"
    next_major = Version(f"{installed.major + 1}")
    assert not requirement.specifier.contains(next_major), f"pyproject's {requirement} lets {library} {next_major} in"


def test_timm_window_attention_rel_pos_bias_and_forward_are_what_window_attention_core_rebuilds():
    """``window_attention_core`` is timm's ``WindowAttention.forward`` up to ``proj``, with ``_get_rel_pos_bias``."""
    torch.manual_seed(0)
    block = SwinTransformerBlock(dim=8, input_resolution=(14, 14), num_heads=2, window_size=7, shift_size=3).eval()
    attn, tokens = block.attn, 49
    bias = attn._get_rel_pos_bias()
    table = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    expected = table.view(tokens, tokens, attn.num_heads).permute(2, 0, 1).unsqueeze(0)
    torch.testing.assert_close(bias, expected, rtol=0, atol=0)
    x = torch.randn(2 * 4, tokens, 8)  # batch 2 x 4 windows of the 14 x 14 map
    with torch.no_grad():
        for mask in (None, block.attn_mask):  # plain and shifted windows
            torch.testing.assert_close(attn.proj(window_attention_core(attn, x, mask)), attn(x, mask))


def test_torch_dynamo_private_names_the_code_uses_exist():
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.exc import BackendCompilerFailed

    assert hasattr(dynamo_config, "recompile_limit") or hasattr(dynamo_config, "cache_size_limit")
    limit = getattr(dynamo_config, "recompile_limit", getattr(dynamo_config, "cache_size_limit", None))
    assert isinstance(limit, int) and limit > 0
    assert issubclass(BackendCompilerFailed, Exception)
