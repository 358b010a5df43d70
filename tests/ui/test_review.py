"""review.html / review.png: escaping, grouping and counts, thumbnails of any image, and a real browser render."""

import base64
import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from noisefix.errors import DataError
from noisefix.ui.review import (
    SHEET_PX,
    THUMB_PX,
    ReviewRows,
    agreeing_sources,
    group_pairs,
    load_thumbnail,
    write_review,
)

CHROMIUM = "/usr/bin/chromium"
NASTY = "a<b>&c [1] 'q\" <img src=x onerror=alert(1)>.png"  # a legal file name


def _digit_folder(root: Path, n: int = 12) -> list[str]:
    """n real 8x8 digit PNGs under root/<given>/; one file name full of HTML metacharacters."""
    from sklearn.datasets import load_digits

    d = load_digits()
    paths = []
    for i in range(n):
        folder = root / ("seven <&>" if i % 3 == 0 else str(d.target[i]))
        folder.mkdir(parents=True, exist_ok=True)
        name = NASTY if i == 4 else f"{i:03d}.png"
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(folder / name)
        paths.append(f"{folder.name}/{name}")
    return paths


def _out(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "out" / "review.html", tmp_path / "out" / "review.png"


def _rows(paths: list[str]) -> ReviewRows:
    n = len(paths)
    given = [p.split("/")[0] for p in paths]
    suggested = ["one" if i % 2 else "two 'x'" for i in range(n)]
    return ReviewRows(paths=paths, given=given, suggested=suggested, score=list(np.linspace(1.9, 0.1, n)),
                      quality=list(np.linspace(0.05, 0.6, n)),
                      agreed=[["fc1/masc", "fc2/ncm"][: i % 3] for i in range(n)])


def test_page_escapes_user_strings_and_counts_rows(tmp_path):
    paths = _digit_folder(tmp_path / "data")
    rows = _rows(paths)
    files = write_review(*_out(tmp_path), rows, root=tmp_path / "data", n_issues=30, n_images=200,
                         sources=["fc1/masc", "fc2/ncm", "<evil>"])
    page = files.html.read_text(encoding="utf-8")
    assert "<img src=x" not in page and "<evil>" not in page and "seven <&>" not in page
    assert html.escape(NASTY, quote=True) in page and html.escape("two 'x'", quote=True) in page
    assert page.count("<img ") == len(paths) == files.shown
    counts = [int(c) for c in re.findall(r"data-count=(\d+)", page)]
    assert sum(counts) == len(paths) and len(counts) == len(group_pairs(rows))
    assert f'<b id=n-shown>{len(paths)}</b>' in page and "of 30 flagged labels among 200 images" in page
    assert "agreed (2 of 3)" in page and "label quality 0.05" in page
    assert "http://" not in page and "https://" not in page  # self-contained: nothing fetched
    for uri in re.findall(r"src='data:image/png;base64,([^']+)'", page):
        assert Image.open(io.BytesIO(base64.b64decode(uri))).size[0] > 0
    sheet = Image.open(files.png)
    assert sheet.mode == "RGB" and sheet.width > 8 * SHEET_PX


def test_top_n_and_grouping(tmp_path):
    paths = _digit_folder(tmp_path / "data")
    files = write_review(*_out(tmp_path), _rows(paths), root=tmp_path / "data", top=5, sheet=3)
    page = files.html.read_text(encoding="utf-8")
    assert files.shown == 5 and page.count("<img ") == 5
    groups = group_pairs(_rows(paths).head(5))
    assert [len(idx) for *_, idx in groups] == sorted((len(idx) for *_, idx in groups), reverse=True)
    assert sorted(i for *_, idx in groups for i in idx) == list(range(5))
    with pytest.raises(DataError, match="--review"):
        write_review(*_out(tmp_path), _rows(paths), root=tmp_path / "data", top=0)


def test_rows_must_have_one_entry_each():
    with pytest.raises(DataError, match="given has 1 entries for 2 paths"):
        ReviewRows(paths=["a", "b"], given=["x"], suggested=["y", "y"], score=[1.0, 0.5])


def test_agreeing_sources():
    preds = np.array([[1, 2, 0], [1, 0, 0]])
    assert agreeing_sources(["a", "b"], preds, np.array([1, 0, 2])) == [["a", "b"], ["b"], []]
    with pytest.raises(DataError, match="sources, rows"):
        agreeing_sources(["a"], preds, np.array([1, 0, 2]))


def test_thumbnails_of_any_mode_size_and_orientation(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.uniform(size=(30, 30, 4)) * 255).astype(np.uint8), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray((rng.uniform(size=(20, 30)) * 65535).astype(np.uint16)).save(tmp_path / "16bit.png")
    Image.fromarray((rng.uniform(size=(600, 400, 3)) * 255).astype(np.uint8)).save(tmp_path / "big.jpg")
    Image.new("P", (10, 10)).save(tmp_path / "pal.gif")
    rotated = Image.new("RGB", (40, 20), "red")
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees on display
    rotated.save(tmp_path / "exif.jpg", exif=exif.tobytes())
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for name in ("rgba.png", "16bit.png", "big.jpg", "pal.gif", "exif.jpg", "bad.png", "missing.png"):
        thumb = load_thumbnail(tmp_path / name, THUMB_PX)
        assert thumb.mode == "RGB" and 0 < max(thumb.size) <= THUMB_PX, name
    assert load_thumbnail(tmp_path / "big.jpg", THUMB_PX).size == (75, THUMB_PX)
    assert load_thumbnail(tmp_path / "exif.jpg", THUMB_PX).size == (40, 80)  # portrait after EXIF, enlarged x2
    assert np.asarray(load_thumbnail(tmp_path / "16bit.png", THUMB_PX)).max() > 200  # rescaled, not clipped


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(shutil.which(CHROMIUM) is None,
                    reason=f"{CHROMIUM} not installed (Debian package `chromium`, installed by .ci/run); "
                           "the real-browser render of review.html is skipped")
def test_review_page_renders_in_headless_chromium(tmp_path):
    paths = _digit_folder(tmp_path / "data")
    rows = _rows(paths)
    files = write_review(*_out(tmp_path), rows, root=tmp_path / "data", n_issues=len(paths))
    url = files.html.resolve().as_uri()
    shot = tmp_path / "review-screenshot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1200,1600", url], tmp_path / "profile")
    assert shot.is_file(), f"chromium wrote no screenshot (rc {res.returncode}): {res.stderr[-2000:]}"
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.shape == (1600, 1200) and img.std() > 10  # something was drawn, not a blank page
    dom = _chromium(["--dump-dom", url], tmp_path / "profile").stdout
    imgs = re.findall(r"<img [^>]*>", dom)
    assert len(imgs) == len(paths), f"{len(imgs)} <img> after rendering, {len(paths)} rows given"
    assert all('data-loaded="1"' in tag for tag in imgs), "a thumbnail did not decode in the browser"
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert f'data-rows="{len(paths)}"' in body and 'data-broken="0"' in body
    assert sum(int(c) for c in re.findall(r'data-count="(\d+)"', dom)) == len(paths)
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # shown as text; the <img> count above: not a tag
