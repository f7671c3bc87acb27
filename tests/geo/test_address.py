"""Examples of the address parser on the ways people really write addresses."""

from __future__ import annotations

import pytest

from jiedao.geo.address import (
    AddressParser,
    compound_core,
    format_address,
    normalize,
    parse_address,
)


@pytest.mark.parametrize(
    "raw, want",
    [
        ("琴台大道８８号　锦绣长江 ５幢", "琴台大道88号锦绣长江5栋"),
        ("锦绣长江小区五栋二单元三零一", "锦绣长江小区5栋2单元301"),
        ("锦绣长江小区十二号楼", "锦绣长江小区12栋"),
        ("二〇三室", "203室"),
        ("江城市临江区琴台大道88号附1号", "江城市临江区琴台大道88-1号"),
        ("琴台大道八十八号之一号", "琴台大道88-1号"),
        ("锦绣长江3#楼", "锦绣长江3栋"),
        ("a座，12楼", "A栋12楼"),
        ("琴台大道88号楼", "琴台大道88号楼"),  # the door number's own building stays as written
        ("五福路8号", "五福路8号"),  # numerals inside names are left alone
    ],
)
def test_normalize(raw, want):
    assert normalize(raw) == want


def parts(text, parser=None):
    p = parse_address(text, parser)
    return {k: v for k, v in p.as_dict().items()
            if v and k not in ("normalized", "found", "confidence")}


def test_full_address_with_unit_and_room():
    assert parts("临江区琴台大道88号锦绣长江小区5栋2单元301室") == {
        "district": "临江区", "road": "琴台大道", "number": "88", "compound": "锦绣长江小区",
        "building_no": "5", "unit": "2", "room": "301"}


def test_full_width_and_spaces():
    assert parts("琴台大道８８号 锦绣长江 ５幢") == {
        "road": "琴台大道", "number": "88", "compound": "锦绣长江", "building_no": "5"}


def test_chinese_numerals_compound_only():
    assert parts("锦绣长江小区五栋二单元三零一") == {
        "compound": "锦绣长江小区", "building_no": "5", "unit": "2", "room": "301"}


def test_annex_door_number():
    p = parse_address("江城市临江区琴台大道88号附1号")
    assert (p.city, p.district, p.road, p.number) == ("江城市", "临江区", "琴台大道", "88-1")
    assert p.canonical == "江城市临江区琴台大道88-1号"


def test_street_and_community_inside():
    assert parts("湖北省江城市临江区琴台街道桃源社区琴台大道88号锦绣长江小区5栋2单元301室") == {
        "province": "湖北省", "city": "江城市", "district": "临江区", "street": "琴台街道",
        "community": "桃源社区", "road": "琴台大道", "number": "88", "compound": "锦绣长江小区",
        "building_no": "5", "unit": "2", "room": "301"}
    assert parts("琴台街道桃源社区锦绣长江小区三栋一单元二〇三室") == {
        "street": "琴台街道", "community": "桃源社区", "compound": "锦绣长江小区",
        "building_no": "3", "unit": "1", "room": "203"}


def test_dash_notation_and_letters():
    assert parts("锦绣长江小区5-2-301") == {
        "compound": "锦绣长江小区", "building_no": "5", "unit": "2", "room": "301"}
    assert parts("七里庙路66号之2号翠湖里小区A座3层") == {
        "road": "七里庙路", "number": "66-2", "compound": "翠湖里小区", "building_no": "A",
        "floor": "3"}


def test_office_tower_and_phase():
    assert parts("琴台大道100号江城国际金融中心") == {
        "road": "琴台大道", "number": "100", "compound": "江城国际金融中心"}
    assert parts("万科城苑2期3栋") == {"compound": "万科城苑2期", "building_no": "3"}


def test_road_without_number_then_compound():
    assert parts("琴台大道锦绣长江小区5栋") == {
        "road": "琴台大道", "compound": "锦绣长江小区", "building_no": "5"}
    # 金路花园 is a compound name, not road 金路 + 花园
    assert parts("金路花园3栋") == {"compound": "金路花园", "building_no": "3"}


def test_free_text_tail_goes_to_rest():
    p = parse_address("琴台大道88号门口垃圾没人清理")
    assert (p.road, p.number, p.rest) == ("琴台大道", "88", "门口垃圾没人清理")
    assert p.confidence < parse_address("琴台大道88号").confidence + 0.01


def test_confidence_orders_completeness():
    full = parse_address("江城市临江区琴台大道88号锦绣长江小区5栋")
    weak = parse_address("随便说点什么")
    assert full.confidence > 0.9
    assert weak.confidence < 0.2 and weak.found == ()


@pytest.mark.parametrize("text", ["", "   ", "123", "号栋单元室", "—", "\x00\ufffd", "路88号"])
def test_odd_input_never_raises(text):
    parse_address(text)


def test_dictionary_helps_split():
    plain = parse_address("临江大厦东门5栋")
    assert plain.compound == "临江大厦"
    parser = AddressParser(roads=["幸福里"], compounds=["江南水乡", "幸福里小区"])
    # a compound without any suffix is only found with the dictionary
    assert parse_address("江南水乡东门", parser).compound == "江南水乡"
    assert parse_address("江南水乡东门", parser).rest == "东门"
    # a known road name without a common suffix still takes its door number
    p = parse_address("幸福里12号", parser)
    assert (p.road, p.number) == ("幸福里", "12")
    assert parse_address("幸福里小区5栋", parser).compound == "幸福里小区"


def test_format_address():
    assert format_address({"city": "江城市", "district": "临江区", "road": "琴台大道",
                           "number": "88", "compound": "锦绣长江小区", "building_no": "5"}) \
        == "江城市临江区琴台大道88号锦绣长江小区5栋"
    p = parse_address("琴台大道88号5栋2单元301室")
    assert format_address(p, city="江城市", district="临江区") == "江城市临江区琴台大道88号5栋"
    assert format_address(p, detail=True) == "琴台大道88号5栋2单元301室"


def test_compound_core():
    assert compound_core("锦绣长江小区") == "锦绣长江"
    assert compound_core("翠湖苑") == "翠湖"
    assert compound_core("小区") == "小区"
