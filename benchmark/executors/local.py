"""The default executor: every shard in this process, submissions one after another."""

from __future__ import annotations

from ..errors import FxbenchError


class LocalExecutor:
    name = "local"

    def run(self, runs: list, *, progress, on_done, keep_going: bool = False) -> list:
        from ..models import strict_fp32
        from ..run import Progress, _run_batteries

        outcomes = []
        for prep in runs:
            shown = progress
            if len(runs) > 1:  # one bar over every submission: say whose shard finished
                label = f"{prep.sub.spec.id} "
                shown = Progress(start=progress.start, note=progress.note,
                                 advance=lambda b, k, r, label=label: progress.advance(label + b, k, r))
            try:
                with strict_fp32():  # float32 evaluation: TF32 would make logits depend on batch composition
                    results, n_run, n_resumed = _run_batteries(prep.plan, model=prep.sub.model,
                                                               evalset=prep.evalset, store=prep.store,
                                                               ctx=prep.ctx, progress=shown, sub=prep.sub)
                outcomes.append(on_done(prep, results, n_run, n_resumed))
            except FxbenchError as e:
                if not keep_going:
                    raise
                outcomes.append(e)
        return outcomes
