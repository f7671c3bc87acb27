"""Case analysis: latency of one appeal's analysis and the quality figures on the demo year.

1. Latency (in process, SQLite): ``Analyzer.analyse`` on real appeals of the demo year —
   category + urgency + place + duplicate check (the indexed candidate query against cases
   already in the database) + event write + dispatch suggestion; p50 and p99 of the wall
   time after a short warm-up, and of the CPU time of the analysing thread (which a busy
   machine inflates far less), with the load average of the run.
2. Quality against the generator's truth (``jiedao.demo.appeals``, see its docstring):
   category macro-F1 on the held-out 20 % with a classifier trained on the other 80 %;
   right grid for held-out appeals that name a place (and the share placed in a WRONG grid,
   which should be ~0: unsure places are asked, not guessed); duplicate precision / recall
   over same-event pairs for the whole year, with the in-memory duplicate index and, as in
   the replay, the place an operator confirms by asking the caller back when the card asks
   for it (``Appeal.asked_place``, :func:`jiedao.cases.place.confirm_place`).

The full run builds the full demo district in a temporary SQLite file; ``--quick`` uses the
small one.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from types import SimpleNamespace


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _pairs(counter: Counter) -> int:
    return sum(n * (n - 1) // 2 for n in counter.values())


def run(quick: bool = False) -> list[dict]:
    tmp = tempfile.TemporaryDirectory()
    os.environ.setdefault("JIEDAO_HOME", tmp.name)
    os.environ.setdefault("JIEDAO_SECRET_KEY", "bench-secret")
    from sqlalchemy import insert

    from jiedao.cases.analysis.analyzer import Analyzer
    from jiedao.cases.analysis.classifier import train
    from jiedao.cases.analysis.training import evaluate
    from jiedao.cases.models import Case
    from jiedao.cases.runtime import build_pipeline
    from jiedao.catalog.loader import load_catalog
    from jiedao.db import Database
    from jiedao.demo.appeals import Places, generate_appeals
    from jiedao.demo.build import build_demo

    scale = "small" if quick else "full"
    t0 = time.perf_counter()
    db = Database(f"sqlite:///{tmp.name}/bench.sqlite")
    db.upgrade()
    from jiedao.demo import build
    build.DB_STAGES = [st for st in build.DB_STAGES if st[0] in ("catalog", "users")]  # no replay, no hub
    build_demo(db, small=quick, progress=False)
    catalog = load_catalog()
    with db.session() as s:
        places = Places.from_session(s)
    appeals = list(generate_appeals(places, catalog, scale=scale))
    print(f"  demo ({scale}) built and {len(appeals)} appeals generated in {time.perf_counter() - t0:.0f} s")

    # -- classifier on the 80 %
    t0 = time.perf_counter()
    train_rows = [(a.text, a.matter_code) for a in appeals if not a.held_out]
    test = [a for a in appeals if a.held_out]
    clf = train(train_rows, catalog, seed=0)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = evaluate(clf, [(a.text, a.matter_code) for a in test])
    print(f"  trained on {len(train_rows)} rows in {train_s:.0f} s; held-out {len(test)}: "
          f"accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
          f"({time.perf_counter() - t0:.0f} s)")
    pipeline = build_pipeline(db, classifier=clf)
    analyzer = pipeline.analyzer
    locator = analyzer.locator

    # -- right grid on held-out appeals that name a place
    named = [a for a in test if a.names_place]
    right = wrong = 0
    by_kind: Counter = Counter()
    miss_kind: Counter = Counter()
    for a in named:
        loc = locator.locate(a.text, location_text=a.location_text).location
        by_kind[a.place_kind] += 1
        if loc.grid_code == a.grid_code:
            right += 1
        else:
            miss_kind[a.place_kind] += 1
            wrong += loc.grid_code is not None
    right_rate = right / max(len(named), 1)
    print(f"  place: {right}/{len(named)} right grid, {wrong} wrong grid; misses by kind "
          f"{dict(miss_kind)} of {dict(by_kind)}")

    # -- duplicates over the whole year (in memory, predicted category and place)
    t0 = time.perf_counter()
    mem = Analyzer(catalog, clf, locator.resolver, locator.grid_index, pipeline.dispatcher,
                   locator=locator, in_memory_duplicates=True)
    cats = clf.classify_many([a.text for a in appeals])
    pred_event: list[int | None] = []
    asked = 0
    for i, (a, cat) in enumerate(zip(appeals, cats, strict=True)):
        where = locator.locate(a.text, location_text=a.location_text)
        loc = where.location
        card = mem._card(cat, a.text, where)
        if card.asks_for_place and a.asked_place:
            # the operator asks the caller back where (核实地点), as the replay does
            confirmed = mem.confirm_place(cat, a.text, a.asked_place)
            if confirmed is not None:
                loc, asked = confirmed.location, asked + 1
        ev, _, _ = mem.duplicates.assign_event(None, case_id=i, matter=cat.matter_code, loc=loc,
                                               text=a.text, at=a.received_at, caller_key=a.caller_key)
        pred_event.append(ev)
    joint: Counter = Counter()
    pred_c: Counter = Counter()
    true_c: Counter = Counter()
    for a, ev in zip(appeals, pred_event, strict=True):
        pe = ev if ev is not None else ("single", a.seq)
        te = a.event if a.event is not None else ("single", a.seq)
        pred_c[pe] += 1
        true_c[te] += 1
        joint[(pe, te)] += 1
    tp = _pairs(joint)
    precision = tp / max(_pairs(pred_c), 1)
    recall = tp / max(_pairs(true_c), 1)
    print(f"  duplicates: {_pairs(pred_c)} predicted pairs, {_pairs(true_c)} true pairs, {tp} right "
          f"({asked} places confirmed by asking the caller back; {time.perf_counter() - t0:.0f} s for the year)")

    # -- latency of analyse() against a database holding the year so far
    n_lat = 300 if quick else 3000
    split = len(appeals) // 2
    history = appeals[max(0, split - (2000 if quick else 30000)):split]
    with db.session() as s:
        rows = []
        for a in history:
            rows.append(dict(code=f"B{a.seq:010d}", channel="hotline", kind="appeal", title=a.text[:60],
                             text=a.text, location_text=a.location_text, address_code=a.address_code,
                             grid_code=a.grid_code, community_code=a.community_code,
                             street_code=a.street_code, matter_code=a.matter_code, urgency=a.urgency,
                             state="dispatched", version=1, supervised=False, reopen_count=0,
                             repeat_caller=False, created_by="bench", received_at=a.received_at,
                             updated_at=a.received_at))
        for i in range(0, len(rows), 2000):
            s.execute(insert(Case), rows[i:i + 2000])
    lat: list[float] = []
    cpu: list[float] = []
    load0 = os.getloadavg()[0]
    with db.session() as s:
        for a in appeals[split - 50:split]:  # warm-up: caches, prepared statements
            analyzer.analyse(s, SimpleNamespace(id=None, text=a.text, location_text=a.location_text,
                                                lon=None, lat=None, received_at=a.received_at,
                                                caller_id=None))
        for a in appeals[split:split + n_lat]:
            case = SimpleNamespace(id=None, text=a.text, location_text=a.location_text, lon=None,
                                   lat=None, received_at=a.received_at, caller_id=None)
            t, c = time.perf_counter(), time.process_time()
            analyzer.analyse(s, case)
            s.flush()
            lat.append((time.perf_counter() - t) * 1000)
            cpu.append((time.process_time() - c) * 1000)
        s.rollback()
    load = (load0 + os.getloadavg()[0]) / 2
    p50, p99 = statistics.median(lat), _pct(lat, 0.99)
    # CPU time of the analysing thread: what the analysis costs, whatever else runs
    c50, c99 = statistics.median(cpu), _pct(cpu, 0.99)
    print(f"  latency over {len(lat)} appeals with {len(history)} cases in the database: "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (CPU p50 {c50:.2f} ms, p99 {c99:.2f} ms; "
          f"load average {load:.1f})")
    tmp.cleanup()
    return [
        {"name": "analysis latency p50", "value": round(p50, 3), "unit": "ms", "target": 5.0, "better": "lower"},
        {"name": "analysis latency p99", "value": round(p99, 3), "unit": "ms", "target": 20.0, "better": "lower"},
        {"name": "analysis CPU p50", "value": round(c50, 3), "unit": "ms", "target": None, "better": "lower"},
        {"name": "analysis CPU p99", "value": round(c99, 3), "unit": "ms", "target": None, "better": "lower"},
        {"name": "load average during the latency run", "value": round(load, 1), "unit": "",
         "target": None, "better": "lower"},
        {"name": f"category macro-F1 (held-out 20%, {scale})", "value": round(metrics["macro_f1"], 4),
         "unit": "", "target": 0.95, "better": "higher"},
        {"name": "category accuracy (held-out 20%)", "value": round(metrics["accuracy"], 4), "unit": "",
         "target": None, "better": "higher"},
        {"name": "right grid (held-out, place named)", "value": round(right_rate, 4), "unit": "",
         "target": 0.98, "better": "higher"},
        {"name": "wrong grid (held-out, place named)", "value": round(wrong / max(len(named), 1), 4),
         "unit": "", "target": None, "better": "lower"},
        {"name": "duplicate precision (pairs)", "value": round(precision, 4), "unit": "", "target": 0.95,
         "better": "higher"},
        {"name": "duplicate recall (pairs)", "value": round(recall, 4), "unit": "", "target": 0.90,
         "better": "higher"},
        {"name": "classifier training (80% of the year)", "value": round(train_s, 1), "unit": "s",
         "target": None, "better": "lower"},
    ]


if __name__ == "__main__":
    for fig in run(quick="--quick" in sys.argv):
        print(fig)
