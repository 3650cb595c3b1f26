"""Image transforms on download: sizes and resize modes, output formats and quality, the cache per object
version, validators, limits, and refusals for what is not an image."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from starlette.testclient import TestClient

from tests.storage.conftest import BUCKETS, NewBucket


def _png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _upload(client: TestClient, admin: dict[str, str], bucket: str, key: str, data: bytes) -> str:
    response = client.put(f"{BUCKETS}/{bucket}/objects/{key}", content=data, headers=admin)
    assert response.status_code == 200, response.text
    return f"{BUCKETS}/{bucket}/objects/{key}"


@pytest.mark.parametrize(
    ("params", "size", "fmt"),
    [
        ({"width": "100"}, (100, 50), "PNG"),
        ({"height": "25"}, (50, 25), "PNG"),
        ({"width": "60", "height": "60", "resize": "cover"}, (60, 60), "PNG"),
        ({"width": "60", "height": "60", "resize": "contain"}, (60, 30), "PNG"),
        ({"width": "60", "height": "60", "resize": "fill"}, (60, 60), "PNG"),
        ({"width": "80", "format": "webp", "quality": "50"}, (80, 40), "WEBP"),
        ({"width": "80", "format": "jpeg"}, (80, 40), "JPEG"),
        ({"width": "40", "format": "avif"}, (40, 20), "AVIF"),
    ],
)
def test_transforms(
    client: TestClient,
    admin: dict[str, str],
    new_bucket: NewBucket,
    params: dict[str, str],
    size: tuple[int, int],
    fmt: str,
) -> None:
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "pic.png", _png(200, 100))
    response = client.get(url, params=params)
    assert response.status_code == 200, response.text
    image = Image.open(io.BytesIO(response.content))
    assert image.size == size and image.format == fmt
    assert response.headers["content-type"] == f"image/{fmt.lower()}"


def test_cache_follows_object_versions(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "v.png", _png(200, 100))
    first = client.get(url, params={"width": "50"})
    again = client.get(url, params={"width": "50"})
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert (
        client.get(url, params={"width": "50"}, headers={"If-None-Match": first.headers["etag"]}).status_code
        == 304
    )
    _upload(client, admin, bucket, "v.png", _png(100, 100))
    replaced = client.get(url, params={"width": "50"})
    assert Image.open(io.BytesIO(replaced.content)).size == (50, 50)
    assert replaced.headers["etag"] != first.headers["etag"]


def test_private_transforms_follow_access(
    client: TestClient, alice: dict[str, str], bob: dict[str, str], new_bucket: NewBucket
) -> None:
    bucket = new_bucket(public=False)
    url = _upload(client, alice, bucket, "mine.png", _png(20, 20))
    assert client.get(url, params={"width": "10"}, headers=alice).status_code == 200
    assert client.get(url, params={"width": "10"}, headers=bob).status_code == 404
    assert client.get(url, params={"width": "10"}).status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"width": "0"},
        {"width": "5000"},
        {"height": "x"},
        {"width": "\u00b2"},  # a digit to str.isdigit, not to int()
        {"quality": "\u00b9"},
        {"width": "9" * 5000},  # ASCII digits past int()'s 4,300-digit limit
        {"quality": "1" * 5000},
        {"resize": "stretch"},
        {"format": "gif"},
        {"quality": "0"},
    ],
)
def test_bad_parameters(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, params: dict[str, str]
) -> None:
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "p.png", _png(10, 10))
    response = client.get(url, params=params)
    assert response.status_code == 400 and response.json()["error"] == "STORAGE_INVALID_PARAMETER"


def test_not_an_image(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "t.txt", b"just text")
    assert client.get(url, params={"width": "10"}).status_code == 415
    broken = _upload(client, admin, bucket, "broken.png", _png(10, 10)[:40])
    assert client.get(broken, params={"width": "10"}).status_code == 415


def test_pixel_bomb_refused(client: TestClient, admin: dict[str, str], new_bucket: NewBucket) -> None:
    out = io.BytesIO()
    Image.new("1", (8000, 7000)).save(out, "PNG")  # 56 million pixels in a few kilobytes
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "bomb.png", out.getvalue())
    response = client.get(url, params={"width": "10"})
    assert response.status_code == 400 and "pixels" in response.json()["message"]


#: A thin image, and the one side asked for: the other follows from its proportions.
THIN = [
    ((1, 40), "width"),  # 4096 wide: 163,840 high
    ((40, 1), "height"),
    ((3, 1000), "width"),  # 4096 x 1,365,333
]


@pytest.mark.parametrize(("size", "side"), THIN)
def test_a_side_that_follows_past_the_limit_is_refused(
    client: TestClient, admin: dict[str, str], new_bucket: NewBucket, size: tuple[int, int], side: str
) -> None:
    """Given one side, the other follows from the image's proportions: from a thin image it would be far
    past the limit of each side (gigabytes of pixels to allocate, from a file of a few hundred bytes)."""
    bucket = new_bucket()
    url = _upload(client, admin, bucket, "thin.png", _png(*size))
    response = client.get(url, params={side: "4096"})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "STORAGE_INVALID_PARAMETER"
    assert "4096" in response.json()["message"]
    assert client.get(url).content == _png(*size)
