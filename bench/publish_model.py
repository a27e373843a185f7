"""How long ``modelserve publish`` takes for a realistic model: target ≤ 30 s.

    python -m bench.publish_model                       # 200-tree GBM, 10 features, 5,000 held-out rows
    python -m bench.publish_model --trees 400 --rows 20000

Fits a ``GradientBoostingClassifier`` (not timed) on synthetic rows with
eight numeric features and two string ones, then times ``publish()`` end to
end — reading the pickle and the Parquet file, conversion, the parity gate
on every held-out row, metrics, writing — in this process, as the CLI runs
it. Prints PASS / FAIL against the target; it does not fail the command.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

TARGET_SECONDS = 30.0


def rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(8)})
    frame["x7"] = rng.integers(0, 100, n)
    frame["plan"] = rng.choice(["basic", "pro", "team"], n)
    frame["device"] = rng.choice(["ios", "android", "web"], n)
    logit = frame["x0"] - 0.5 * frame["x1"] * frame["x2"] + (frame["plan"] == "pro") + 0.01 * frame["x7"] - 0.5
    frame["y"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--rows", type=int, default=5000, help="held-out rows")
    args = parser.parse_args()
    train, holdout = rows(5000, 1), rows(args.rows, 2)
    numeric = [f"x{i}" for i in range(8)]
    pipeline = Pipeline(
        [
            ("pre", ColumnTransformer([("num", "passthrough", numeric), ("cat", OneHotEncoder(), ["plan", "device"])])),
            ("model", GradientBoostingClassifier(n_estimators=args.trees, max_depth=3, random_state=0)),
        ]
    ).fit(train.drop(columns="y"), train["y"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        joblib.dump(pipeline, root / "pipeline.joblib")
        holdout.to_parquet(root / "holdout.parquet")
        started = time.perf_counter()
        from app.publish import publish  # imported here so its import time is counted

        summary = publish(
            root / "pipeline.joblib", data=root / "holdout.parquet", target="y", version="v1", models_dir=root / "m"
        )
        seconds = time.perf_counter() - started
    print(summary)
    verdict = "PASS" if seconds <= TARGET_SECONDS else "FAIL"
    print(f"{verdict}: published a {args.trees}-tree GBM, 10 features, {args.rows} held-out rows in {seconds:.1f} s")


if __name__ == "__main__":
    main()
