"""torch.compile backend on this CPU: the aot_eager fallback (no C++ compiler), real inductor (slow), routing."""

import warnings

import pytest
import torch

from mtlora_deploy.engines import torch_compiled
from mtlora_deploy.engines.registry import open_backend
from mtlora_deploy.engines.torch_compiled import TorchCompiledBackend, default_mode, find_cxx_compiler
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.model.checkpoint import save_checkpoint
from tests.conftest import randomize_lora, tiny_model


@pytest.fixture
def model():
    m = tiny_model(tasks=("semseg", "sal"))
    randomize_lora(m)
    return m.eval()


def _reference(model, images):
    with torch.inference_mode():
        return {k: v.clone() for k, v in model(images).items()}


def test_without_a_cxx_compiler_it_falls_back_to_aot_eager_and_matches_eager(model, images, monkeypatch):
    monkeypatch.setattr(torch_compiled, "find_cxx_compiler", lambda: None)
    ref = _reference(model, images)
    with pytest.warns(RuntimeWarning, match="aot_eager"):
        backend = TorchCompiledBackend(model, device="cpu")
    assert backend.compile_backend == "aot_eager" and backend.mode == "default"
    out = backend.infer(images)
    for task in ("semseg", "sal"):
        torch.testing.assert_close(out[task], ref[task], rtol=1e-4, atol=1e-5)
    assert backend.describe()["compile_backend"] == "aot_eager"


@pytest.mark.slow
@pytest.mark.skipif(find_cxx_compiler() is None, reason="no C++ compiler for inductor on this machine")
def test_inductor_compiles_the_tiny_model_on_this_cpu(model, images):
    ref = _reference(model, images)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback: inductor itself must work here
        backend = TorchCompiledBackend(model, device="cpu")
        out = backend.infer(images)
    assert backend.compile_backend == "inductor"
    for task in ("semseg", "sal"):
        torch.testing.assert_close(out[task], ref[task], rtol=1e-4, atol=1e-5)


def test_modes_and_options_are_checked(model):
    assert default_mode(torch.device("cuda")) == "reduce-overhead" and default_mode(torch.device("cpu")) == "default"
    with pytest.raises(ConfigError, match="`compile_mode`: got 'fastest'"):
        TorchCompiledBackend(model, mode="fastest")


def test_open_backend_routes_torch_compiled(model, tmp_path):
    save_checkpoint(model, tmp_path / "run" / "checkpoints" / "best")
    backend = open_backend(tmp_path / "run", "torch-compiled", device="cpu", compile_backend="aot_eager")
    assert isinstance(backend, TorchCompiledBackend) and backend.tasks == ("semseg", "sal")
    assert backend.describe()["backend"] == "torch-compiled"
