"""Standard-address parsing for Chinese addresses (标准地址解析).

``normalize`` turns the many ways people write an address into one form: full-width
characters become half-width, spaces and punctuation noise go, Chinese numerals of door,
building, unit, floor and room numbers become Arabic (cn2an), and 幢/座/号楼/# become 栋.
``parse_address`` splits a normalised address into its parts from left to right:
province, city, district, street (街道/镇), community (社区), road + door number, compound
(小区/花园/大厦…), building (栋), unit (单元), floor (层) and room (室).

The parser works without any dictionary; an :class:`AddressParser` built with known road
and compound names (``AddressParser.from_session``) splits ambiguous text better.
``format_address`` gives the canonical text stored in ``geo_address.full``:
``city + district + road + number + "号" + compound + building_no + "栋"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache

import cn2an

# ---------------------------------------------------------------- normalisation

_WIDTH = {i: i - 0xFEE0 for i in range(0xFF01, 0xFF5F)}
_WIDTH.update({0x3000: 0x20, 0x2014: 0x2D, 0x2013: 0x2D, 0x2015: 0x2D, 0x2212: 0x2D,
               0x2010: 0x2D, 0x2011: 0x2D, 0x2012: 0x2D, 0xFE63: 0x2D, 0x3007: 0x3007})
# Noise: whitespace and punctuation that never carries address information.
_NOISE_RE = re.compile(
    r"[\s,.;:!?'\"`，。；：！？、“”‘’「」『』《》〈〉【】()（）\[\]{}<>·…~_|\\/=+*^$@&%]+"
)
_CN_NUM = "零〇一二三四五六七八九十百千两"
_NUMBER_SUFFIX = r"号|栋|幢|座|单元|室|楼|层|户|房|#"
# A run of Chinese numerals (possibly mixed with digits, 一0一) before a number suffix.
_CN_RUN = rf"(?<![\d{_CN_NUM}])([\d{_CN_NUM}]*[{_CN_NUM}][\d{_CN_NUM}]*)"
_CN_BEFORE_SUFFIX_RE = re.compile(rf"{_CN_RUN}(?={_NUMBER_SUFFIX})")
# A bare numeral run closing the text after a building/unit/floor marker is a room: 二单元三零一.
_CN_TRAILING_RE = re.compile(rf"(?:(?<=单元)|(?<=[栋层楼室])){_CN_RUN}$")
_ANNEX_RE = re.compile(r"(\d+)号?(?:附|之|-)(\d+)号")  # 88号附1号 / 88号之1号 → 88-1号
_BUILDING_RE = re.compile(r"(?<![\dA-Z])(\d+|[A-Z])(号楼|号栋|幢|座|#楼|#栋|#)")
_ROAD_END_CHARS = "路街道巷里弄同"
_DASH_RE = re.compile(r"-{2,}")
# Anything a rewrite below could change; text without any of it is already normal.
_NEEDS_WORK_RE = re.compile(rf"[^\u4e00-\u9fff0-9A-Z\-]|[{_CN_NUM}附之幢座]|号楼|号栋|号-|--")


@lru_cache(maxsize=4096)
def _cn_to_int(cn: str) -> str | None:
    """Chinese numeral run → Arabic digits ("十二" → "12", "二〇三" → "203"), or None."""
    if cn.isdigit() and cn.isascii():
        return cn
    if not any(c in "十百千" for c in cn):
        # A digit-by-digit run: 二〇三 / 三零一 / 五.
        table = str.maketrans("零〇一二三四五六七八九两", "001234567892")
        out = cn.translate(table)
        return out if out.isdigit() else None
    try:
        value = cn2an.cn2an(cn, "normal")
    except Exception:  # cn2an raises ValueError and friends on odd runs
        return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return str(value) if value >= 0 else None


def _replace_cn(m: re.Match) -> str:
    converted = _cn_to_int(m.group(1))
    return converted if converted is not None else m.group(0)


def _unify_building(m: re.Match) -> str:
    start = m.start()
    if m.group(2) == "号楼" and start and m.string[start - 1] in _ROAD_END_CHARS:
        return m.group(0)  # 琴台大道88号楼: the door number's own building, keep it
    return m.group(1) + "栋"


def _normalize_once(text: str) -> str:
    s = text.translate(_WIDTH)
    s = _NOISE_RE.sub("", s).upper()
    s = _DASH_RE.sub("-", s)
    s = _CN_BEFORE_SUFFIX_RE.sub(_replace_cn, s)
    s = _CN_TRAILING_RE.sub(_replace_cn, s)
    s = _ANNEX_RE.sub(r"\1-\2号", s)
    s = _BUILDING_RE.sub(_unify_building, s)
    return s


def normalize(text: str) -> str:
    """Normalise an address: half-width, no spaces/punctuation, Arabic numbers, 栋 for 幢/座/号楼.

    Idempotent: ``normalize(normalize(s)) == normalize(s)``.
    """
    if not text:
        return ""
    s = str(text)
    if not _NEEDS_WORK_RE.search(s):
        return s  # fast path: already in normal form
    for _ in range(6):  # rewrites can enable one another; run to a fixed point
        nxt = _normalize_once(s)
        if nxt == s:
            break
        s = nxt
    return s


# ---------------------------------------------------------------- parts

PROVINCES = (
    "北京市", "天津市", "上海市", "重庆市", "河北省", "山西省", "辽宁省", "吉林省", "黑龙江省",
    "江苏省", "浙江省", "安徽省", "福建省", "江西省", "山东省", "河南省", "湖北省", "湖南省",
    "广东省", "海南省", "四川省", "贵州省", "云南省", "陕西省", "甘肃省", "青海省", "台湾省",
    "内蒙古自治区", "广西壮族自治区", "西藏自治区", "宁夏回族自治区", "新疆维吾尔自治区",
    "香港特别行政区", "澳门特别行政区",
)
_PROVINCE_RE = re.compile(
    "|".join([re.escape(p) for p in sorted(PROVINCES, key=len, reverse=True)]
             + [re.escape(p[:-1]) + "(?=[^\\d]{2,}市)" for p in PROVINCES if p.endswith("省")])
)
_ADMIN_STOP = "区县市路街道号巷弄栋室"
_CITY_RE = re.compile(rf"[^\d{_ADMIN_STOP}]{{1,7}}?(?:市|自治州|地区|盟)(?![场民政委辖路街道巷弄里])")
_DISTRICT_RE = re.compile(
    rf"(?:[^\d{_ADMIN_STOP}]{{1,7}}?(?:区|县)|[^\d{_ADMIN_STOP}]{{2,7}}?旗)(?![域间块路街道巷弄里])")
_NOT_DISTRICT_END = ("小区", "社区", "园区", "校区", "片区", "街区", "厂区", "景区", "营区", "住区",
                     "商区", "院区", "分区", "辖区", "库区", "一区", "二区", "三区", "东区", "西区",
                     "南区", "北区", "中区", "A区", "B区", "C区", "D区")
_STREET_RE = re.compile(r"[^\d]{1,8}?(?:街道|镇|乡)(?:办事处)?(?![办路街道巷里弄村])")
_COMMUNITY_RE = re.compile(r"[^\d]{1,10}?(?:社区|居委会|村委会)(?:居委会|居民委员会|居委)?")
ROAD_SUFFIXES = ("大道", "大街", "公路", "胡同", "路", "街", "巷", "道", "里", "弄")
_ROAD_SFX = "|".join(ROAD_SUFFIXES)
_ROAD_NUM_RE = re.compile(rf"([^\d\-#]{{1,12}}?(?:{_ROAD_SFX}))(\d+(?:-\d+)?)(号)?")
_ROAD_ONLY_RE = re.compile(r"([^\d\-#]{1,10}?(?:大道|大街|路|街))")
COMPOUND_SUFFIXES = (
    "小区", "花园", "家园", "公寓", "广场", "大厦", "中心", "新村", "新城", "公馆", "华府",
    "华庭", "山庄", "大楼", "商城", "宿舍", "写字楼", "商厦", "酒店", "宾馆", "医院", "学校",
    "小学", "中学", "市场", "公园", "车站", "站", "苑", "城", "园", "里", "庭", "府", "居",
    "湾", "村", "阁", "院", "坊", "邸", "轩", "郡", "墅", "汇", "馆", "楼", "厦", "港", "都",
    "岸", "第", "舍", "筑", "寓", "庄", "天地", "时代", "期", "组团", "号院",
)
_SUFFIX_SET = frozenset(COMPOUND_SUFFIXES)
_GENERIC_COMPOUND_TAILS = ("小区", "花园", "家园", "公寓", "新村", "苑")
_DETAIL_START_RE = re.compile(r"(?:\d|[A-Z](?=栋|-\d|单元))")
_PHASE_RE = re.compile(r"(?:\d+|[A-Z])(?:期|区|号院|组团)")
_TRIPLE_RE = re.compile(r"(\d+|[A-Z])-(\d+)-(\d+)(?:室|号|房)?")
_BUILDING_NO_RE = re.compile(r"(\d+|[A-Z])栋")
_UNIT_RE = re.compile(r"(\d+)单元")
_PAIR_RE = re.compile(r"(\d+)-(\d+)(?:室|号|房)?")
_FLOOR_RE = re.compile(r"(-?\d+)(?:层|楼)(?!\d*栋)")
_ROOM_RE = re.compile(r"(\d+)(?:室|房|号|户)?")

PART_NAMES = ("province", "city", "district", "street", "community", "road", "number",
              "compound", "building_no", "unit", "floor", "room")


@dataclass(frozen=True)
class ParsedAddress:
    """The parts of one address. Missing parts are None; ``rest`` is the unparsed tail."""

    province: str | None = None
    city: str | None = None
    district: str | None = None
    street: str | None = None  # 街道/镇 name, e.g. "琴台街道"
    community: str | None = None  # e.g. "桃源社区"
    road: str | None = None
    number: str | None = None  # door number, "88" or "88-1"
    compound: str | None = None
    building_no: str | None = None
    unit: str | None = None
    floor: str | None = None
    room: str | None = None
    rest: str = ""
    normalized: str = ""
    confidence: float = 0.0

    @property
    def found(self) -> tuple[str, ...]:
        """Names of the parts that were recognised."""
        return tuple(n for n in PART_NAMES if getattr(self, n))

    @property
    def canonical(self) -> str:
        """The canonical standard-address text of these parts."""
        return format_address(self)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["found"] = list(self.found)
        return d


def format_address(parts: ParsedAddress | Mapping, *, city: str | None = None,
                   district: str | None = None, detail: bool = False) -> str:
    """Canonical address text: city+district+road+number号+compound+building_no栋.

    ``city``/``district`` override the parts' own values; ``detail=True`` appends
    unit (单元), floor (层) and room (室).
    """
    get = parts.get if isinstance(parts, Mapping) else (lambda k: getattr(parts, k, None))
    out = [city if city is not None else (get("city") or ""),
           district if district is not None else (get("district") or "")]
    if get("road"):
        out.append(get("road"))
        if get("number"):
            out.append(f"{get('number')}号")
    if get("compound"):
        out.append(get("compound"))
    if get("building_no"):
        out.append(f"{get('building_no')}栋")
    if detail:
        if get("unit"):
            out.append(f"{get('unit')}单元")
        if get("floor") and not get("room"):
            out.append(f"{get('floor')}层")
        if get("room"):
            out.append(f"{get('room')}室")
    return "".join(out)


def compound_core(name: str) -> str:
    """A compound name without its generic tail (锦绣长江小区 → 锦绣长江), if long enough."""
    for tail in _GENERIC_COMPOUND_TAILS:
        if name.endswith(tail) and len(name) - len(tail) >= 2:
            return name[: -len(tail)]
    return name


class _Names:
    """A set of names with a longest-prefix lookup (dict lookups only)."""

    def __init__(self, names: Iterable[str]):
        self.names = {normalize(n) for n in names if n}
        self.names.discard("")
        self.max_len = max((len(n) for n in self.names), default=0)

    def __bool__(self) -> bool:
        return bool(self.names)

    def longest_prefix(self, text: str, min_len: int = 2) -> str | None:
        for n in range(min(self.max_len, len(text)), min_len - 1, -1):
            if text[:n] in self.names:
                return text[:n]
        return None


class AddressParser:
    """Address parser, optionally helped by dictionaries of known names.

    Without dictionaries it relies on suffixes (路/街/大道…, 小区/花园/苑…) and numbers.
    """

    def __init__(self, roads: Iterable[str] = (), compounds: Iterable[str] = (),
                 cities: Iterable[str] = (), districts: Iterable[str] = (),
                 streets: Iterable[str] = (), communities: Iterable[str] = ()):
        self.roads = _Names(roads)
        self.compounds = _Names(compounds)
        self.cities = _Names(cities)
        self.districts = _Names(districts)
        self.streets = _Names(streets)
        self.communities = _Names(communities)

    @classmethod
    def from_session(cls, session) -> AddressParser:
        """A parser whose dictionaries are the names in the database."""
        from sqlalchemy import select

        from jiedao.geo.models import Address, Building, Community, District, Road, Street

        roads = set(session.scalars(select(Road.name)))
        roads |= set(session.scalars(select(Address.road).distinct()))
        compounds = set(session.scalars(select(Address.compound).distinct()))
        compounds |= set(session.scalars(select(Building.compound).distinct()))
        compounds.discard(None)
        return cls(
            roads=roads, compounds=compounds,
            cities=set(session.scalars(select(District.city).distinct())),
            districts=set(session.scalars(select(District.name))),
            streets=set(session.scalars(select(Street.name))),
            communities=set(session.scalars(select(Community.name))),
        )

    # -- the parts, one step each; every step returns (value, remaining text)

    def _take(self, regex: re.Pattern, s: str, names: _Names, bad_end: tuple = ()) -> tuple:
        known = names.longest_prefix(s) if names else None
        if known:
            return known, s[len(known):]
        if (self.compounds and self.compounds.longest_prefix(s)) or \
                (self.roads and self.roads.longest_prefix(s)):
            return None, s  # a known road or compound starts here, not an area name
        m = regex.match(s)
        if m and not m.group(0).endswith(bad_end):
            return m.group(0), s[m.end():]
        return None, s

    def _road(self, s: str) -> tuple[str | None, str | None, str]:
        known = self.roads.longest_prefix(s) if self.roads else None
        if known:
            rest = s[len(known):]
            m = re.match(r"(\d+(?:-\d+)?)(号)?", rest)
            if m and (m.group(2) or not _looks_like_detail(rest[m.end(1):])):
                return known, m.group(1), rest[m.end():]
            longer = self.compounds.longest_prefix(s) if self.compounds else None
            if not (longer and len(longer) > len(known)):  # 幸福里小区 is a compound
                return known, None, rest
            return None, None, s
        m = _ROAD_NUM_RE.match(s)
        if m and (m.group(3) or not _looks_like_detail(s[m.end(2):])):
            return m.group(1), m.group(2), s[m.end():]
        m = _ROAD_ONLY_RE.match(s)
        if m:
            rest = s[m.end():]
            # A road without a door number only when a named place follows it
            # (金路花园 is a compound, not 金路 + 花园).
            if rest and not rest[0].isdigit() and not rest.startswith(COMPOUND_SUFFIXES) \
                    and _compound_split(_span(rest)[0])[0]:
                return m.group(1), None, rest
        return None, None, s

    def _compound(self, s: str) -> tuple[str | None, str, str]:
        """(compound, noise inside the span, remaining text after the span)."""
        span, after = _span(s)
        if not span:
            return None, "", after
        known = self.compounds.longest_prefix(span) if self.compounds else None
        if known:
            return known, span[len(known):], after
        name, noise = _compound_split(span)
        if name:
            return name, noise, after
        if after and _looks_like_detail(after) and len(span) >= 2:
            return span, "", after  # 锦绣长江5栋: a name right before a building number
        return None, span, after

    def parse(self, text: str) -> ParsedAddress:
        """Split an address into parts. Never raises; unknown text ends up in ``rest``."""
        s = normalize(text or "")
        norm = s
        province = None
        m = _PROVINCE_RE.match(s)
        if m:
            province, s = m.group(0), s[m.end():]
        city, s = self._take(_CITY_RE, s, self.cities)
        district, s = self._take(_DISTRICT_RE, s, self.districts, _NOT_DISTRICT_END)
        street, s = self._take(_STREET_RE, s, self.streets)
        if street and (not s or s.startswith(COMPOUND_SUFFIXES)):
            street, s = None, street + s  # 古镇花园 is a compound, not a town
        community, s = self._take(_COMMUNITY_RE, s, self.communities)
        road, number, s = self._road(s)
        compound, noise, s = self._compound(s)
        building = unit = floor = room = None
        m = _TRIPLE_RE.match(s)
        if m:
            building, unit, room = m.groups()
            s = s[m.end():]
        else:
            if m := _BUILDING_NO_RE.match(s):
                building, s = m.group(1), s[m.end():]
            if m := _UNIT_RE.match(s):
                unit, s = m.group(1), s[m.end():]
            if (building or unit) and (m := _PAIR_RE.match(s)) and not unit:
                unit, room, s = m.group(1), m.group(2), s[m.end():]
            if m := _FLOOR_RE.match(s):
                floor, s = m.group(1), s[m.end():]
            if (building or unit or floor or compound) and (m := _ROOM_RE.match(s)) \
                    and (m.group(0) != m.group(1) or m.end() == len(s) or building or unit):
                room, s = m.group(1), s[m.end():]
        rest = noise + s
        parts = dict(province=province, city=city, district=district, street=street,
                     community=community, road=road, number=number, compound=compound,
                     building_no=building, unit=unit, floor=floor, room=room)
        return ParsedAddress(**parts, rest=rest, normalized=norm,
                             confidence=_confidence(parts, rest, norm))


def _looks_like_detail(s: str) -> bool:
    """Does the text start with a building/unit/floor/room part (5栋, 2单元, 5-2-301…)?"""
    return bool(re.match(r"(?:\d+|[A-Z])(?:栋|单元|室|层|楼|房|-)", s))


def _span(s: str) -> tuple[str, str]:
    """Split off the leading name span: text up to the first building/unit/room number."""
    i = 0
    while i < len(s):
        m = _DETAIL_START_RE.search(s, i)
        if not m:
            return s, ""
        p = _PHASE_RE.match(s, m.start())
        if p:  # 2期 / A区 belong to the compound's name
            i = p.end()
            continue
        return s[: m.start()], s[m.start():]
    return s, ""


def _compound_split(span: str) -> tuple[str | None, str]:
    """Longest prefix of ``span`` that ends like a compound name, and what follows it."""
    best = None
    for end in range(len(span), 1, -1):
        if span[:end].endswith(COMPOUND_SUFFIXES) and end >= 2:
            head = span[:end]
            # A bare suffix is not a name (花园 alone); require at least one more character.
            if head in _SUFFIX_SET:
                continue
            best = end
            break
    if best is None:
        return None, span
    return span[:best], span[best:]


def _confidence(parts: dict, rest: str, norm: str) -> float:
    score = 0.0
    if parts["road"] and parts["number"]:
        score += 0.55
    elif parts["road"]:
        score += 0.25
    if parts["compound"]:
        score += 0.3
    if parts["building_no"]:
        score += 0.1
    if parts["unit"] or parts["room"] or parts["floor"]:
        score += 0.05
    if parts["district"] or parts["city"] or parts["street"] or parts["community"]:
        score += 0.1
    score = min(score, 1.0)
    if norm:
        score *= 1.0 - 0.5 * (len(rest) / len(norm))
    return round(score, 3)


_DEFAULT = AddressParser()


def parse_address(text: str, parser: AddressParser | None = None) -> ParsedAddress:
    """Parse one address with ``parser`` (default: the dictionary-less parser)."""
    return (parser or _DEFAULT).parse(text)


__all__ = ["AddressParser", "ParsedAddress", "PART_NAMES", "compound_core", "format_address",
           "normalize", "parse_address"]

