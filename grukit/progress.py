"""The deploy pipeline's stages on the terminal: each timed, with a rich progress bar on stderr."""

from __future__ import annotations

import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class Stages:
    """Times each stage, records its status and shows it as a progress bar on stderr (rich)."""

    def __init__(self, show: bool):
        self.records: list[dict] = []
        self._progress = None
        if show:
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      TimeElapsedColumn(), console=Console(stderr=True))

    def __enter__(self):
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()

    @contextmanager
    def run(self, name: str, total: int = 1):
        """Time the block; it gets a record dict (set "detail", "status") and may call record["advance"]()
        once per unit of ``total``."""
        record = {"name": name, "seconds": 0.0, "status": "ok", "detail": ""}
        task = None if self._progress is None else self._progress.add_task(name, total=total)
        record["advance"] = (lambda what="": None) if task is None else (
            lambda what="": self._progress.update(task, advance=1, description=f"{name}: {what}" if what else name))
        start = time.perf_counter()
        try:
            yield record
        except BaseException:
            record["status"] = "failed"
            raise
        finally:
            record.pop("advance")
            record["seconds"] = time.perf_counter() - start
            self.records.append(record)
            if task is not None:
                mark = {"ok": "[green]ok[/]", "failed": "[red]failed[/]"}.get(record["status"], f"[yellow]{record['status']}[/]")
                detail = f"  [dim]{record['detail']}[/]" if record["detail"] else ""
                self._progress.update(task, completed=total, description=f"{name}: {mark}{detail}")
