import io, time
import numpy as np
from driftline.events import Codec
from driftline.events.matrix import Matrix
from fastavro import schemaless_reader
from tests.bench.runner_overhead import _event, noop

codec = Codec()
n = 20000
records = [codec.encode(_event(i), id=f"id-{i}") for i in range(n)]
schema = codec._current["score.requested"]
raws = []
for v, h in records:
    b = io.BytesIO(v)
    b.seek(10)
    raws.append(schemaless_reader(b, schema.parsed, None))


def t(name, fn):
    best = 9
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{name:30s} {best / n * 1e6:6.2f} us")


t("validate", lambda: [schema.model.model_validate(r) for r in raws])
nor = [{k: v for k, v in r.items() if k != "rows"} for r in raws]
M = Matrix([[1.0] * 20] * 4)
for r in nor:
    r["rows"] = M
t("validate rows premade", lambda: [schema.model.model_validate(r) for r in nor])
t("Matrix.from_bytes", lambda: [Matrix.from_bytes(r["rows"]) for r in raws])


def fb():
    for r in raws:
        m = object.__new__(Matrix)
        m.array = np.frombuffer(r["rows"], dtype="<f8", offset=8).reshape(4, 20)


t("frombuffer only", fb)
t("construct", lambda: [schema.model.model_construct(**r) for r in nor])
outs = [noop(e, None) for e in [schema.model.model_validate(r) for r in raws]]
t("dump", lambda: [o.model_dump() for o in outs])
t("to_bytes", lambda: [o.rows.to_bytes() for o in outs])
