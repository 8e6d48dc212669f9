"""utils.imports: a package's lazy (PEP 562) exports import their submodule on first access, and only then."""

import subprocess
import sys

import pytest

from mtlora_deploy.utils.imports import lazy_exports


def test_lazy_exports_resolve_names_from_their_modules_and_refuse_others():
    getattr_, names = lazy_exports("somepkg", {"sqrt": "math", "dumps": "json"})
    assert names == ["sqrt", "dumps"]
    import json
    import math

    assert getattr_("sqrt") is math.sqrt and getattr_("dumps") is json.dumps
    with pytest.raises(AttributeError, match="module 'somepkg' has no attribute 'loads'"):
        getattr_("loads")


def test_deploy_package_imports_the_onnx_stack_only_when_an_export_name_is_used():
    code = (
        "import sys, mtlora_deploy.deploy as d; before = 'onnx' in sys.modules; d.export_onnx;"
        "sys.exit(0 if (not before and 'onnx' in sys.modules) else 1)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
