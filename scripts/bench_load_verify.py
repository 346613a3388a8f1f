"""Cost of verifying a dataset at load time, as a ratio of the load itself (issue 12).

    python scripts/bench_load_verify.py [--data DIR]   # default: the prepared dataset, else the embedded subset

Times one `load_arrays` (which now verifies) and the two verification steps on their own, in one process.
"""

from __future__ import annotations

import argparse
import time
import warnings

from fxbench.data import _open, _rows_of, load_arrays, resolve_data, verify_fingerprint, verify_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    src = resolve_data(args.data)
    t0 = time.perf_counter()
    es = load_arrays(args.data)
    t_load = time.perf_counter() - t0
    ds = _open(src)
    table = ds.select(_rows_of(ds, src, "eval"), keep_in_memory=True).to_pandas()
    images = (es.x.squeeze(1).numpy() * 255).round().astype("uint8")
    masks = es.masks.squeeze(1).numpy().astype("uint8") * 255
    t0 = time.perf_counter()
    verify_rows(table, images, masks, src)
    t_rows = time.perf_counter() - t0
    t0 = time.perf_counter()
    verify_fingerprint(ds, src)
    t_fp = time.perf_counter() - t0
    print(f"{src.name}: {len(es)} eval images, {len(ds)} rows")
    print(f"load_arrays (verifying) {t_load:.3f} s; row digests {t_rows:.3f} s; fingerprint {t_fp:.3f} s; "
          f"verification = {(t_rows + t_fp) / t_load:.1%} of the load")


if __name__ == "__main__":
    main()
