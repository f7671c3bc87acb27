"""Word lists and code helpers for the demo department ledgers (示例数据, all invented).

Enterprise names follow the registration rule 行政区划 + 字号 + 行业 + 组织形式
(e.g. 江城鑫华网络科技有限公司); individual businesses (个体工商户) are shops such as
临江区张记面馆. Credit codes follow GB 32100-2015 (with a GB 11714 organisation code inside),
old registration numbers the 15-digit GB 12113 form (ISO 7064 MOD 11,10).
"""

from __future__ import annotations

# Characters used in 字号 (trade names); two of them make most trade names.
ZIHAO_CHARS = (
    "鑫华鹏瑞泰博恒宏盛达源远兴德信安嘉和润丰凯航腾越卓智晟昊宇辰星海天地金银玉锦"
    "新光明辉耀诚实优佳美汇通联合众力创元亿万千百中东西南北江湖山川林森荣昌隆福祥"
    "顺利益友邦万家鼎盈聚龙凤麒麟鸿飞翔云霞晨阳春秋夏冬华夏蓝绿青紫橙朗逸致睿哲思"
    "达成科普惠泽溢丰沃拓展豪骏驰奥特尚品优选精工匠心正道乐康健雅致尊享悦禾田"
)
ZIHAO_CHARS = "".join(dict.fromkeys(ZIHAO_CHARS))

# (industry phrase in the name, GB/T 4754 code with section letter, industry name, weight,
#  四上 speciality or None, tech field or None)
INDUSTRIES: list[tuple[str, str, str, float, str | None, str | None]] = [
    ("科技", "I6513", "应用软件开发", 7, "规上服务业", "电子信息"),
    ("网络科技", "I6432", "互联网信息服务", 5, "规上服务业", "电子信息"),
    ("信息技术", "I6531", "信息系统集成服务", 5, "规上服务业", "电子信息"),
    ("软件", "I6511", "基础软件开发", 2, "规上服务业", "电子信息"),
    ("电子科技", "C3979", "其他电子器件制造", 2, "工业", "电子信息"),
    ("生物科技", "M7340", "医学研究和试验发展", 1.5, "规上服务业", "生物与新医药"),
    ("医疗器械", "C3589", "其他医疗设备及器械制造", 1, "工业", "生物与新医药"),
    ("新材料", "C2929", "其他塑料制品制造", 1, "工业", "新材料"),
    ("环保科技", "M7514", "节能技术推广服务", 1.5, "规上服务业", "资源与环境"),
    ("智能装备", "C3499", "其他通用设备制造", 1, "工业", "先进制造与自动化"),
    ("新能源", "D4416", "太阳能发电", 0.5, "工业", "新能源与节能"),
    ("机械设备", "F5174", "五金产品批发", 3, "批发业", None),
    ("贸易", "F5191", "贸易代理", 9, "批发业", None),
    ("商贸", "F5299", "其他综合零售", 7, "零售业", None),
    ("建材", "F5165", "建材批发", 2, "批发业", None),
    ("食品", "F5129", "其他食品批发", 2, "批发业", None),
    ("医药", "F5151", "西药批发", 1, "批发业", None),
    ("汽车销售服务", "F5261", "汽车新车零售", 1, "零售业", None),
    ("建筑工程", "E4790", "其他房屋建筑业", 4, "建筑业", None),
    ("装饰工程", "E5011", "公共建筑装饰和装修", 4, "建筑业", None),
    ("市政工程", "E4813", "市政道路工程建筑", 1, "建筑业", None),
    ("房地产开发", "K7010", "房地产开发经营", 1, "房地产开发经营业", None),
    ("物业管理", "K7020", "物业管理", 3, "规上服务业", None),
    ("房地产经纪", "K7030", "房地产中介服务", 1.5, "规上服务业", None),
    ("餐饮管理", "H6210", "正餐服务", 3, "餐饮业", None),
    ("酒店管理", "H6110", "旅游饭店", 1, "住宿业", None),
    ("广告传媒", "L7251", "互联网广告服务", 3, "规上服务业", None),
    ("文化传播", "R8890", "其他文化艺术业", 3, "规上服务业", None),
    ("教育咨询", "P8399", "其他未列明教育", 2, "规上服务业", None),
    ("企业管理咨询", "L7243", "企业管理咨询", 4, "规上服务业", None),
    ("财务咨询", "L7242", "会计、审计及税务服务", 2, "规上服务业", None),
    ("人力资源", "L7261", "职业中介服务", 2, "规上服务业", None),
    ("物流", "G5990", "其他仓储业", 2, "规上服务业", None),
    ("供应链管理", "L7219", "其他组织管理服务", 1.5, "规上服务业", None),
    ("家政服务", "O8010", "家庭服务", 1, "规上服务业", None),
    ("工程设计", "M7484", "工程设计活动", 1.5, "规上服务业", "高技术服务"),
    ("检测技术", "M7452", "检测服务", 1, "规上服务业", "高技术服务"),
    ("投资管理", "J6760", "资本投资服务", 1, None, None),
    ("印务", "C2319", "包装装潢及其他印刷", 0.5, "工业", None),
    ("服饰", "C1819", "其他机织服装制造", 0.5, "工业", None),
]
TECH_FIELDS = sorted({t for *_, t in INDUSTRIES if t})

# Individual businesses (个体工商户): shop kind, industry code, industry name, weight.
SHOPS: list[tuple[str, str, str, float]] = [
    ("面馆", "H6224", "小吃服务", 6), ("餐馆", "H6210", "正餐服务", 6),
    ("小吃店", "H6224", "小吃服务", 5), ("烧烤店", "H6210", "正餐服务", 3),
    ("早餐店", "H6224", "小吃服务", 3), ("便利店", "F5212", "便利店零售", 6),
    ("超市", "F5211", "超级市场零售", 3), ("副食店", "F5221", "粮油零售", 4),
    ("水果店", "F5223", "果品、蔬菜零售", 4), ("烟酒店", "F5227", "烟草制品零售", 4),
    ("五金店", "F5234", "五金零售", 3), ("服装店", "F5232", "服装零售", 5),
    ("鞋店", "F5233", "鞋帽零售", 2), ("理发店", "O8071", "理发及美容服务", 5),
    ("美甲店", "O8071", "理发及美容服务", 2), ("干洗店", "O8072", "洗染服务", 1.5),
    ("手机维修部", "O8121", "计算机和辅助设备修理", 2), ("电动车行", "F5267", "摩托车及零配件零售", 1.5),
    ("药房", "F5251", "西药零售", 1.5), ("茶叶店", "F5225", "营养和保健品零售", 1.5),
    ("花店", "F5229", "其他食品零售", 1), ("文具店", "F5241", "文具用品零售", 1.5),
    ("汽车修理厂", "O8111", "汽车修理与维护", 1.5), ("快递代办点", "G6020", "快递服务", 1.5),
    ("茶馆", "H6231", "茶馆服务", 1), ("棋牌室", "R9019", "其他娱乐业", 1),
    ("装饰材料经营部", "F5165", "建材批发", 1.5), ("家电维修部", "O8131", "家用电器修理", 1),
]

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程"
    "魏苏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万"
)
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰涛明超秀霞平刚桂英华建国志红玉兰文斌辉鹏飞宇浩凯俊帆琳"
    "欣怡婷雪梅倩颖晨阳波宁亮健峰松林斌海云琴燕龙新春德荣成祥慧佳婉思雨"
)
TAX_OFFICES = ["第一税务所", "第二税务所", "第三税务所", "第四税务所", "办税服务厅"]

USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARSET)}
_ORG_VALUE = {c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def org_check(body8: str) -> str:
    """GB 11714 check character of an 8-character organisation code body."""
    v = _ORG_VALUE
    total = sum(v[c] * w for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def uscc_check(code17: str) -> str:
    """GB 32100-2015 check character of the first 17 characters of a credit code."""
    v = _USCC_VALUE
    total = sum(v[c] * w for c, w in zip(code17, USCC_WEIGHTS, strict=True))
    return USCC_CHARSET[(31 - total % 31) % 31]


def make_uscc(kind_prefix: str, division: str, org_body8: str) -> str:
    """A valid credit code, e.g. make_uscc("91", "420199", "12345678")."""
    body = kind_prefix + division + org_body8 + org_check(org_body8)
    return body + uscc_check(body)


def uscc_ok(code: str) -> bool:
    """True when ``code`` is an 18-character credit code with a correct check character."""
    if len(code) != 18 or any(c not in USCC_CHARSET for c in code):
        return False
    return uscc_check(code[:17]) == code[17]


def regno_check(code14: str) -> str:
    """ISO 7064 MOD 11,10 check digit of a 14-digit registration number body (GB 12113)."""
    p = 10
    for ch in code14:
        s = (p + int(ch)) % 10
        p = ((s or 10) * 2) % 11
    return str((11 - p) % 10)


def make_regno(division: str, seq8: int) -> str:
    """A valid old 15-digit registration number (注册号)."""
    body = f"{division}{seq8:08d}"
    return body + regno_check(body)


def regno_ok(code: str) -> bool:
    """True when ``code`` is a 15-digit registration number with a correct check digit."""
    return len(code) == 15 and code.isdigit() and regno_check(code[:14]) == code[14]
