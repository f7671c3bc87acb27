"""Standardise ledger values: enterprise names, credit codes, phones, dates, industry codes
and addresses (through the geo standard-address resolver).

Every parser here takes arbitrary input and never raises: it returns the standard value
(or None) and, when something is wrong, a short Chinese reason. :func:`standardise_record`
applies a source's :class:`~jiedao.hub.sources.Mapping` to one raw row.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from operator import mul
from typing import Any

# --------------------------------------------------------------------------- credit codes

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # GB 32100-2015: no I, O, S, V, Z
USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARS)}
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_LOOKALIKE = {"O": "0", "I": "1"}


def uscc_check_char(code17: str) -> str:
    """The GB 32100-2015 check character for the first 17 characters of a credit code."""
    if len(code17) != 17:
        raise ValueError("a credit code body has 17 characters")
    total = sum(map(mul, map(USCC_VALUE.__getitem__, code17), USCC_WEIGHTS))
    return USCC_CHARS[(31 - total % 31) % 31]


def uscc_valid(code: Any) -> bool:
    """True when ``code`` is an 18-character unified social credit code with a correct
    GB 32100-2015 check character (upper case, allowed characters only)."""
    if not isinstance(code, str) or len(code) != 18:
        return False
    if any(c not in USCC_VALUE for c in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


def reg_no_check_digit(code14: str) -> str:
    """ISO 7064 MOD 11,10 check digit of the first 14 digits of an old registration number."""
    p = 10
    for ch in code14:
        s = (p + int(ch)) % 10 or 10
        p = (s * 2) % 11
    return str((11 - p) % 10)


def reg_no_valid(code: Any) -> bool:
    """True for a 15-digit business registration number (GB/T 12113 / ISO 7064 MOD 11,10)."""
    if not isinstance(code, str) or len(code) != 15 or not code.isascii() or not code.isdigit():
        return False
    return reg_no_check_digit(code[:14]) == code[14]


def clean_code(value: Any) -> str:
    """Upper-case, half-width, no spaces or separators."""
    s = unicodedata.normalize("NFKC", str(value)).upper()
    return re.sub(r"[\s\-_/.·]", "", s)


ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_VALUE = {c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def org_code_valid(code: Any) -> bool:
    """True for a 9-character organisation code (GB 11714) with a correct check character."""
    if not isinstance(code, str) or len(code) != 9 or any(c not in _ORG_VALUE for c in code[:8]):
        return False
    c = 11 - sum(_ORG_VALUE[ch] * w for ch, w in zip(code[:8], ORG_WEIGHTS, strict=True)) % 11
    return code[8] == ("X" if c == 10 else "0" if c == 11 else str(c))


@dataclass
class CodeResult:
    credit_code: str | None = None
    reg_no: str | None = None
    problem: str | None = None
    org_code: str | None = None  # GB 11714, from a credit code or an old 15-character tax id
    old_tax_id: str | None = None  # 6-digit division + organisation code


def parse_credit_code(value: Any) -> CodeResult:
    """A credit-code cell: an 18-char USCC, or an old 15-digit registration number.

    Lower case is accepted (upper-cased). The letters O and I are not allowed in a credit
    code; they are reported, and the code is kept only when it validates read as 0 / 1.
    A wrong check character blanks the code with a reason.
    """
    if _blank(value):
        return CodeResult()
    s = clean_code(value)
    if len(s) == 15:
        if reg_no_valid(s):
            return CodeResult(reg_no=s)
        if s[:6].isdigit() and org_code_valid(s[6:]):
            return CodeResult(old_tax_id=s, org_code=s[6:])
        if s.isdigit():
            return CodeResult(problem=f"15位代码既不是有效的注册号也不是旧税号（校验位错误）：{s}")
        return CodeResult(problem=f"旧税号中的组织机构代码校验位错误：{s}")
    if len(s) != 18:
        return CodeResult(problem=f"统一社会信用代码应为18位（实为{len(s)}位）：{s}")
    bad = sorted({c for c in s if c not in USCC_VALUE})
    if bad:
        fixed = "".join(_LOOKALIKE.get(c, c) for c in s)
        if set(bad) <= set(_LOOKALIKE) and uscc_valid(fixed):
            return CodeResult(credit_code=fixed, org_code=fixed[8:17],
                              problem=f"统一社会信用代码含不允许的字母{'/'.join(bad)}，已按数字读作{fixed}")
        return CodeResult(problem=f"统一社会信用代码含不允许的字符{'、'.join(bad)}：{s}")
    if not uscc_valid(s):
        return CodeResult(problem=f"统一社会信用代码校验位错误：{s}")
    return CodeResult(credit_code=s, org_code=s[8:17])


def parse_reg_no(value: Any) -> tuple[str | None, str | None]:
    """An old 15-digit registration number, or (None, reason)."""
    if _blank(value):
        return None, None
    s = clean_code(value)
    if reg_no_valid(s):
        return s, None
    return None, f"注册号无效（应为15位数字且校验位正确）：{s}"


# --------------------------------------------------------------------------- names

PROVINCES = (
    "北京", "天津", "上海", "重庆", "河北", "山西", "辽宁", "吉林", "黑龙江", "江苏", "浙江", "安徽",
    "福建", "江西", "山东", "河南", "湖北", "湖南", "广东", "海南", "四川", "贵州", "云南", "陕西",
    "甘肃", "青海", "台湾", "内蒙古", "广西", "西藏", "宁夏", "新疆", "香港", "澳门",
)
# the demo city/district; more names come from the geo tables via Standardiser.from_session
DEFAULT_REGIONS = (
    *(p + s for p in PROVINCES for s in ("省", "市", "自治区") if len(p) > 1),
    *PROVINCES, "中国", "江城市", "江城", "临江区", "临江",
)
LEGAL_FORMS = ("股份有限公司", "有限责任公司", "有限公司")
BRANCH_RE = re.compile(r"(分公司|分店|营业部|分部|分厂|分行|支行|办事处|门市部)$")
_BRACKETS = str.maketrans({"(": "（", ")": "）", "[": "（", "]": "）", "【": "（", "】": "）",
                           "〔": "（", "〕": "）"})
# a region's last character may start the next word: 江城|市政, 临江|区块链
_REGION_WORDS = {"市政", "市场", "市民", "市容", "市井", "区块", "区域", "省心", "县城"}
_SPACE_RE = re.compile(r"[\s\u3000\u00a0\u200b\ufeff]+")
_EMPTY_PAREN_RE = re.compile(r"（\s*）")


def _nfkc(value: Any) -> str:
    return unicodedata.normalize("NFKC", str(value))


def normalise_name(value: Any) -> str:
    """One written form of an enterprise name: half-width letters/digits, Chinese brackets
    （）, no whitespace, legal form 有限责任公司/股份有限公司 written as 有限公司.

    Idempotent: ``normalise_name(normalise_name(x)) == normalise_name(x)``.
    """
    if _blank(value):
        return ""
    s = str(value)
    for _ in range(8):  # to a fixed point: one step can expose another (（（））)
        t = _name_step(s)
        if t == s:
            break
        s = t
    return s


def _name_step(s: str) -> str:
    s = unicodedata.normalize("NFKC", s).upper().translate(_BRACKETS)
    s = _SPACE_RE.sub("", s)
    s = _EMPTY_PAREN_RE.sub("", s)
    return s.replace("有限责任公司", "有限公司").replace("股份有限公司", "有限公司")


def legal_form(value: Any) -> str | None:
    """The legal form written in a name (股份有限公司 / 有限责任公司 / 有限公司) or None."""
    s = _nfkc(value) if not _blank(value) else ""
    for form in LEGAL_FORMS:
        if form in s:
            return form
    return None


def branch_suffix(name_norm: str) -> str | None:
    """The branch suffix (分公司, 分店, 营业部 …) a normalised name ends with, or None."""
    m = BRANCH_RE.search(name_norm or "")
    return m.group(1) if m else None


class NameStandardiser:
    """Name normalisation with a list of region names to strip for ``name_core``."""

    def __init__(self, regions: tuple[str, ...] | list[str] | set[str] = DEFAULT_REGIONS):
        regs = {normalise_name(r) for r in regions if r and len(r) >= 2}
        self.regions = tuple(sorted(regs, key=len, reverse=True))
        alt = "|".join(re.escape(r) for r in self.regions) or "(?!)"
        self._prefix = re.compile(rf"^(?:{alt})")
        self._paren = re.compile(rf"（(?:{alt})+）")

    def _strip_region(self, s: str) -> str:
        m = self._prefix.match(s)
        if not m:
            return s
        region, rest = m.group(0), s[m.end():]
        if region[-1] in "省市区县" and region[-1] + rest[:1] in _REGION_WORDS:
            return s[m.end() - 1:]  # 江城市政工程 is 江城 + 市政工程
        return rest

    def core(self, value: Any) -> str:
        """The distinctive part of a name: no region prefix or bracketed region, no legal
        form (有限公司, 公司), branch suffix kept (a branch is its own enterprise)."""
        s = normalise_name(value)
        if not s:
            return ""
        for _ in range(3):  # 湖北省江城市临江区… : strip repeated prefixes
            t = self._strip_region(s)
            if t == s or len(t) < 2:
                break
            s = t
        s = self._paren.sub("", s)
        branch = ""
        m = BRANCH_RE.search(s)
        if m and "公司" in s[: m.start()]:
            cut = s.rfind("公司", 0, m.start()) + 2
            branch = s[cut:]
            s = s[:cut]
        for form in ("有限公司", "集团公司", "公司"):
            if s.endswith(form) and len(s) > len(form):
                s = s[: -len(form)]
                break
        return (s + branch) or normalise_name(value)


# --------------------------------------------------------------------------- phones

_MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
_AREA3 = ("010", "020", "021", "022", "023", "024", "025", "027", "028", "029")


def parse_phone(value: Any) -> tuple[str | None, list[str], str | None]:
    """(first phone, other phones, problem). Mobiles as 11 digits; landlines as
    ``区号-号码`` (``-分机`` kept); +86 / 0086 removed; several numbers split on , ; / 、."""
    if _blank(value):
        return None, [], None
    raw = _nfkc(value)
    if isinstance(value, float) and value.is_integer():
        raw = str(int(value))
    parts = [p for p in re.split(r"[,;/、，；|]|\s{2,}|或", raw) if p.strip()]
    phones: list[str] = []
    bad: list[str] = []
    for part in parts:
        p = _one_phone(part)
        if p:
            phones.append(p)
        else:
            bad.append(part.strip())
    if not phones:
        return None, [], f"无法识别的电话号码：{raw.strip()[:40]}"
    problem = f"部分电话无法识别：{'、'.join(bad)[:40]}" if bad else None
    return phones[0], phones[1:], problem


def _one_phone(text: str) -> str | None:
    s = text.strip()
    ext = None
    m = re.search(r"(?:转|ext\.?|x|#)\s*(\d{1,6})$", s, re.I)
    if m:
        ext, s = m.group(1), s[: m.start()]
    s = re.sub(r"^\s*(\+|00)\s*86", "", s)
    s = re.sub(r"[\s\-()（）.]", "", s)
    if not s.isascii() or not s.isdigit():
        return None
    if len(s) == 13 and s.startswith("86") and _MOBILE_RE.match(s[2:]):
        s = s[2:]
    if _MOBILE_RE.match(s):
        return s
    if s.startswith("0") and 10 <= len(s) <= 12:
        area = s[:3] if s[:3] in _AREA3 else s[:4]
        local = s[len(area):]
        if 7 <= len(local) <= 8 and local[0] != "0":
            return f"{area}-{local}" + (f"-{ext}" if ext else "")
        return None
    if 7 <= len(s) <= 8 and s[0] not in "01":
        return s + (f"-{ext}" if ext else "")
    return None


# --------------------------------------------------------------------------- dates

EXCEL_EPOCH = date(1899, 12, 30)
_DATE_RES = (
    re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"),
    re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_MIN_YEAR, _MAX_YEAR = 1900, 2100


def parse_date(value: Any, formats: tuple[str, ...] | list[str] = ()) -> tuple[date | None, str | None]:
    """(date, problem). Text values are cached (ledgers repeat dates a lot)."""
    if type(value) is str:
        return _parse_date_text(value, tuple(formats))
    return _parse_date(value, tuple(formats))


@lru_cache(maxsize=65536)
def _parse_date_text(value: str, formats: tuple[str, ...]) -> tuple[date | None, str | None]:
    return _parse_date(value, formats)


def _parse_date(value: Any, formats: tuple[str, ...] = ()) -> tuple[date | None, str | None]:
    """(date, problem). Accepts date/datetime objects, yyyy-mm-dd, yyyy/m/d, yyyy.m.d,
    yyyy年m月d日, yyyymmdd, an Excel serial day number, and any extra strptime ``formats``."""
    if _blank(value):
        return None, None
    if isinstance(value, datetime):
        return value.date(), None
    if isinstance(value, date):
        return value, None
    if isinstance(value, bool):
        return None, f"无法识别的日期：{value}"
    if isinstance(value, int | float | Decimal):
        try:
            return _excel_serial(float(value), value)
        except (OverflowError, ValueError):
            return None, f"无法识别的日期：{str(value)[:40]}"
    s = _nfkc(value).strip()
    for fmt in formats:
        try:
            return datetime.strptime(s, fmt).date(), None
        except (ValueError, TypeError):
            continue
    for rx in _DATE_RES:
        m = rx.match(s)
        if m:
            y, mo, d = (int(g) for g in m.groups())
            if _MIN_YEAR <= y <= _MAX_YEAR:
                try:
                    return date(y, mo, d), None
                except ValueError:
                    pass
            return None, f"日期不存在：{s}"
    if re.fullmatch(r"\d{1,5}(\.\d+)?", s):
        return _excel_serial(float(s), s)
    return None, f"无法识别的日期：{s[:40]}"


def _excel_serial(n: float, shown: Any) -> tuple[date | None, str | None]:
    if n != n or not (1 <= n < 73051):  # NaN, or beyond 2099-12-31
        return None, f"无法识别的日期：{shown}"
    return EXCEL_EPOCH + timedelta(days=int(n)), None


# --------------------------------------------------------------------------- industry codes

# GB/T 4754-2017 sections → range of two-digit divisions
SECTIONS = {
    "A": (1, 5), "B": (6, 12), "C": (13, 43), "D": (44, 46), "E": (47, 50), "F": (51, 52),
    "G": (53, 60), "H": (61, 62), "I": (63, 65), "J": (66, 69), "K": (70, 70), "L": (71, 72),
    "M": (73, 75), "N": (76, 79), "O": (80, 82), "P": (83, 83), "Q": (84, 85), "R": (86, 90),
    "S": (91, 96), "T": (97, 97),
}


def section_of(division: int) -> str | None:
    for letter, (lo, hi) in SECTIONS.items():
        if lo <= division <= hi:
            return letter
    return None


def parse_industry(value: Any) -> tuple[str | None, str | None]:
    """(code, problem): GB/T 4754 section letter + 2–4 digits (``I6513``), a bare letter,
    or digits alone (the letter is added). The letter must fit the division."""
    if type(value) is str:
        return _parse_industry_text(value)
    return _parse_industry(value)


@lru_cache(maxsize=16384)
def _parse_industry_text(value: str) -> tuple[str | None, str | None]:
    return _parse_industry(value)


def _parse_industry(value: Any) -> tuple[str | None, str | None]:
    if _blank(value):
        return None, None
    s = clean_code(value)
    if isinstance(value, float) and value.is_integer():
        s = str(int(value)).zfill(2)
    m = re.fullmatch(r"([A-T])?(\d{2,4})?", s)
    if not m or not s:
        return None, f"行业代码格式不对（应为门类字母+2至4位数字）：{s[:20]}"
    letter, digits = m.groups()
    if digits is None:
        return letter, None
    sec = section_of(int(digits[:2]))
    if sec is None:
        return None, f"行业代码大类不存在：{s}"
    if letter and letter != sec:
        return None, f"行业代码门类{letter}与大类{digits[:2]}不符（应为{sec}）：{s}"
    return sec + digits, None


# --------------------------------------------------------------------------- helpers


_BLANKS = frozenset(("", "-", "—", "/", "无", "NULL", "null", "None"))


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if type(value) is str:
        return value.strip() in _BLANKS
    if isinstance(value, float) and value != value:
        return True
    if isinstance(value, Decimal) and value.is_nan():
        return True
    if isinstance(value, str):
        return not value.strip() or value.strip() in ("-", "—", "/", "无", "NULL", "null", "None")
    return False


def clean_text(value: Any, max_len: int | None = None) -> str | None:
    """Trimmed text with collapsed whitespace, or None when blank."""
    if _blank(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    s = str(value)
    if not unicodedata.is_normalized("NFKC", s):
        s = unicodedata.normalize("NFKC", s)
    s = " ".join(s.split()) if ("\u200b" not in s and "\ufeff" not in s) else (
        _SPACE_RE.sub(" ", s).strip())
    if not s:
        return None
    return s[:max_len] if max_len else s


def parse_number(value: Any) -> tuple[float | None, str | None]:
    """A number written with thousands separators, 万/元 units or full-width digits."""
    if _blank(value):
        return None, None
    if isinstance(value, bool):
        return None, f"不是数字：{value}"
    if isinstance(value, int | float | Decimal):
        return float(value), None
    s = _nfkc(value).replace(",", "").replace("，", "").strip()
    mult = 1.0
    for unit, m in (("万元", 1e4), ("万", 1e4), ("元", 1.0), ("%", 0.01)):
        if s.endswith(unit):
            s, mult = s[: -len(unit)].strip(), m
            break
    try:
        return float(Decimal(s)) * mult, None
    except (InvalidOperation, ValueError):
        return None, f"不是数字：{str(value)[:30]}"


# --------------------------------------------------------------------------- records

STD_FIELDS = ("name", "credit_code", "reg_no", "legal_rep", "phone", "address",
              "industry_code", "established", "status")
RECORD_COLUMNS = ("name", "name_norm", "name_core", "credit_code", "reg_no", "legal_rep", "phone",
                  "address_raw", "address_norm", "address_code", "building_code", "grid_code",
                  "street_code", "industry_code", "established", "status", "extra")


@dataclass(frozen=True)
class FieldProblem:
    """Something wrong with one field of one row (``fatal``: the row cannot be loaded)."""

    field: str
    reason: str
    fatal: bool = False


@dataclass
class Standardiser:
    """Standardises rows for one load: region names for name cores, the address resolver
    (built once per load, optional), and a cache of resolved addresses."""

    names: NameStandardiser = field(default_factory=NameStandardiser)
    resolver: Any = None  # jiedao.geo.locate.AddressResolver
    min_confidence: float = 0.6
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_session(cls, session, *, resolve_addresses: bool = True) -> Standardiser:
        """Region names from the geo tables plus the defaults; an AddressResolver when the
        district has standard addresses."""
        from sqlalchemy import func, select

        from jiedao.geo.models import Address, District, Street

        regions = set(DEFAULT_REGIONS)
        for city, name in session.execute(select(District.city, District.name)):
            for r in (city, name):
                if r:
                    regions.add(r)
                    if len(r) > 2 and r[-1] in "省市区县":
                        regions.add(r[:-1])
        regions.update(n for n in session.scalars(select(Street.name)) if n)
        resolver = None
        if resolve_addresses and session.scalar(select(func.count()).select_from(Address)):
            from jiedao.geo.locate import AddressResolver

            resolver = AddressResolver(session)
        return cls(names=NameStandardiser(tuple(regions)), resolver=resolver)

    def address(self, text: str) -> dict:
        """Standard address parts for one address text (cached per text without its floor,
        room or shop-front suffix, which does not change the building)."""
        text = address_place(text)
        hit = self._cache.get(text)
        if hit is not None:
            return hit
        out = {"address_norm": None, "address_code": None, "building_code": None,
               "grid_code": None, "street_code": None}
        try:
            from jiedao.geo.address import normalize, parse_address

            if self.resolver is not None:
                res = self.resolver.resolve(text)
                if res.confidence >= self.min_confidence:
                    out.update(address_code=res.address_code, building_code=res.building_code,
                               grid_code=res.grid_code, street_code=res.street_code)
                    if res.address_code:
                        out["address_norm"] = self.resolver.by_code[res.address_code].full
                parsed = res.parsed
            else:
                parsed = None
            if out["address_norm"] is None:
                parsed = parsed or parse_address(text)
                out["address_norm"] = (parsed.canonical if parsed.road and parsed.number
                                       else None) or normalize(text)
        except Exception:  # a resolver bug must not lose the row; the raw text is kept
            out["address_norm"] = clean_text(text)
        if len(self._cache) < 500_000:
            self._cache[text] = out
        return out

    def record(self, raw: dict, mapping) -> tuple[dict, list[FieldProblem]]:
        """Standard columns for one raw row under ``mapping`` (a sources.Mapping)."""
        return _standardise(raw, mapping, self)


# floor / unit / room / shop-front at the end of an address: 1楼105号, 2层220室, 1单元402室, 门面
_INSIDE_RE = re.compile(
    r"(?<=[^\d\-])(?:(?:\d+单元)?\d+(?:楼|层|F)(?:\d+(?:室|号房|号)?)?(?:门面|商铺|铺面)?"
    r"|\d+单元\d+(?:室|号)?|\d{3,5}(?:室|号房)|(?:门面|商铺|铺面))$")


def address_place(text: str) -> str:
    """The address without a trailing floor / unit / room / shop-front part."""
    t = _INSIDE_RE.sub("", text)
    return t if len(t) >= 4 else text


def _standardise(raw: dict, mapping, st: Standardiser) -> tuple[dict, list[FieldProblem]]:
    problems: list[FieldProblem] = []
    vals: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for column, target in mapping.columns.items():
        v = raw.get(column)
        if target.startswith("extra."):
            key = target[6:]
            spec = mapping.parsers.get(target, {})
            kind = spec.get("type", "text")
            if kind == "date":
                d, why = parse_date(v, tuple(spec.get("formats", ())))
                if why:
                    problems.append(FieldProblem(column, why))
                extra[key] = d.isoformat() if d else None
            elif kind in ("number", "int"):
                n, why = parse_number(v)
                if why:
                    problems.append(FieldProblem(column, why))
                extra[key] = (int(n) if kind == "int" and n is not None else n)
            else:
                extra[key] = clean_text(v)
        elif not _blank(v) or target not in vals:
            vals[target] = (column, v)
    std: dict[str, Any] = dict.fromkeys(RECORD_COLUMNS)

    def get(f):
        return vals.get(f, (f, None))

    col, v = get("name")
    name = clean_text(v, 300)
    std["name"] = name
    if name:
        norm = normalise_name(name)[:300]
        std["name_norm"] = norm
        std["name_core"] = st.names.core(norm)[:300]
        form = legal_form(name)
        if form:
            extra["legal_form"] = form
        b = branch_suffix(norm)
        if b:
            extra["branch"] = True
            extra["branch_suffix"] = b
    col, v = get("credit_code")
    if not _blank(v):
        r = parse_credit_code(v)
        std["credit_code"], std["reg_no"] = r.credit_code, r.reg_no
        if r.old_tax_id:
            extra["old_tax_id"] = r.old_tax_id
        if r.org_code:
            extra["org_code"] = r.org_code
        if r.problem:
            problems.append(FieldProblem(col, r.problem))
    col, v = get("reg_no")
    if not _blank(v):
        reg, why = parse_reg_no(v)
        if reg:
            std["reg_no"] = reg
        elif why:
            problems.append(FieldProblem(col, why))
    col, v = get("legal_rep")
    std["legal_rep"] = clean_text(v, 100)
    col, v = get("phone")
    phone, others, why = parse_phone(v)
    std["phone"] = phone
    if others:
        extra["phones"] = others
    if why:
        problems.append(FieldProblem(col, why))
    col, v = get("address")
    addr = clean_text(v)
    std["address_raw"] = addr
    if addr:
        std.update(st.address(addr))
    col, v = get("industry_code")
    std["industry_code"], why = parse_industry(v)
    if why:
        problems.append(FieldProblem(col, why))
    col, v = get("established")
    spec = mapping.parsers.get("established", {})
    std["established"], why = parse_date(v, tuple(spec.get("formats", ())))
    if why:
        problems.append(FieldProblem(col, why))
    col, v = get("status")
    std["status"] = clean_text(v, 40)
    for f in mapping.required:
        if std.get(f) in (None, "") and not (f == "address" and std.get("address_raw")):
            column = vals.get(f, (f,))[0]
            problems.append(FieldProblem(column, f"必填字段为空：{f}", fatal=True))
    std["extra"] = extra
    return std, problems


def standardise_record(raw: dict, mapping, standardiser: Standardiser | None = None
                       ) -> tuple[dict, list[FieldProblem]]:
    """Standard columns (hub_record names) for one raw row, and the problems found.

    ``mapping`` is a :class:`jiedao.hub.sources.Mapping`. Without a ``standardiser`` the
    default region list is used and addresses are only parsed, not resolved to buildings.
    Never raises on bad values: bad fields are blanked and reported.
    """
    return _standardise(raw, mapping, standardiser or _default_standardiser())


@lru_cache(maxsize=1)
def _default_standardiser() -> Standardiser:
    return Standardiser()


__all__ = [
    "CodeResult", "FieldProblem", "org_code_valid", "NameStandardiser", "RECORD_COLUMNS", "STD_FIELDS",
    "Standardiser", "branch_suffix", "clean_text", "legal_form", "normalise_name", "parse_credit_code",
    "parse_date", "parse_industry", "parse_number", "parse_phone", "parse_reg_no", "reg_no_valid",
    "standardise_record", "uscc_check_char", "uscc_valid",
]
