"""How fast ``driftline replay`` pushes rows through the whole loop on the embedded bus.

    python -m tests.bench.replay_speed [--rows 80000] [--stream friedman-stationary]
        [--batch-minutes 1440 [0 ...]]

A synthetic stream (``tests.bench.streams``) of ``--rows`` rows over 140 days goes through
:func:`driftline.runtime.replay.run.replay` with the default policy, in a temporary home,
once per ``--batch-minutes`` value (1440, the replay's default: a day of rows per scoring
request; 0: one request per row).
Training v1 and settling are part of the time, as a user would wait for them. The last line
printed is JSON: ``rows``, ``wall_s``, ``rows_per_s`` (rows replayed after v1's window per
second of the whole run) and the summary's retrains and drift events, so that two runs of
different code can be checked for the same results.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.bench.streams import STREAMS, Shape, make


def run(rows: int, stream: str, seed: int, batch_minutes: float) -> dict[str, object]:
    from driftline.runtime.replay.run import replay
    from driftline.runtime.settings import Settings

    shape = Shape(every_minutes=Shape().days * 24 * 60 / rows)
    with tempfile.TemporaryDirectory(prefix="replay-speed-") as tmp:
        folder = Path(tmp)
        data, spec = make(stream, seed, shape).write(folder)
        started = time.monotonic()
        summary = replay(
            data,
            spec,
            Settings(home=folder / "home"),
            out=folder / "out",
            progress=False,
            batch_minutes=batch_minutes,
        )
        wall = time.monotonic() - started
    return {
        "stream": stream,
        "batch_minutes": batch_minutes,
        "rows": summary["rows"],
        "wall_s": round(wall, 1),
        "rows_per_s": round(summary["rows"] / wall),
        "retrains": summary["retrains"],
        "drift_events": summary["drift_events"],
        "served": summary["served"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=80_000, help="rows in the whole stream")
    parser.add_argument("--stream", default="friedman-stationary", choices=sorted(STREAMS))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch-minutes", type=float, nargs="+", default=[1440.0, 0.0])
    args = parser.parse_args(argv)
    runs = [run(args.rows, args.stream, args.seed, m) for m in args.batch_minutes]
    for r in runs:
        print(json.dumps(r))
    first, *others = runs
    print(
        json.dumps(
            {
                "rows_per_s": first["rows_per_s"],
                "vs": {
                    str(r["batch_minutes"]): round(first["rows_per_s"] / r["rows_per_s"], 2)  # type: ignore[operator]
                    for r in others
                },
            }
        )
    )


if __name__ == "__main__":
    main()
