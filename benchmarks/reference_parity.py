"""Parity with the reference MTLoRA code itself: its checkpoints import here, ours load there, outputs agree.

Needs a checkout of https://github.com/scale-lab/MTLoRA and ``yacs`` (plus ``termcolor``, ``ptflops``) importable,
e.g. ``pip install --target /tmp/refdeps --no-deps yacs termcolor ptflops``. Nothing of it is imported by the
toolkit; this script only drives both sides:

1. build the reference model from one of its shipped configs through its own ``get_config`` / ``build_model`` /
   ``build_mtl_model``, give every LoRA B and BatchNorm statistic random values, and write it with its own
   ``utils.save_checkpoint`` (optimizer, lr_scheduler, scaler and the pickled yacs ``CfgNode`` included);
2. ``mtlora import-checkpoint CKPT -o DIR`` in a fresh process WITHOUT yacs on the path and without options;
3. compare our outputs with the reference's on the same images;
4. ``mtlora export-reference DIR -o back.pth`` and load that with the reference's own ``utils.load_checkpoint``
   into a fresh reference model (eval mode), compare again.

Usage: PYTHONPATH=/tmp/refdeps python benchmarks/reference_parity.py --reference-repo /path/to/MTLoRA
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

NUM_OUTPUT = {"semseg": 21, "human_parts": 7, "sal": 1, "normals": 3, "edge": 1}


def _stub_modules() -> None:
    """The reference's data package needs cv2/easydict/skimage; its model and checkpoint code do not."""
    data = types.ModuleType("data")
    mtl_ds = types.ModuleType("data.mtl_ds")

    def get_tasks_config(db_name, task_list, img_size):
        cfg = {
            "NAMES": list(task_list),
            "NUM_OUTPUT": {t: NUM_OUTPUT[t] for t in task_list},
            "FLAGVALS": {"image": 2, **{t: 0 for t in task_list}},
            "INFER_FLAGVALS": {t: 0 for t in task_list},
        }
        return {"ALL_TASKS": cfg}, {}

    mtl_ds.get_tasks_config = get_tasks_config
    data.mtl_ds = mtl_ds
    sys.modules.update({"data": data, "data.mtl_ds": mtl_ds})
    if "cv2" not in sys.modules:
        sys.modules["cv2"] = types.ModuleType("cv2")


def _reference_config(repo: Path, cfg: str, tasks: str, output: Path):
    import config as ref_config  # the reference's config.py

    args = argparse.Namespace(
        cfg=str(repo / cfg),
        opts=None,
        tasks=tasks,
        pascal="/nonexistent",
        local_rank=0,
        output=str(output),
        batch_size=2,
        eval=True,
    )
    return ref_config.get_config(args)


def _reference_model(config):
    from models import build_model, build_mtl_model

    return build_mtl_model(build_model(config), config)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "lora_" in name and "_B" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)


def _compare(ours: dict, reference: dict) -> dict[str, float]:
    """Max |difference| relative to the reference's max |value|, per task."""
    return {t: float((ours[t] - reference[t]).abs().max() / reference[t].abs().max()) for t in reference}


def _run(cmd: list[str], env: dict) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-repo", required=True, type=Path)
    parser.add_argument("--cfg", default="configs/mtlora/tiny_448/mtlora_tiny_448_r64_scale4_pertask.yaml")
    parser.add_argument("--tasks", default="semseg,human_parts,sal,normals")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the result JSON here")
    args = parser.parse_args()
    repo = args.reference_repo.resolve()
    toolkit = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo))
    _stub_modules()
    import utils as ref_utils  # the reference's utils.py (save_checkpoint / load_checkpoint)
    from lr_scheduler import build_scheduler
    from optimizer import build_optimizer

    work = Path(tempfile.mkdtemp(prefix="mtlora_parity_"))
    config = _reference_config(repo, args.cfg, args.tasks, work / "ref_out")
    os.makedirs(config.OUTPUT, exist_ok=True)
    torch.manual_seed(0)
    model = _reference_model(config).eval()
    _randomise(model, seed=1)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, 10)
    logger = logging.getLogger("reference")
    ckpt = ref_utils.save_checkpoint(
        config, 7, model, 0.0, optimizer, scheduler, ref_utils.NativeScalerWithGradNormCount(), logger
    )
    images = torch.randn(
        args.batch, 3, config.DATA.IMG_SIZE, config.DATA.IMG_SIZE, generator=torch.Generator().manual_seed(2)
    )
    with torch.no_grad():
        reference_out = model(images)

    # 2. our import, in a process where yacs cannot be imported
    env = {**os.environ, "PYTHONPATH": str(toolkit), "COLUMNS": "400"}
    imported = work / "imported"
    log = _run([sys.executable, "-m", "mtlora_deploy", "import-checkpoint", ckpt, "-o", str(imported)], env)
    check = "import sys\ntry:\n import yacs\n print('yacs importable')\nexcept ImportError:\n print('no yacs')\n"
    yacs_state = _run([sys.executable, "-c", check], env).strip()
    sys.path.insert(0, str(toolkit))
    import mtlora_deploy

    ours = mtlora_deploy.load(imported)
    with torch.no_grad():
        import_diff = _compare(ours(images), reference_out)

    # 4. back to the reference: export-reference, then the reference's own load_checkpoint
    back = work / "back.pth"
    _run([sys.executable, "-m", "mtlora_deploy", "export-reference", str(imported), "-o", str(back)], env)
    config.defrost()
    config.MODEL.RESUME = str(back)
    config.freeze()
    fresh = _reference_model(config)
    ref_utils.load_checkpoint(config, fresh, None, None, None, logger)
    with torch.no_grad():
        export_diff = _compare(fresh.eval()(images), reference_out)
    result = {
        "reference_cfg": args.cfg,
        "tasks": args.tasks,
        "image_size": config.DATA.IMG_SIZE,
        "batch": args.batch,
        "import_process": yacs_state,
        "detected": [line for line in log.splitlines() if "detected" in line],
        "imported_model_config": json.loads((imported / "model.json").read_text())["model_config"],
        "max_rel_diff_import": import_diff,
        "max_rel_diff_export_reloaded_by_reference": export_diff,
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
