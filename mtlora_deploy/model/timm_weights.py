"""``pretrained=timm`` / ``pretrained=timm:NAME``: timm's own ImageNet Swin weights via the Hugging Face Hub cache.

``timm`` means the ImageNet-1K weights of the configured backbone (``swin_tiny_patch4_window7_224.ms_in1k`` and the
small/base ``.ms_in1k`` ones, the weights the MTLoRA paper starts from); ``timm:NAME`` names any timm pretrained tag
(``timm:swin_small_patch4_window7_224.ms_in22k_ft_in1k``). The file is fetched once into the Hub cache
(``HF_HOME``/``HF_HUB_CACHE``) and read from there afterwards, also with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from mtlora_deploy.errors import ConfigError, WeightsError

DEFAULT_TAG = "ms_in1k"
_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm's own hub loader tries, in this order


def is_timm_spec(value: str) -> bool:
    """True for ``timm`` and ``timm:NAME`` (anything else is a local path)."""
    return value == "timm" or value.startswith("timm:")


def timm_weights_name(spec: str, swin: nn.Module) -> str:
    """The timm ``architecture.tag`` a spec means for this Swin (``timm`` -> its architecture's ``.ms_in1k``)."""
    name = spec.partition(":")[2].strip()
    if not name:
        name = f"{swin.pretrained_cfg['architecture']}.{DEFAULT_TAG}"
    return name


def timm_weights_file(spec: str, swin: nn.Module) -> Path:
    """The local file (downloaded or already cached) holding the timm weights ``spec`` names.

    Raises:
        ConfigError: timm knows no pretrained weights of that name.
        WeightsError: the Hub cannot be reached and the file is not cached (one line naming the local-file way).
    """
    import timm

    name = timm_weights_name(spec, swin)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise ConfigError(f"pretrained={spec}: timm has no hub weights named {name!r} (see timm.list_pretrained())")
    return _download(cfg.hf_hub_id, spec)


def _download(repo_id: str, spec: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    problems = []
    for filename in _FILES:
        try:
            return Path(hf_hub_download(repo_id, filename))
        except LocalEntryNotFoundError as exc:  # offline and not cached: the other file may be cached
            problems.append(_first_line(exc))
        except EntryNotFoundError:
            problems.append(f"{repo_id} has no {filename}")
        except Exception as exc:  # noqa: BLE001 - no network, proxy, server error: all the same fix
            problems.append(_first_line(exc))
            break
    raise WeightsError(
        f"pretrained={spec}: could not get {repo_id} from the Hugging Face Hub or its cache ({problems[0]}); "
        "without network pass a local file: `pretrained`=PATH (timm model.safetensors or Microsoft .pth)"
    )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
