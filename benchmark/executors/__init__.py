"""Where shards run. One interface, two executors:

- ``LocalExecutor`` (default): this process, submissions one after another, as `fxbench run` always did.
- ``RayExecutor`` (``--executor ray``, extra ``fxbench[ray]``): Ray tasks on a local or remote cluster; ray is
  imported only when it is asked for.

``run(runs, progress=, on_done=, keep_going=)`` takes checked and planned submissions (``run.PreparedRun``),
runs every battery's shards and finalize in order, saves each shard through the run's ``ShardStore`` (so a run
resumes under either executor), calls ``on_done(run, results, n_run, n_resumed)`` as soon as one submission
is complete (it publishes the result whole) and returns one outcome per run: ``on_done``'s value, or, with
``keep_going``, the ``FxbenchError`` that stopped that submission (without it, the error is raised).
"""

from __future__ import annotations

from typing import Protocol

from .local import LocalExecutor

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    name: str

    def run(self, runs: list, *, progress, on_done, keep_going: bool = False) -> list: ...


def make_executor(name: str, *, address: str | None = None, max_retries: int | None = None,
                  gpus_per_task: float | None = None) -> Executor:
    if name == "local":
        given = [o for o, v in (("--ray-address", address), ("--max-retries", max_retries),
                                ("--ray-gpus-per-task", gpus_per_task)) if v is not None]
        if given:
            from ..errors import FxbenchError

            raise FxbenchError(f"{given[0]} is for --executor ray; the local executor runs in this process.")
        return LocalExecutor()
    if name == "ray":
        from .ray import DEFAULT_MAX_RETRIES, RayExecutor

        return RayExecutor(address=address, max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
                           num_gpus=1 if gpus_per_task is None else gpus_per_task)
    from ..errors import FxbenchError

    raise FxbenchError(f"--executor {name!r}: choose one of {', '.join(EXECUTORS)}.")


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "make_executor"]
