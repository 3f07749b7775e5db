"""A generated OCR test set: signs, screenshots, receipts and book-page crops in English and Korean.

Each image shows a few words (every query word appears in exactly one image, so "found in the top
10" is a real test) rendered with Debian's DejaVu and Nanum fonts on a photo-like background
(gradients, blurred blobs, noise), then distorted: turned (90/180/270 degrees or a small tilt),
blurred, JPEG-compressed at low quality, or shown small.  Text-free photos are made the same way
without the text.  Seeded: the same seed gives the same pictures.

Korean words carry particles (서울역에서, 커피를) and the queries are the bare nouns, two-syllable
ones included: a search must find a word inside a longer run of Hangul.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DEJAVU = "/usr/share/fonts/truetype/dejavu"
NANUM = "/usr/share/fonts/truetype/nanum"
LATIN_FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono-Bold.ttf",
               "DejaVuSerif-Bold.ttf", "DejaVuSansMono.ttf")
HANGUL_FONTS = ("NanumGothic.ttf", "NanumGothicBold.ttf", "NanumMyeongjo.ttf", "NanumBarunGothic.ttf",
                "NanumSquareB.ttf", "NanumMyeongjoBold.ttf")

ENGLISH = """coffee bakery station museum parking pharmacy library harbor garden theater bicycle
subway market hospital airport gallery kitchen bridge castle window pizza noodles breakfast
lunch dinner receipt invoice total discount ticket platform entrance closed welcome hotel
bookstore laundry florist dentist chapter history science planet ocean forest mountain river
winter summer autumn spring orange banana cherry lemon butter cheese chocolate sandwich
salad burger tomato pepper garlic onion potato carrot""".split()

# Nouns (two and three syllables) and the particles written after them.
KOREAN = """커피 도서관 병원 약국 주차장 지하철 출구 식당 학교 공원 시장 은행 우체국 편의점 서점
빵집 영화관 미술관 박물관 화장실 입구 매표소 안내 할인 영업 주문 계산 영수증 메뉴 김치 비빔밥 라면
냉면 치킨 맥주 사과 바다 하늘 여름 겨울 가을 기차 버스 택시 공항 호텔 세탁소 꽃집 치과 역사 과학
우유 녹차 과자 딸기 포도 수박 고기 생선 두부 만두 떡볶이 교회 시청 경찰서 소방서""".split()
PARTICLES = ("에서", "으로", "는", "을", "이", "의", "에", "까지", "", "", "도", "와")

KINDS = ("sign", "screenshot", "receipt", "page")
DISTORTIONS = ("clean", "rot90", "rot180", "rot270", "tilt", "blur", "jpeg", "small")


@dataclass(frozen=True)
class OcrSample:
    """One generated image: its file, language, kind, distortion and the words a search must find it by."""

    file: str
    lang: str  # "en", "ko" or "none" (text-free)
    kind: str
    distortion: str
    words: tuple[str, ...]  # the query words (Korean: bare nouns)
    shown: tuple[str, ...]  # what is written (Korean: with particles)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A photo-like background: a two-colour gradient, soft blobs and sensor noise."""
    w, h = size
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    c0, c1 = nrng.integers(0, 256, 3), nrng.integers(0, 256, 3)
    t = np.linspace(0, 1, h)[:, None, None]
    arr = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).copy()
    img = Image.fromarray(arr.astype(np.uint8))
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 9)):
        x, y = rng.randrange(w), rng.randrange(h)
        r = rng.randint(w // 12, w // 3)
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in nrng.integers(0, 256, 3)))
    img = img.filter(ImageFilter.GaussianBlur(w / 40))
    noisy = np.asarray(img).astype(np.int16) + nrng.normal(0, 6, (h, w, 3)).astype(np.int16)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _panel(rng: random.Random, kind: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(paper colour, ink colour) for a kind of text."""
    if kind == "sign":
        return rng.choice([((20, 60, 140), (250, 250, 250)), ((250, 220, 40), (20, 20, 20)),
                           ((150, 20, 30), (255, 255, 255)), ((240, 240, 235), (30, 30, 120))])
    if kind == "screenshot":
        return rng.choice([((255, 255, 255), (25, 25, 25)), ((32, 33, 36), (232, 234, 237))])
    return (rng.randint(225, 250), rng.randint(220, 245), rng.randint(200, 235)), (35, 30, 30)


def _render(rng: random.Random, lines: list[str], lang: str, kind: str, size: tuple[int, int]) -> Image.Image:
    img = _background(rng, size)
    w, h = size
    fonts = HANGUL_FONTS if lang == "ko" else LATIN_FONTS
    font_path = f"{NANUM if lang == 'ko' else DEJAVU}/{rng.choice(fonts)}"
    px = int(h * rng.uniform(0.06, 0.1))
    font = ImageFont.truetype(font_path, px)
    widths = [font.getbbox(line)[2] for line in lines]
    while max(widths) > w * 0.85:
        px = int(px * 0.85)
        font = ImageFont.truetype(font_path, px)
        widths = [font.getbbox(line)[2] for line in lines]
    spacing = int(px * 1.5)
    pw, ph = max(widths) + 2 * px, spacing * len(lines) + px
    x0, y0 = rng.randint(0, max(0, w - pw)), rng.randint(0, max(0, h - ph))
    paper, ink = _panel(rng, kind)
    d = ImageDraw.Draw(img)
    d.rectangle((x0, y0, x0 + pw, y0 + ph), fill=paper)
    for i, line in enumerate(lines):
        d.text((x0 + px, y0 + px // 2 + i * spacing), line, font=font, fill=ink)
    return img


def _distort(rng: random.Random, img: Image.Image, distortion: str) -> tuple[Image.Image, int]:
    """The distorted image and the JPEG quality to save it at."""
    quality = 90
    if distortion in ("rot90", "rot180", "rot270"):
        img = img.rotate(int(distortion[3:]), expand=True)
    elif distortion == "tilt":
        img = img.rotate(rng.choice((-1, 1)) * rng.uniform(4, 10), expand=True, resample=Image.Resampling.BICUBIC,
                         fillcolor=(90, 90, 90))
    elif distortion == "blur":
        img = img.filter(ImageFilter.GaussianBlur(1.3))
    elif distortion == "jpeg":
        quality = 20
    elif distortion == "small":
        img = img.resize((img.width * 2 // 3, img.height * 2 // 3), Image.Resampling.LANCZOS)
    return img, quality


def write_ocrset(folder: Path, per_lang: int, text_free: int, seed: int = 23,
                 size: tuple[int, int] = (960, 720)) -> list[OcrSample]:
    """Write ``per_lang`` English and Korean images and ``text_free`` photos to ``folder``
    (with ``labels.jsonl``); returns their descriptions."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    english, korean = ENGLISH[:], KOREAN[:]
    rng.shuffle(english)
    rng.shuffle(korean)
    samples = []
    for lang in ("en", "ko"):
        pool = english if lang == "en" else korean
        for n in range(per_lang):
            kind = KINDS[n % len(KINDS)]
            distortion = DISTORTIONS[(n // len(KINDS) + n) % len(DISTORTIONS)]
            count = 2 if lang == "en" else 2
            words = [pool.pop() for _ in range(count)] if len(pool) >= count else []
            if not words:
                break
            if lang == "ko":
                shown = [w + rng.choice(PARTICLES) for w in words]
                lines = [" ".join(shown[:1]) + " " + rng.choice(("안녕하세요", "오늘", "모두", "새로운")),
                         " ".join(shown[1:])]
            else:
                shown = [w.capitalize() if rng.random() < 0.5 else w.upper() for w in words]
                lines = [shown[0] + " " + rng.choice(("open", "now", "daily", "and")), " ".join(shown[1:])]
            img, quality = _distort(rng, _render(rng, lines, lang, kind, size), distortion)
            name = f"{lang}-{n:03d}-{kind}-{distortion}.jpg"
            img.save(folder / name, quality=quality)
            samples.append(OcrSample(name, lang, kind, distortion, tuple(words), tuple(shown)))
    for n in range(text_free):
        img = _background(rng, size)
        name = f"none-{n:03d}.jpg"
        img.save(folder / name, quality=88)
        samples.append(OcrSample(name, "none", "photo", "clean", (), ()))
    with open(folder / "labels.jsonl", "w", encoding="utf-8") as fh:
        for s in samples:
            fh.write(json.dumps(asdict(s), ensure_ascii=False) + "\n")
    return samples
