"""ProfileSettings: defaults < CLI flags, checks at the boundary, one typed object from the CLI to run_profile."""

import pytest
from click.testing import CliRunner

from mtlora_deploy.cli.main import cli
from mtlora_deploy.cli.profile import settings_from_options
from mtlora_deploy.errors import ConfigError
from mtlora_deploy.profile.settings import COMPARISONS, ProfileSettings

NO_FLAGS = {
    "backends": (),
    "precision": None,
    "batch": None,
    "comparisons": None,
    "compile_mode": None,
    "compile_backend": None,
    "cuda_graph": False,
    "include_copies": False,
    "memory": False,
    "duration": None,
    "iterations": None,
    "warmup": None,
    "rounds": None,
    "device": None,
    "threads": None,
    "budget_s": None,
}


def test_options_left_out_keep_the_dataclass_defaults():
    assert settings_from_options(**NO_FLAGS) == ProfileSettings()


def test_flags_override_the_defaults():
    flags = {
        **NO_FLAGS,
        "backends": ("torch,onnxruntime",),
        "batch": "1,4",
        "duration": 0.5,
        "rounds": 4,
        "comparisons": "none",
        "compile_backend": "aot_eager",
        "memory": True,
    }
    settings = settings_from_options(**flags)
    assert settings.backends == ("torch", "onnxruntime") and settings.batches == (1, 4)
    assert settings.duration == 0.5 and settings.rounds == 4 and settings.comparisons == () and settings.memory
    assert settings.compile_options == {"compile_backend": "aot_eager"} and settings.iterations == 10
    assert settings_from_options(**{**NO_FLAGS, "comparisons": "merged"}).comparisons == ("merged",)
    assert ProfileSettings().comparisons == COMPARISONS


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"batch": "1,x"}, "--batch"), ({"rounds": 1}, "`rounds`"), ({"precision": "fp8"}, "`precisions`: got 'fp8'")],
)
def test_bad_flags_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        settings_from_options(**{**NO_FLAGS, **flags})


def test_cli_help_lists_the_timing_options():
    result = CliRunner().invoke(cli, ["profile", "--help"])
    assert result.exit_code == 0
    for option in ("--duration", "--iterations", "--rounds", "--warmup", "--memory", "--budget"):
        assert option in result.output
