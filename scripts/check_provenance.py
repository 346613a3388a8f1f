"""CI helper (.github/workflows/leaderboard.yml): check stored results against their workflow artifacts.

    python scripts/check_provenance.py run-id RESULT_JSON            # prints the run id the result names
    python scripts/check_provenance.py check RESULT_JSON ARTIFACT_DIR REPOSITORY

Exit 0 when the stored files equal the artifact byte for byte, 2 with the reason otherwise.
"""

from __future__ import annotations

import sys

from fxbench.errors import FxbenchError
from fxbench.leaderboard.provenance import check_provenance, recorded_run


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["run-id"] and len(argv) == 2:
            print(recorded_run(argv[1])[1])
        elif argv[:1] == ["check"] and len(argv) == 4:
            p = check_provenance(argv[1], argv[2], repository=argv[3])
            print(f"{p.submission_id}: identical to the artifact of run {p.run_id} ({len(p.sha256)} files)")
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except FxbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
