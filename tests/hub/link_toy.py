"""A small hand-made, labelled set of enterprise records (records_frame shape) for the
linkage and golden-record tests: typos, abbreviations, old names, missing and mistyped
credit codes, address variants, and look-alike neighbours that must stay apart."""

from __future__ import annotations

import random
from datetime import date

import pandas as pd

from jiedao.hub.standardise import USCC_CHARS, uscc_check_char

COLUMNS = ["record_id", "source_code", "name_norm", "name_core", "credit_code", "reg_no",
           "legal_rep", "phone", "address_norm", "building_code", "street_code",
           "industry_code", "established"]

BRANDS = ["锦绣长江", "汉水明珠", "楚天云帆", "琴台知音", "鹦鹉洲头", "晴川阁远", "龟山翠柏",
          "东湖碧波", "江汉朝阳", "月湖清风", "黄鹤白云", "紫阳春晓", "沙湖鸿雁", "南岸嘉禾",
          "墨水湖畔", "梅子山下", "凤凰台上", "长丰新城", "古琴流水", "归元慧海", "钟家村口",
          "汉阳造物", "知音号角", "龙阳湖光"]
TRADES = ["科技", "贸易", "餐饮管理", "建筑工程", "物业服务", "文化传媒", "医药连锁", "物流",
          "广告设计", "教育咨询", "机电设备", "环保工程"]
ROADS = ["琴台大道", "汉阳大道", "鹦鹉大道", "龙阳大道", "江城大道", "墨水湖北路"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐"
GIVEN = ["伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰",
         "娟", "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英", "华"]
SOURCES = ["SCJG", "SW", "SB", "LY"]  # registry, tax, social insurance, building ledgers


def uscc(n: int) -> str:
    body = "".join(USCC_CHARS[(n // 31 ** i) % 31] for i in range(9))
    code17 = "91420199" + body
    return code17 + uscc_check_char(code17)


def wrong_check(code: str) -> str:
    return code[:17] + USCC_CHARS[(USCC_CHARS.index(code[17]) + 7) % 31]


def _typo(s: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(s))
    return s[:i] + rng.choice("秀汗楚天兴盛华") + s[i + 1:]


def toy_records(seed: int = 7, n_entities: int = 24) -> tuple[pd.DataFrame, dict[int, int]]:
    """(frame, truth record_id → entity number)."""
    rng = random.Random(seed)
    rows: list[dict] = []
    truth: dict[int, int] = {}
    rid = 100
    for e in range(n_entities):
        brand = BRANDS[e % len(BRANDS)]
        trade = TRADES[e % len(TRADES)]
        core = brand + trade
        code = uscc(1000 + e)
        rep = SURNAMES[e % len(SURNAMES)] + GIVEN[e % len(GIVEN)]
        phone = f"027{84000000 + e * 7919:08d}"
        road = ROADS[e % len(ROADS)]
        no = 10 + 2 * e
        building = f"420199{1 + e % 3:03d}{1 + e % 4:03d}{1 + e % 5:03d}{e + 1:03d}"
        addr = f"江城市临江区{road}{no}号"
        est = date(2005 + e % 15, 1 + e % 12, 1 + e % 27)
        base = {"name_norm": "江城" + core + "有限公司", "name_core": core, "credit_code": code,
                "reg_no": None, "legal_rep": rep, "phone": phone, "address_norm": addr,
                "building_code": building, "street_code": building[:9],
                "industry_code": f"{51 + e % 20}", "established": est}
        variants = [dict(base, source_code="SCJG")]
        kind = e % 6
        if kind == 0:  # tax list without the code, a typo in the name
            variants.append(dict(base, source_code="SW", credit_code=None,
                                 name_core=_typo(core, rng),
                                 name_norm="江城" + _typo(core, rng) + "有限公司"))
        elif kind == 1:  # building ledger: abbreviation, no code, address written differently
            short = brand[:2] + trade
            variants.append(dict(base, source_code="LY", credit_code=None, name_core=short,
                                 name_norm=short, address_norm=f"{road}{no}号",
                                 established=None))
        elif kind == 2:  # social insurance: mistyped code (wrong check char), same phone
            variants.append(dict(base, source_code="SB", credit_code=wrong_check(code),
                                 industry_code=None))
        elif kind == 3:  # old name (before renaming) in the building ledger, no code
            old = BRANDS[(e + 11) % len(BRANDS)][:2] + "实业"
            variants.append(dict(base, source_code="LY", credit_code=None, name_core=old,
                                 name_norm="江城" + old + "有限公司"))
        elif kind == 4:  # coded in two sources plus an uncoded, moved address
            variants.append(dict(base, source_code="SW"))
            variants.append(dict(base, source_code="SB", credit_code=None,
                                 address_norm=f"江城市临江区{road}{no + 100}号",
                                 building_code=None))
        # kind 5: a single registry record
        for v in variants:
            rows.append(dict(v, record_id=rid))
            truth[rid] = e
            rid += 1
    # look-alike neighbours: same brand and building as entity 0/1, other trade, own code
    for k, e in enumerate((0, 1)):
        brand = BRANDS[e]
        other = BRANDS[e] + TRADES[(e + 5) % len(TRADES)]
        building = f"420199{1 + e % 3:03d}{1 + e % 4:03d}{1 + e % 5:03d}{e + 1:03d}"
        row = {"record_id": rid, "source_code": "SCJG", "name_norm": "江城" + other + "有限公司",
               "name_core": other, "credit_code": uscc(5000 + k), "reg_no": None,
               "legal_rep": SURNAMES[-1 - k] + GIVEN[-1 - k], "phone": f"02787{k:06d}",
               "address_norm": f"江城市临江区{ROADS[e]}{10 + 2 * e}号", "building_code": building,
               "street_code": building[:9], "industry_code": "70",
               "established": date(2019, 5, 5)}
        rows.append(row)
        truth[rid] = 100 + k
        rid += 1
        del brand
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df, truth
