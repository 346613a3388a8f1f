"""The default executor: every shard in this process, submissions one after another."""

from __future__ import annotations

from ..errors import FxbenchError
from . import shard


class LocalExecutor:
    name = "local"

    def run(self, runs: list, *, progress, on_done, keep_going: bool = False) -> list:
        outcomes = []
        for prep in runs:
            shown = progress
            if len(runs) > 1:  # one bar over every submission: say whose shard finished
                label = f"{prep.sub.spec.id} "
                shown = type(progress)(start=progress.start, note=progress.note,
                                       advance=lambda b, k, r, label=label: progress.advance(label + b, k, r))
            try:
                results, n_run, n_resumed = shard.run_in_process(prep, progress=shown)
                outcomes.append(on_done(prep, results, n_run, n_resumed))
            except FxbenchError as e:
                if not keep_going:
                    raise
                outcomes.append(e)
        return outcomes
