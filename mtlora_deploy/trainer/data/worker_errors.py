"""User errors raised inside DataLoader workers reach the main process as themselves, not as torch's report.

torch wraps a worker's exception in ``ExceptionWrapper`` and re-raises ``type(exc)(formatted traceback)``: a
one-line :class:`~mtlora_deploy.errors.DataError` turns into 40 lines of "Caught DataError in DataLoader worker
process 0". :class:`GuardedDataset` catches the error in the worker and returns it as a sample;
:func:`guarded_collate` passes it through and :class:`GuardedLoader` raises the original exception object in the
main process, exactly as with ``num_workers=0``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader, Dataset, default_collate

from mtlora_deploy.errors import MTLoRAError


class RaisedInWorker:
    """A user error that happened while reading a sample (pickled back from the worker)."""

    def __init__(self, error: MTLoRAError) -> None:
        self.error = error


class GuardedDataset(Dataset):
    """Forwards to ``dataset``; an MTLoRAError while reading a sample becomes a :class:`RaisedInWorker` item."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except MTLoRAError as exc:
            return RaisedInWorker(exc)

    def __getattr__(self, name: str) -> Any:
        if "dataset" not in self.__dict__:  # during unpickling
            raise AttributeError(name)
        return getattr(self.__dict__["dataset"], name)


def guarded_collate(collate: Callable = default_collate) -> Callable:
    """A collate function that returns the first :class:`RaisedInWorker` of a batch instead of collating it."""

    def collate_fn(samples: list[Any]) -> Any:
        failed = next((s for s in samples if isinstance(s, RaisedInWorker)), None)
        return failed if failed is not None else collate(samples)

    return collate_fn


class GuardedLoader(DataLoader):
    """A DataLoader whose iteration raises a worker's user error as the original exception."""

    def __iter__(self):
        for batch in super().__iter__():
            if isinstance(batch, RaisedInWorker):
                raise batch.error
            yield batch
