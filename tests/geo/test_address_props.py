"""Property tests of the address parser: render structured addresses in the many ways people
write them, parse them back, and get the same parts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from jiedao.geo.address import format_address, normalize, parse_address

# Characters of place-name stems: none of them is a suffix (路/区/苑…) or a numeral.
POOL = "琴台锦绣长汉阳光明幸福和建设解放友谊华人胜利青松翠柏香樟玉兰海棠丁芙蓉牡丹桂梅竹荷金银星月凤凰龙虎鹏程春秋夏冬安康宁泰寿吉祥如意兴隆昌盛富强文和谐晴川鹦鹉洲堤桥龟微永丰滨知音欣桃源杨柳彩虹朝红"
ROAD_SFX = ["大道", "路", "街", "大街", "巷"]
COMPOUND_SFX = ["小区", "花园", "苑", "家园", "公寓", "大厦", "广场", "中心", "城", "园", "新村"]
FW_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
CN = "零一二三四五六七八九"


def stem(min_size=2, max_size=3):
    return st.text(alphabet=POOL, min_size=min_size, max_size=max_size)


def cn_positional(n: int) -> str:
    """12 → 十二, 88 → 八十八, 105 → 一百零五 (numbers below 1000)."""
    if n < 10:
        return CN[n]
    if n < 20:
        return "十" + (CN[n % 10] if n % 10 else "")
    if n < 100:
        return CN[n // 10] + "十" + (CN[n % 10] if n % 10 else "")
    h, r = divmod(n, 100)
    if r == 0:
        return CN[h] + "百"
    if r < 10:
        return CN[h] + "百零" + CN[r]
    return CN[h] + "百" + (cn_positional(r) if r >= 20 else "一" + cn_positional(r))


def cn_digits(s: str, zero: str) -> str:
    return "".join(zero if c == "0" else CN[int(c)] for c in s)


@st.composite
def addresses(draw):
    has_road = draw(st.booleans())
    has_compound = draw(st.booleans()) or not has_road
    has_building = has_compound and draw(st.booleans())
    parts = {
        "city": None, "district": None, "street": None, "community": None,
        "road": None, "number": None, "compound": None, "building_no": None,
        "unit": None, "floor": None, "room": None,
    }
    if draw(st.booleans()):
        parts["city"] = draw(stem()) + "市"
        parts["district"] = draw(stem()) + "区"
    if draw(st.integers(0, 3)) == 0:
        parts["street"] = draw(stem()) + "街道"
        if draw(st.booleans()):
            parts["community"] = draw(stem()) + "社区"
    if has_road:
        parts["road"] = draw(stem()) + draw(st.sampled_from(ROAD_SFX))
        n = draw(st.integers(1, 999))
        annex = draw(st.one_of(st.none(), st.integers(1, 9)))
        parts["number"] = f"{n}-{annex}" if annex else str(n)
    if has_compound:
        parts["compound"] = draw(stem(2, 4)) + draw(st.sampled_from(COMPOUND_SFX))
    if has_building:
        parts["building_no"] = draw(st.one_of(st.integers(1, 40).map(str), st.sampled_from("ABCDE")))
    if has_building and draw(st.booleans()):
        parts["unit"] = str(draw(st.integers(1, 9)))
        if draw(st.booleans()):
            parts["floor"] = str(draw(st.integers(1, 30)))
        if draw(st.booleans()):
            parts["room"] = str(draw(st.integers(1, 33))) + f"{draw(st.integers(1, 4)):02d}"
    return parts


@st.composite
def rendered(draw, parts):
    """One human rendering of the parts, with random variations."""
    def num(s: str, positional_ok=True) -> str:
        style = draw(st.sampled_from(["arabic", "full", "cn"]))
        if style == "full":
            return s.translate(FW_DIGITS)
        if style == "cn" and s.isdigit() and positional_ok:
            return cn_positional(int(s))
        return s

    sep = lambda: draw(st.sampled_from(["", "", " ", "\u3000"]))  # noqa: E731
    out = []
    if parts["city"]:
        if draw(st.booleans()):
            out.append("湖北省")
        out += [parts["city"], sep(), parts["district"], sep()]
    if parts["street"]:
        out += [parts["street"], sep()]
    if parts["community"]:
        out += [parts["community"], sep()]
    if parts["road"]:
        out.append(parts["road"])
        main, _, annex = parts["number"].partition("-")
        out.append(num(main) + "号")
        if annex:
            out.append(draw(st.sampled_from(["附{}号", "之{}号", "-{}号"])).format(num(annex)))
        out.append(sep())
    if parts["compound"]:
        out += [parts["compound"], sep()]
    if parts["building_no"]:
        b = parts["building_no"]
        marker = draw(st.sampled_from(["栋", "幢", "座", "号楼"] if b.isdigit() else ["栋", "座", "幢"]))
        out += [num(b) if b.isdigit() else b, marker, sep()]
    if parts["unit"]:
        out += [num(parts["unit"]), "单元", sep()]
    if parts["floor"]:
        out += [num(parts["floor"]), draw(st.sampled_from(["层", "楼"]))]
    if parts["room"]:
        style = draw(st.sampled_from(["arabic", "full", "cn零", "cn〇", "mixed"]))
        r = parts["room"]
        if style == "full":
            r = r.translate(FW_DIGITS)
        elif style.startswith("cn"):
            r = cn_digits(r, style[2])
        elif style == "mixed":  # 一0一: what a hurried operator types
            r = cn_digits(r[0], "零") + r[1:]
        # the 室 may be left off at the very end of the address
        out += [r, draw(st.sampled_from(["室", "室", ""]))]
    return "".join(out)


KEYS = ("city", "district", "street", "community", "road", "number", "compound",
        "building_no", "unit", "floor", "room")


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_rendered_addresses_round_trip(data):
    parts = data.draw(addresses())
    text = data.draw(rendered(parts))
    got = parse_address(text)
    assert {k: getattr(got, k) for k in KEYS} == parts, (text, got)
    assert got.rest == ""


@settings(max_examples=200, deadline=None)
@given(addresses())
def test_canonical_text_round_trips(parts):
    canonical = format_address(parts)
    got = parse_address(canonical)
    want = {k: parts[k] for k in ("city", "district", "road", "number", "compound", "building_no")}
    assert {k: getattr(got, k) for k in want} == want
    assert got.canonical == canonical


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_normalize_idempotent_on_address_like_text(data):
    text = data.draw(st.text(alphabet="一二三四五六七八九十百千零〇两号栋幢座楼层单元室附之-## 0123456789０１２AB路锦绣苑", max_size=30))
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parser_never_raises(text):
    got = parse_address(text)
    assert isinstance(got.rest, str)
    assert 0.0 <= got.confidence <= 1.0


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_normalize_fast_path_agrees_with_full_rewrite(data):
    from jiedao.geo.address import _normalize_once

    text = data.draw(st.one_of(
        st.text(alphabet="一二三十〇号栋幢座楼层单元室附之-#0123456789AB路锦绣苑", max_size=25),
        st.text(max_size=25)))
    slow = text
    for _ in range(6):
        nxt = _normalize_once(slow)
        if nxt == slow:
            break
        slow = nxt
    assert normalize(text) == slow
