"""Standardisation: credit codes, registration numbers, names, phones, dates, industry codes,
addresses; hypothesis properties for the check digit, idempotence, round trips and
"never raises"."""

from __future__ import annotations

import sys
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from hub_testkit import MAPPING, bad_check, uscc  # noqa: E402

from jiedao.hub.sources import Mapping  # noqa: E402
from jiedao.hub.standardise import (  # noqa: E402
    EXCEL_EPOCH,
    USCC_CHARS,
    NameStandardiser,
    Standardiser,
    branch_suffix,
    normalise_name,
    parse_credit_code,
    parse_date,
    parse_industry,
    parse_number,
    parse_phone,
    reg_no_check_digit,
    reg_no_valid,
    standardise_record,
    uscc_check_char,
    uscc_valid,
)

# -------------------------------------------------------------------- credit codes


def test_known_credit_codes():
    # check characters computed by hand from GB 32100-2015 weights
    assert uscc_valid("91350100M000100Y43")
    code = uscc(12345)
    assert uscc_valid(code)
    assert not uscc_valid(code.lower())  # validation wants upper case; the parser upper-cases
    assert parse_credit_code(code.lower()).credit_code == code
    assert parse_credit_code(f" {code[:6]} {code[6:]} ").credit_code == code
    assert not uscc_valid(code[:17])
    assert not uscc_valid(None)


def test_wrong_check_digit_is_reported_and_blanked():
    r = parse_credit_code(bad_check(uscc(7)))
    assert r.credit_code is None and "校验位错误" in r.problem


def test_letters_o_and_i_are_reported():
    code = uscc(1)  # body of digits/letters, contains 0 and 1
    assert "0" in code
    written = code[:-1].replace("0", "O", 1) + code[-1]
    r = parse_credit_code(written)
    assert "O" in r.problem and "不允许" in r.problem
    assert r.credit_code == code  # read as digits it validates, and the fix is reported
    r = parse_credit_code("91420199MA4KSV0000")  # S and V are not allowed either
    assert r.credit_code is None and "不允许" in r.problem


def test_old_registration_number():
    body = "42019900001234"
    reg = body + reg_no_check_digit(body)
    assert reg_no_valid(reg)
    r = parse_credit_code(reg)  # a 15-digit number in the credit-code column
    assert r.reg_no == reg and r.credit_code is None and r.problem is None
    wrong = reg[:14] + str((int(reg[14]) + 1) % 10)
    assert not reg_no_valid(wrong)
    assert "注册号" in parse_credit_code(wrong).problem
    assert "18位" in parse_credit_code("12345").problem


uscc17 = st.text(alphabet=USCC_CHARS, min_size=17, max_size=17)


@given(uscc17)
def test_generated_code_validates(body):
    assert uscc_valid(body + uscc_check_char(body))


@given(uscc17, st.integers(0, 17), st.sampled_from(USCC_CHARS))
def test_any_single_character_change_is_detected(body, pos, ch):
    code = body + uscc_check_char(body)
    if code[pos] == ch:
        return
    changed = code[:pos] + ch + code[pos + 1:]
    assert not uscc_valid(changed)


@given(st.text(alphabet="0123456789", min_size=14, max_size=14), st.integers(0, 14),
       st.integers(1, 9))
def test_reg_no_single_digit_change_is_detected(body, pos, delta):
    code = body + reg_no_check_digit(body)
    assert reg_no_valid(code)
    changed = code[:pos] + str((int(code[pos]) + delta) % 10) + code[pos + 1:]
    assert not reg_no_valid(changed)


# -------------------------------------------------------------------- names


@pytest.mark.parametrize("written,norm", [
    ("江城鑫华科技有限责任公司", "江城鑫华科技有限公司"),
    ("江城鑫华科技股份有限公司", "江城鑫华科技有限公司"),
    ("鑫华(江城)科技 有限公司", "鑫华（江城）科技有限公司"),
    ("鑫华（江城）科技有限公司", "鑫华（江城）科技有限公司"),
    ("ＡＢＣ　科技有限公司", "ABC科技有限公司"),
    ("abc科技有限公司", "ABC科技有限公司"),
])
def test_normalise_name(written, norm):
    assert normalise_name(written) == norm


@pytest.mark.parametrize("name,core", [
    ("湖北省江城市临江区鑫华网络科技有限责任公司", "鑫华网络科技"),
    ("江城鑫华网络科技有限公司", "鑫华网络科技"),
    ("鑫华（江城）网络科技有限公司", "鑫华网络科技"),
    ("鑫华网络科技有限公司", "鑫华网络科技"),
    ("临江区张记面馆", "张记面馆"),
    ("江城市政工程有限公司", "市政工程"),  # 江城 + 市政, not 江城市 + 政工程
    ("江城鑫华科技有限公司临江分公司", "鑫华科技临江分公司"),
])
def test_name_core(name, core):
    assert NameStandardiser().core(name) == core


def test_branch_flag():
    assert branch_suffix(normalise_name("江城鑫华科技有限公司临江分公司")) == "分公司"
    assert branch_suffix(normalise_name("张记面馆琴台分店")) == "分店"
    assert branch_suffix(normalise_name("鑫华证券有限公司江城营业部")) == "营业部"
    assert branch_suffix("鑫华科技有限公司") is None
    std, _ = standardise_record({"企业名称": "江城鑫华科技有限公司临江分公司"}, Mapping.from_dict(MAPPING))
    assert std["extra"]["branch"] is True


@given(st.text(max_size=40))
def test_name_normalisation_is_idempotent(text):
    once = normalise_name(text)
    assert normalise_name(once) == once


@given(st.text(alphabet="江城临江区湖北省市鑫华科技有限责任股份公司()（） 分店ＡB", max_size=30))
def test_name_core_never_raises_and_core_of_norm_is_core(text):
    ns = NameStandardiser()
    assert ns.core(normalise_name(text)) == ns.core(text)


# -------------------------------------------------------------------- phones


@pytest.mark.parametrize("written,phone", [
    ("13812345678", "13812345678"),
    ("138-1234-5678", "13812345678"),
    ("+86 138 1234 5678", "13812345678"),
    ("0086-13812345678", "13812345678"),
    ("8613812345678", "13812345678"),
    ("027-88886666", "027-88886666"),
    ("(027)88886666", "027-88886666"),
    ("02788886666", "027-88886666"),
    ("0710-3456789", "0710-3456789"),
    ("027-88886666转123", "027-88886666-123"),
    ("88886666", "88886666"),
    (13812345678.0, "13812345678"),
])
def test_phones(written, phone):
    assert parse_phone(written)[0] == phone


def test_several_phones_and_bad_phone():
    first, others, problem = parse_phone("13812345678/027-88886666")
    assert first == "13812345678" and others == ["027-88886666"] and problem is None
    assert parse_phone("1234")[2]
    assert parse_phone("")[0] is None and parse_phone("")[2] is None


# -------------------------------------------------------------------- dates

FORMATS = ("%Y-%m-%d", "{y}/{m}/{d}", "%Y年%m月%d日", "{y}年{m}月{d}日", "%Y%m%d", "%Y.%m.%d",
           "%Y/%m/%d")


def _fmt(d: date, f: str) -> str:
    if "{" in f:
        return f.format(y=d.year, m=d.month, d=d.day)
    return d.strftime(f)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)),
       st.sampled_from(FORMATS))
def test_date_round_trip(d, f):
    assert parse_date(_fmt(d, f)) == (d, None)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)))
def test_excel_serial_round_trip(d):
    serial = (d - EXCEL_EPOCH).days
    assert parse_date(serial) == (d, None)
    assert parse_date(float(serial)) == (d, None)
    assert parse_date(str(serial)) == (d, None)


def test_dates_misc():
    assert parse_date(datetime(2020, 5, 6, 7, 8)) == (date(2020, 5, 6), None)
    assert parse_date("2020-05-06 12:30:00")[0] == date(2020, 5, 6)
    assert parse_date("202005", ["%Y%m"])[0] == date(2020, 5, 1)
    assert parse_date(43831)[0] == date(2020, 1, 1)
    assert "不存在" in parse_date("2021-02-29")[1]
    assert "无法识别" in parse_date("去年三月")[1]
    assert parse_date(None) == (None, None)


# -------------------------------------------------------------------- industry and numbers


def test_industry_codes():
    assert parse_industry("I6513") == ("I6513", None)
    assert parse_industry("i 6513") == ("I6513", None)
    assert parse_industry("6513") == ("I6513", None)  # the section letter is added
    assert parse_industry("C") == ("C", None)
    assert parse_industry("F51") == ("F51", None)
    assert "不符" in parse_industry("C6513")[1]
    assert "格式" in parse_industry("软件")[1]
    assert parse_industry("99")[1]  # there is no division 99


def test_numbers():
    assert parse_number("1,234.5") == (1234.5, None)
    assert parse_number("12万") == (120000.0, None)
    assert parse_number(3) == (3.0, None)
    assert parse_number("很多")[1]


# -------------------------------------------------------------------- never raises

anything = st.one_of(st.none(), st.text(max_size=30), st.integers(), st.floats(allow_nan=True),
                     st.booleans(), st.dates(), st.datetimes(), st.binary(max_size=8),
                     st.decimals(allow_nan=True))


@settings(max_examples=300, deadline=None)
@given(anything)
def test_parsers_never_raise(value):
    for fn in (parse_credit_code, parse_phone, parse_date, parse_industry, parse_number,
               normalise_name, NameStandardiser().core, uscc_valid, reg_no_valid):
        fn(value)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(list(MAPPING["columns"]) + ["其他"]), anything, max_size=12))
def test_standardise_record_never_raises(raw):
    std, problems = standardise_record(raw, Mapping.from_dict(MAPPING))
    assert set(std) >= {"name", "name_norm", "credit_code", "established", "extra"}
    for p in problems:
        assert p.field and p.reason


def test_standardise_record_fields():
    raw = {"企业名称": "湖北省江城市鑫华科技有限责任公司", "统一社会信用代码": uscc(3).lower(),
           "法定代表人": " 张三 ", "联系电话": "+86 13812345678", "住所": "江城市临江区琴台大道88号",
           "行业代码": "6513", "成立日期": "2015年3月5日", "登记状态": "存续", "注册资本（万元）": "1,000"}
    std, problems = standardise_record(raw, Mapping.from_dict(MAPPING))
    assert problems == []
    assert std["name_norm"] == "湖北省江城市鑫华科技有限公司"
    assert std["name_core"] == "鑫华科技"
    assert std["credit_code"] == uscc(3)
    assert std["legal_rep"] == "张三" and std["phone"] == "13812345678"
    assert std["industry_code"] == "I6513" and std["established"] == date(2015, 3, 5)
    assert std["extra"]["registered_capital"] == 1000.0
    assert std["extra"]["legal_form"] == "有限责任公司"
    assert std["address_norm"] == "江城市临江区琴台大道88号"
    missing = standardise_record({"企业名称": " "}, Mapping.from_dict(MAPPING))[1]
    assert any(p.fatal and "必填" in p.reason for p in missing)


# -------------------------------------------------------------------- addresses (demo district)


def test_addresses_resolve_to_building_and_grid(demo_db):
    from sqlalchemy import select

    from jiedao.geo.models import Address

    with demo_db.session() as s:
        st_ = Standardiser.from_session(s)
        addrs = list(s.scalars(select(Address).order_by(Address.code).limit(200)))[::40]
        assert st_.resolver is not None and "江城市" in st_.names.regions
        m = Mapping.from_dict(MAPPING)
        for a in addrs:
            written = a.full.replace("江城市", "").replace("号", "號") if a.compound else a.full
            std, _ = st_.record({"企业名称": "某某有限公司", "住所": written}, m)
            assert std["grid_code"] == a.grid_code, (written, std)
            assert std["street_code"] == a.street_code
            if std["building_code"] is not None:
                assert std["building_code"] == a.building_code
            assert std["address_raw"] == written
        std, _ = st_.record({"企业名称": "某某有限公司", "住所": addrs[0].full}, m)
        assert std["address_code"] == addrs[0].code and std["address_norm"] == addrs[0].full
        assert std["building_code"] == addrs[0].building_code
        std, _ = st_.record({"企业名称": "某某有限公司", "住所": "火星基地一号"}, m)
        assert std["building_code"] is None and std["address_raw"] == "火星基地一号"
