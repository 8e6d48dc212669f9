"""The training loop: seeded, resumable, AMP on CUDA, DDP under torchrun, NaN-guarded, rank-0 writes."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from mtlora_deploy.model.config import ModelConfig
from mtlora_deploy.model.multitask import build_model
from mtlora_deploy.model.params import count_parameters
from mtlora_deploy.trainer import data_setup
from mtlora_deploy.trainer.checkpoint_set import deferred_sigint
from mtlora_deploy.trainer.config import TrainConfig, save_run_config
from mtlora_deploy.trainer.delta import as_baseline, read_delta
from mtlora_deploy.trainer.distributed import DistContext, broadcast_buffers, init_distributed
from mtlora_deploy.trainer.evaluation import evaluate_predictor
from mtlora_deploy.trainer.logging import (
    RunLogger,
    metrics_table,
    step_line,
    training_progress,
    trim_log,
    validation_line,
)
from mtlora_deploy.trainer.losses import MultiTaskLoss
from mtlora_deploy.trainer.optim import build_optimizer, build_scheduler
from mtlora_deploy.trainer.run_state import Progress, TrainingError, load_training_state, save_training_state
from mtlora_deploy.utils.atomic import write_json_atomic
from mtlora_deploy.utils.faults import fault_point


@dataclass
class TrainSetup:
    """The objects a run trains with, built once."""

    model: nn.Module
    wrapped: nn.Module
    criterion: MultiTaskLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    train_set: Any
    val_set: Any
    steps_per_epoch: int
    total_steps: int


def amp_settings(mode: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype, use a GradScaler): bf16 by default on CUDA, nothing on the CPU."""
    if device.type != "cuda" or mode == "off":
        return None, False
    if mode == "fp16":
        return torch.float16, True
    return torch.bfloat16, False


class Trainer:
    """Train one model configuration into ``run_dir``; ``fit()`` returns the final validation result."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        run_dir: str | Path,
        resume: bool = False,
        stop_after: int | None = None,
        console: Console | None = None,
        context: DistContext | None = None,
        origin: dict[str, Any] | None = None,
    ) -> None:
        self.model_config, self.cfg, self.origin = model_config, train_config, origin
        self.run_dir = Path(run_dir)
        self.resume, self.stop_after = resume, stop_after
        self.context = context or init_distributed(train_config.device)
        self.console = console or Console()
        self.logger: RunLogger | None = None
        self.last_model: nn.Module | None = None
        self._best_pending = False  # the last validation was the best so far: the next commit writes best.*
        self._committed_step: int | None = None

    # ---- setup -------------------------------------------------------------------------------------------------
    def _build(self) -> TrainSetup:
        cfg, ctx = self.cfg, self.context
        torch.manual_seed(cfg.seed)
        root = data_setup.resolve_data_root(cfg, self.run_dir, ctx)
        cache = self.run_dir / "cache"
        train_set = data_setup.build_dataset(root, cfg.train_split, self.model_config, True, cache, cfg.seed)
        val_set = data_setup.build_dataset(root, cfg.val_split, self.model_config, False, cache, cfg.seed)
        steps_per_epoch = len(train_set) // (cfg.batch_size * ctx.world_size)
        if steps_per_epoch < 1:
            raise TrainingError(
                f"`batch_size` {cfg.batch_size} x {ctx.world_size} process(es) is larger than the "
                f"{len(train_set)} training images of split {cfg.train_split!r}",
                field="batch_size",
            )
        total = cfg.max_steps or cfg.epochs * steps_per_epoch
        model = build_model(self.model_config).to(ctx.device)
        lrs = cfg.scaled_lrs(ctx.world_size)
        optimizer = build_optimizer(model, lrs["lr"], cfg.weight_decay, cfg.betas, cfg.eps)
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_epochs * steps_per_epoch))
        scheduler = build_scheduler(optimizer, total, warmup, lrs["warmup_lr"], lrs["min_lr"])
        amp_dtype, use_scaler = amp_settings(cfg.amp, ctx.device)
        scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        wrapped = self._wrap_ddp(model)
        criterion = MultiTaskLoss(self.model_config.tasks, cfg.loss_weights or None)
        return TrainSetup(
            model,
            wrapped,
            criterion,
            optimizer,
            scheduler,
            scaler,
            amp_dtype,
            train_set,
            val_set,
            steps_per_epoch,
            total,
        )

    def _wrap_ddp(self, model: nn.Module) -> nn.Module:
        if not self.context.enabled:
            return model
        device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
        # MTLoRA: the shared output of the last stage feeds nothing, so its shared LoRA gets no gradient.
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)

    def _write_run_header(self, setup: TrainSetup, progress: Progress) -> None:
        lrs = self.cfg.scaled_lrs(self.context.world_size)
        resolved = {
            **lrs,
            "world_size": self.context.world_size,
            "steps_per_epoch": setup.steps_per_epoch,
            "total_steps": setup.total_steps,
            "device": str(self.context.device),
            "amp": str(setup.amp_dtype).replace("torch.", "") if setup.amp_dtype else "off",
        }
        save_run_config(self.run_dir / "config.yaml", self.model_config, self.cfg, resolved, self.origin)
        write_json_atomic(self.run_dir / "params.json", count_parameters(setup.model).to_dict())

    # ---- the loop ----------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` (or ``stop_after``), validating every ``eval_every`` epochs."""
        if self.context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        setup = self._build()
        self.last_model = setup.model
        progress = Progress()
        if self.resume:
            progress = (
                load_training_state(
                    self.run_dir,
                    setup.model,
                    setup.optimizer,
                    setup.scheduler,
                    setup.scaler,
                    warn=self._warn,
                    repair=self.context.is_main,
                )
                or progress
            )
            self._committed_step = progress.step
            if self.context.is_main:
                trim_log(self.run_dir / "metrics.jsonl", progress.step)
        if self.context.is_main:
            self._write_run_header(setup, progress)
        self.logger = RunLogger(self.run_dir, enabled=self.context.is_main)
        try:
            return self._loop(setup, progress)
        except KeyboardInterrupt:
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C waits for the commit, then stops here
                self._save(setup, progress)
            self.console.print(
                f"[yellow]interrupted at step {progress.step}; resume with: mtlora train --resume {self.run_dir}"
            )
            raise
        finally:
            self.logger.close()

    def _loop(self, setup: TrainSetup, progress: Progress) -> dict[str, Any]:
        end = min(setup.total_steps, self.stop_after or setup.total_steps)
        result: dict[str, Any] = {}
        with training_progress(self.console, disable=not self.context.is_main) as bar:
            task_id = bar.add_task("train", total=setup.total_steps, completed=progress.step, status="")
            while progress.step < end:
                self._run_epoch(setup, progress, end, bar, task_id)
                epoch_done = progress.step % setup.steps_per_epoch == 0
                if epoch_done:
                    progress.epoch += 1
                finished = progress.step >= end
                broadcast_buffers(setup.model, self.context)
                if (epoch_done and progress.epoch % self.cfg.eval_every == 0) or progress.step >= setup.total_steps:
                    result = self._validate(setup, progress, final=progress.step >= setup.total_steps)
                    fault_point("train.validate")
                if epoch_done or finished:
                    self._save(setup, progress)
        if not result and progress.step >= setup.total_steps:
            result = self._validate(setup, progress, final=True)
            if self._best_pending:
                self._save(setup, progress)
        return result

    def _run_epoch(self, setup: TrainSetup, progress: Progress, end: int, bar, task_id) -> None:
        setup.train_set.set_epoch(progress.epoch)
        sampler = data_setup.train_sampler(setup.train_set, self.cfg, self.context)
        sampler.set_epoch(progress.epoch)
        done_in_epoch = progress.step - progress.epoch * setup.steps_per_epoch
        sampler = data_setup.SkipSampler(sampler, done_in_epoch * self.cfg.batch_size)
        loader = data_setup.make_loader(
            setup.train_set,
            sampler,
            self.cfg.batch_size,
            self.cfg.num_workers,
            True,
            self.context.device,
            seed=self.cfg.seed + progress.epoch,
        )
        setup.wrapped.train()
        tick = time.perf_counter()
        for batch in loader:
            with deferred_sigint():  # Ctrl-C lands between steps, never between an update and its count
                losses = self._train_step(setup, batch, progress.step)
                progress.step += 1
            fault_point("train.step")
            images_per_s = batch["image"].shape[0] * self.context.world_size / (time.perf_counter() - tick)
            tick = time.perf_counter()
            self._log_step(setup, progress, losses, images_per_s, bar, task_id)
            if progress.step >= end or progress.step % setup.steps_per_epoch == 0:
                break

    def _train_step(self, setup: TrainSetup, batch: dict[str, Any], step: int) -> dict[str, float]:
        device = self.context.device
        images = batch["image"].to(device, non_blocking=True)
        targets = {t: batch[t].to(device, non_blocking=True) for t in self.model_config.tasks}
        autocast = (
            torch.autocast(device.type, dtype=setup.amp_dtype)
            if setup.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            outputs = setup.wrapped(images)
        total, per_task = setup.criterion({t: v.float() for t, v in outputs.items()}, targets)
        self._check_finite(per_task, step)
        setup.optimizer.zero_grad(set_to_none=True)
        if setup.scaler is not None:
            setup.scaler.scale(total).backward()
            setup.scaler.unscale_(setup.optimizer)
        else:
            total.backward()
        if self.cfg.clip_grad:
            nn.utils.clip_grad_norm_(setup.model.parameters(), self.cfg.clip_grad)
        if setup.scaler is not None:
            setup.scaler.step(setup.optimizer)
            setup.scaler.update()
        else:
            setup.optimizer.step()
        setup.scheduler.step_update(step + 1)
        return {"loss": total.item(), **{t: v.item() for t, v in per_task.items()}}

    def _check_finite(self, per_task: dict[str, torch.Tensor], step: int) -> None:
        bad = [t for t, v in per_task.items() if not torch.isfinite(v).all()]
        if bad:
            raise TrainingError(
                f"step {step + 1}: the {bad[0]} loss is {per_task[bad[0]].item()} (non-finite); stopped, the last good "
                f"checkpoint is kept in {self.run_dir / 'checkpoints'}; lower the LR or check the {bad[0]} labels"
            )

    def _log_step(self, setup, progress: Progress, losses: dict, images_per_s: float, bar, task_id) -> None:
        lr = setup.optimizer.param_groups[0]["lr"]
        line = step_line(progress.step, setup.total_steps, losses, lr, images_per_s)
        bar.update(task_id, completed=progress.step, status=line.split("  ", 1)[1])
        if progress.step % self.cfg.log_every == 0 and self.context.is_main:
            self.console.print(line, highlight=False, soft_wrap=True)
        if progress.step % self.cfg.log_every == 0 or progress.step == 1:
            self.logger.log(
                {
                    "step": progress.step,
                    "epoch": progress.epoch,
                    "lr": lr,
                    "images_per_s": images_per_s,
                    "train": losses,
                }
            )

    # ---- validation and checkpoints ------------------------------------------------------------------------------
    def _validate(self, setup: TrainSetup, progress: Progress, final: bool = False) -> dict[str, Any]:
        """Score the model on the val split: one log line (the whole table for the ``final`` one); the best
        delta-m so far marks the checkpoint ``best``."""
        result = evaluate_model(setup.model, setup.val_set, self.cfg, self.context)
        delta, baseline = read_delta(result)
        is_best = delta is not None and (progress.best_delta is None or delta > progress.best_delta)
        with deferred_sigint():  # the counters and the log change together
            if is_best:
                progress.best_delta, progress.best_step = delta, progress.step
            record = {"step": progress.step, "epoch": progress.epoch, "val": result["primary"], baseline.key: delta}
            progress.history.append(record)
            self.logger.log({**record, "val_all": result["metrics"]})
            self._best_pending = is_best or progress.best_delta is None
        if self.context.is_main and final:
            self.console.print(metrics_table(result, f"validation @ step {progress.step} (final)"))
        elif self.context.is_main:
            self.console.print(validation_line(result, progress.step, is_best), highlight=False, soft_wrap=True)
        return result

    def _save(self, setup: TrainSetup, progress: Progress) -> None:
        """One atomic commit of last.* (and best.* after a best validation); rank 0 only."""
        if self._committed_step == progress.step and not self._best_pending:
            return
        if self.context.is_main:
            save_training_state(
                self.run_dir,
                setup.model,
                setup.optimizer,
                setup.scheduler,
                setup.scaler,
                progress,
                best=self._best_pending,
            )
        self._best_pending, self._committed_step = False, progress.step

    def _warn(self, message: str) -> None:
        if self.context.is_main:
            self.console.print(f"[yellow]warning:[/] {message}", soft_wrap=True)


def evaluate_model(model: nn.Module, dataset, cfg: TrainConfig, context: DistContext) -> dict[str, Any]:
    """Validation of the plain (unwrapped) model over ``dataset``, sharded over ranks."""
    loader = data_setup.make_loader(
        dataset,
        data_setup.val_sampler(dataset, context),
        cfg.batch_size,
        cfg.num_workers,
        False,
        context.device,
        seed=cfg.seed,
    )
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictor(
            model,
            loader,
            model.config.tasks,
            context.device,
            num_classes=model.config.num_classes or None,
            baselines=as_baseline(cfg.baselines or None, cfg.baseline_name),
            context=context,
        )
    finally:
        model.train(was_training)
