#!/usr/bin/env python3
"""Deterministic generator for llmctl's embedded default data.

It writes pretrain/corpus.txt and <task>/{train,validation}.jsonl into an output directory. In a checkout,
everything under data/ (except generate.py, measure.py and README.md) is written by it:

    python data/generate.py            # the shim: writes data/ (any Python >= 3.11, stdlib only)
    python llmctl/embedded/generate.py OUT_DIR

An installed llmctl runs it once into a per-user cache (llmctl.embedded.resolve, for `embedded:` paths).

The output is byte-identical on every run: all randomness comes from ``random.Random`` instances seeded
with fixed integers, lists are never built by iterating over sets, and files are written with "\\n"
line endings in UTF-8.

The text describes an invented world (people, towns, rivers, foods, animals with pronounceable made-up
names) through many document templates: biographies, town descriptions, arithmetic lessons, word
problems, recipes, dialogues, diaries, letters, weather reports, stories, field-guide entries, price
lists, instructions, question-and-answer sheets, news reports, reviews, and Chinese documents.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import json
import os
import random
import sys
from itertools import accumulate

HERE = os.path.dirname(os.path.abspath(__file__))
# The checkout's data/ folder (llmctl/embedded -> the repository root), the default output directory.
CHECKOUT_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "data")
SEED = 1842

# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------


def words(s: str) -> list[str]:
    return s.split()


def lines_of(s: str) -> list[str]:
    return [x.strip() for x in s.strip().split("\n") if x.strip()]


class Zipf:
    """Pick items with Zipf-like weights 1/(rank+k)^s; rank is the order of ``items``."""

    def __init__(self, items, s: float = 1.0, k: float = 1.0):
        self.items = list(items)
        self.cum = list(accumulate(1.0 / (i + k) ** s for i in range(len(self.items))))

    def pick(self, rng: random.Random):
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]

    def sample(self, rng: random.Random, n: int) -> list:
        out: list = []
        guard = 0
        while len(out) < n and guard < 1000:
            x = self.pick(rng)
            guard += 1
            if x not in out:
                out.append(x)
        return out

    def __len__(self):
        return len(self.items)


def cap(s: str) -> str:
    return s[:1].upper() + s[1:] if s else s


def art(w: str) -> str:
    """'a' or 'an' + word."""
    lw = w.lower()
    vowel = (lw[:1] in "aeiouåáéèëöøüï" and not lw.startswith(("uni", "use", "one", "eu"))) or lw.startswith(("honest", "hour"))
    return ("an " if vowel else "a ") + w


IRREG_PLURAL = {
    "knife": "knives", "loaf": "loaves", "shelf": "shelves", "leaf": "leaves", "wolf": "wolves",
    "mouse": "mice", "goose": "geese", "sheep": "sheep", "deer": "deer", "fish": "fish", "ox": "oxen",
    "child": "children", "man": "men", "woman": "women", "foot": "feet", "tooth": "teeth", "trout": "trout",
    "salmon": "salmon", "calf": "calves", "scarf": "scarves", "potato": "potatoes", "tomato": "tomatoes",
    "person": "people", "carp": "carp", "pike": "pike",
}


def plural(w: str) -> str:
    if " " in w:
        head, last = w.rsplit(" ", 1)
        return head + " " + plural(last)
    if w in IRREG_PLURAL:
        return IRREG_PLURAL[w]
    if w.endswith(("s", "sh", "ch", "x", "z")):
        return w + "es"
    if w.endswith("y") and w[-2:-1] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def join_list(items: list[str], conj: str = "and") -> str:
    items = list(items)
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} {conj} {items[1]}"
    return ", ".join(items[:-1]) + f", {conj} " + items[-1]


ONES = words("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
             "fifteen sixteen seventeen eighteen nineteen")
TENS = words("_ _ twenty thirty forty fifty sixty seventy eighty ninety")


def num(n: int) -> str:
    """English words for 0 <= n < 1,000,000."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return ONES[n // 100] + " hundred" + ("" if rest == 0 else " and " + num(rest))
    rest = n % 1000
    head = num(n // 1000) + " thousand"
    if rest == 0:
        return head
    return head + (" and " if rest < 100 else " ") + num(rest)


ORD_SPECIAL = {1: "first", 2: "second", 3: "third", 5: "fifth", 8: "eighth", 9: "ninth", 12: "twelfth"}


def ordinal(n: int) -> str:
    if n in ORD_SPECIAL:
        return ORD_SPECIAL[n]
    if n < 20:
        return num(n) + "th"
    if n % 10 == 0:
        return TENS[n // 10][:-1] + "ieth"
    return TENS[n // 10] + "-" + ordinal(n % 10)


def count(n: int, noun: str) -> str:
    return f"{num(n)} {noun if n == 1 else plural(noun)}"


def commas(n: int) -> str:
    return f"{n:,}"


ZH_DIGITS = "零一二三四五六七八九"


def zh_num(n: int) -> str:
    """Chinese numerals for 0 <= n < 100000."""
    if n < 10:
        return ZH_DIGITS[n]
    if n < 20:
        return "十" + ("" if n == 10 else ZH_DIGITS[n % 10])
    units = [(10000, "万"), (1000, "千"), (100, "百"), (10, "十")]
    out = ""
    zero = False
    started = False
    for u, name in units:
        d = (n // u) % 10
        if d:
            if zero and started:
                out += "零"
            out += ZH_DIGITS[d] + name
            started = True
            zero = False
        elif started:
            zero = True
    d = n % 10
    if d:
        if zero or (started and out[-1] != "十"):
            out += "零" if zero else ""
        out += ZH_DIGITS[d]
    return out


def zh_year(y: int) -> str:
    return "".join(ZH_DIGITS[int(c)] for c in str(y))


MONTHS = words("January February March April May June July August September October November December")
DAYS = words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
ZH_WEEKDAY = ["一", "二", "三", "四", "五", "六", "日"]
SEASONS = ["winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer", "autumn", "autumn",
           "autumn", "winter"]

# ----------------------------------------------------------------------------------------------------
# English lexicon (written for this project)
# ----------------------------------------------------------------------------------------------------

ANIMALS = words("""dog cat horse goat sheep cow pig hen duck goose fox wolf bear deer hare rabbit mouse owl crow
sparrow swan heron otter beaver badger hedgehog frog toad snail beetle bee moth butterfly trout eel pike crab
lizard bat mole squirrel donkey mule ox lamb robin wren lark hawk eagle magpie pigeon seal stork weasel
kingfisher tortoise parrot goldfinch""")

PET_KINDS = words("dog cat goat rabbit parrot tortoise hen duck donkey pony canary hedgehog")

PROFESSIONS = lines_of("""
baker
miller
blacksmith
weaver
potter
carpenter
fisher
farmer
shepherd
teacher
doctor
nurse
tailor
cook
merchant
sailor
builder
painter
singer
clerk
judge
stonemason
glassblower
brewer
butcher
gardener
librarian
innkeeper
ferryman
beekeeper
shoemaker
dyer
rope maker
clockmaker
mapmaker
printer
bookbinder
candle maker
cheesemaker
herbalist
midwife
surveyor
engineer
musician
poet
boatbuilder
wheelwright
tanner
basket weaver
lamplighter
""")

# what a person of each profession makes or does (object phrase, verb phrase)
PROF_WORK = {
    "baker": ("bread and cakes", "baked bread before dawn"),
    "miller": ("flour", "ground wheat and barley at the mill"),
    "blacksmith": ("horseshoes and nails", "worked iron at the forge"),
    "weaver": ("wool cloth", "wove cloth on a wide loom"),
    "potter": ("bowls and jugs", "shaped clay on the wheel"),
    "carpenter": ("tables and doors", "built tables, chairs and doors"),
    "fisher": ("fresh fish", "fished on the river every morning"),
    "farmer": ("wheat and turnips", "ploughed the fields and fed the animals"),
    "shepherd": ("wool and cheese", "kept sheep on the hills"),
    "teacher": ("lessons", "taught reading and sums to the village children"),
    "doctor": ("medicine", "looked after the sick"),
    "nurse": ("care", "looked after the sick and the old"),
    "tailor": ("coats and shirts", "sewed coats, shirts and trousers"),
    "cook": ("soups and stews", "cooked for a large house"),
    "merchant": ("cloth and spices", "bought and sold cloth and spices"),
    "sailor": ("rope knots", "sailed on cargo ships along the coast"),
    "builder": ("houses and walls", "built houses and garden walls"),
    "painter": ("pictures", "painted pictures of rivers and hills"),
    "singer": ("songs", "sang at weddings and festivals"),
    "clerk": ("letters and records", "kept the town records"),
    "judge": ("judgements", "settled quarrels at the town hall"),
    "stonemason": ("walls and steps", "cut and laid stone"),
    "glassblower": ("glass bottles", "blew glass bottles and lamps"),
    "brewer": ("beer and cider", "brewed beer and cider"),
    "butcher": ("sausages", "sold meat and sausages"),
    "gardener": ("flowers and herbs", "looked after the gardens"),
    "librarian": ("catalogues", "looked after the books in the library"),
    "innkeeper": ("meals and beds", "ran a busy inn"),
    "ferryman": ("crossings", "rowed travellers across the river"),
    "beekeeper": ("honey and wax", "kept bees and sold honey"),
    "shoemaker": ("boots and shoes", "made and mended boots"),
    "dyer": ("coloured cloth", "dyed wool in large vats"),
    "rope maker": ("ropes", "twisted hemp into strong ropes"),
    "clockmaker": ("clocks", "built and repaired clocks"),
    "mapmaker": ("maps", "drew maps of the valleys and roads"),
    "printer": ("books and posters", "printed books and posters"),
    "bookbinder": ("bound books", "bound books in leather"),
    "candle maker": ("candles", "made candles from wax and tallow"),
    "cheesemaker": ("cheese", "made cheese from goat milk"),
    "herbalist": ("herbal remedies", "gathered herbs and made remedies"),
    "midwife": ("care", "helped mothers bring children into the world"),
    "surveyor": ("plans", "measured fields and roads"),
    "engineer": ("bridges and pumps", "designed bridges and water pumps"),
    "musician": ("music", "played the fiddle at dances"),
    "poet": ("poems", "wrote poems about the seasons"),
    "boatbuilder": ("boats", "built small river boats"),
    "wheelwright": ("wheels", "made wheels for carts"),
    "tanner": ("leather", "turned hides into leather"),
    "basket weaver": ("baskets", "wove baskets from willow"),
    "lamplighter": ("light", "lit the street lamps every evening"),
}

OBJECTS = words("""basket cup bowl plate knife spoon pot kettle lamp candle rope ladder hammer saw chisel needle
barrel bucket wheel cart boat net hook key lock box chest chair table bench bed blanket coat hat boot glove
scarf book map letter coin ring bell clock mirror jar bottle sack shovel rake axe fence gate window door stone
brick shell feather flower ribbon button comb brush drum flute fiddle kite whistle lantern pencil notebook
umbrella pillow teapot jug sieve broom shelf cushion apron basin trowel compass""")

MATERIALS = words("wooden iron copper clay glass wool linen leather stone silver brass tin willow oak pine")

COLORS = words("red blue green yellow white black grey brown orange purple pink golden silver")

ADJ_THING = words("""old new small large heavy light bright dark warm cold soft hard smooth rough clean dirty wet
dry sharp long short wide narrow round square empty full quiet loud plain strong simple tidy crooked straight
hollow thick thin shiny dusty rusty painted broken polished tiny huge neat""")

ADJ_PERSON = words("""kind patient clever cheerful quiet stubborn honest brave careful curious generous shy
proud gentle busy wise funny serious calm nervous polite friendly strict humble restless thoughtful loyal
cautious hardworking forgetful""")

POS_ADJ = words("""good excellent wonderful fine lovely pleasant tasty sturdy reliable comfortable delightful
superb great charming useful solid fresh perfect""")
NEG_ADJ = words("""bad awful terrible poor dull flimsy disappointing bland unpleasant horrible useless weak
stale rude noisy dirty broken""")

# past-tense verbs that make sense with a concrete object ("I mended a basket")
OBJ_VERBS_PAST = words("found bought sold made mended painted carried lost cleaned polished hid wrapped borrowed "
                       "fixed dropped carved washed gave")

FOODS = words("""bread cheese butter honey apples pears plums cherries onions carrots turnips leeks cabbages
beans peas potatoes barley oats rice eggs milk cream mushrooms walnuts hazelnuts chestnuts raisins figs lentils
garlic parsley thyme mint sage pepper salt sugar flour vinegar beetroot pumpkin spinach radishes quinces""")

LIQUIDS = words("milk cream vinegar honey")
POWDERS = words("flour sugar oats rice barley lentils salt raisins")
HERBS = words("parsley thyme mint sage pepper garlic")
FOOD_SINGULAR = {"apples": "apple", "pears": "pear", "plums": "plum", "cherries": "cherry", "onions": "onion",
                 "carrots": "carrot", "turnips": "turnip", "leeks": "leek", "cabbages": "cabbage", "beans": "bean",
                 "peas": "pea", "potatoes": "potato", "eggs": "egg", "mushrooms": "mushroom", "walnuts": "walnut",
                 "hazelnuts": "hazelnut", "chestnuts": "chestnut", "raisins": "raisin", "figs": "fig", "lentils": "lentil",
                 "radishes": "radish", "quinces": "quince"}


def food_adj(food: str) -> str:
    """The form of a food used before a dish name: 'leek soup', 'cherry tart'."""
    return FOOD_SINGULAR.get(food, food)


def ingredient(rng: random.Random, food: str) -> str:
    """An ingredient line with a sensible unit for the kind of food."""
    if food in LIQUIDS:
        q = rng.randrange(1, 4)
        return f"{count(q, 'cup')} of {food}"
    if food in POWDERS:
        q = rng.randrange(1, 5)
        return f"{count(q, rng.choice(['cup', 'spoon']))} of {food}"
    if food in HERBS:
        q = rng.randrange(1, 3)
        return f"{count(q, rng.choice(['pinch', 'spoon']))} of {food}"
    if food in FOOD_SINGULAR:
        q = rng.randrange(2, 9)
        return f"{num(q)} {food}" if rng.random() < 0.6 else f"{count(q // 2 or 1, 'pound')} of {food}"
    q = rng.randrange(1, 4)
    return f"{count(q, rng.choice(['pound', 'handful']))} of {food}"


DISHES = words("soup stew pie porridge pancakes dumplings cake tart salad jam pudding bread broth fritters")

PLACES = lines_of("""
the market
the bridge
the mill
the harbour
the library
the school
the bakery
the inn
the old tower
the square
the well
the orchard
the smithy
the town hall
the ferry landing
the meadow
the forest path
the hill
the chapel
the riverbank
the post office
the tea house
the boatyard
the workshop
""")

WEATHER = lines_of("""
sunny
cloudy
rainy
windy
foggy
snowy
stormy
mild
""")

WEATHER_DETAIL = {
    "sunny": ["clear skies all day", "bright sunshine", "a warm sun and a light breeze"],
    "cloudy": ["grey clouds", "a heavy grey sky", "clouds moving in from the west"],
    "rainy": ["light rain", "heavy rain in the afternoon", "showers on and off"],
    "windy": ["a strong wind from the north", "gusts of wind", "a cold wind off the hills"],
    "foggy": ["thick fog in the morning", "mist over the river", "fog that lifted by noon"],
    "snowy": ["a little snow", "heavy snow", "snow on the hills"],
    "stormy": ["thunder and heavy rain", "a storm in the evening", "strong winds and hail"],
    "mild": ["soft, mild air", "calm, gentle air", "no wind to speak of"],
}

DIRECTIONS = words("north south east west")
HOBBIES = lines_of("""
fishing
singing
playing chess
walking in the hills
playing the flute
drawing birds
growing roses
collecting stones
sailing
reading old maps
baking pies
carving wood
dancing
keeping bees
telling stories
""")

REGIONS = lines_of("""
the Eastern Vale
the High Moors
the Salt Coast
the Green Downs
the Iron Hills
the Lake Country
the Southern Reach
the Reed Marshes
the Amber Plains
the Northern Fells
the Willow Lowlands
the Cedar Uplands
""")

PRODUCTS = lines_of("""
copper pots
honey cakes
woollen blankets
smoked fish
apple cider
goat cheese
clay jugs
willow baskets
river pearls
painted tiles
rope
salt
pickled plums
walnut oil
glass beads
linen
""")

LANDMARKS = lines_of("""
stone mill
old bridge
clock tower
round library
lighthouse
market hall
water wheel
bell tower
great barn
mossy well
""")

FEELINGS = words("happy tired glad worried proud sleepy hungry cheerful sad calm excited bored")

# ----------------------------------------------------------------------------------------------------
# Invented names
# ----------------------------------------------------------------------------------------------------

ONSETS = words("b br d dr f g gr h k kr l m n p r s st t tr v w z th sh j c bl fl gl sl sk sn pr")
VOWELS = words("a e i o u a e o ai ea ou y ie")
CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "ll", "st", "rn", "lt", "x", "v", "sk", "n", "r"]
ACCENT_SWAPS = [("e", "é"), ("e", "ë"), ("a", "å"), ("o", "ö"), ("u", "ü"), ("a", "á"), ("i", "ï"), ("o", "ø"),
                ("n", "ñ"), ("c", "ç"), ("e", "è")]

FEMALE_ENDINGS = ["a", "a", "e", "ia", "ine", "elle", "wyn", "ra", "issa", "ë", "ey"]
MALE_ENDINGS = ["", "", "o", "an", "or", "ric", "as", "en", "ut", "im", "ald"]
SURNAME_ENDINGS = ["", "er", "en", "son", "ley", "wick", "ow", "ard", "man", "sby", "well", "berg", "ström", "ez"]
TOWN_ENDINGS = ["hold", "mere", "ford", "by", "wick", "stead", "ton", "ham", "dale", "holm", "bury", "moor",
                "field", "gate", "haven", "brook", "cliff", "marsh"]
RIVER_ENDINGS = ["a", "en", "el", "ine", "ar", "ow", "is", "ent", ""]
FOOD_ENDINGS = ["berry", "root", "nut", "melon", "bean", "leaf", "apple", "corn", "plum", "seed"]
CREATURE_ENDINGS = ["bird", "finch", "wing", "fish", "moth", "beetle", "hound", "fox", "hare", "fern", "moss",
                    "flower", "wort", "thorn", "vine"]


def _syll(rng: random.Random, coda_p: float = 0.45) -> str:
    s = rng.choice(ONSETS) + rng.choice(VOWELS)
    if rng.random() < coda_p:
        s += rng.choice(CODAS)
    return s


def _accent(rng: random.Random, w: str) -> str:
    for _ in range(6):
        a, b = rng.choice(ACCENT_SWAPS)
        idx = w.find(a, 1)
        if idx > 0:
            return w[:idx] + b + w[idx + 1:]
    return w


def _unique(rng: random.Random, n: int, make, accent_p: float = 0.0, minlen: int = 3, maxlen: int = 11,
            ok=lambda w: True) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        w = make(rng)
        if not (minlen <= len(w) <= maxlen) or any(w[i] == w[i + 1] == w[i + 2] for i in range(len(w) - 2)) or not ok(w):
            continue
        if accent_p and rng.random() < accent_p:
            w = _accent(rng, w)
        w = cap(w)
        if w in seen:
            continue
        seen.add(w)
        out.append(w)
    return out


# ----------------------------------------------------------------------------------------------------
# Chinese lexicon (simple, written for this project)
# ----------------------------------------------------------------------------------------------------

ZH_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾田董潘袁蔡蒋余杜叶程魏苏吕丁沈任姚卢钟姜崔谭陆范汪廖石金贾夏方邹熊白孟秦侯江薛雷龙史陶贺毛顾万钱戴严孔常汤")
ZH_GIVEN = list("明华丽强芳伟敏静磊军洋勇艳杰娟涛超霞平刚英玉兰文辉建红燕鹏飞云海山春秋冬雪梅林晨宇浩然思雨佳欣怡婷子晓天安宁乐嘉成志国荣慧琳倩悦新凯博远鑫瑶琪")
ZH_PLACE_A = list("青白红清柳杏黄南北东西松桃竹金银铜石长高新古双马龙凤花月星")
ZH_PLACE_B = list("石沙河水林花土山岭湖溪桥岗门田坡湾塘口")
ZH_PLACE_C = ["镇", "村", "城", "县", "庄", "堡"]
ZH_RIVER_C = ["河", "江", "溪"]
ZH_PROFS = ["老师", "医生", "农民", "厨师", "木匠", "商人", "画家", "渔夫", "铁匠", "裁缝", "司机", "护士", "面包师",
            "园丁", "歌手", "书店老板", "邮递员", "工程师", "养蜂人", "陶工"]
ZH_FOODS = ["米饭", "面条", "饺子", "包子", "馒头", "豆腐", "青菜", "白菜", "萝卜", "土豆", "西红柿", "鸡蛋", "鱼",
            "鸡肉", "猪肉", "牛肉", "苹果", "梨", "桃子", "西瓜", "葡萄", "橘子", "粥", "年糕", "红薯", "玉米",
            "黄瓜", "南瓜", "花生", "蘑菇"]
ZH_FRUITS = ["苹果", "梨", "桃子", "橘子", "李子", "枣", "柿子", "杏"]
ZH_THINGS = ["本书", "支笔", "把伞", "个碗", "双鞋", "顶帽子", "件衣服", "张桌子", "把椅子", "个篮子", "盏灯", "把刀"]
ZH_HOBBIES = ["钓鱼", "唱歌", "下棋", "画画", "种花", "爬山", "看书", "写字", "跑步", "游泳", "做饭", "放风筝"]
ZH_PLACES = ["市场", "学校", "图书馆", "医院", "公园", "河边", "山上", "商店", "车站", "饭店", "茶馆", "田里",
             "码头", "邮局", "面包店"]
ZH_WEATHER = ["晴", "多云", "阴", "小雨", "中雨", "大雨", "小雪", "大雪", "有雾", "雷阵雨"]
ZH_WIND = ["东", "南", "西", "北", "东南", "西北", "东北", "西南"]
ZH_ADJ_PERSON = ["勤劳", "善良", "聪明", "安静", "热情", "认真", "细心", "开朗", "勇敢", "耐心"]
ZH_ANIMALS = ["狗", "猫", "鸡", "鸭", "鹅", "羊", "牛", "马", "兔子", "小鸟"]
ZH_COLORS = ["红色", "蓝色", "绿色", "黄色", "白色", "黑色", "灰色", "紫色"]
ZH_FEEL = ["高兴", "开心", "累", "难过", "满意", "紧张", "兴奋", "放心"]


# ----------------------------------------------------------------------------------------------------
# The world: pools of names and fixed entities shared by every output
# ----------------------------------------------------------------------------------------------------


class Town:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Person:
    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def full(self) -> str:
        return f"{self.first} {self.last}"


PRON = {
    "f": {"subj": "she", "obj": "her", "pos": "her", "refl": "herself", "Subj": "She", "Pos": "Her",
          "noun": "woman", "child": "girl", "parent": "mother", "sib": "sister", "zh": "她"},
    "m": {"subj": "he", "obj": "him", "pos": "his", "refl": "himself", "Subj": "He", "Pos": "His",
          "noun": "man", "child": "boy", "parent": "father", "sib": "brother", "zh": "他"},
}


class World:
    def __init__(self, seed: int = SEED):
        rng = random.Random(seed)
        self.female = Zipf(_unique(rng, 420, lambda r: (_syll(r, 0.5) if r.random() < 0.6 else _syll(r, 0.3) + _syll(r, 0.0))
                                   + r.choice(FEMALE_ENDINGS), accent_p=0.05, maxlen=9,
                                   ok=lambda w: w[-1] in "aeyn" or w.endswith("ë")), s=0.9, k=3)
        self.male = Zipf(_unique(rng, 420, lambda r: (_syll(r, 0.7) if r.random() < 0.6 else _syll(r, 0.3) + _syll(r, 0.6))
                                 + r.choice(MALE_ENDINGS), accent_p=0.05, maxlen=9,
                                 ok=lambda w: w[-1] not in "aeiy"), s=0.9, k=3)
        self.surnames = Zipf(_unique(rng, 900, lambda r: _syll(r, 0.3) + _syll(r, 0.5) + r.choice(SURNAME_ENDINGS),
                                     accent_p=0.07, minlen=4), s=0.8, k=5)
        river_names = _unique(rng, 60, lambda r: _syll(r, 0.5) + r.choice(RIVER_ENDINGS), accent_p=0.1, minlen=3, maxlen=8)
        self.rivers = Zipf(river_names, s=0.7, k=3)
        town_names = _unique(rng, 320, lambda r: _syll(r, 0.4) + (_syll(r, 0.0) if r.random() < 0.3 else "")
                             + r.choice(TOWN_ENDINGS), accent_p=0.08, minlen=5, maxlen=12)
        self.inv_foods = Zipf([n.lower() for n in _unique(rng, 90, lambda r: _syll(r, 0.4) + r.choice(FOOD_ENDINGS),
                                                          accent_p=0.05, minlen=5, maxlen=11)], s=0.9, k=2)
        self.creatures = Zipf([n.lower() for n in _unique(rng, 140, lambda r: _syll(r, 0.5) + r.choice(CREATURE_ENDINGS),
                                                          accent_p=0.05, minlen=5, maxlen=12)], s=0.8, k=3)
        self.pet_names = Zipf(_unique(rng, 150, lambda r: _syll(r, 0.3) + r.choice(["y", "ie", "o", "a", "kin", "by", "s"]),
                                      accent_p=0.05, maxlen=8), s=0.8, k=2)
        # Boat names: not used by any template yet, but drawn here so that the pools below keep their values.
        self.ships = _unique(rng, 60, lambda r: _syll(r, 0.5) + _syll(r, 0.4), maxlen=9)

        towns: list[Town] = []
        for i, name in enumerate(town_names):
            towns.append(Town(
                name=name,
                river=river_names[rng.randrange(len(river_names))],
                bank=rng.choice(DIRECTIONS),
                region=REGIONS[rng.randrange(len(REGIONS))],
                population=rng.choice([rng.randrange(120, 900), rng.randrange(900, 9000), rng.randrange(9000, 60000)]),
                products=rng.sample(PRODUCTS, 2),
                market_day=rng.choice(DAYS[:6]),
                founded=rng.randrange(1100, 1850),
                landmark=rng.choice(LANDMARKS),
                landmark_year=0,
                rank=i,
            ))
        for t in towns:
            t.landmark_year = rng.randrange(t.founded, t.founded + 300)
            nb = towns[rng.randrange(len(towns))]
            while nb is t:
                nb = towns[rng.randrange(len(towns))]
            t.neighbour = nb.name
            t.neighbour_dist = rng.randrange(3, 60)
            t.neighbour_dir = rng.choice(DIRECTIONS)
        self.towns = Zipf(towns, s=0.7, k=5)
        self.town_list = towns

        # Chinese pools
        zh_places = []
        seen: set[str] = set()
        while len(zh_places) < 80:
            nm = rng.choice(ZH_PLACE_A) + rng.choice(ZH_PLACE_B) + rng.choice(ZH_PLACE_C)
            if nm not in seen:
                seen.add(nm)
                zh_places.append(nm)
        self.zh_places = Zipf(zh_places, s=0.7, k=3)
        zh_rivers = []
        while len(zh_rivers) < 20:
            nm = rng.choice(ZH_PLACE_A) + rng.choice(ZH_PLACE_B[:8]) + rng.choice(ZH_RIVER_C)
            if nm not in seen:
                seen.add(nm)
                zh_rivers.append(nm)
        self.zh_rivers = zh_rivers
        self.zh_place_river = {p: zh_rivers[rng.randrange(len(zh_rivers))] for p in zh_places}

    # --- people -------------------------------------------------------------------------------------
    def person(self, rng: random.Random, gender: str | None = None, last: str | None = None,
               town: Town | None = None) -> Person:
        g = gender or rng.choice("fm")
        first = (self.female if g == "f" else self.male).pick(rng)
        t = town or self.towns.pick(rng)
        prof = rng.choice(PROFESSIONS)
        born = rng.randrange(1780, 1925)
        return Person(
            first=first, last=last or self.surnames.pick(rng), g=g, p=PRON[g], town=t, prof=prof, born=born,
            age=rng.randrange(19, 80), trait=rng.choice(ADJ_PERSON), trait2=rng.choice(ADJ_PERSON),
            pet_kind=rng.choice(PET_KINDS), pet_name=self.pet_names.pick(rng),
            food=self.inv_foods.pick(rng) if rng.random() < 0.4 else rng.choice(FOODS),
            color=rng.choice(COLORS), hobby=rng.choice(HOBBIES),
        )

    def other_first(self, rng: random.Random, avoid: list[str], gender: str | None = None) -> tuple[str, str]:
        for _ in range(50):
            g = gender or rng.choice("fm")
            n = (self.female if g == "f" else self.male).pick(rng)
            if n not in avoid:
                return n, g
        return n, g

    def other_town(self, rng: random.Random, t: Town) -> Town:
        for _ in range(50):
            o = self.towns.pick(rng)
            if o is not t:
                return o
        return o

    def zh_name(self, rng: random.Random) -> str:
        n = rng.choice(ZH_SURNAMES[:40] if rng.random() < 0.7 else ZH_SURNAMES)
        n += rng.choice(ZH_GIVEN)
        if rng.random() < 0.6:
            n += rng.choice(ZH_GIVEN)
        return n


# ----------------------------------------------------------------------------------------------------
# Pretraining documents (English)
# ----------------------------------------------------------------------------------------------------


def doc_biography(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    P = p.p
    t = p.town
    died_age = rng.randrange(45, 96)
    died = p.born + died_age
    father = W.male.pick(rng)
    mother = W.female.pick(rng)
    fprof, mprof = rng.choice(PROFESSIONS), rng.choice(PROFESSIONS)
    moved_age = rng.randrange(14, 30)
    t2 = W.other_town(rng, t) if rng.random() < 0.6 else t
    years_work = rng.randrange(3, 40)
    n_children = rng.randrange(0, 7)
    spouse, sg = W.other_first(rng, [p.first], gender="m" if p.g == "f" else "f")
    obj, work = PROF_WORK[p.prof]
    out = []
    out.append(rng.choice([
        f"{p.full} was born in {t.name} in {p.born}.",
        f"{p.full} ({p.born}–{died}) was {art(p.prof)} from {t.name}, a town in {t.region}.",
        f"{p.first} {p.last} was born on {rng.randrange(1, 29)} {rng.choice(MONTHS)} {p.born} in the town of {t.name}.",
        f"{p.full} was {art(p.trait)} {p.prof} who lived in {t.region}.",
    ]))
    out.append(rng.choice([
        f"{P['Pos']} father, {father} {p.last}, was {art(fprof)}, and {P['pos']} mother, {mother} {p.last}, was {art(mprof)}.",
        f"{P['Pos']} father was {art(fprof)} and {P['pos']} mother worked as {art(mprof)}.",
        f"{P['Subj']} was the {ordinal(rng.randrange(1, 6))} child of {father} and {mother} {p.last}.",
    ]))
    pool = [
        f"As a {P['child']}, {p.first} liked to walk along the river {t.river} and collect smooth stones.",
        f"As a child, {p.first} was {p.trait} and {p.trait2}, and {P['subj']} spent long hours {p.hobby}.",
        f"{p.first} learned to read at the small school near {rng.choice(PLACES)} in {t.name}.",
        f"When {P['subj']} was {num(moved_age)}, {p.first} " + ("moved to " if t2 is not t else "left home for the centre of ") + f"{t2.name}" + (
            f", which lies {num(t2.neighbour_dist)} miles {t2.neighbour_dir} of {t2.neighbour}." if t2 is not t
            else f" to start work, and {P['subj']} stayed there for the rest of {P['pos']} life."),
        f"In {t2.name}, {p.first} worked as {art(p.prof)} for {num(years_work)} years. {P['Subj']} {work}.",
        f"People in {t2.name} said that {p.first} made the best {obj} in {t2.region}.",
        f"{p.first} kept {art(p.pet_kind)} called {p.pet_name}, and the {p.pet_kind} followed {P['obj']} everywhere.",
        f"{P['Pos']} favourite food was {p.food}, and {P['subj']} ate it every {rng.choice(DAYS)}.",
        f"{p.first} married {spouse} in {p.born + rng.randrange(19, 35)}" + (
            f", and they had {count(n_children, 'child')}." if n_children else ", but they had no children."),
        f"In the evenings {p.first} enjoyed {p.hobby}.",
        f"{P['Pos']} favourite colour was {p.color}, and {P['pos']} front door was painted {p.color}.",
        f"Every {t2.market_day}, {p.first} went to the market in {t2.name} to sell {obj}.",
        f"{p.first} was known as {art(p.trait)} {P['noun']} who never forgot a name.",
        f"In {p.born + rng.randrange(20, 40)}, a great flood of the {t.river} destroyed {P['pos']} workshop, but {p.first} built it again.",
        f"{p.first} once walked from {t.name} to {t.neighbour}, a distance of {num(t.neighbour_dist)} miles, in a single day.",
        f"{P['Subj']} wrote {num(rng.randrange(2, 40))} letters to {P['pos']} {P['sib']} {W.other_first(rng, [p.first], p.g)[0]}, who lived in {W.other_town(rng, t).name}.",
    ]
    k = rng.randrange(3, len(pool) + 1)
    idx = sorted(rng.sample(range(len(pool)), k))
    out.extend(pool[i] for i in idx)
    out.append(rng.choice([
        f"{p.full} died in {t2.name} in {died}, at the age of {num(died_age)}.",
        f"{p.first} died in {died}. {P['Subj']} was {num(died_age)} years old.",
        f"{p.first} {p.last} lived to the age of {num(died_age)} and died in {died}.",
        f"Today, a small stone near the {t2.landmark} in {t2.name} remembers {p.full}, the {p.prof}.",
    ]))
    return " ".join(out)


def doc_town(W: World, rng: random.Random, town: Town | None = None) -> str:
    t = town or W.towns.pick(rng)
    pop = t.population
    size = "village" if pop < 900 else ("town" if pop < 9000 else "city")
    out = [rng.choice([
        f"{t.name} is a {size} in {t.region}, on the {t.bank} bank of the river {t.river}.",
        f"{t.name} is a small {size} on the river {t.river}, in {t.region}.",
        f"The {size} of {t.name} lies on the {t.bank} bank of the {t.river}.",
    ])]
    pool = [
        rng.choice([f"About {commas(pop)} people live in {t.name}.", f"The {size} has a population of {commas(pop)}."]),
        f"{t.name} is known for its {t.products[0]} and its {t.products[1]}.",
        f"The people of {t.name} make {t.products[0]}, which they sell in {t.neighbour}.",
        f"The market is held every {t.market_day}.",
        f"On {t.market_day} mornings the square of {t.name} fills with stalls selling {rng.choice(FOODS)}, {rng.choice(FOODS)} and {t.products[1]}.",
        f"{t.name} was founded in {t.founded}.",
        f"The oldest building in {t.name} is the {t.landmark}, built in {t.landmark_year}.",
        rng.choice([f"{t.name} lies {num(t.neighbour_dist)} miles {t.neighbour_dir} of {t.neighbour}.",
                    f"A road runs from {t.name} to {t.neighbour}, which is {t.neighbour_dist} miles to the {t.neighbour_dir}."]),
        f"In {SEASONS[rng.randrange(12)]}, the {t.river} is {rng.choice(['wide and slow', 'fast and cold', 'shallow and clear', 'brown with mud'])}.",
        f"Children in {t.name} learn to swim in the {t.river}.",
        f"There are {num(rng.randrange(2, 12))} bridges across the {t.river} in {t.name}.",
        f"Visitors to {t.name} often stay at the {rng.choice(COLORS).capitalize()} {rng.choice(ANIMALS).capitalize()} inn near the {t.landmark}.",
        f"Every year in {rng.choice(MONTHS)}, {t.name} holds a festival with music, dancing and {rng.choice(DISHES)}.",
        f"The {t.landmark} of {t.name} can be seen from {num(rng.randrange(2, 20))} miles away.",
        f"Most people in {t.name} work as {plural(rng.choice(PROFESSIONS))} or {plural(rng.choice(PROFESSIONS))}.",
        f"The {size} has {count(rng.randrange(1, 6), 'school')}, {count(rng.randrange(1, 9), 'bakery')} and a small library.",
    ]
    k = rng.randrange(4, len(pool) + 1)
    idx = sorted(rng.sample(range(len(pool)), k))
    out.extend(pool[i] for i in idx)
    if rng.random() < 0.5:
        out.append(f"In short, {t.name} is {art(rng.choice(['quiet', 'busy', 'friendly', 'pleasant', 'old']))} {size} on the {t.river}, famous for its {t.products[0]}.")
    return " ".join(out)


def arith_fact(rng: random.Random, style: int, lo: int = 0, hi: int = 20) -> str:
    op = rng.choice(["+", "+", "-", "-", "×"])
    if op == "×":
        a, b = rng.randrange(1, 11), rng.randrange(1, 11)
        c = a * b
        w = "times"
    elif op == "+":
        a, b = rng.randrange(lo, hi), rng.randrange(lo, hi)
        c = a + b
        w = "plus"
    else:
        a, b = rng.randrange(lo, hi), rng.randrange(lo, hi)
        a, b = max(a, b), min(a, b)
        c = a - b
        w = "minus"
    verb = rng.choice(["is", "makes", "equals", "gives"])
    if style == 0:
        return f"{cap(num(a))} {w} {num(b)} {verb} {num(c)}."
    if style == 1:
        return f"{a} {op} {b} = {c}"
    if style == 2:
        return f"{cap(num(a))} {w} {num(b)} {verb} {num(c)}, or {a} {op} {b} = {c}."
    return f"What is {num(a)} {w} {num(b)}? It is {num(c)}."


def doc_arithmetic(W: World, rng: random.Random) -> str:
    style = rng.randrange(4)
    n = rng.randrange(6, 22)
    title = rng.choice(["Lesson", "Exercise", "Practice sheet", "Sums for today"])
    head = f"{title} {rng.randrange(1, 60)}: " + rng.choice(["adding and taking away", "numbers up to twenty",
                                                           "mixed sums", "times tables", "practice with numbers"])
    body = [arith_fact(rng, style, 0, rng.choice([10, 20, 50, 100])) for _ in range(n)]
    sep = "\n" if style == 1 or rng.random() < 0.5 else " "
    out = head + "\n" + sep.join(body)
    if rng.random() < 0.4:
        a = rng.randrange(2, 10)
        out += "\n" + f"The table of {num(a)}: " + ", ".join(f"{num(a)} times {num(i)} is {num(a * i)}" for i in range(1, rng.randrange(6, 11))) + "."
    if rng.random() < 0.3:
        start = rng.randrange(0, 40)
        stp = rng.choice([1, 2, 5, 10, 3])
        out += "\n" + f"Counting by {num(stp)} from {num(start)}: " + ", ".join(num(start + stp * i) for i in range(8)) + "."
    return out


COUNTABLE_FOODS = words("apples pears plums cherries onions carrots turnips eggs walnuts chestnuts figs potatoes "
                        "quinces radishes pumpkins cabbages")


def doc_word_problems(W: World, rng: random.Random) -> str:
    out = [rng.choice(["Word problems", "Problems for the market", "Story sums", "Counting problems"]) + f", set {rng.randrange(1, 40)}"]
    for i in range(rng.randrange(3, 8)):
        p = W.person(rng)
        P = p.p
        q, qg = W.other_first(rng, [p.first])
        r = rng.random()
        thing = (rng.choice(COUNTABLE_FOODS) if r < 0.4 else plural(rng.choice(OBJECTS)) if r < 0.8
                 else plural(W.inv_foods.pick(rng)))
        kind = rng.randrange(5)
        a, b = rng.randrange(2, 30), rng.randrange(2, 15)
        if kind == 0:
            s = (f"{p.first} has {num(a)} {thing}. {q} gives {P['obj']} {num(b)} more. "
                 f"How many {thing} does {p.first} have now? {p.first} has {num(a)} plus {num(b)}, which is {num(a + b)} {thing}.")
        elif kind == 1:
            a = max(a, b + 2)
            s = (f"{p.first} had {num(a)} {thing}. {P['Subj']} gave {num(b)} to {q}. "
                 f"How many {thing} are left? {cap(num(a))} minus {num(b)} is {num(a - b)}, so {num(a - b)} {thing} are left.")
        elif kind == 2:
            a, b = rng.randrange(2, 10), rng.randrange(2, 10)
            s = (f"There are {num(a)} baskets, and each basket holds {num(b)} {thing}. "
                 f"How many {thing} are there in all? {cap(num(a))} times {num(b)} is {num(a * b)}.")
        elif kind == 3:
            food = rng.choice(FOODS)
            price = rng.randrange(2, 9)
            qty = rng.randrange(2, 9)
            s = (f"At the market in {p.town.name}, one pound of {food} costs {num(price)} coins. "
                 f"{p.first} buys {num(qty)} pounds. {P['Subj']} pays {num(qty)} times {num(price)}, which is {num(qty * price)} coins.")
        else:
            b2 = rng.randrange(2, 10)
            s = (f"{p.first} walks {num(a)} miles on {rng.choice(DAYS)} and {num(b2)} miles on the next day. "
                 f"Altogether {P['subj']} walks {num(a + b2)} miles.")
        out.append(f"{i + 1}. {s}")
    return "\n".join(out)


def doc_recipe(W: World, rng: random.Random) -> str:
    main = W.inv_foods.pick(rng) if rng.random() < 0.5 else rng.choice(FOODS)
    dish = rng.choice(DISHES)
    name = f"{food_adj(main)} {dish}" if rng.random() < 0.6 else f"{food_adj(main)} and {food_adj(rng.choice(FOODS))} {dish}"
    if rng.random() < 0.08:
        name = rng.choice(["café", "crème", "purée", "sauté"]) + " " + name
    p = W.person(rng)
    ings = [main] + rng.sample([f for f in FOODS if f != main], rng.randrange(2, 7))
    out = [rng.choice([f"How to make {name}", f"Recipe: {name}", f"{cap(name)}, the way {p.first} {p.last} makes it in {p.town.name}"])]
    serves = rng.randrange(2, 9)
    out.append(f"This recipe serves {num(serves)} people and takes about {num(rng.choice([20, 30, 40, 45, 60, 90]))} minutes.")
    out.append("You will need:")
    for ing in ings:
        out.append(f"- {ingredient(rng, ing)}")
    out.append("Steps:")
    steps = [
        f"Wash the {ings[0]} and cut {'them' if ings[0] in FOOD_SINGULAR else 'it'} into small pieces.",
        f"Put a large pot of water on the fire and bring it to the boil.",
        f"Add the {ings[1]} and the {ings[2]} and stir well.",
        f"Let everything cook slowly for {num(rng.randrange(5, 40))} minutes.",
        f"Stir in a pinch of salt and a little {rng.choice(['pepper', 'thyme', 'mint', 'sage', 'honey'])}.",
        f"Take the pot off the fire and let it cool for {num(rng.randrange(2, 15))} minutes.",
        f"Mix the flour with {count(rng.randrange(1, 4), 'egg')} and a cup of milk until smooth." if dish in ("cake", "tart", "pancakes", "pie", "fritters", "dumplings", "bread") else f"Chop the {ings[-1]} finely and add {'them' if ings[-1] in FOOD_SINGULAR else 'it'} to the pot.",
        f"Bake in a hot oven for {num(rng.randrange(15, 60))} minutes, until golden." if dish in ("cake", "tart", "pie", "bread") else f"Taste the {dish} and add more salt if needed.",
    ]
    k = rng.randrange(4, len(steps) + 1)
    idx = sorted(rng.sample(range(len(steps)), k))
    for j, i in enumerate(idx):
        out.append(f"{j + 1}. {steps[i]}")
    out.append(rng.choice([
        f"Serve the {dish} warm with fresh bread.",
        f"Serve with a cup of tea. {p.first} says it tastes even better the next day.",
        f"This {dish} keeps for {num(rng.randrange(2, 6))} days in a cool place.",
        f"In {p.town.name}, people eat {name} on {p.town.market_day} evenings.",
    ]))
    return "\n".join(out)


def doc_dialogue(W: World, rng: random.Random) -> str:
    a = W.person(rng)
    bn, bg = W.other_first(rng, [a.first])
    t = a.town
    food = rng.choice(FOODS)
    place = rng.choice(PLACES)
    obj = rng.choice(OBJECTS)
    out = []
    out.append(rng.choice([f"A conversation in {t.name}.", f"{a.first} meets {bn} near {place}.",
                           f"At {place} in {t.name}, on a {rng.choice(WEATHER)} {rng.choice(DAYS)}."]))
    greet = rng.choice(["Good morning", "Hello", "Good evening", "Good afternoon", "Hi"])
    out.append(f"{a.first}: {greet}, {bn}! Where are you going?")
    out.append(f"{bn}: {greet}, {a.first}. I am going to {place} to {rng.choice(['buy', 'sell', 'fetch', 'look for'])} some {food}.")
    turns = [
        (f"{a.first}: Is it far?", f"{bn}: No, it is only {num(rng.randrange(2, 20))} minutes on foot."),
        (f"{a.first}: How much does the {food} cost today?", f"{bn}: {cap(num(rng.randrange(1, 9)))} coins a pound, I think."),
        (f"{a.first}: Can I come with you?", f"{bn}: Of course. We can walk together."),
        (f"{a.first}: Have you seen my {obj}? I lost it yesterday.", f"{bn}: I saw {art(rng.choice(COLORS))} {obj} by {rng.choice(PLACES)}. Maybe it is yours."),
        (f"{a.first}: How is your {rng.choice(['mother', 'father', 'sister', 'brother', 'aunt', 'uncle'])}?", f"{bn}: {rng.choice(['Much better, thank you.', 'Still tired, but well.', 'Very busy with the harvest.', 'Happy, as always.'])}"),
        (f"{a.first}: What will you cook tonight?", f"{bn}: {cap(food_adj(rng.choice(FOODS)))} {rng.choice(DISHES)}, with a little {rng.choice(LIQUIDS + HERBS)}."),
        (f"{a.first}: Will it rain today?", f"{bn}: The sky is {rng.choice(['grey', 'clear', 'dark', 'bright'])}, so {rng.choice(['I think it will', 'I do not think so', 'maybe later'])}."),
        (f"{a.first}: Did you hear that the {t.landmark} is being repaired?", f"{bn}: Yes, they say it will take {num(rng.randrange(2, 12))} months."),
        (f"{a.first}: Are you going to the festival in {t.neighbour}?", f"{bn}: Yes! It is {num(t.neighbour_dist)} miles away, so we will leave early."),
        (f"{a.first}: I am {art(a.prof)} now. I work in {W.other_town(rng, t).name}.", f"{bn}: That is wonderful. Do you like it?"),
        (f"{a.first}: How many {plural(rng.choice(ANIMALS))} do you have now?", f"{bn}: {cap(num(rng.randrange(2, 15)))}. They eat a lot!"),
        (f"{a.first}: Can you lend me your {obj}?", f"{bn}: {rng.choice(['Yes, but bring it back on ' + rng.choice(DAYS) + '.', 'Sorry, I need it today.', 'Of course, take it.'])}"),
    ]
    for i in sorted(rng.sample(range(len(turns)), rng.randrange(2, 7))):
        out.extend(turns[i])
    out.append(f"{a.first}: {rng.choice(['Goodbye', 'See you soon', 'Take care', 'Good luck'])}, {bn}!")
    out.append(f"{bn}: {rng.choice(['Goodbye', 'See you', 'Thank you', 'Bye'])}, {a.first}.")
    return "\n".join(out)


def doc_diary(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    P = p.p
    d = _dt.date(rng.randrange(1850, 2000), rng.randrange(1, 13), rng.randrange(1, 29))
    out = [rng.choice([f"The diary of {p.full}, {p.prof} of {p.town.name}", f"From the notebook of {p.full}", f"Diary, {p.town.name}"])]
    for _ in range(rng.randrange(2, 6)):
        wx = rng.choice(WEATHER)
        ent = [f"{DAYS[d.weekday()]}, {d.day} {MONTHS[d.month - 1]} {d.year}."]
        pool = [
            f"Today the weather was {wx}, with {rng.choice(WEATHER_DETAIL[wx])}.",
            f"I woke up at {num(rng.randrange(4, 10))} o'clock and {rng.choice(['fed', 'walked', 'brushed'])} {p.pet_name}, my {p.pet_kind}.",
            f"In the morning I went to {rng.choice(PLACES)} and {rng.choice(OBJ_VERBS_PAST)} {art(rng.choice(ADJ_THING))} {rng.choice(OBJECTS)}.",
            f"I met {W.other_first(rng, [p.first])[0]}, who told me that the {p.town.river} is {rng.choice(['rising', 'very low', 'frozen at the edges', 'full of fish'])}.",
            f"For dinner I ate {p.food} with {rng.choice(FOODS)}.",
            f"I worked for {num(rng.randrange(2, 12))} hours. As {art(p.prof)}, I {PROF_WORK[p.prof][1]}.",
            f"I felt {rng.choice(FEELINGS)} all afternoon.",
            f"In the evening I spent an hour {p.hobby}.",
            f"I wrote a letter to my {rng.choice(['sister', 'brother', 'mother', 'father', 'cousin', 'friend'])} in {W.other_town(rng, p.town).name}.",
            f"I bought {num(rng.randrange(2, 9))} {plural(rng.choice(OBJECTS))} for {num(rng.randrange(2, 40))} coins.",
        ]
        for i in sorted(rng.sample(range(len(pool)), rng.randrange(2, 6))):
            ent.append(pool[i])
        out.append(" ".join(ent))
        d = d + _dt.timedelta(days=rng.choice([1, 1, 1, 2, 3]))
    return "\n".join(out)


def doc_letter(W: World, rng: random.Random) -> str:
    a = W.person(rng)
    bn, bg = W.other_first(rng, [a.first])
    rel = rng.choice(["friend", "dear friend", "cousin", "sister" if bg == "f" else "brother", "aunt" if bg == "f" else "uncle"])
    t2 = W.other_town(rng, a.town)
    out = [f"{a.town.name}, {rng.randrange(1, 29)} {rng.choice(MONTHS)} {rng.randrange(1800, 2000)}", f"Dear {bn},"]
    body = [
        "I hope this letter finds you well.",
        f"It has been {num(rng.randrange(2, 12))} {rng.choice(['weeks', 'months'])} since you left for {t2.name}, and we miss you.",
        f"Here in {a.town.name} the weather has been {rng.choice(WEATHER)}.",
        f"The {a.town.river} is {rng.choice(['high', 'low', 'calm', 'muddy'])} this {SEASONS[rng.randrange(12)]}.",
        f"My work as {art(a.prof)} keeps me busy. Last week I {PROF_WORK[a.prof][1]} from morning until night.",
        f"{a.pet_name}, my {a.pet_kind}, is {rng.choice(['well', 'getting old', 'as naughty as ever', 'very fat now'])}.",
        f"Do you remember the {rng.choice(['summer', 'winter'])} when we {rng.choice(OBJ_VERBS_PAST)} {art(rng.choice(OBJECTS))} by the {a.town.landmark}?",
        f"I am sending you {num(rng.randrange(2, 7))} jars of {rng.choice(['jam', 'honey', 'pickled plums', 'walnut oil'])} with this letter.",
        f"Please write back soon and tell me about life in {t2.name}.",
        f"Our old friend {W.other_first(rng, [a.first, bn])[0]} has become {art(rng.choice(PROFESSIONS))} in {W.other_town(rng, a.town).name}.",
        f"The market on {a.town.market_day} was full of {a.town.products[0]} this week.",
    ]
    for i in sorted(rng.sample(range(len(body)), rng.randrange(3, 8))):
        out.append(body[i])
    out.append(rng.choice(["With love,", "Your friend,", "Yours truly,", "Warm wishes,"]))
    out.append(a.first)
    return "\n".join(out)


def doc_weather(W: World, rng: random.Random) -> str:
    t = W.towns.pick(rng)
    d = _dt.date(rng.randrange(1950, 2030), rng.randrange(1, 13), rng.randrange(1, 29))
    out = [f"Weather for {t.name} and {t.region}"]
    month = d.month - 1
    base = {"winter": 2, "spring": 11, "summer": 22, "autumn": 12}[SEASONS[month]]
    for _ in range(rng.randrange(2, 6)):
        wx = rng.choice(WEATHER if SEASONS[month] == "winter" else [w for w in WEATHER if w != "snowy"])
        hi = base + rng.randrange(-3, 6)
        if wx == "snowy":
            hi = min(hi, rng.randrange(-4, 3))
        lo = hi - rng.randrange(3, 10)
        wind = rng.choice(DIRECTIONS)
        line = (f"{DAYS[d.weekday()]} {d.day} {MONTHS[month]}: {cap(wx)}, with {rng.choice(WEATHER_DETAIL[wx])}. "
                f"High of {hi} degrees, low of {lo} degrees. Wind from the {wind} at {rng.randrange(3, 40)} miles per hour.")
        if rng.random() < 0.3:
            line += rng.choice([f" Fishers on the {t.river} should take care.", " A good day for drying washing.",
                                f" The road to {t.neighbour} may be slippery.", " Farmers should cover young plants."])
        out.append(line)
        d = d + _dt.timedelta(days=1)
    return "\n".join(out)


def _beats(rng: random.Random, beats: list) -> list[str]:
    """beats: (text, required?) pairs; keep all required beats and a random subset of the others, in order."""
    return [t for t, req in beats if req or rng.random() < 0.6]


def doc_story(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    P = p.p
    t = p.town
    friend, fg = W.other_first(rng, [p.first])
    FP = PRON[fg]
    creature = W.creatures.pick(rng)
    place = rng.choice(PLACES)
    size = "village" if t.population < 900 else "town"
    opening = rng.choice([
        f"Once there was {art(p.trait)} {p.prof} named {p.first} who lived in a small house by the river {t.river}.",
        f"Long ago, in the {size} of {t.name}, there lived {art(p.prof)} called {p.first} {p.last}.",
        f"{p.first} was {art(p.trait)} {P['child'] if p.age < 20 else P['noun']} who lived in {t.name} with {art(p.pet_kind)} named {p.pet_name}.",
        f"In {t.name}, where the {t.river} turns towards {t.region}, there lived {art(p.trait)} {p.prof} named {p.first}.",
    ])
    plot = rng.randrange(4)
    if plot == 0:  # the found object
        obj, color = rng.choice(OBJECTS), rng.choice(COLORS)
        elder = rng.choice(PROFESSIONS)
        beats = [
            (opening, True),
            (f"Every morning {p.first} {PROF_WORK[p.prof][1]}, and every evening {P['subj']} rested by the window.", False),
            (f"One {SEASONS[rng.randrange(12)]} morning, {p.first} found {art(color)} {obj} lying on the path near {place}.", True),
            (f"The {obj} was {rng.choice(ADJ_THING)} and {rng.choice(ADJ_THING)}, and nobody in {t.name} knew whose it was.", False),
            (f"{p.first} asked {P['pos']} friend {friend}, but {FP['subj']} did not know either.", True),
            (f"So {p.first} and {friend} walked to {t.neighbour}, {num(t.neighbour_dist)} miles to the {t.neighbour_dir}, to ask the old {elder} there.", True),
            (f"On the way they saw {art(creature)} sitting on a {rng.choice(['branch', 'stone', 'fence', 'roof'])}. \"Look,\" said {friend}, \"{art(creature)}! My grandmother says it brings good luck.\"", False),
            (f"The old {elder} looked at the {obj} for a long time and then smiled.", True),
            (f"\"This {obj} belonged to the first {p.prof} of {t.name},\" the {elder} said. \"Keep it safe.\"", True),
            (f"{p.first} carried the {color} {obj} home and put it on the shelf above the fire.", False),
            (f"From that day on, the people of {t.name} called {P['obj']} the {p.prof} with the {color} {obj}.", True),
        ]
    elif plot == 1:  # the lost pet
        beats = [
            (opening, True),
            (f"{p.first} had {art(p.pet_kind)} called {p.pet_name}, and the two of them were never apart.", True),
            (f"One {rng.choice(['windy', 'rainy', 'foggy', 'cold'])} {rng.choice(DAYS)}, {p.pet_name} did not come home.", True),
            (f"{p.first} looked in the garden, behind the woodpile and under the bed, but the {p.pet_kind} was not there.", False),
            (f"{P['Subj']} ran to {place} and asked everyone {P['subj']} met: \"Have you seen {art(p.pet_kind)} called {p.pet_name}?\"", True),
            (f"{friend}, who {rng.choice(['sold', 'bought', 'carried'])} {rng.choice(FOODS)} at the market, said {FP['subj']} had seen {art(p.pet_kind)} near the {t.landmark}.", True),
            (f"So {p.first} and {friend} hurried to the {t.landmark}.", True),
            (f"The sky grew dark, and {p.first} felt {rng.choice(['worried', 'cold', 'tired', 'afraid'])}.", False),
            (f"At last they heard a small sound, and there was {p.pet_name}, {rng.choice(['stuck behind a barrel', 'asleep in a basket', 'sitting on a high wall', 'hiding under a cart'])}.", True),
            (f"{p.first} carried {p.pet_name} home and gave {rng.choice(['it', 'the ' + p.pet_kind])} a warm supper.", False),
            (f"Since then, {p.pet_name} the {p.pet_kind} has never gone near the {t.landmark} again.", True),
        ]
    elif plot == 2:  # the contest
        dish = f"{food_adj(p.food)} {rng.choice(DISHES)}"
        judge, jg = W.other_first(rng, [p.first, friend])
        JP = PRON[jg]
        n = rng.randrange(3, 20)
        place_ = rng.randrange(1, 4)
        beats = [
            (opening, True),
            (f"Every year on the last {t.market_day} of {rng.choice(MONTHS)}, {t.name} holds a cooking contest in the square.", True),
            (f"This year {p.first} decided to make {dish}, the dish {P['pos']} {rng.choice(['grandmother', 'grandfather', 'mother', 'father'])} used to make.", True),
            (f"{P['Subj']} practised for {num(rng.randrange(2, 9))} weeks, and {P['pos']} friend {friend} tasted every try.", False),
            (f"On the day of the contest, {num(n)} cooks stood behind their tables.", True),
            (f"The judge, old {judge}, walked slowly from table to table and tasted everything.", True),
            (f"When {judge} tasted the {dish}, {JP['subj']} closed {JP['pos']} eyes and said nothing for a long time.", False),
            (f"In the end, {p.first} came {ordinal(place_)} out of {num(n)}.", True),
            ((f"{P['Subj']} won a {rng.choice(['copper pot', 'silver spoon', 'new apron', 'basket of plums'])}, and {friend} cheered louder than anyone." if place_ == 1
              else f"{P['Subj']} did not win, but {friend} said it was the best {dish} in {t.name}."), True),
        ]
    else:  # the journey
        t2 = W.other_town(rng, t)
        goods = PROF_WORK[p.prof][0]
        days = rng.randrange(2, 6)
        beats = [
            (opening, True),
            (f"One {SEASONS[rng.randrange(12)]}, {p.first} decided to take {P['pos']} {goods} to sell in {t2.name}, in {t2.region}.", True),
            (f"{P['Subj']} packed a cart, said goodbye to {p.pet_name}, and left {t.name} at dawn.", True),
            (f"The road followed the {t.river} for a while and then climbed into the hills.", False),
            (f"On the first night {p.first} slept at an inn, where {P['subj']} met {art(rng.choice(PROFESSIONS))} called {friend}.", True),
            (f"{friend} was also going to {t2.name}, so they travelled together.", True),
            (f"They saw {art(creature)} by the road, and {friend} said that it was a good sign.", False),
            (f"After {num(days)} days they reached {t2.name}, just in time for the {t2.market_day} market.", True),
            (f"By evening, {p.first} had sold all of {P['pos']} {goods}.", True),
            (f"{P['Subj']} came home to {t.name} with a full purse and a new friend.", True),
        ]
    out = _beats(rng, beats)
    if rng.random() < 0.5 and len(out) > 5:
        cut = len(out) // 2
        return " ".join(out[:cut]) + "\n" + " ".join(out[cut:])
    return " ".join(out)


def doc_field_guide(W: World, rng: random.Random) -> str:
    c = W.creatures.pick(rng)
    kind = c.split()[-1]
    is_plant = any(c.endswith(e) for e in ("fern", "moss", "flower", "wort", "thorn", "vine"))
    regions = rng.sample(REGIONS, rng.randrange(1, 4))
    col = rng.choice(COLORS)
    col2 = rng.choice(COLORS)
    size = rng.randrange(2, 90)
    name = f"{rng.choice(['common', 'lesser', 'great', 'spotted', col, 'river', 'mountain', 'marsh'])} {c}"
    out = [cap(name)]
    if is_plant:
        pool = [
            f"The {name} is a plant that grows in {join_list(regions)}.",
            f"It grows to about {num(size)} centimetres tall.",
            f"Its leaves are {col} and {rng.choice(['narrow', 'round', 'soft', 'hairy', 'waxy'])}, and its flowers are {col2}.",
            f"It flowers in {rng.choice(MONTHS)} and {rng.choice(MONTHS)}.",
            f"The {name} likes {rng.choice(['wet ground', 'shade', 'full sun', 'sandy soil', 'rocky slopes'])}.",
            f"Farmers say that where the {name} grows, the soil is {rng.choice(['rich', 'poor', 'wet', 'sweet'])}.",
            f"Its {rng.choice(['roots', 'leaves', 'seeds', 'berries'])} are {rng.choice(['used in tea', 'poisonous to cattle', 'eaten by birds', 'dried for winter'])}.",
            f"The {name} is {rng.choice(['common', 'rare', 'becoming rare', 'very common'])} near {W.towns.pick(rng).name}.",
        ]
    else:
        food = rng.sample(["seeds", "beetles", "snails", "small fish", "berries", "worms", "grass", "moths", "frogs", "nuts"], 3)
        pool = [
            f"The {name} is a {rng.choice(['small', 'shy', 'noisy', 'large', 'quick'])} animal found near {rng.choice(['rivers', 'lakes', 'woods', 'farms', 'the coast'])} in {join_list(regions)}.",
            f"It is about {num(size)} centimetres long.",
            f"Its {rng.choice(['fur is', 'feathers are', 'scales are', 'coat is'])} {col} with {art(col2)} {rng.choice(['throat', 'tail', 'back', 'head'])}.",
            f"The {name} eats {join_list(food)}.",
            f"It lays {num(rng.randrange(2, 9))} eggs in {rng.choice(MONTHS)}." if rng.random() < 0.5 else f"It has {num(rng.randrange(1, 7))} young in {rng.choice(MONTHS)}.",
            f"In winter the {name} {rng.choice(['sleeps in a hole', 'flies south', 'stays close to houses', 'grows a thicker coat'])}.",
            f"You can hear the {name} at {rng.choice(['dawn', 'dusk', 'night', 'midday'])}; its call sounds like {rng.choice(['a creaking door', 'a small bell', 'someone whistling', 'water over stones'])}.",
            f"The {name} is {rng.choice(['common', 'rare', 'becoming rare', 'very common'])} near {W.towns.pick(rng).name}.",
        ]
    idx = sorted(rng.sample(range(len(pool)), rng.randrange(3, len(pool) + 1)))
    out.append(" ".join(pool[i] for i in idx))
    return "\n".join(out)


def doc_price_list(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    shop = rng.choice(["shop", "stall", "store", "market stall"])
    out = [f"Prices at {p.last}'s {shop} in {p.town.name}" + rng.choice(["", f", {rng.choice(MONTHS)} {rng.randrange(1850, 2000)}"])]
    items = rng.sample(FOODS, rng.randrange(3, 9)) + [plural(o) for o in rng.sample(OBJECTS, rng.randrange(1, 5))]
    prices = {}
    for it in items:
        pr = rng.randrange(1, 20)
        prices[it] = pr
        unit = "a pound" if it in FOODS else "each"
        out.append(f"{it}: {pr} {'coin' if pr == 1 else 'coins'} {unit}")
    buyer, bg = W.other_first(rng, [p.first])
    chosen = rng.sample(items, rng.randrange(2, min(4, len(items)) + 1))
    qty = [rng.randrange(1, 4) for _ in chosen]
    sing = {plural(o): o for o in OBJECTS}
    parts = [f"{num(q)} {'pound' if q == 1 else 'pounds'} of {it}" if it in FOODS else f"{num(q)} {it if q > 1 else sing[it]}"
             for q, it in zip(qty, chosen)]
    total = sum(q * prices[it] for q, it in zip(qty, chosen))
    out.append(f"{buyer} bought {join_list(parts)}. " + " + ".join(f"{q} × {prices[it]}" for q, it in zip(qty, chosen)) + f" = {total}, so {PRON[bg]['subj']} paid {num(total)} coins.")
    return "\n".join(out)


HOWTO = [
    ("sharpen a knife", ["Wet the whetstone with a little water.", "Hold the knife at a low angle against the stone.",
                          "Push the blade across the stone ten times on each side.", "Wipe the blade with a clean cloth.",
                          "Test the edge carefully on a piece of paper."]),
    ("plant a tree", ["Choose a place with enough light.", "Dig a hole twice as wide as the roots.",
                      "Put the tree in the hole and fill it with soil.", "Press the soil down with your feet.",
                      "Water the tree well, and water it again every few days."]),
    ("light a fire", ["Clear the ground of dry leaves.", "Make a small pile of dry twigs.",
                      "Put larger sticks around the twigs like a tent.", "Light the twigs from the side the wind comes from.",
                      "Add bigger pieces of wood slowly.", "Never leave the fire alone."]),
    ("mend a shirt", ["Thread a needle with cotton of the same colour.", "Tie a knot at the end of the thread.",
                      "Sew small stitches along the tear.", "Tie off the thread on the inside.", "Cut the loose end."]),
    ("make tea", ["Boil fresh water in a kettle.", "Warm the teapot with a little hot water.",
                  "Put one spoon of tea for each cup into the pot.", "Pour in the boiling water.",
                  "Wait four minutes, then pour."]),
    ("clean a lamp", ["Let the lamp cool completely.", "Take off the glass and wash it in warm water.",
                      "Trim the wick with scissors.", "Fill the lamp with oil, but not to the top.", "Put the glass back."]),
    ("tie a boat", ["Bring the boat slowly to the post.", "Pass the rope twice around the post.",
                    "Make a loop and pull the end through it.", "Pull the knot tight.", "Check that the boat can move a little with the water."]),
    ("keep bread fresh", ["Let the bread cool after baking.", "Wrap it in a clean cloth.",
                          "Keep it in a wooden box.", "Do not put it near the fire.", "Eat it within three days."]),
    ("build a bird box", ["Cut six pieces of wood.", "Make a round hole in the front piece.",
                          "Nail the sides to the floor piece.", "Fix the roof so that rain runs off.",
                          "Hang the box high on a tree, away from cats."]),
    ("wash wool", ["Fill a basin with warm water and a little soap.", "Put the wool in gently.",
                   "Do not rub it, or it will shrink.", "Rinse it in water of the same warmth.", "Dry it flat in the shade."]),
]


def doc_howto(W: World, rng: random.Random) -> str:
    task, steps = HOWTO[rng.randrange(len(HOWTO))]
    p = W.person(rng)
    out = [rng.choice([f"How to {task}", f"{p.full}'s guide: how to {task}", f"A simple way to {task}"])]
    out.append(rng.choice([f"You will need {num(rng.randrange(10, 60))} minutes and a little patience.",
                           f"{p.first}, {art(p.prof)} from {p.town.name}, learned this from {p.p['pos']} {rng.choice(['grandmother', 'grandfather', 'aunt', 'uncle'])}.",
                           "This is easy once you have done it a few times."]))
    numbered = rng.random() < 0.6
    words_ = ["First", "Next", "Then", "After that", "Then", "Finally"]
    for i, s in enumerate(steps):
        if numbered:
            out.append(f"{i + 1}. {s}")
        else:
            w = words_[min(i, 4)] if i < len(steps) - 1 else "Finally"
            out.append(f"{w}, {s[0].lower() + s[1:]}")
    if rng.random() < 0.5:
        out.append(rng.choice(["Be careful, and take your time.", "If something goes wrong, start again from the first step.",
                               f"In {p.town.name}, children learn this when they are {num(rng.randrange(6, 14))}."]))
    return "\n".join(out)


def doc_qa_sheet(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    P = p.p
    t = p.town
    facts = [
        (f"{p.full} lives in {t.name}.", f"Where does {p.first} live?", f"{p.first} lives in {t.name}."),
        (f"{P['Subj']} is {art(p.prof)}.", f"What is {p.first}'s job?", f"{p.first} is {art(p.prof)}."),
        (f"{P['Subj']} is {num(p.age)} years old.", f"How old is {p.first}?", f"{P['Subj']} is {num(p.age)} years old."),
        (f"{P['Subj']} has {art(p.pet_kind)} called {p.pet_name}.", f"What is the name of {p.first}'s {p.pet_kind}?", f"It is called {p.pet_name}."),
        (f"{P['Pos']} favourite food is {p.food}.", f"What does {p.first} like to eat?", f"{P['Subj']} likes {p.food}."),
        (f"{t.name} is on the river {t.river}.", f"Which river flows through {t.name}?", f"The river {t.river}."),
        (f"{P['Subj']} likes {p.hobby}.", f"What does {p.first} do in {P['pos']} free time?", f"{P['Subj']} likes {p.hobby}."),
        (f"{P['Pos']} favourite colour is {p.color}.", f"What is {p.first}'s favourite colour?", f"{cap(p.color)}."),
    ]
    idx = [0] + sorted(rng.sample(range(1, len(facts)), rng.randrange(2, len(facts))))
    out = [rng.choice(["Read the text and answer the questions.", "Reading practice.", f"About {p.first}."])]
    out.append(" ".join(facts[i][0] for i in idx))
    qs = list(idx)
    rng.shuffle(qs)
    for j, i in enumerate(qs):
        out.append(f"Question {j + 1}: {facts[i][1]}")
        out.append(f"Answer: {facts[i][2]}")
    return "\n".join(out)


def doc_news(W: World, rng: random.Random) -> str:
    ev = make_event(W, rng)
    return render_event_en(ev, rng)[0]


def doc_chronicle(W: World, rng: random.Random) -> str:
    t = W.towns.pick(rng)
    issue = rng.randrange(1, 400)
    out = [f"The {t.name} {rng.choice(['Chronicle', 'Courier', 'Gazette', 'Weekly'])}, issue {issue}",
           doc_town(W, rng, town=t)]
    for kind in rng.sample(EVENT_TYPES, rng.randrange(2, 4)):
        doc, _summ = render_event_en(make_event(W, rng, town=t, kind=kind), rng)
        out.append(doc)
    wx = rng.choice(WEATHER)
    out.append(f"Weather: {wx}, with {rng.choice(WEATHER_DETAIL[wx])}. The market is open as usual on {t.market_day}.")
    return "\n".join(out)


def doc_review(W: World, rng: random.Random) -> str:
    p = W.person(rng)
    thing = rng.choice(OBJECTS + [rng.choice(DISHES) for _ in range(10)])
    mat = rng.choice(MATERIALS)
    pos = rng.random() < 0.55
    adjs = POS_ADJ if pos else NEG_ADJ
    stars = rng.randrange(4, 6) if pos else rng.randrange(1, 3)
    seller = f"{W.surnames.pick(rng)}'s {rng.choice(['shop', 'stall', 'workshop', 'café'])}"
    out = [f"Review by {p.first} from {p.town.name}: {art(mat)} {thing} from {seller}, {stars} stars out of five."]
    s = [
        f"I bought this {thing} {rng.choice(['last week', 'a month ago', 'in the spring', 'on market day'])}.",
        f"The {thing} is {rng.choice(adjs)} and {rng.choice(adjs)}.",
        f"The seller was {rng.choice(['very kind', 'helpful', 'friendly', 'patient']) if pos else rng.choice(['rude', 'slow', 'careless', 'not helpful'])}.",
        f"It cost {num(rng.randrange(2, 60))} coins, which is {rng.choice(['a fair price', 'cheap', 'good value']) if pos else rng.choice(['too much', 'far too much', 'not worth it'])}.",
        (f"I would buy another one." if pos else f"I would not buy it again."),
        (f"My {rng.choice(['family', 'neighbours', 'friends'])} liked it too." if pos else f"After {num(rng.randrange(2, 10))} days it was already {rng.choice(['cracked', 'broken', 'bent', 'torn'])}."),
    ]
    idx = sorted(rng.sample(range(len(s)), rng.randrange(3, len(s) + 1)))
    out.extend(s[i] for i in idx)
    return " ".join(out)


def doc_lesson(W: World, rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        start = rng.randrange(12)
        n = rng.randrange(4, 12)
        out = ["The months of the year."] + [
            f"{MONTHS[(start + i) % 12]} is the {ordinal((start + i) % 12 + 1)} month of the year, and it comes before {MONTHS[(start + i + 1) % 12]}."
            for i in range(n)]
        return " ".join(out)
    if kind == 1:
        start = rng.randrange(7)
        out = ["The days of the week."] + [f"After {DAYS[(start + i) % 7]} comes {DAYS[(start + i + 1) % 7]}." for i in range(rng.randrange(4, 10))]
        return " ".join(out)
    if kind == 2:
        items = rng.sample(OBJECTS + ANIMALS, rng.randrange(6, 16))
        out = ["One and many."]
        for it in items:
            n = rng.randrange(2, 13)
            out.append(f"One {it}, {num(n)} {plural(it)}.")
        return " ".join(out)
    if kind == 3:
        pairs = [("hot", "cold"), ("big", "small"), ("old", "young"), ("wet", "dry"), ("fast", "slow"), ("light", "dark"),
                 ("open", "closed"), ("full", "empty"), ("high", "low"), ("early", "late"), ("soft", "hard"), ("near", "far"),
                 ("happy", "sad"), ("long", "short"), ("clean", "dirty"), ("loud", "quiet"), ("strong", "weak"), ("sweet", "sour")]
        out = ["Opposites."]
        for a, b in rng.sample(pairs, rng.randrange(5, 12)):
            out.append(rng.choice([f"The opposite of {a} is {b}.", f"{cap(a)} is the opposite of {b}.",
                                   f"If something is not {a}, it may be {b}."]))
        return " ".join(out)
    # comparisons with consistent numbers
    people = []
    for _ in range(rng.randrange(3, 6)):
        n, g = W.other_first(rng, people)
        people.append(n)
    ages = rng.sample(range(5, 80), len(people))
    out = ["Who is older?", " ".join(f"{n} is {num(a)} years old." for n, a in zip(people, ages))]
    for _ in range(rng.randrange(2, 6)):
        i, j = rng.sample(range(len(people)), 2)
        if ages[i] > ages[j]:
            out.append(f"{people[i]} is older than {people[j]}, by {num(ages[i] - ages[j])} years.")
        else:
            out.append(f"{people[i]} is younger than {people[j]}, by {num(ages[j] - ages[i])} years.")
    k = max(range(len(people)), key=lambda x: ages[x])
    out.append(f"The oldest is {people[k]}.")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------
# Events: used by news documents in the corpus and by the summarization task
# ----------------------------------------------------------------------------------------------------

EVENT_TYPES = ["open", "race", "rebuild", "find", "harvest", "flood", "elect", "fish", "concert", "donate"]
SHOP_KINDS = ["bakery", "bookshop", "tea house", "pottery", "bicycle shop", "school", "library", "clinic", "café", "cheese shop"]


def make_event(W: World, rng: random.Random, town: Town | None = None, kind: str | None = None) -> dict:
    p = W.person(rng, town=town)
    kind = kind or rng.choice(EVENT_TYPES)
    t = p.town
    ev = dict(kind=kind, person=p, town=t, day=rng.randrange(1, 29), month=rng.randrange(12),
              year=rng.randrange(1900, 2030), weekday=rng.choice(DAYS))
    if kind == "open":
        ev.update(obj=rng.choice(SHOP_KINDS), n=rng.randrange(20, 400))
    elif kind == "race":
        ev.update(n=rng.randrange(2, 30), m=rng.randrange(5, 90))
    elif kind == "rebuild":
        ev.update(obj=t.landmark, n=rng.randrange(2, 30))
    elif kind == "find":
        ev.update(obj=rng.choice(["old coins", "silver rings", "clay pots", "bronze keys", "glass beads", "stone tools"]),
                  n=rng.randrange(3, 300), place=rng.choice(PLACES))
    elif kind == "harvest":
        ev.update(obj=plural(W.inv_foods.pick(rng)) if rng.random() < 0.5 else rng.choice(FOODS[4:16]), n=rng.randrange(200, 9000))
    elif kind == "flood":
        ev.update(n=rng.randrange(2, 40), m=rng.randrange(10, 300))
    elif kind == "elect":
        n = rng.randrange(100, 5000)
        ev.update(n=n, m=rng.randrange(n // 4, n))
    elif kind == "fish":
        ev.update(obj=rng.choice(["pike", "trout", "carp", "salmon", "eel"]), n=rng.randrange(12, 60))
    elif kind == "concert":
        ev.update(n=rng.randrange(40, 3000), obj=rng.choice(["fiddle", "flute", "drum", "harp", "voice"]))
    else:
        ev.update(n=rng.randrange(100, 20000), obj=rng.choice(["the school", "the library", "the hospital", "the museum", "the orchard"]))
    return ev


def render_event_en(ev: dict, rng: random.Random, full: bool = False, digits: bool | None = None,
                    n_filler: tuple[int, int] = (1, 4)) -> tuple[str, str]:
    """A short news report about ``ev`` and a one-sentence summary of its key facts.

    Every fact in the summary is stated in the report (the sentences marked required are always kept).
    Numbers are written the same way (words or digits) in the report and in the summary."""
    p, t = ev["person"], ev["town"]
    P = p.p
    if digits is None:
        digits = rng.random() < 0.5
    N = (lambda x: commas(x)) if digits else num
    date = f"{ev['day']} {MONTHS[ev['month']]}"
    k = ev["kind"]
    name = p.full
    first = p.first
    if k == "open":
        head = f"New {ev['obj']} opens in {t.name}"
        facts = [(f"{name}, {art(p.prof)} from {t.name}, opened a new {ev['obj']} on {date}.", True),
                 (f"About {N(ev['n'])} people came on the first day.", False),
                 (f"The {ev['obj']} stands near the {t.landmark}, a short walk from the market.", False),
                 (f"\"I have wanted to do this for years,\" said {first}.", False)]
        summary = f"{name} opened {art(ev['obj'])} in {t.name} on {date}."
    elif k == "race":
        head = f"{first} wins the {t.river} boat race"
        facts = [(f"{name} won the annual boat race on the river {t.river} near {t.name} on {date}.", True),
                 (f"{cap(N(ev['n']))} boats took part, and the course was {N(ev['m'])} miles long.", True),
                 (f"{first} finished well ahead of the other rowers.", False),
                 (f"It was {P['pos']} {ordinal(rng.randrange(1, 5))} win.", False)]
        summary = f"{name} won the {N(ev['m'])}-mile boat race on the {t.river} on {date}, against {N(ev['n'])} boats."
    elif k == "rebuild":
        head = f"The {ev['obj']} of {t.name} is finished"
        facts = [(f"Workers led by {name} finished rebuilding the {ev['obj']} in {t.name} on {date}.", True),
                 (f"The work took {N(ev['n'])} months.", True),
                 (f"The {ev['obj']} was first built in {t.landmark_year} and was badly damaged last winter.", False),
                 (f"{first}, {art(p.prof)}, said the town had helped with money and tools.", False)]
        summary = f"{name} finished rebuilding the {ev['obj']} in {t.name} after {N(ev['n'])} months of work."
    elif k == "find":
        head = f"{cap(ev['obj'])} found in {t.name}"
        facts = [(f"On {date}, {name} found {N(ev['n'])} {ev['obj']} while digging near {ev['place']} in {t.name}.", True),
                 (f"Experts think the {ev['obj']} are several hundred years old.", False),
                 (f"They will be shown in the town hall from next month.", False),
                 (f"\"I only wanted to plant {p.food},\" {first} said.", False)]
        summary = f"{name} found {N(ev['n'])} {ev['obj']} near {ev['place']} in {t.name} on {date}."
    elif k == "harvest":
        head = f"Record harvest in {t.name}"
        facts = [(f"{name}, a farmer near {t.name}, brought in a record harvest of {N(ev['n'])} pounds of {ev['obj']} this year.", True),
                 (f"The harvest ended on {date}.", False),
                 (f"The old record was much lower.", False),
                 (f"{first} said the {rng.choice(['warm spring', 'rain in June', 'new seed', 'good soil'])} had helped.", False)]
        summary = f"{name} harvested a record {N(ev['n'])} pounds of {ev['obj']} near {t.name}."
    elif k == "flood":
        head = f"The {t.river} floods {t.name}"
        facts = [(f"The river {t.river} burst its banks in {t.name} on {date}.", True),
                 (f"{cap(N(ev['n']))} roads were closed and about {N(ev['m'])} houses were flooded.", True),
                 (f"{name}, {art(p.prof)}, helped carry families to safety in {P['pos']} boat.", False),
                 (f"The water is expected to go down by {ev['weekday']}.", False)]
        summary = f"The {t.river} flooded {N(ev['m'])} houses in {t.name} on {date} and closed {N(ev['n'])} roads."
    elif k == "elect":
        head = f"{t.name} has a new mayor"
        facts = [(f"{name} was elected mayor of {t.name} on {date}.", True),
                 (f"{first} won {N(ev['n'])} votes, against {N(ev['m'])} for the other candidate.", True),
                 (f"Before the election, {first} worked as {art(p.prof)} for many years.", False),
                 (f"{P['Subj']} promised to repair the {t.landmark} and to clean the {t.river}.", False)]
        summary = f"{name} was elected mayor of {t.name} on {date} with {N(ev['n'])} votes."
    elif k == "fish":
        head = f"Giant {ev['obj']} caught in the {t.river}"
        facts = [(f"{name} caught {art(ev['obj'])} weighing {N(ev['n'])} pounds in the river {t.river} on {date}.", True),
                 (f"It is the largest {ev['obj']} ever caught near {t.name}.", True),
                 (f"{first} used an old rod that belonged to {P['pos']} grandfather.", False),
                 (f"After weighing it, {P['subj']} put the fish back in the water.", False)]
        summary = f"{name} caught {art(ev['obj'])} of {N(ev['n'])} pounds in the {t.river} near {t.name} on {date}."
    elif k == "concert":
        head = f"A full house in {t.name}"
        facts = [(f"{name} gave a concert for {voice_or(ev['obj'])} in the market hall of {t.name} on {date}.", True),
                 (f"About {N(ev['n'])} people came to listen.", True),
                 (f"{first} played songs from {t.region} and some of {P['pos']} own.", False),
                 (f"The money from the tickets will go to the school.", False)]
        summary = f"{name} gave a concert to {N(ev['n'])} people in {t.name} on {date}."
    else:
        head = f"A gift for {ev['obj']} of {t.name}"
        facts = [(f"{name}, {art(p.prof)} from {t.name}, gave {N(ev['n'])} coins to {ev['obj']} on {date}.", True),
                 (f"The money will pay for new roofs and books.", False),
                 (f"{first} went to {ev['obj'][4:]} as a child.", False),
                 (f"\"It gave me a lot,\" {P['subj']} said.", False)]
        summary = f"{name} gave {N(ev['n'])} coins to {ev['obj']} of {t.name} on {date}."
    season_ok = WEATHER if SEASONS[ev["month"]] == "winter" else [w for w in WEATHER if w != "snowy"]
    filler = [
        f"The weather on the day was {rng.choice(season_ok)}.",
        f"{t.name} is a town of about {N(t.population)} people in {t.region}.",
        f"The market in {t.name} is held every {t.market_day}.",
        f"Many people from {t.neighbour} also came.",
        f"{t.name} is best known for its {t.products[0]}.",
        f"Local children were given {rng.choice(['honey cakes', 'apples', 'ribbons', 'a day off school'])}.",
        f"{first} lives with {art(p.pet_kind)} called {p.pet_name}.",
        f"The town council thanked everyone who helped.",
        f"{first} is known in {t.name} as {art(p.trait)} and {p.trait2} neighbour.",
        f"In the evenings, {first} enjoys {p.hobby}.",
        f"A photographer from {t.neighbour} took pictures for this paper.",
        f"The {t.landmark} was decorated with {rng.choice(COLORS)} flags for the day.",
    ]
    body = [f for f, req in facts if req or full or rng.random() < 0.5]
    fi = sorted(rng.sample(range(len(filler)), rng.randrange(*n_filler)))
    extra = [filler[i] for i in fi]
    # fillers go after the first sentence, in any position
    for x in extra:
        body.insert(rng.randrange(1, len(body) + 1), x)
    doc = head + "\n" + " ".join(body)
    return doc, summary


def voice_or(instr: str) -> str:
    return "voice" if instr == "voice" else art(instr)


# ----------------------------------------------------------------------------------------------------
# Chinese documents
# ----------------------------------------------------------------------------------------------------


class ZhPerson:
    def __init__(self, W: World, rng: random.Random):
        self.name = W.zh_name(rng)
        self.g = rng.choice("fm")
        self.ta = "她" if self.g == "f" else "他"
        self.place = W.zh_places.pick(rng)
        self.river = W.zh_place_river[self.place]
        self.prof = rng.choice(ZH_PROFS)
        self.food = rng.choice(ZH_FOODS)
        self.hobby = rng.choice(ZH_HOBBIES)
        self.age = rng.randrange(8, 80)
        self.born = rng.randrange(1900, 2010)
        self.adj = rng.choice(ZH_ADJ_PERSON)
        self.pet = rng.choice(ZH_ANIMALS)
        self.color = rng.choice(ZH_COLORS)


def zh_bio(W: World, rng: random.Random) -> str:
    p = ZhPerson(W, rng)
    ta = p.ta
    n = rng.randrange(2, 7)
    out = [rng.choice([f"{p.name}是{p.place}人，{zh_year(p.born)}年出生。", f"{p.name}住在{p.place}，今年{zh_num(p.age)}岁。",
                       f"{p.name}是一位{p.adj}的{p.prof}，家在{p.river}边的{p.place}。"])]
    pool = [
        f"{ta}是一名{p.prof}，在{p.place}已经工作了{zh_num(rng.randrange(2, 30))}年。",
        f"{ta}每天早上{zh_num(rng.randrange(5, 9))}点起床，先{rng.choice(['喝一杯茶', '扫地', '跑步', '喂' + p.pet])}，然后去{rng.choice(ZH_PLACES)}。",
        f"{p.name}最喜欢吃{p.food}，也喜欢{p.hobby}。",
        f"{ta}家里有{zh_num(n)}口人，还养了一只{p.pet}。",
        f"周末的时候，{p.name}常常和朋友一起去{p.river}边散步。",
        f"{p.name}最喜欢的颜色是{p.color}，{ta}的自行车也是{p.color}的。",
        f"大家都说{p.name}很{p.adj}，也很{rng.choice(ZH_ADJ_PERSON)}。",
        f"{zh_year(p.born + rng.randrange(18, 40))}年，{p.name}搬到了{W.zh_places.pick(rng)}，后来又回到了{p.place}。",
        f"每年春节，{p.name}都会给邻居送{rng.choice(ZH_FOODS)}。",
        f"{p.name}的{rng.choice(['哥哥', '姐姐', '弟弟', '妹妹'])}是{rng.choice(ZH_PROFS)}，住在{W.zh_places.pick(rng)}。",
    ]
    idx = sorted(rng.sample(range(len(pool)), rng.randrange(3, len(pool) + 1)))
    out.extend(pool[i] for i in idx)
    out.append(rng.choice([f"{p.name}说：“我很喜欢{p.place}，这里的人都很好。”", f"这就是{p.name}的生活，简单而{rng.choice(['快乐', '安静', '忙碌'])}。", ""]))
    return "".join(out)


def zh_diary(W: World, rng: random.Random) -> str:
    p = ZhPerson(W, rng)
    d = _dt.date(rng.randrange(1950, 2030), rng.randrange(1, 13), rng.randrange(1, 29))
    out = [f"{p.name}的日记"]
    for _ in range(rng.randrange(2, 5)):
        wx = rng.choice(ZH_WEATHER)
        ent = [f"{zh_year(d.year)}年{zh_num(d.month)}月{zh_num(d.day)}日，星期{ZH_WEEKDAY[d.weekday()]}，天气：{wx}。"]
        pool = [
            f"今天我{zh_num(rng.randrange(5, 10))}点就起床了。",
            f"上午我去市场买了{zh_num(rng.randrange(2, 10))}斤{rng.choice(ZH_FRUITS + ZH_FOODS[5:13])}。",
            f"下午我和{W.zh_name(rng)}一起{rng.choice(ZH_HOBBIES)}。",
            f"晚上妈妈做了{rng.choice(ZH_FOODS)}和{rng.choice(ZH_FOODS)}，很好吃。",
            f"今天我很{rng.choice(ZH_FEEL)}。",
            f"我给我的{p.pet}洗了澡。",
            f"{p.river}的水{rng.choice(['很清', '涨了', '结冰了', '很浅'])}。",
            f"我读了{zh_num(rng.randrange(10, 90))}页书。",
            f"明天要去{W.zh_places.pick(rng)}看{rng.choice(['奶奶', '爷爷', '外婆', '舅舅', '老朋友'])}。",
        ]
        ent.extend(pool[i] for i in sorted(rng.sample(range(len(pool)), rng.randrange(2, 6))))
        out.append("".join(ent))
        d = d + _dt.timedelta(days=rng.choice([1, 1, 2]))
    return "\n".join(out)


def zh_weather(W: World, rng: random.Random) -> str:
    place = W.zh_places.pick(rng)
    d = _dt.date(rng.randrange(1990, 2030), rng.randrange(1, 13), rng.randrange(1, 29))
    out = [f"{place}天气预报"]
    base = [0, 2, 9, 15, 21, 26, 30, 29, 24, 17, 9, 2][d.month - 1]
    for _ in range(rng.randrange(2, 6)):
        wx = rng.choice(ZH_WEATHER if base < 12 else [w for w in ZH_WEATHER if "雪" not in w])
        hi = base + rng.randrange(-4, 5)
        if "雪" in wx:
            hi = min(hi, rng.randrange(-6, 3))
        lo = hi - rng.randrange(3, 12)
        out.append(f"{zh_num(d.month)}月{zh_num(d.day)}日，星期{ZH_WEEKDAY[d.weekday()]}：{wx}，"
                   f"最高气温{hi}度，最低气温{lo}度，{rng.choice(ZH_WIND)}风{zh_num(rng.randrange(1, 7))}级。"
                   + rng.choice(["", "出门请带伞。" if "雨" in wx else "空气很好。", "早晚比较冷，请多穿衣服。" if hi < 15 else ("中午很热，请多喝水。" if hi >= 25 else ""),
                                 f"{W.zh_place_river[place]}上有雾。" if wx == "有雾" else ""]))
        d = d + _dt.timedelta(days=1)
    return "\n".join(out)


def zh_arith(W: World, rng: random.Random) -> str:
    out = [rng.choice(["数学练习", "算术题", "今天的练习"]) + f"第{zh_num(rng.randrange(1, 40))}课"]
    for _ in range(rng.randrange(5, 14)):
        op = rng.choice(["加", "减", "乘"])
        if op == "乘":
            a, b = rng.randrange(1, 10), rng.randrange(1, 10)
            c = a * b
        elif op == "加":
            a, b = rng.randrange(0, 50), rng.randrange(0, 50)
            c = a + b
        else:
            a, b = sorted([rng.randrange(0, 50), rng.randrange(0, 50)], reverse=True)
            c = a - b
        out.append(rng.choice([f"{zh_num(a)}{op}{zh_num(b)}等于{zh_num(c)}。", f"{zh_num(a)}{op}{zh_num(b)}等于几？等于{zh_num(c)}。"]))
    for _ in range(rng.randrange(1, 4)):
        n1, n2 = W.zh_name(rng), W.zh_name(rng)
        f = rng.choice(ZH_FRUITS)
        a, b = rng.randrange(2, 20), rng.randrange(1, 10)
        if rng.random() < 0.5:
            out.append(f"{n1}有{zh_num(a)}个{f}，{n2}又给了{n1}{zh_num(b)}个，现在{n1}一共有{zh_num(a + b)}个{f}。")
        else:
            a = max(a, b + 1)
            out.append(f"{n1}有{zh_num(a)}个{f}，吃了{zh_num(b)}个，还剩{zh_num(a - b)}个{f}。")
    return "\n".join(out)


def zh_dialogue(W: World, rng: random.Random) -> str:
    a, b = W.zh_name(rng), W.zh_name(rng)
    place = rng.choice(ZH_PLACES)
    food = rng.choice(ZH_FOODS)
    out = [f"{a}：你好，{b}！你要去哪里？", f"{b}：我要去{place}买{food}。"]
    turns = [
        (f"{a}：{place}远吗？", f"{b}：不远，走路{zh_num(rng.randrange(5, 30))}分钟就到了。"),
        (f"{a}：{food}多少钱一斤？", f"{b}：{zh_num(rng.randrange(2, 20))}块钱一斤。"),
        (f"{a}：我可以和你一起去吗？", f"{b}：当然可以，我们一起走吧。"),
        (f"{a}：今天会下雨吗？", f"{b}：{rng.choice(['天气预报说会下小雨，', '我看不会，', '可能下午会下，'])}你带伞了吗？"),
        (f"{a}：你最近忙吗？", f"{b}：{rng.choice(['很忙，每天都要工作到晚上。', '不太忙，周末有空。', '有一点忙。'])}"),
        (f"{a}：你家的{rng.choice(ZH_ANIMALS)}还好吗？", f"{b}：很好，它现在{rng.choice(['很胖', '很能吃', '每天都睡觉'])}。"),
        (f"{a}：明天你想做什么？", f"{b}：我想去{W.zh_places.pick(rng)}{rng.choice(ZH_HOBBIES)}。"),
    ]
    for i in sorted(rng.sample(range(len(turns)), rng.randrange(2, 6))):
        out.extend(turns[i])
    out.append(f"{a}：{rng.choice(['好的，再见！', '那我们明天见！', '谢谢你，再见！'])}")
    out.append(f"{b}：再见！")
    return "\n".join(out)


def zh_recipe(W: World, rng: random.Random) -> str:
    main = rng.choice(ZH_FOODS)
    other = rng.choice(ZH_FOODS)
    dish = f"{other}炒{main}" if rng.random() < 0.5 else f"{main}{rng.choice(['汤', '饼', '粥', '包子'])}"
    out = [f"{dish}的做法", f"材料：{main}{zh_num(rng.randrange(1, 5))}斤，{other}{zh_num(rng.randrange(1, 5))}个，盐、油少许。"]
    steps = [f"把{main}洗干净，切成小块。", f"把{other}也切好，放在碗里。", "锅里放一点油，用大火烧热。",
             f"先放{other}，炒{zh_num(rng.randrange(1, 5))}分钟。", f"再放{main}，加一点盐，翻炒均匀。",
             f"盖上锅盖，用小火煮{zh_num(rng.randrange(5, 30))}分钟。", "最后装盘，趁热吃。"]
    idx = sorted(rng.sample(range(len(steps)), rng.randrange(3, len(steps) + 1)))
    nums = ["第一步", "第二步", "第三步", "第四步", "第五步", "第六步", "第七步"]
    for j, i in enumerate(idx):
        out.append(f"{nums[j]}，{steps[i]}")
    return "\n".join(out)


def zh_story(W: World, rng: random.Random) -> str:
    p = ZhPerson(W, rng)
    ta = p.ta
    friend = W.zh_name(rng)
    thing = rng.choice(ZH_THINGS)
    color = rng.choice(ZH_COLORS)
    out = [f"从前，在{p.place}住着一个{p.adj}的{p.prof}，名叫{p.name}。"]
    mid = [
        f"{ta}每天都很早起床，去{rng.choice(ZH_PLACES)}工作。",
        f"有一天，{p.name}在{p.river}边发现了一{thing[0]}{color}的{thing[1:]}。",
        f"{ta}不知道这是谁的，就去问{ta}的朋友{friend}。",
        f"{friend}说：“我也不知道，我们去问问村里的老人吧。”",
        f"他们走了{zh_num(rng.randrange(2, 20))}里路，来到了{W.zh_places.pick(rng)}。",
        f"一位老人看了很久，笑着说：“这是一件宝贝，你要好好保管。”",
        f"那天晚上，下起了{rng.choice(['大雨', '大雪', '小雨'])}，{p.name}的{p.pet}一直在叫。",
        f"{p.name}心里很{rng.choice(ZH_FEEL)}。",
    ]
    idx = sorted(rng.sample(range(len(mid)), rng.randrange(3, len(mid) + 1)))
    out.extend(mid[i] for i in idx)
    out.append(rng.choice([f"从那以后，{p.name}和{friend}成了最好的朋友。", f"后来，{p.place}的人都知道了这个故事。",
                           f"{p.name}一直在{p.place}快乐地生活。"]))
    return "".join(out)


def zh_town(W: World, rng: random.Random) -> str:
    place = W.zh_places.pick(rng)
    river = W.zh_place_river[place]
    pop = rng.randrange(300, 90000)
    out = [f"{place}位于{river}的{rng.choice(['东', '南', '西', '北'])}岸，有{zh_num(pop)}人口。"]
    pool = [
        f"这里出产{rng.choice(ZH_FOODS)}和{rng.choice(ZH_FOODS)}。",
        f"每逢星期{rng.choice(ZH_WEEKDAY[:6])}，{place}都有集市。",
        f"{place}有{zh_num(rng.randrange(1, 9))}所学校和一个图书馆。",
        f"{place}离{W.zh_places.pick(rng)}有{zh_num(rng.randrange(5, 90))}公里。",
        f"{river}的水很{rng.choice(['清', '深', '急', '浅'])}，夏天孩子们常在河边玩。",
        f"这里的人大多是{rng.choice(ZH_PROFS)}和{rng.choice(ZH_PROFS)}。",
        f"{place}最有名的是一座{rng.choice(['石桥', '老塔', '古庙', '钟楼', '水车'])}，已经有{zh_num(rng.randrange(100, 900))}年的历史了。",
    ]
    idx = sorted(rng.sample(range(len(pool)), rng.randrange(3, len(pool) + 1)))
    out.extend(pool[i] for i in idx)
    return "".join(out)


def zh_event(W: World, rng: random.Random) -> dict:
    p = ZhPerson(W, rng)
    kind = rng.choice(["open", "race", "find", "harvest", "flood", "concert"])
    ev = dict(kind=kind, p=p, month=rng.randrange(1, 13), day=rng.randrange(1, 29))
    if kind == "open":
        ev.update(obj=rng.choice(["面包店", "书店", "茶馆", "饭店", "花店", "学校"]), n=rng.randrange(20, 500))
    elif kind == "race":
        ev.update(n=rng.randrange(3, 30))
    elif kind == "find":
        ev.update(obj=rng.choice(["古钱", "陶罐", "铜镜", "石器"]), n=rng.randrange(3, 200))
    elif kind == "harvest":
        ev.update(obj=rng.choice(["苹果", "土豆", "玉米", "西瓜", "红薯", "花生"]), n=rng.randrange(1000, 90000))
    elif kind == "flood":
        ev.update(n=rng.randrange(2, 30), m=rng.randrange(10, 300))
    else:
        ev.update(n=rng.randrange(50, 5000))
    return ev


def render_event_zh(ev: dict, rng: random.Random) -> tuple[str, str]:
    p = ev["p"]
    date = f"{zh_num(ev['month'])}月{zh_num(ev['day'])}日"
    k = ev["kind"]
    ta = p.ta
    if k == "open":
        facts = [f"{date}，{p.place}的{p.prof}{p.name}开了一家新{ev['obj']}。", f"第一天来了大约{zh_num(ev['n'])}位客人。",
                 f"{p.name}说：“这是我多年的梦想。”"]
        summ = f"{date}，{p.name}在{p.place}开了一家{ev['obj']}。"
    elif k == "race":
        facts = [f"{date}，{p.name}在{p.river}划船比赛中获得了第一名。", f"一共有{zh_num(ev['n'] + 1)}条船参加比赛。",
                 f"这是{ta}第一次参加比赛。"]
        summ = f"{p.name}{date}在{p.river}划船比赛中获得第一名。"
    elif k == "find":
        facts = [f"{date}，{p.name}在{p.place}挖地的时候，发现了{zh_num(ev['n'])}件{ev['obj']}。", "专家说，这些东西已经有几百年的历史了。",
                 f"下个月，它们会在{p.place}展出。"]
        summ = f"{p.name}{date}在{p.place}发现了{zh_num(ev['n'])}件{ev['obj']}。"
    elif k == "harvest":
        facts = [f"今年，{p.place}的农民{p.name}收了{zh_num(ev['n'])}斤{ev['obj']}，创下了新纪录。", f"收获在{date}结束。",
                 f"{p.name}说，今年的雨水很好。"]
        summ = f"{p.place}的{p.name}今年收了{zh_num(ev['n'])}斤{ev['obj']}，创下纪录。"
    elif k == "flood":
        facts = [f"{date}，{p.river}发大水，{p.place}有{zh_num(ev['n'])}条路被关闭。", f"大约{zh_num(ev['m'])}户人家进了水。",
                 f"{p.prof}{p.name}用自己的船帮助很多人离开。"]
        summ = f"{date}{p.river}发大水，{p.place}{zh_num(ev['n'])}条路被关闭。"
    else:
        facts = [f"{date}，{p.name}在{p.place}开了一场音乐会。", f"大约{zh_num(ev['n'])}人来听。", "门票的钱会送给学校。"]
        summ = f"{p.name}{date}在{p.place}开音乐会，约{zh_num(ev['n'])}人参加。"
    filler = [f"那天天气{rng.choice(ZH_WEATHER if ev['month'] in (11, 12, 1, 2, 3) else ZH_WEATHER[:7] + ZH_WEATHER[9:])}。", f"{p.place}在{p.river}边。", "很多邻居也来帮忙。", f"{p.name}平时喜欢{p.hobby}。",
              f"当地的孩子们都很{rng.choice(ZH_FEEL)}。"]
    body = facts[:1] + facts[1:][: rng.randrange(1, 3)] + [filler[i] for i in sorted(rng.sample(range(len(filler)), rng.randrange(1, 4)))]
    return "".join(body), summ


def zh_news(W: World, rng: random.Random) -> str:
    return render_event_zh(zh_event(W, rng), rng)[0]


# ----------------------------------------------------------------------------------------------------
# The pretraining corpus
# ----------------------------------------------------------------------------------------------------

EN_DOCS = [
    (doc_biography, 12), (doc_town, 7), (doc_arithmetic, 5), (doc_word_problems, 5), (doc_recipe, 7),
    (doc_dialogue, 9), (doc_diary, 7), (doc_letter, 6), (doc_weather, 4), (doc_story, 11), (doc_field_guide, 5),
    (doc_price_list, 4), (doc_howto, 3), (doc_qa_sheet, 4), (doc_news, 6), (doc_review, 3), (doc_lesson, 3), (doc_chronicle, 4),
]
ZH_DOCS = [(zh_bio, 3), (zh_diary, 2), (zh_weather, 1), (zh_arith, 1), (zh_dialogue, 2), (zh_recipe, 1), (zh_story, 2),
           (zh_town, 1), (zh_news, 1)]
ZH_FRACTION = 0.12
PRETRAIN_BYTES = 3_200_000


def _weighted(table):
    fns = [f for f, _ in table]
    cum = list(accumulate(w for _, w in table))
    return lambda rng: fns[bisect.bisect_right(cum, rng.random() * cum[-1])]


def is_zh(text: str) -> bool:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) > len(text) // 4


def doc_length(text: str) -> int:
    """Words, or for Chinese text characters / 2 (about one word per two characters)."""
    return sum(not ch.isspace() for ch in text) // 2 if is_zh(text) else len(text.split())


def clean_doc(text: str) -> str:
    # One blank line separates documents, so a document never contains an empty line.
    lines = [ln.rstrip() for ln in text.split("\n")]
    return "\n".join(ln for ln in lines if ln.strip())


def make_pretrain(W: World, seed: int) -> list[str]:
    rng = random.Random(seed)
    pick_en, pick_zh = _weighted(EN_DOCS), _weighted(ZH_DOCS)
    docs: list[str] = []
    total = 0
    while total < PRETRAIN_BYTES:
        fn = pick_zh(rng) if rng.random() < ZH_FRACTION else pick_en(rng)
        d = clean_doc(fn(W, rng))
        if doc_length(d) < 40:
            continue
        docs.append(d)
        total += len(d.encode("utf-8")) + 2
    return docs


# ----------------------------------------------------------------------------------------------------
# Task datasets
# ----------------------------------------------------------------------------------------------------


def _split(make_one, n_train: int, n_valid: int, seed: int, key=lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True)):
    """Draw n_train + n_valid distinct records (distinct by ``key``) from ``make_one(rng, index)``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    recs: list[dict] = []
    while len(recs) < n_train + n_valid:
        r = make_one(rng, len(recs))
        if r is None:
            continue
        k = key(r)
        if k in seen:
            continue
        seen.add(k)
        recs.append(r)
    return {"train": recs[:n_train], "validation": recs[n_train:]}


# --- summarization ----------------------------------------------------------------------------------


def render_event_zh_long(W: World, ev: dict, rng: random.Random) -> tuple[str, str]:
    p = ev["p"]
    doc, summ = render_event_zh(ev, rng)
    near = W.zh_places.pick(rng)
    more = [f"{p.name}今年{zh_num(p.age)}岁，是一位{p.adj}的{p.prof}。", f"{p.place}的集市每个星期{rng.choice(ZH_WEEKDAY[:6])}都很热闹。",
            f"{p.name}家里养了一只{p.pet}。", f"{p.name}最喜欢吃{p.food}。", f"附近{near}的人也来看了。" if near != p.place else "很多人都来看了。",
            f"当地的老人说，这样的事很多年没有见过了。", f"{p.river}的水今年{rng.choice(['很清', '很深', '不太多'])}。"]
    extra = [more[i] for i in sorted(rng.sample(range(len(more)), rng.randrange(2, 5)))]
    return doc + "".join(extra), summ


def make_summarization(W: World) -> dict:
    def one(rng: random.Random, i: int) -> dict | None:
        if rng.random() < 0.075:  # ~10% of the kept records (English ones are filtered by length)
            ev = zh_event(W, rng)
            ev_doc, summ = render_event_zh_long(W, ev, rng)
            return {"document": ev_doc, "summary": summ}
        ev = make_event(W, rng)
        doc, summ = render_event_en(ev, rng, full=rng.random() < 0.5, n_filler=(2, 5))
        n = len(doc.split())
        if not (60 <= n <= 150) or not (8 <= len(summ.split()) <= 20):
            return None
        return {"document": doc, "summary": summ}

    return _split(one, 2000, 200, SEED + 10)


# --- translation: English -> Toki-Qel ("tq"), a rule-based artificial language -----------------------
#
# Grammar of Toki-Qel:
#   * word order subject - object - verb (SOV); time words first; place phrases before the object;
#   * adjectives follow their noun; numbers precede it; "the" becomes the particle "ko" after the noun
#     phrase and "a"/"an" becomes "un" before it;
#   * plural nouns take the suffix "-en" ("-n" after a vowel); past-tense verbs take "-ré", future verbs
#     take "-va"; negation is "nu" before the verb; questions end with the particle "ka";
#   * prepositions become postpositions after their noun phrase;
#   * names are kept as they are.

TQ_NOUNS = words("""farmer baker teacher child woman man dog cat horse goat bird fish boat house door window table
chair basket bowl cup knife book letter map key lamp bell river bridge market road hill tree garden field
apple bread cheese soup cake coin song friend mother father sister brother town village school mill shop
kettle rope cart flower stone""")
TQ_ANIMATE = words("farmer baker teacher child woman man dog cat horse goat bird friend mother father sister brother")
TQ_THINGS = [n for n in TQ_NOUNS if n not in TQ_ANIMATE]
TQ_PERSON_VERBS = ("see", "find", "help", "like", "want")  # verbs whose object may be a person or an animal
TQ_ADJS = words("big small old new red blue green white black happy tired quiet loud warm cold heavy clean beautiful long")
TQ_VERBS_T = [  # transitive: base, 3sg, past
    ("see", "sees", "saw"), ("find", "finds", "found"), ("buy", "buys", "bought"), ("sell", "sells", "sold"),
    ("carry", "carries", "carried"), ("make", "makes", "made"), ("open", "opens", "opened"), ("wash", "washes", "washed"),
    ("paint", "paints", "painted"), ("bring", "brings", "brought"), ("want", "wants", "wanted"), ("like", "likes", "liked"),
    ("read", "reads", "read"), ("eat", "eats", "ate"), ("help", "helps", "helped"), ("lose", "loses", "lost"),
]
TQ_VERBS_I = [("sleep", "sleeps", "slept"), ("sing", "sings", "sang"), ("walk", "walks", "walked"),
              ("work", "works", "worked"), ("wait", "waits", "waited"), ("laugh", "laughs", "laughed"),
              ("run", "runs", "ran"), ("swim", "swims", "swam")]
TQ_PREPS = words("in near behind under at")
TQ_TIMES = lines_of("""
today
yesterday
tomorrow
every day
in the morning
in the evening
at night
""")
TQ_PRONOUNS = {"I": "mi", "you": "tu", "he": "en", "she": "sa", "we": "nos", "they": "ilo", "it": "ta"}
TQ_NUMBERS = words("two three four five six seven eight nine ten")
TQ_FUNCTION = {"the": "ko", "a": "un", "an": "un", "not": "nu", "and": "e", "?": "ka", "very": "moltë"}


def tq_lexicon() -> dict[str, str]:
    """A fixed English -> Toki-Qel word list, generated from syllables with its own seed."""
    rng = random.Random(SEED + 100)
    onsets = words("b d f g k l m n p r s t v z q sh ch th kh")
    vowels = ["a", "e", "i", "o", "u", "á", "é", "í", "ó", "ú", "ä", "ö", "ü", "ë", "ai", "ou"]
    codas = ["", "", "", "n", "l", "r", "s", "k", "m", "t", "q"]
    taken = set(TQ_PRONOUNS.values()) | set(TQ_FUNCTION.values())
    lex: dict[str, str] = {}
    english = (TQ_NOUNS + TQ_ADJS + [v[0] for v in TQ_VERBS_T + TQ_VERBS_I] + TQ_PREPS + TQ_NUMBERS
               + ["today", "yesterday", "tomorrow", "every", "day", "morning", "evening", "night"])
    for w in english:
        if w in lex:
            continue
        while True:
            n = 1 + (rng.random() < 0.7) + (rng.random() < 0.2)
            cand = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n)) + rng.choice(codas)
            if cand not in taken and len(cand) >= 3:
                break
        taken.add(cand)
        lex[w] = cand
    return lex


TQ_LEX = tq_lexicon()


def tq_plural(w: str) -> str:
    return w + ("n" if w[-1] in "aeiouáéíóúäöüë" else "en")


def tq_time(phrase: str) -> str:
    parts = phrase.split()
    if parts[0] in ("in", "at"):  # "in the morning" -> "morning-ko in"
        return f"{TQ_LEX[parts[-1]]} ko {TQ_LEX[parts[0]]}"
    return " ".join(TQ_LEX[p] for p in parts)


class NP:
    """A noun phrase with its English and Toki-Qel forms."""

    def __init__(self, rng: random.Random, W: World, allow_name: bool = True, allow_pron: bool = False,
                 nouns: list[str] | None = None):
        r = rng.random()
        self.person = 3
        self.plural = False
        if allow_pron and r < 0.2:
            pr = rng.choice(list(TQ_PRONOUNS))
            self.en, self.tq = pr, TQ_PRONOUNS[pr]
            self.plural = pr in ("we", "they", "you")
            self.person = 1 if pr in ("I", "we") else (2 if pr == "you" else 3)
            self.pron = pr
            return
        self.pron = None
        if allow_name and r < 0.35:
            name = (W.female if rng.random() < 0.5 else W.male).pick(rng)
            self.en = self.tq = name
            return
        noun = rng.choice(nouns or TQ_NOUNS)
        adjs = rng.sample(TQ_ADJS, rng.choice([0, 0, 1, 1, 2]))
        very = bool(adjs) and rng.random() < 0.15
        det = rng.choice(["the", "the", "a", "num"])
        n = 1
        if det == "num":
            n = rng.randrange(2, 11)
            self.plural = True
        elif det == "the" and rng.random() < 0.3:
            self.plural = True
        en_noun = plural(noun) if self.plural else noun
        tq_noun = tq_plural(TQ_LEX[noun]) if self.plural else TQ_LEX[noun]
        en_adjs = (["very"] if very else []) + adjs
        tq_adjs = [TQ_LEX[a] for a in adjs] + (["moltë"] if very else [])
        if det == "num":
            self.en = " ".join([TQ_NUMBERS[n - 2]] + en_adjs + [en_noun])
            self.tq = " ".join([TQ_LEX[TQ_NUMBERS[n - 2]], tq_noun] + tq_adjs)
        elif det == "a" and not self.plural:
            self.en = " ".join([art(" ".join(en_adjs + [en_noun]))])
            self.tq = " ".join(["un", tq_noun] + tq_adjs)
        else:
            self.en = " ".join(["the"] + en_adjs + [en_noun])
            self.tq = " ".join([tq_noun] + tq_adjs + ["ko"])


def make_translation_pair(W: World, rng: random.Random) -> dict:
    subj = NP(rng, W, allow_pron=True, nouns=TQ_ANIMATE)
    transitive = rng.random() < 0.7
    verb = rng.choice(TQ_VERBS_T if transitive else TQ_VERBS_I)
    if transitive:
        animate_ok = verb[0] in TQ_PERSON_VERBS
        obj = NP(rng, W, allow_name=animate_ok, nouns=TQ_NOUNS if animate_ok else TQ_THINGS)
    else:
        obj = None
    tense = rng.choice(["present", "past", "past", "future"])
    neg = rng.random() < 0.2
    question = rng.random() < 0.12
    pp = None
    if rng.random() < 0.5:
        prep = rng.choice(TQ_PREPS)
        pnp = NP(rng, W, allow_name=False, nouns=TQ_THINGS)
        pp = (f"{prep} {pnp.en}", f"{pnp.tq} {TQ_LEX[prep]}")
    time = rng.choice(TQ_TIMES) if rng.random() < 0.4 else None
    if time:
        if tense == "future" and time in ("yesterday",):
            time = "tomorrow"
        if tense == "past" and time == "tomorrow":
            time = "yesterday"
        if tense != "future" and time == "tomorrow":
            tense = "future"
        if tense == "future" and time == "yesterday":
            tense = "past"
    third_sg = subj.person == 3 and not subj.plural
    base, s3, past = verb
    # English verb group
    if question:
        if tense == "present":
            aux = "does" if third_sg else "do"
        elif tense == "past":
            aux = "did"
        else:
            aux = "will"
        vg_head, vg_rest = aux, ("not " if neg else "") + base
    else:
        if tense == "present":
            vg = (("does not " if third_sg else "do not ") + base) if neg else (s3 if third_sg else base)
        elif tense == "past":
            vg = ("did not " + base) if neg else past
        else:
            vg = "will " + ("not " if neg else "") + base
    tail = [x for x in [obj.en if obj else None, pp[0] if pp else None, time] if x]
    if question:
        en = " ".join([vg_head, subj.en, vg_rest] + tail) + "?"
    else:
        en = " ".join([subj.en, vg] + tail) + "."
    en = cap(en)
    # Toki-Qel: TIME SUBJ PP OBJ [nu] VERB(-ré|-va) [ka]
    v = TQ_LEX[base] + {"present": "", "past": "ré", "future": "va"}[tense]
    tq_words = ([tq_time(time)] if time else []) + [subj.tq] + ([pp[1]] if pp else []) + ([obj.tq] if obj else []) \
        + (["nu"] if neg else []) + [v] + (["ka"] if question else [])
    tq = " ".join(tq_words)
    tq = cap(tq) + ("?" if question else ".")
    return {"translation": {"en": en, "tq": tq}}


def make_translation(W: World) -> dict:
    def one(rng: random.Random, i: int) -> dict | None:
        r = make_translation_pair(W, rng)
        n = len(r["translation"]["en"].split())
        if not (5 <= n <= 20):
            return None
        return r

    return _split(one, 3000, 200, SEED + 20, key=lambda r: r["translation"]["en"])


# --- classification: sentiment of one sentence ------------------------------------------------------
#
# Label rule: every clause "X is/was [not] [very] ADJ" scores +1 for a positive adjective and -1 for a
# negative one, with the sign flipped by "not" ("not good" -> -1, "not bad" -> +1); neutral adjectives
# and factual clauses score 0. The sentence is "positive" if the total is > 0, "negative" if < 0, else
# "neutral" (no opinion, or one praise and one complaint).

NEUTRAL_ADJ = words("round square blue green brown wooden large small heavy light tall short plain new old painted")
INTENS = ["", "", "", "very ", "quite ", "really ", "rather ", "extremely ", "a little "]
CLS_THINGS = OBJECTS[:60] + DISHES + ["room", "service", "bread", "tea", "coffee", "café", "crème cake", "purée", "soup",
                                      "music", "ferry ride", "inn", "boat trip", "market", "festival"]
ZH_POS = ["好", "漂亮", "结实", "好吃", "方便", "干净", "舒服", "便宜"]
ZH_NEG = ["差", "难吃", "贵", "脏", "难看", "旧", "慢", "吵"]
ZH_CLS_THINGS = ["碗", "茶", "面条", "饭店", "书", "椅子", "房间", "衣服", "面包", "服务", "伞", "鞋"]


def _en_clause(W: World, rng: random.Random, pol: int, thing: str | None = None) -> tuple[str, int]:
    """A clause and its score; pol in (+1, -1, 0) is the score wanted."""
    thing = thing or rng.choice(CLS_THINGS)
    many = thing.endswith("s") and thing not in ("glass",)
    cop = rng.choice(["were", "are"] if many else ["was", "is"])
    if pol == 0:
        if rng.random() < 0.5:
            adj = rng.choice(NEUTRAL_ADJ)
            return f"the {thing} {cop} {rng.choice(INTENS)}{adj}", 0
        return rng.choice([f"the {thing} cost {num(rng.randrange(2, 60))} coins",
                           f"the {thing} came from {W.towns.pick(rng).name}",
                           f"the {thing} arrived on {rng.choice(DAYS)}",
                           f"the {thing} was made by {W.female.pick(rng) if rng.random() < 0.5 else W.male.pick(rng)}",
                           f"I bought the {thing} in {rng.choice(MONTHS)}"]), 0
    negate = rng.random() < 0.3
    base = pol if not negate else -pol
    adj = rng.choice(POS_ADJ if base > 0 else NEG_ADJ)
    if negate:
        neg = "not"
        return f"the {thing} {cop} {neg} {rng.choice(['', '', 'very ', 'really '])}{adj}", pol
    return f"the {thing} {cop} {rng.choice(INTENS[:-1])}{adj}", pol


def make_sentiment_en(W: World, rng: random.Random, label: str) -> str:
    want = {"positive": 1, "negative": -1, "neutral": 0}[label]
    shape = rng.randrange(5)
    if shape <= 1 or (want != 0 and shape == 4 and rng.random() < 0.5):
        c, _ = _en_clause(W, rng, want)
        body = c
    elif shape == 2:  # two clauses of the same direction, or a fact plus an opinion
        c1, _ = _en_clause(W, rng, want)
        c2, _ = _en_clause(W, rng, 0 if want == 0 or rng.random() < 0.5 else want)
        body = f"{c1} and {c2}" if rng.random() < 0.5 else f"{c2}, and {c1}"
    elif shape == 3 and want == 0:  # one praise and one complaint cancel out
        c1, _ = _en_clause(W, rng, 1)
        c2, _ = _en_clause(W, rng, -1)
        if rng.random() < 0.5:
            c1, c2 = c2, c1
        body = f"{c1}, but {c2}"
    else:
        c1, _ = _en_clause(W, rng, want)
        body = c1
    who = rng.random()
    if who < 0.3:
        name = (W.female if rng.random() < 0.5 else W.male).pick(rng)
        sent = f"{name} from {W.towns.pick(rng).name} said that {body}."
    elif who < 0.5:
        sent = f"At {W.surnames.pick(rng)}'s {rng.choice(['shop', 'stall', 'inn', 'café', 'workshop'])}, {body}."
    else:
        sent = cap(body) + rng.choice([".", ".", ".", "!"])
    return cap(sent)


def make_sentiment_zh(W: World, rng: random.Random, label: str) -> str:
    thing = rng.choice(ZH_CLS_THINGS)
    name = W.zh_name(rng)
    place = W.zh_places.pick(rng)
    if label == "neutral":
        if rng.random() < 0.5:
            return f"{name}在{place}买了{thing}，花了{zh_num(rng.randrange(2, 90))}块钱。"
        a, b = rng.choice(ZH_POS), rng.choice(ZH_NEG)
        return f"这里的{thing}很{a}，但是{rng.choice(ZH_CLS_THINGS)}很{b}。"
    pos = label == "positive"
    if rng.random() < 0.3:  # negation flips: 不好 is negative, 不差 is positive
        adj = rng.choice(ZH_NEG if pos else ZH_POS)
        return f"{place}的{thing}一点也不{adj}。" if rng.random() < 0.5 else f"{name}说这个{thing}不{adj}。"
    adj = rng.choice(ZH_POS if pos else ZH_NEG)
    return rng.choice([f"{place}的{thing}很{adj}。", f"{name}说这个{thing}非常{adj}。", f"这家店的{thing}真{adj}！"])


def make_classification(W: World) -> dict:
    labels = ["positive", "negative", "neutral"]

    def one(rng: random.Random, i: int) -> dict:
        label = labels[i % 3]
        text = make_sentiment_zh(W, rng, label) if rng.random() < 0.08 else make_sentiment_en(W, rng, label)
        return {"text": text, "label": label}

    out = _split(one, 3000, 210, SEED + 30, key=lambda r: r["text"])
    for split in out:  # interleaved labels -> shuffle deterministically
        random.Random(SEED + 31).shuffle(out[split])
    return out


# --- classification-pair: paraphrase or changed fact ------------------------------------------------

PAIR_VERBS = [("sold", "were sold"), ("bought", "were bought"), ("mended", "were mended"), ("painted", "were painted"),
              ("carried", "were carried"), ("delivered", "were delivered")]
PAIR_OBJECTS = ["baskets", "chairs", "lamps", "kettles", "boxes", "blankets", "bowls", "barrels", "ladders", "clocks",
                "boots", "maps", "jars", "buckets", "coats", "drums"]
PAIR_PLACES = ["the market", "the harbour", "the mill", "the town hall", "the inn", "the school", "the bridge", "the square"]


def _pair_fact(W: World, rng: random.Random) -> dict:
    g = rng.choice("fm")
    return dict(first=(W.female if g == "f" else W.male).pick(rng), last=W.surnames.pick(rng), g=g,
                verb=rng.randrange(len(PAIR_VERBS)), n=rng.randrange(2, 40), obj=rng.choice(PAIR_OBJECTS),
                place=rng.choice(PAIR_PLACES), town=W.towns.pick(rng).name, day=rng.choice(DAYS))


def _pair_render(f: dict, rng: random.Random, style: int) -> str:
    name = f"{f['first']} {f['last']}"
    act, pas = PAIR_VERBS[f["verb"]]
    n = num(f["n"]) if rng.random() < 0.8 else str(f["n"])
    where = f"{f['place']} in {f['town']}"
    pr = PRON[f["g"]]
    templates = [
        f"{name} {act} {n} {f['obj']} at {where} on {f['day']}.",
        f"On {f['day']}, {name} {act} {n} {f['obj']} at {where}.",
        f"At {where}, {n} {f['obj']} {pas} by {name} on {f['day']}.",
        f"{name} went to {where} on {f['day']} and {act} {n} {f['obj']} there.",
        f"It was on {f['day']} that {name} {act} {n} {f['obj']} at {where}.",
        f"{cap(n)} {f['obj']} {pas} by {name} on {f['day']}, at {where}.",
        f"On {f['day']} {pr['subj']} was at {where}: {name} {act} {n} {f['obj']}.",
    ]
    return cap(templates[style])


def _pair_change(W: World, rng: random.Random, f: dict) -> dict:
    g = dict(f)
    what = rng.choice(["n", "n", "first", "last", "town", "day", "obj", "verb", "place"])
    while g == f:
        if what == "n":
            g["n"] = max(2, f["n"] + rng.choice([-5, -3, -2, -1, 1, 2, 3, 5, 10]))
        elif what == "first":
            g["first"] = (W.female if f["g"] == "f" else W.male).pick(rng)
        elif what == "last":
            g["last"] = W.surnames.pick(rng)
        elif what == "town":
            g["town"] = W.towns.pick(rng).name
        elif what == "day":
            g["day"] = rng.choice(DAYS)
        elif what == "obj":
            g["obj"] = rng.choice(PAIR_OBJECTS)
        elif what == "verb":
            g["verb"] = rng.randrange(len(PAIR_VERBS))
        else:
            g["place"] = rng.choice(PAIR_PLACES)
    return g


def _pair_zh(W: World, rng: random.Random, equal: bool) -> tuple[str, str]:
    name, place, n, thing, w = W.zh_name(rng), W.zh_places.pick(rng), rng.randrange(2, 50), rng.choice(["篮子", "碗", "灯", "椅子", "伞"]), rng.choice(ZH_WEEKDAY)
    f = dict(name=name, place=place, n=n, thing=thing, w=w)
    g = dict(f)
    if not equal:
        k = rng.choice(["name", "place", "n", "n", "w"])
        while g == f:
            g[k] = {"name": W.zh_name(rng), "place": W.zh_places.pick(rng), "n": max(2, n + rng.choice([-3, -1, 1, 2, 5])), "w": rng.choice(ZH_WEEKDAY)}[k]

    def r(x, style):
        if style == 0:
            return f"{x['name']}星期{x['w']}在{x['place']}卖了{zh_num(x['n'])}个{x['thing']}。"
        if style == 1:
            return f"星期{x['w']}，{x['name']}在{x['place']}的市场上卖出了{zh_num(x['n'])}个{x['thing']}。"
        return f"在{x['place']}，{x['name']}星期{x['w']}一共卖了{zh_num(x['n'])}个{x['thing']}。"

    s1, s2 = rng.sample(range(3), 2)
    return r(f, s1), r(g, s2)


def make_classification_pair(W: World) -> dict:
    def one(rng: random.Random, i: int) -> dict:
        equal = i % 2 == 0
        if rng.random() < 0.08:
            a, b = _pair_zh(W, rng, equal)
        else:
            f = _pair_fact(W, rng)
            g = f if equal else _pair_change(W, rng, f)
            s1, s2 = rng.sample(range(7), 2) if rng.random() < 0.85 else (rng.randrange(7),) * 2
            a, b = _pair_render(f, rng, s1), _pair_render(g, rng, s2)
            if a == b:
                return None
        return {"sentence1": a, "sentence2": b, "label": "equivalent" if equal else "not_equivalent"}

    out = _split(one, 3000, 200, SEED + 40, key=lambda r: r["sentence1"] + "|" + r["sentence2"])
    for split in out:
        random.Random(SEED + 41).shuffle(out[split])
    return out


# --- qa: extractive question answering with unanswerable questions ----------------------------------


def _person_facts(W: World, rng: random.Random) -> tuple[str, list[tuple[str, str, list[str]]], list[str]]:
    """(title, [(sentence, answer, [questions])], filler sentences) for one person."""
    p = W.person(rng)
    P = p.p
    t = p.town
    first = p.first
    sib_rel = rng.choice(["sister", "brother"])
    sib = W.other_first(rng, [first], "f" if sib_rel == "sister" else "m")[0]
    t2 = W.other_town(rng, t)
    age = num(p.age) if rng.random() < 0.5 else str(p.age)
    born = str(2024 - p.age - rng.randrange(0, 2))  # consistent with the age, as of 2024
    facts = [
        (f"{p.full} lives in {t.name}, in {t.region}.", t.name, [f"Where does {first} live?", f"In which town does {first} {p.last} live?"]),
        (f"{P['Subj']} works as {art(p.prof)}.", p.prof, [f"What is {first}'s job?", f"What does {first} do for a living?"]),
        (f"{first} is {age} years old.", age, [f"How old is {first}?", f"What is the age of {first} {p.last}?"]),
        (f"{first} was born in {born}.", born, [f"In which year was {first} born?", f"When was {first} {p.last} born?"]),
        (f"{first} has {art(p.pet_kind)} called {p.pet_name}.", p.pet_name, [f"What is the name of {first}'s {p.pet_kind}?", f"What is {first}'s {p.pet_kind} called?"]),
        (f"{P['Pos']} favourite food is {p.food}.", p.food, [f"What is {first}'s favourite food?", f"Which food does {first} like best?"]),
        (f"{P['Pos']} favourite colour is {p.color}.", p.color, [f"What is {first}'s favourite colour?", f"Which colour does {first} like best?"]),
        (f"In {P['pos']} free time, {first} enjoys {p.hobby}.", p.hobby, [f"What does {first} enjoy in {P['pos']} free time?", f"What is {first}'s hobby?"]),
        (f"{P['Pos']} {sib_rel}, {sib}, lives in {t2.name}.", sib, [f"What is the name of {first}'s {sib_rel}?", f"Who is {first}'s {sib_rel}?"]),
        (f"Every {t.market_day}, {first} goes to the market to buy {rng.choice(FOODS)}.", t.market_day, [f"On which day does {first} go to the market?", f"When does {first} go to the market?"]),
    ]
    filler = [
        f"{first} is known as {art(p.trait)} and {p.trait2} neighbour.",
        f"The river {t.river} runs past {P['pos']} house.",
        f"{first} often says that {t.name} is the best place in the world.",
        f"Most mornings {P['subj']} drinks a cup of tea by the window.",
        f"The people of {t.name} know {first} well.",
        f"{P['Subj']} does not like cold weather.",
    ]
    intro = rng.choice([f"This is {p.full}.", f"{p.full} is {art(p.trait)} {P['noun']}.", f"Here are some facts about {p.full}."])
    return p.full, facts, filler, intro


def _town_facts(W: World, rng: random.Random) -> tuple[str, list[tuple[str, str, list[str]]], list[str]]:
    t = W.towns.pick(rng)
    pop = commas(t.population)
    facts = [
        (f"{t.name} lies on the river {t.river}.", t.river, [f"Which river flows through {t.name}?", f"On which river is {t.name}?"]),
        (f"It lies in {t.region}.", t.region, [f"In which region is {t.name}?", f"In which part of the country is {t.name}?"]),
        (f"About {pop} people live there.", pop, [f"How many people live in {t.name}?", f"What is the population of {t.name}?"]),
        (f"{t.name} was founded in {t.founded}.", str(t.founded), [f"When was {t.name} founded?", f"In which year was {t.name} founded?"]),
        (f"Its oldest building is the {t.landmark}.", t.landmark, [f"What is the oldest building in {t.name}?", f"Which is the oldest building in {t.name}?"]),
        (f"The market is held every {t.market_day}.", t.market_day, [f"On which day is the market held in {t.name}?", f"When is market day in {t.name}?"]),
        (f"The town is famous for its {t.products[0]}.", t.products[0], [f"What is {t.name} famous for?", f"What is {t.name} known for?"]),
        (f"The nearest large town is {t.neighbour}, {t.neighbour_dist} miles to the {t.neighbour_dir}.", t.neighbour, [f"What is the nearest large town to {t.name}?", f"Which town is closest to {t.name}?"]),
    ]
    filler = [
        f"Visitors say that {t.name} is {rng.choice(['quiet', 'busy', 'friendly', 'pretty'])}.",
        f"In summer the streets of {t.name} are full of flowers.",
        f"Many children learn to swim there.",
        f"The roads around {t.name} are {rng.choice(['narrow', 'steep', 'old', 'well kept'])}.",
        f"There is a small library near the square.",
    ]
    size = "village" if t.population < 900 else ("town" if t.population < 9000 else "city")
    return t.name, facts, filler, rng.choice([f"{t.name} is a {size}.", f"This is a short note about {t.name}."])


def _zh_facts(W: World, rng: random.Random) -> tuple[str, list[tuple[str, str, list[str]]], list[str]]:
    p = ZhPerson(W, rng)
    age = zh_num(p.age)
    facts = [
        (f"{p.name}住在{p.place}。", p.place, [f"{p.name}住在哪里？"]),
        (f"{p.ta}是一名{p.prof}。", p.prof, [f"{p.name}是做什么工作的？"]),
        (f"{p.name}今年{age}岁。", age, [f"{p.name}今年多少岁？"]),
        (f"{p.name}最喜欢吃{p.food}。", p.food, [f"{p.name}最喜欢吃什么？"]),
        (f"{p.name}的爱好是{p.hobby}。", p.hobby, [f"{p.name}的爱好是什么？"]),
        (f"{p.name}家养了一只{p.pet}。", p.pet, [f"{p.name}家养了什么动物？"]),
        (f"{p.name}最喜欢的颜色是{p.color}。", p.color, [f"{p.name}最喜欢什么颜色？"]),
    ]
    filler = [f"{p.place}在{p.river}边。", f"大家都说{p.name}很{p.adj}。", "每天早上，{ta}都很早起床。".replace("{ta}", p.ta)]
    return p.name, facts, filler, f"这是关于{p.name}的介绍。"


def make_qa_record(W: World, rng: random.Random) -> dict | None:
    r = rng.random()
    title, facts, filler, intro = (_zh_facts if r < 0.08 else _person_facts if r < 0.6 else _town_facts)(W, rng)
    zh = r < 0.08
    k = rng.randrange(5, min(8, len(facts) - 1) + 1)
    chosen = sorted(rng.sample(range(len(facts)), k))
    sents = [facts[i][0] for i in chosen]
    if 0 not in chosen:  # the first sentence always names the entity
        sents.insert(0, intro)
    # a few filler sentences placed anywhere after the first sentence
    for f in rng.sample(filler, rng.randrange(1, 4)):
        sents.insert(rng.randrange(1, len(sents) + 1), f)
    sep = "" if zh else " "
    context = sep.join(sents)
    n_words = len(context) // 2 if zh else len(context.split())
    if not zh and not (50 <= n_words <= 150):
        return None
    unanswerable = rng.random() < 0.2
    if unanswerable:
        missing = [i for i in range(len(facts)) if i not in chosen]
        i = rng.choice(missing)
        q = rng.choice(facts[i][2])
        return {"title": title, "context": context, "question": q, "answers": {"text": [], "answer_start": []}}
    i = rng.choice(chosen)
    sent, ans, qs = facts[i]
    start = context.index(sent) + sent.index(ans)
    assert context[start:start + len(ans)] == ans
    return {"title": title, "context": context, "question": rng.choice(qs), "answers": {"text": [ans], "answer_start": [start]}}


def make_qa(W: World) -> dict:
    out = _split(lambda rng, i: make_qa_record(W, rng), 2000, 200, SEED + 50,
                 key=lambda r: r["context"] + "|" + r["question"])
    for split, recs in out.items():
        for j, rec in enumerate(recs):
            ordered = {"id": f"{split}-{j:05d}"}
            ordered.update(rec)
            recs[j] = ordered
            a = rec["answers"]
            for text, start in zip(a["text"], a["answer_start"]):
                assert rec["context"][start:start + len(text)] == text, rec
    return out


# --- multiple-choice: SWAG-style sentence endings ---------------------------------------------------
#
# Each record has a context sentence (sent1), the start of the next sentence (sent2) and four endings.
# The context names one key (a profession, a town's product, the weather, a food, a pet, a hobby, a
# small mishap, a month, or in Chinese a profession, an animal or the weather); the correct ending is
# one written for that key, and the three distractors are endings written for three other keys of the
# same kind (never one listed as confusable with it, e.g. doctor and nurse). Keys are drawn uniformly,
# so every ending is about as often correct as it is a distractor and the endings alone say nothing.
# Placeholders in endings: {pos} his/her, {subj} he/she, {obj} him/her.

MC_PROF = {  # one ending per profession besides its PROF_WORK phrase (past tense)
    "baker": "lit the big oven and kneaded the dough",
    "miller": "carried sacks of grain up to the millstones",
    "blacksmith": "heated an iron bar until it glowed red",
    "weaver": "threaded the loom with fresh wool",
    "potter": "pressed wet clay into the shape of a jug",
    "carpenter": "planed a long oak board until it was smooth",
    "fisher": "cast a net from the little boat",
    "farmer": "drove the cows out to the pasture",
    "shepherd": "counted the sheep on the hillside",
    "teacher": "wrote the day's sums on the blackboard",
    "doctor": "listened to a sick child's chest",
    "nurse": "changed the bandages on a patient's arm",
    "tailor": "measured a customer for a new coat",
    "cook": "stirred a large pot of stew in the kitchen",
    "merchant": "weighed out spices for the customers",
    "sailor": "climbed the mast to untangle a sail",
    "builder": "mixed mortar and laid a row of bricks",
    "painter": "set up an easel beside the river",
    "singer": "practised a new song for the evening",
    "clerk": "copied names into the big town register",
    "judge": "listened to both neighbours before deciding who was right",
    "stonemason": "chiselled letters into a block of stone",
    "glassblower": "blew through a long pipe into the glowing glass",
    "brewer": "stirred the malt in the great copper vat",
    "butcher": "sharpened {pos} knives and hung sausages in the window",
    "gardener": "pruned the roses and weeded the beds",
    "librarian": "put the returned books back on their shelves",
    "innkeeper": "made up the beds for the night's guests",
    "ferryman": "pushed the ferry off from the landing with a long pole",
    "beekeeper": "lifted the lid of a hive in a cloud of bees",
    "shoemaker": "hammered a new heel onto an old boot",
    "dyer": "lifted dripping blue wool out of a vat",
    "rope maker": "twisted long strands of hemp together",
    "clockmaker": "oiled the tiny wheels of a pocket watch",
    "mapmaker": "inked the course of a river onto a fresh sheet",
    "printer": "set the letters for a poster in the press",
    "bookbinder": "stitched the pages of a book together",
    "candle maker": "dipped wicks again and again into hot wax",
    "cheesemaker": "turned the round cheeses on their shelves",
    "herbalist": "hung bunches of herbs up to dry",
    "midwife": "hurried to a house where a baby was on its way",
    "surveyor": "paced out a field with a measuring chain",
    "engineer": "checked the drawings for a new bridge",
    "musician": "tuned {pos} fiddle before the dance",
    "poet": "wrote a few lines about the falling leaves",
    "boatbuilder": "fitted a new plank to the side of a boat",
    "wheelwright": "fitted spokes into a new cart wheel",
    "tanner": "scraped a hide and soaked it in the pit",
    "basket weaver": "soaked willow rods and bent them into a basket",
    "lamplighter": "carried a ladder from one street lamp to the next",
}

MC_PRODUCT = {  # present tense, plural subject (the people of a town)
    "copper pots": ["hammer sheets of copper into round pots", "polish rows of copper pans until they shine"],
    "honey cakes": ["bake sweet cakes with honey from the hills", "sell warm honey cakes from wooden trays"],
    "woollen blankets": ["spin wool for thick, warm blankets", "fold heavy blankets onto their carts"],
    "smoked fish": ["hang fish over slow oak fires", "pack smoked fish into barrels for the winter"],
    "apple cider": ["press apples and fill barrels with cider", "pour cider from big stone jars"],
    "goat cheese": ["milk their goats and press soft white cheese", "wrap small goat cheeses in leaves"],
    "clay jugs": ["shape jugs from red river clay", "fire clay jugs in a great kiln"],
    "willow baskets": ["cut willow shoots to weave baskets", "carry stacks of baskets to the market"],
    "river pearls": ["wade into the shallows to look for pearls in mussel shells", "string pearls onto silk threads"],
    "painted tiles": ["paint blue flowers onto white tiles", "set painted tiles around their doors"],
    "rope": ["twist hemp into long ropes in a narrow shed", "coil new ropes for the boats at the harbour"],
    "salt": ["rake salt from shallow pans by the sea", "fill sacks with white salt crystals"],
    "pickled plums": ["pack plums into jars of vinegar and sugar", "open a jar of sour plums at every meal"],
    "walnut oil": ["crack walnuts and press them for their oil", "fill small bottles with golden nut oil"],
    "glass beads": ["melt coloured glass into tiny beads", "thread bright beads into necklaces"],
    "linen": ["grow flax and weave it into cloth", "bleach long strips of linen in the sun"],
}

MC_WEATHER = {  # past tense, a person
    "sunny": ["put on a straw hat against the bright sun", "hung the washing out to dry in the sunshine"],
    "cloudy": ["took a coat, since the sky looked dull and grey", "glanced at the clouds and hoped they would pass"],
    "rainy": ["took an umbrella and pulled on {pos} boots", "waited under the porch until the rain eased"],
    "windy": ["held on to {pos} hat as the gusts blew down the street", "tied the shutters so they would not bang"],
    "foggy": ["carried a lantern to find the way through the mist", "walked slowly, since {subj} could hardly see the road"],
    "snowy": ["cleared the doorstep with a shovel", "wrapped a thick scarf around {pos} neck and stepped carefully"],
    "stormy": ["closed the shutters and stayed inside until the thunder passed", "brought the animals into the barn before the hail"],
    "mild": ["opened every window to let the soft air in", "sat outside with a book, enjoying the calm"],
}
MC_WEATHER_CONFUSE = [("sunny", "mild"), ("rainy", "stormy"), ("cloudy", "rainy"), ("windy", "stormy"), ("cloudy", "foggy")]

MC_FOOD_MANY = {  # past tense, "them"
    "apples": "cut them into slices and baked a sweet tart",
    "plums": "took out the stones and boiled them down into jam",
    "cherries": "ate a handful straight away and spat the stones into the garden",
    "onions": "chopped them with tears running down {pos} cheeks",
    "carrots": "grated them into a crunchy orange salad",
    "cabbages": "shredded the leaves and pickled them in a crock",
    "potatoes": "boiled them and mashed them with butter",
    "eggs": "cracked them into a hot pan and fried them",
    "walnuts": "broke the hard shells open with a small hammer",
    "mushrooms": "fried them in butter with a little garlic",
    "beans": "left them to soak overnight in a bowl of water",
    "chestnuts": "roasted them in the embers until the skins split",
}
MC_FOOD_ONE = {  # past tense, "it"
    "milk": "poured it into a jug and set it in the cool cellar",
    "flour": "mixed it with water and yeast and kneaded a dough",
    "honey": "stirred a spoonful into {pos} tea",
    "rice": "rinsed it and cooked it in a covered pot",
    "cheese": "cut a thick slice and ate it with bread",
    "pumpkin": "scooped out the seeds and roasted the orange flesh",
    "bread": "toasted a slice over the fire",
    "butter": "spread it thickly on a warm roll",
}
MC_FOOD_CONFUSE = [("apples", "plums"), ("bread", "butter"), ("bread", "cheese"), ("walnuts", "chestnuts")]

MC_PET = {  # present tense, the pet is the subject
    "dog": ["wags its tail and barks at the postman", "fetches sticks from the river"],
    "cat": ["sleeps curled up on the warm windowsill", "hunts mice in the barn"],
    "goat": ["climbs onto the garden wall and chews the washing", "butts the gate with its horns"],
    "rabbit": ["nibbles carrots and hops around its hutch", "digs a deep hole under the fence"],
    "parrot": ["repeats every word it hears in a loud voice", "whistles a tune and cracks sunflower seeds"],
    "tortoise": ["crawls very slowly across the lawn to the lettuce", "pulls its head into its shell when anyone comes near"],
    "hen": ["lays a brown egg in the straw", "scratches in the yard for worms and grain"],
    "duck": ["paddles on the pond and quacks at the children", "dips its head under the water to look for snails"],
    "donkey": ["carries two sacks of flour to the market and brays", "stands in the shade with its long ears twitching"],
    "pony": ["trots round the paddock with a child on its back", "shakes its mane and waits for a lump of sugar"],
    "canary": ["sings bright little songs in its cage", "splashes in a tiny dish of water"],
    "hedgehog": ["snuffles under the hedge looking for beetles", "rolls into a prickly ball when the dog comes by"],
}
MC_PET_CONFUSE = [("donkey", "pony"), ("hen", "duck"), ("parrot", "canary"), ("rabbit", "tortoise")]

MC_HOBBY = {  # past tense, a person
    "fishing": ["sat by the river with a rod and caught three trout", "dug for worms and baited {pos} hooks"],
    "singing": ["sang old songs with the choir in the chapel", "practised scales until {pos} voice was warm"],
    "playing chess": ["beat {pos} neighbour in a long game with the black pieces", "set up the board and studied an old opening"],
    "walking in the hills": ["climbed to the top of the highest hill before lunch", "laced up {pos} boots and followed a path over the moor"],
    "playing the flute": ["played a quiet tune by the open window", "cleaned {pos} flute and learned a new air"],
    "drawing birds": ["sketched a heron standing in the reeds", "sat still for an hour to draw a robin on the fence"],
    "growing roses": ["planted three new rose bushes by the gate", "cut a bunch of red blooms for the table"],
    "collecting stones": ["found a smooth striped pebble on the river bank", "sorted {pos} stones by colour on a shelf"],
    "sailing": ["took a small boat out on the lake and raised the sail", "steered across the bay in a fresh breeze"],
    "reading old maps": ["studied a faded map of the valley by candlelight", "traced old roads with {pos} finger on yellow paper"],
    "baking pies": ["baked a pie with a golden, crumbly crust", "rolled out pastry and filled it with fruit"],
    "carving wood": ["carved a little wooden owl with {pos} knife", "whittled a spoon from a piece of cherry wood"],
    "dancing": ["danced until midnight at the village hall", "learned the steps of a fast new reel"],
    "keeping bees": ["checked the hives and took a jar of honey", "put on a veil and calmed the bees with smoke"],
    "telling stories": ["told the children a tale about a clever fox", "kept the whole inn listening to a ghost story"],
}
MC_HOBBY_CONFUSE = [("fishing", "sailing"), ("singing", "playing the flute"), ("singing", "dancing"),
                    ("walking in the hills", "collecting stones"), ("drawing birds", "reading old maps")]

MC_MISHAP = [  # (context with {name} {pos} {subj} {town}, ending) past tense
    ("{name}'s kettle began to whistle on the stove.", "took it off the heat and made a pot of tea"),
    ("{name} found a hole in the sole of {pos} boot.", "took it to the shoemaker to be mended"),
    ("A button came off {name}'s coat.", "sewed it back on with a needle and thread"),
    ("{name} could not find the key to {pos} front door.", "searched every pocket and then climbed in through a window"),
    ("{name}'s lamp ran out of oil in the middle of the evening.", "lit a candle and carried on reading"),
    ("The roof of {name}'s shed began to leak.", "climbed up with a few new slates and fixed the hole"),
    ("{name} cut {pos} finger while chopping vegetables.", "washed the cut and wrapped it in a clean bandage"),
    ("{name}'s cart lost a wheel on the road to {town}.", "sent for the wheelwright and waited at the roadside"),
    ("{name} had not eaten since breakfast, and it was nearly dark.", "sat down to a large bowl of soup"),
    ("A letter arrived for {name} from an old friend in {town}.", "opened it at once and read it by the window"),
    ("{name} heard a knock at the door late in the evening.", "took a lamp and went to see who was there"),
    ("The bread that {name} had left in the oven began to smell of burning.", "rushed to pull it out before it turned black"),
    ("There had been no rain in {name}'s garden for two weeks.", "carried buckets of water to the thirsty plants"),
    ("{name} was so tired after the long walk from {town} that {subj} could hardly stand.", "went straight to bed and slept until noon"),
    ("It was {name}'s birthday, and {pos} friends had gathered in the kitchen.", "blew out the candles on a large cake"),
    ("The clock on {name}'s wall had stopped at ten past four.", "wound it up and set it to the right time"),
]

MC_SEASON = {  # present tense, plural subject
    "winter": ["clear snow from the paths and sit by the fire", "skate on the frozen pond"],
    "spring": ["sow seeds in the fresh soil as the first lambs are born", "watch the blossom open on the apple trees"],
    "summer": ["cut hay in the hot sun and swim in the river", "pick strawberries on the long warm evenings"],
    "autumn": ["gather apples and store the harvest before the frost", "rake up heaps of fallen leaves"],
}

MC_ZH_PROF = {
    "老师": "去学校给孩子们上课", "医生": "在医院里给病人看病", "农民": "到田里去种地", "厨师": "在饭店的厨房里做菜",
    "木匠": "在院子里做桌子和椅子", "商人": "在市场上卖布和茶叶", "画家": "坐在河边画山和水", "渔夫": "划着小船去河上打鱼",
    "铁匠": "把铁烧红，打成马掌", "裁缝": "给客人量尺寸，做新衣服", "司机": "开车把客人送到车站", "护士": "给病人换药，量体温",
    "面包师": "天还没亮就开始烤面包", "园丁": "给公园里的花浇水", "歌手": "在茶馆里给客人唱歌",
    "书店老板": "打开书店的门，把新书放上书架", "邮递员": "骑着自行车去送信", "工程师": "去河边检查新修的桥",
    "养蜂人": "打开蜂箱，看看蜜蜂", "陶工": "用泥土做碗和罐子",
}
MC_ZH_ANIMAL = {  # animal: (measure word, ending)
    "狗": ("条", "在门口大声叫，看着家"), "猫": ("只", "在窗台上晒太阳睡觉"), "鸡": ("只", "在草堆里下了一个蛋"),
    "鸭": ("只", "在池塘里游来游去"), "鹅": ("只", "伸长脖子追着小孩子叫"), "羊": ("只", "在山坡上吃草"),
    "牛": ("头", "在田里帮忙耕地"), "马": ("匹", "拉着车去市场"), "兔子": ("只", "在笼子里吃胡萝卜"), "小鸟": ("只", "在笼子里唱歌"),
}
MC_ZH_WEATHER = {  # key: (context phrase, ending)
    "晴": ("天气晴朗，阳光很好", "戴上了草帽，还把被子拿出去晒"),
    "雨": ("下着大雨", "带上了一把伞，穿上了雨鞋"),
    "雪": ("下着大雪", "穿上了厚厚的棉衣和手套"),
    "雾": ("有很大的雾", "走得很慢，因为看不清前面的路"),
    "风": ("刮着很大的风", "关好了窗户，把帽子也戴紧了"),
}
MC_ZH_CONFUSE = [("医生", "护士"), ("牛", "马"), ("鸭", "鹅"), ("兔子", "小鸟")]
MC_PROF_CONFUSE = [("doctor", "nurse"), ("doctor", "midwife"), ("nurse", "midwife"), ("doctor", "herbalist"),
                   ("weaver", "basket weaver"), ("weaver", "dyer"), ("singer", "musician"), ("carpenter", "boatbuilder"),
                   ("carpenter", "wheelwright"), ("builder", "stonemason"), ("printer", "bookbinder"), ("cook", "innkeeper"),
                   ("cook", "baker"), ("farmer", "shepherd"), ("farmer", "miller"), ("fisher", "ferryman"), ("sailor", "ferryman"),
                   ("sailor", "boatbuilder"), ("fisher", "sailor"), ("gardener", "herbalist"), ("teacher", "librarian")]
MC_SEASON_OF_MONTH = dict(zip(MONTHS, SEASONS))


def _mc_distractors(rng: random.Random, key: str, keys: list[str], confuse: list[tuple[str, str]], endings_of,
                    correct: str) -> list[str] | None:
    """Three distinct endings, one each for three other keys not confusable with ``key``."""
    bad = {key} | {b for a, b in confuse if a == key} | {a for a, b in confuse if b == key}
    pool = [k for k in keys if k not in bad]
    out: list[str] = []
    for k in rng.sample(pool, len(pool)):
        e = rng.choice(endings_of(k))
        if e != correct and e not in out:
            out.append(e)
        if len(out) == 3:
            return out
    return None


def _mc_person(W: World, rng: random.Random) -> tuple[str, str, dict]:
    g = rng.choice("fm")
    first = (W.female if g == "f" else W.male).pick(rng)
    return first, W.surnames.pick(rng), PRON[g]


def _mc_fill(text: str, P: dict) -> str:
    return text.replace("{pos}", P["pos"]).replace("{subj}", P["subj"]).replace("{obj}", P["obj"])


def _mc_en(W: World, rng: random.Random) -> tuple[str, str, str, list[str]] | None:
    """(sent1, sent2, correct ending, distractors) for one English record."""
    kind = rng.choices(["prof", "product", "weather", "food", "pet", "hobby", "mishap", "season"],
                       [20, 12, 12, 12, 10, 12, 12, 10])[0]
    first, last, P = _mc_person(W, rng)
    t = W.towns.pick(rng)
    day = rng.choice(DAYS)
    if kind == "prof":
        prof = rng.choice(PROFESSIONS)
        s1 = rng.choice([f"{first} {last} worked as {art(prof)} in {t.name}.", f"{first} was the only {prof} in {t.name}.",
                         f"In {t.name}, everyone knew {first} {last}, the {prof}.",
                         f"For {num(rng.randrange(2, 40))} years, {first} had been {art(prof)} on the {t.river}.",
                         f"{first} {last} was {art(rng.choice(ADJ_PERSON))} {prof} from {t.region}."])
        s2 = rng.choice([f"Every morning, {P['subj']}", f"On a busy {day}, {first}", f"As usual, {P['subj']}",
                         f"After breakfast, {first}", f"Most days {P['subj']}"])
        ends = lambda k: [PROF_WORK[k][1], _mc_fill(MC_PROF[k], P)]
        correct = rng.choice(ends(prof))
        return s1, s2, correct, _mc_distractors(rng, prof, PROFESSIONS, MC_PROF_CONFUSE, ends, correct)
    if kind == "product":
        prod = rng.choice(PRODUCTS)
        towns = [x for x in W.town_list if x.products[0] == prod]
        t = rng.choice(towns)
        s1 = rng.choice([f"{t.name} is famous for its {prod}.", f"Travellers come to {t.name} for its {prod}.",
                         f"The {t.landmark} of {t.name} looks down on a town that lives from its {prod}.",
                         f"Ask anyone in {t.region} about {t.name}, and they will talk about its {prod}."])
        s2 = rng.choice([f"In the workshops of {t.name}, people", f"Every {t.market_day}, the families of {t.name}",
                         f"All year round, the people of {t.name}", f"Along the {t.river}, the townsfolk"])
        other = [p for p in PRODUCTS if p not in t.products]
        correct = rng.choice(MC_PRODUCT[prod])
        return s1, s2, correct, _mc_distractors(rng, prod, [prod] + other, [], lambda k: MC_PRODUCT[k], correct)
    if kind == "weather":
        w = rng.choice(WEATHER)
        detail = rng.choice(WEATHER_DETAIL[w])
        s1 = rng.choice([f"When {first} woke up in {t.name}, the day was {w}, with {detail}.",
                         f"{first} opened the door: the morning in {t.name} was {w}, with {detail}.",
                         f"{first} {last} looked at the sky over {t.name}. It was {w}, with {detail}.",
                         f"{first} read that {day} would be {w} in {t.region}, with {detail}."])
        s2 = rng.choice([f"Before leaving the house, {P['subj']}", f"So {first}", f"That {day}, {first}",
                         f"Before going to {rng.choice(PLACES)}, {P['subj']}"])
        ends = lambda k: [_mc_fill(e, P) for e in MC_WEATHER[k]]
        correct = rng.choice(ends(w))
        return s1, s2, correct, _mc_distractors(rng, w, WEATHER, MC_WEATHER_CONFUSE, ends, correct)
    if kind == "food":
        many = rng.random() < 0.6
        table = MC_FOOD_MANY if many else MC_FOOD_ONE
        keys = list(table)
        food = rng.choice(keys)
        what = rng.choice([f"a basket of {food}", ingredient(rng, food)]) if many else ingredient(rng, food)
        if not many and food in ("cheese", "pumpkin", "bread", "butter"):
            what = rng.choice([f"a piece of {food}" if food != "bread" else "a loaf of bread", f"some {food}"])
        s1 = rng.choice([f"{first} came home from the market in {t.name} with {what}.", f"On {day}, {first} {last} bought {what}.",
                         f"A neighbour in {t.name} gave {first} {what}.", f"{first} found {what} in the larder."])
        s2 = rng.choice([f"In the kitchen, {P['subj']}", f"That evening, {first}", f"Without wasting time, {P['subj']}",
                         f"Humming to {P['refl']}, {first}"])
        ends = lambda k: [_mc_fill(table[k], P)]
        correct = ends(food)[0]
        return s1, s2, correct, _mc_distractors(rng, food, keys, MC_FOOD_CONFUSE, ends, correct)
    if kind == "pet":
        kind_ = rng.choice(PET_KINDS)
        pet = W.pet_names.pick(rng)
        s1 = rng.choice([f"{first} {last} has {art(kind_)} called {pet}.", f"{pet} is the {kind_} that lives with {first} in {t.name}.",
                         f"In {t.name}, {first} keeps {art(kind_)} named {pet}.",
                         f"Every child on {first}'s street knows {pet}, {P['pos']} {rng.choice(ADJ_THING[:4])} {kind_}."])
        s2 = rng.choice([f"Every morning, {pet}", f"Most days, {pet}", f"When the sun comes up, {pet}", f"On {plural(day)}, {pet}"])
        correct = rng.choice(MC_PET[kind_])
        return s1, s2, correct, _mc_distractors(rng, kind_, PET_KINDS, MC_PET_CONFUSE, lambda k: MC_PET[k], correct)
    if kind == "hobby":
        h = rng.choice(HOBBIES)
        s1 = rng.choice([f"In {P['pos']} free time, {first} enjoys {h}.", f"{first} {last} has loved {h} since {P['subj']} was a child.",
                         f"Everyone in {t.name} knows that {first}'s favourite pastime is {h}.",
                         f"When work is done, {first} spends the evening {h}."])
        s2 = rng.choice([f"Last {day}, {P['subj']}", f"On {P['pos']} day off, {first}", f"Yesterday {first}",
                         f"Once the {rng.choice(['shop', 'workshop', 'school', 'stall'])} was closed, {P['subj']}"])
        ends = lambda k: [_mc_fill(e, P) for e in MC_HOBBY[k]]
        correct = rng.choice(ends(h))
        return s1, s2, correct, _mc_distractors(rng, h, HOBBIES, MC_HOBBY_CONFUSE, ends, correct)
    if kind == "mishap":
        i = rng.randrange(len(MC_MISHAP))
        name = first if rng.random() < 0.7 else f"{first} {last}"
        s1 = cap(_mc_fill(MC_MISHAP[i][0], P).replace("{name}", name).replace("{town}", W.other_town(rng, t).name))
        s2 = rng.choice([cap(P["subj"]), f"So {first}", f"Without a word, {P['subj']}", f"Sighing, {first}", f"At once {P['subj']}"])
        ends = lambda k: [_mc_fill(MC_MISHAP[int(k)][1], P)]
        keys = [str(j) for j in range(len(MC_MISHAP))]
        correct = ends(str(i))[0]
        return s1, s2, correct, _mc_distractors(rng, str(i), keys, [], ends, correct)
    month = rng.choice(MONTHS)
    season = MC_SEASON_OF_MONTH[month]
    s1 = rng.choice([f"It was {month} in {t.name}.", f"One {day} in {month}, {first} {last} walked out of {t.name}.",
                     f"{month} had come to {t.region}.", f"The letter from {t.name} was dated the {ordinal(rng.randrange(1, 29))} of {month}."])
    s2 = rng.choice([f"In the fields around {t.name}, the farmers", "At this time of year, people", f"Along the {t.river}, families",
                     "In the villages, the children"])
    correct = rng.choice(MC_SEASON[season])
    return s1, s2, correct, _mc_distractors(rng, season, list(MC_SEASON), [], lambda k: MC_SEASON[k], correct)


def _mc_zh(W: World, rng: random.Random) -> tuple[str, str, str, list[str]] | None:
    name = W.zh_name(rng)
    place = W.zh_places.pick(rng)
    kind = rng.choice(["prof", "prof", "animal", "weather"])
    if kind == "prof":
        prof = rng.choice(ZH_PROFS)
        s1 = rng.choice([f"{name}是一名{prof}，住在{place}。", f"{name}在{place}当了{zh_num(rng.randrange(2, 30))}年的{prof}。",
                         f"{place}的人都认识{prof}{name}。"])
        s2 = rng.choice([f"每天早上，{name}", f"星期{rng.choice(ZH_WEEKDAY)}，{name}", f"吃完早饭以后，{name}"])
        keys, ends = list(MC_ZH_PROF), (lambda k: [MC_ZH_PROF[k] + "。"])
        key = prof
    elif kind == "animal":
        key = rng.choice(list(MC_ZH_ANIMAL))
        s1 = rng.choice([f"{name}家养了一{MC_ZH_ANIMAL[key][0]}{key}。", f"{place}的{name}有一{MC_ZH_ANIMAL[key][0]}{key}。"])
        s2 = rng.choice(["每天早上，它", "天一亮，它", "大多数时候，它"])
        keys, ends = list(MC_ZH_ANIMAL), (lambda k: [MC_ZH_ANIMAL[k][1] + "。"])
    else:
        key = rng.choice(list(MC_ZH_WEATHER))
        s1 = rng.choice([f"今天{place}{MC_ZH_WEATHER[key][0]}。", f"星期{rng.choice(ZH_WEEKDAY)}早上，{place}{MC_ZH_WEATHER[key][0]}。"])
        s2 = rng.choice([f"出门的时候，{name}", f"去{rng.choice(ZH_PLACES)}之前，{name}"])
        keys, ends = list(MC_ZH_WEATHER), (lambda k: [MC_ZH_WEATHER[k][1] + "。"])
    correct = ends(key)[0]
    return s1, s2, correct, _mc_distractors(rng, key, keys, MC_ZH_CONFUSE, ends, correct)


def make_multiple_choice(W: World) -> dict:
    def one(rng: random.Random, i: int) -> dict | None:
        zh = rng.random() < 0.1
        s1, s2, correct, wrong = _mc_zh(W, rng) if zh else _mc_en(W, rng)
        if wrong is None:
            return None
        if not zh:  # Chinese endings carry their own full stop
            correct, wrong = correct + ".", [w + "." for w in wrong]
        label = rng.randrange(4)
        endings = wrong[:label] + [correct] + wrong[label:]
        assert len(set(endings)) == 4 and endings[label] == correct
        rec = {"sent1": s1, "sent2": s2}
        rec.update({f"ending{j}": e for j, e in enumerate(endings)})
        rec["label"] = label
        return rec

    out = _split(one, 2000, 200, SEED + 60, key=lambda r: r["sent1"] + "|" + r["sent2"] + "|" + r[f"ending{r['label']}"])
    for split, recs in out.items():
        for j, rec in enumerate(recs):
            ordered = {"id": f"{split}-{j:05d}"}
            ordered.update(rec)
            recs[j] = ordered
    return out


# ----------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def write_jsonl(path: str, records: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def main(argv: list[str]) -> int:
    """`main([OUT_DIR])`: write the data into OUT_DIR (default: the checkout's data/ folder)."""
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print("usage: generate.py [OUT_DIR]", file=sys.stderr)
        return 2
    out = argv[0] if argv else CHECKOUT_DATA
    if not argv and not os.path.isfile(os.path.join(out, "README.md")):
        print(f"generate.py: {out} is not a checkout's data/ folder; pass an output directory", file=sys.stderr)
        return 2
    W = World(SEED)
    docs = make_pretrain(W, SEED + 1)
    write_text(os.path.join(out, "pretrain", "corpus.txt"), "\n\n".join(docs) + "\n")
    for name, fn in TASKS:
        for split, recs in fn(W).items():
            write_jsonl(os.path.join(out, name, f"{split}.jsonl"), recs)
    return 0


TASKS: list = [("summarization", make_summarization), ("translation", make_translation),
                 ("classification", make_classification), ("classification-pair", make_classification_pair),
                 ("qa", make_qa), ("multiple-choice", make_multiple_choice)]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
