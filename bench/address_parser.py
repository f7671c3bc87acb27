"""Address parser accuracy on the demo district's standard addresses.

Every standard address (geo_address) is parsed from its canonical text and from randomly
varied renderings (full-width digits, Chinese numerals, 幢/座/号楼, spaces, with or without
the city and district, 附 door numbers); a case counts only when every part
(road, number, compound, building) comes back exactly. Measured for the plain parser and
for the parser with the database's road/compound dictionaries.
"""

from __future__ import annotations

import random
import time

FW = str.maketrans("0123456789", "０１２３４５６７８９")
CN = "零一二三四五六七八九"
PARTS = ("road", "number", "compound", "building_no")


def _cn(n: int) -> str:
    if n < 10:
        return CN[n]
    if n < 20:
        return "十" + (CN[n % 10] if n % 10 else "")
    if n < 100:
        return CN[n // 10] + "十" + (CN[n % 10] if n % 10 else "")
    return "".join(CN[int(c)] for c in str(n))  # 一二八: read digit by digit


def _num(rng: random.Random, s: str) -> str:
    style = rng.choice(("arabic", "full", "cn"))
    if style == "full":
        return s.translate(FW)
    if style == "cn" and s.isdigit():
        return _cn(int(s))
    return s


def vary(rng: random.Random, a: dict, city: str, district: str) -> str:
    """A human rendering of one address's parts."""
    sep = lambda: rng.choice(("", "", " ", "\u3000"))  # noqa: E731
    out = []
    if rng.random() < 0.5:
        out += [city, sep(), district, sep()]
    elif rng.random() < 0.5:
        out += [district, sep()]
    main, _, annex = a["number"].partition("-")
    out += [a["road"], _num(rng, main), "号"]
    if annex:
        out.append(rng.choice(("附{}号", "之{}号", "-{}号")).format(_num(rng, annex)))
    out.append(sep())
    if a["compound"]:
        out += [a["compound"], sep()]
    if a["building_no"]:
        out += [_num(rng, a["building_no"]), rng.choice(("栋", "幢", "座", "号楼")), sep()]
    if rng.random() < 0.3:
        out += [_num(rng, str(rng.randint(1, 6))), "单元", str(rng.randint(1, 30)), "0",
                str(rng.randint(1, 4)), rng.choice(("室", ""))]
    return "".join(out)


def _accuracy(parser, cases: list[tuple[str, dict]]) -> tuple[float, float, list]:
    from jiedao.geo.address import parse_address

    ok, misses = 0, []
    t0 = time.perf_counter()
    for text, want in cases:
        got = parse_address(text, parser)
        if all(getattr(got, k) == want[k] for k in PARTS):
            ok += 1
        elif len(misses) < 10:
            misses.append((text, {k: getattr(got, k) for k in PARTS}))
    dt = time.perf_counter() - t0
    return ok / max(len(cases), 1), dt / max(len(cases), 1) * 1e6, misses


def evaluate(session, quick: bool = False, seed: int = 7) -> dict:
    """Accuracy figures and a few misses, for the bench and for a note."""
    from sqlalchemy import select

    from jiedao.geo.address import AddressParser
    from jiedao.geo.models import Address, District

    rows = [dict(full=f, road=r, number=n, compound=c, building_no=b) for f, r, n, c, b in
            session.execute(select(Address.full, Address.road, Address.number, Address.compound,
                                   Address.building_no).order_by(Address.code))]
    if not rows:
        raise RuntimeError("数据库中没有标准地址，请先运行 jiedao demo")
    city, district = session.execute(select(District.city, District.name)).first()
    rng = random.Random(seed)
    if quick:
        rows = rng.sample(rows, min(len(rows), 2000))
    canonical = [(a["full"], a) for a in rows]
    varied = [(vary(rng, a, city, district), a) for a in rows]
    plain = AddressParser()
    with_dict = AddressParser.from_session(session)
    out = {"addresses": len(rows)}
    for label, parser in (("plain", plain), ("dictionary", with_dict)):
        for kind, cases in (("canonical", canonical), ("varied", varied)):
            acc, us, misses = _accuracy(parser, cases)
            out[f"{label}.{kind}"] = {"accuracy": acc, "us_per_address": us, "misses": misses}
    return out


def run(quick: bool = False) -> list[dict]:
    from jiedao.db import get_database

    with get_database().session() as s:
        res = evaluate(s, quick=quick)
    figs = []
    for key in ("plain.canonical", "plain.varied", "dictionary.canonical", "dictionary.varied"):
        figs.append({"name": f"address parser accuracy ({key}, n={res['addresses']})",
                     "value": round(res[key]["accuracy"], 4), "unit": "ratio", "target": 0.98,
                     "better": "higher"})
    figs.append({"name": "address parse time (plain, varied)",
                 "value": round(res["plain.varied"]["us_per_address"], 1), "unit": "µs/address",
                 "target": None, "better": "lower"})
    return figs


if __name__ == "__main__":
    import json

    from jiedao.db import get_database

    with get_database().session() as s:
        print(json.dumps(evaluate(s), ensure_ascii=False, indent=1))
