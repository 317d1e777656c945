import io, time, gc
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
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    print(f"{name:30s} {best / n * 1e6:6.2f} us")


M = schema.model


def val():
    for r in raws:
        M.model_validate(r)


t("validate", val)


def fb():
    for r in raws:
        m = object.__new__(Matrix)
        m.array = np.frombuffer(r["rows"], dtype="<f8", offset=8).reshape(4, 20)


t("frombuffer only", fb)


def fb2():
    for r in raws:
        Matrix.from_bytes(r["rows"])


t("from_bytes", fb2)
_set = object.__setattr__


def fast():
    for r in raws:
        d = dict(r)
        d["rows"] = Matrix.from_bytes(d["rows"])
        o = M.__new__(M)
        _set(o, "__dict__", d)
        _set(o, "__pydantic_fields_set__", set(d))
        _set(o, "__pydantic_extra__", None)
        _set(o, "__pydantic_private__", None)
        o._row_times_fit()


t("fast construct", fast)
print(type(M.__dict__.get("_row_times_fit")))
outs = [noop(M.model_validate(r), None) for r in raws]


def dump():
    for o in outs:
        o.model_dump()


t("dump", dump)


def dd():
    for o in outs:
        d = o.__dict__.copy()
        d["rows"] = d["rows"].to_bytes()


t("dict dump", dd)
