"""Local files in: checked before any upload and any spend, uploaded to a real S3-compatible server on loopback
(moto's), fetched by the sandbox as the API fetches inputs; paths from the CLI, the Python API and MCP."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
import pytest
from mcp import Client
from PIL import Image

from harness.helpers import eventually, free_port, kling3
from kling3_tools.adapters.sandbox.app import SAMPLE_VIDEO
from kling3_tools.config import Settings
from kling3_tools.domain.errors import RequestValidationError
from kling3_tools.service import KlingService

from .conftest import set_options, stats
from .support import connect, http_server, server_env, text

BUCKET = "kling3-assets"
KEYS = {"access_key_id": "test-key", "secret_access_key": "test-secret"}


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """moto's standalone S3 server on loopback, with an empty bucket; yields its endpoint."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_aws_keys())
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def _aws_keys() -> dict[str, str]:
    return {"aws_access_key_id": KEYS["access_key_id"], "aws_secret_access_key": KEYS["secret_access_key"]}


def objects(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_aws_keys())
    return [item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def storage(endpoint: str) -> dict[str, Any]:
    return {"url": f"s3://{BUCKET}/inputs", "endpoint": endpoint, "region": "us-east-1", **KEYS}


def storage_env(endpoint: str) -> dict[str, str]:
    return {f"KLING_STORAGE__{key.upper()}": str(value) for key, value in storage(endpoint).items()}


def picture(path: Path, size: tuple[int, int] = (640, 480), kind: str = "JPEG") -> Path:
    Image.new("RGB", size, (200, 120, 40)).save(path, kind)
    return path


def settings_for(sandbox: Any, tmp_path: Path, **extra: Any) -> Settings:
    return Settings.load(
        base_url=sandbox.url, api_key=sandbox.api_key, store={"url": f"sqlite:///{tmp_path / 't.db'}"}, **extra
    )


async def test_a_local_image_is_uploaded_signed_fetched_by_the_sandbox_and_the_task_succeeds(sandbox, s3, tmp_path):
    set_options(sandbox, fetch_inputs=True, finish_seconds=0.2)
    cat = picture(tmp_path / "cat.jpg")
    async with KlingService.open(settings_for(sandbox, tmp_path, storage=storage(s3))) as service:
        request = await service.prepare({"type": "pro-image-to-video", "prompt": "a cat", "image": cat})
        record = await service.submit(request)
        task = await service.wait(record.task_id, timeout=30)
        fetched = await service.http.get(request.image or "")
    assert request.image is not None and request.image.startswith(f"{s3}/{BUCKET}/inputs/")
    assert "X-Amz-Signature=" in request.image  # a private object, handed out signed
    [key] = objects(s3)
    assert key.endswith(".jpg") and len(key.removeprefix("inputs/").removesuffix(".jpg")) >= 32  # unguessable
    assert task.status.value == "succeeded"
    assert fetched.content == cat.read_bytes()


async def test_bad_files_are_refused_before_any_upload_and_any_spend(sandbox, s3, tmp_path):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a picture")
    small = picture(tmp_path / "small.png", (299, 600), "PNG")
    wide = picture(tmp_path / "wide.png", (900, 300), "PNG")
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * (11 * 1024 * 1024))
    before = objects(s3)
    fields = {"type": "o3-pro-reference-to-video", "prompt": "x", "images": [notes, small, wide, huge]}
    async with KlingService.open(settings_for(sandbox, tmp_path, storage=storage(s3))) as service:
        with pytest.raises(RequestValidationError) as refused:
            await service.prepare({**fields, "duration": 99})
    problems = "\n".join(refused.value.problems)
    assert "`images[0]` must be an image" in problems and "something else" in problems
    assert "`images[1]` is 299x600 px" in problems
    assert "`images[2]` is 900x300 px; its aspect ratio" in problems
    assert "`images[3]` is 11.5 MB; the limit is 10 MB" in problems
    assert "`duration`" in problems  # with the rest of the request, at once
    assert objects(s3) == before
    assert stats(sandbox).get("requests", {}).get("generate", 0) == 0


async def test_an_input_the_api_cannot_fetch_fails_the_task_and_says_which(sandbox, tmp_path):
    set_options(sandbox, fetch_inputs=True, finish_seconds=0.2)
    unreachable = f"http://127.0.0.1:{free_port()}/gone.jpg"
    async with KlingService.open(settings_for(sandbox, tmp_path)) as service:
        request = await service.prepare({"type": "pro-image-to-video", "prompt": "x", "image": unreachable})
        record = await service.submit(request)
        checked = await service.status(record.task_id)
        for _ in range(100):
            if checked.task.status.is_terminal:
                break
            await asyncio.sleep(0.1)
            checked = await service.status(record.task_id)
    assert checked.task.status.value == "failed"
    assert f"Could not fetch `image` ({unreachable})" in (checked.task.error_message or "")


@pytest.mark.process
def test_the_cli_takes_a_local_file_on_the_sandbox_with_no_configuration(tmp_path):
    cat = picture(tmp_path / "cat.jpg")
    result = kling3(
        "--sandbox", "generate", "a cat", "-t", "pro-image-to-video", "--image", str(cat), "--wait", "--json",
        HOME=str(tmp_path), KLING_SANDBOX__FINISH_SECONDS="0.3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "succeeded"


@pytest.mark.process
def test_a_local_file_for_the_real_api_without_storage_is_refused_before_spending(sandbox, tmp_path):
    cat = picture(tmp_path / "cat.jpg")
    result = kling3(
        "generate", "a cat", "-t", "pro-image-to-video", "--image", str(cat),
        KLING_BASE_URL=sandbox.url, KLING_API_KEY=sandbox.api_key, HOME=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 2 and "[storage] url" in result.stderr and "Traceback" not in result.stderr
    assert stats(sandbox).get("requests", {}).get("generate", 0) == 0


def _png_data_uri() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (400, 400), (10, 20, 30)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_an_mcp_stdio_client_may_give_paths_inside_its_roots_only(sandbox, s3, tmp_path):
    set_options(sandbox, fetch_inputs=True, finish_seconds=0.2)
    real, private = tmp_path / "real", tmp_path / "private"
    real.mkdir(), private.mkdir()
    shared = tmp_path / "shared"
    shared.symlink_to(real)  # a shared folder reached through a link (macOS's /tmp is one)
    inside, outside = picture(shared / "in.jpg"), picture(private / "out.jpg")
    (real / "escape.jpg").symlink_to(outside)  # inside by its name, outside by what it is

    async def roots(context: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=shared.as_uri(), name="shared")])

    env = server_env(sandbox, tmp_path, **storage_env(s3))
    arguments = {"type": "pro-image-to-video", "prompt": "x", "wait_seconds": 0}
    async with connect(sandbox, tmp_path, env, mode="legacy", list_roots_callback=roots) as client:
        made = await client.call_tool("generate_video", {**arguments, "image": str(inside)})
        relative = await client.call_tool("generate_video", {**arguments, "image": "in.jpg"})  # to the root
        refused = [
            await client.call_tool("generate_video", {**arguments, "image": path})
            for path in (str(outside), str(shared / "escape.jpg"), str(shared / ".." / "private" / "out.jpg"))
        ]
        missing = await client.call_tool("generate_video", {**arguments, "image": str(private / "nope.jpg")})
    assert not made.is_error, text(made)
    assert not relative.is_error, text(relative)
    for result in refused:
        assert result.is_error and "outside the folders this client shares" in text(result), text(result)
        assert "Nothing was spent" in text(result)
    assert "outside the folders" in text(missing)  # not "no such file": nothing is told about other folders
    assert stats(sandbox)["requests"]["generate"] == 2


@pytest.mark.process
async def test_an_http_mcp_client_cannot_read_server_files_but_may_send_a_data_uri(sandbox, s3, tmp_path):
    set_options(sandbox, fetch_inputs=True, finish_seconds=0.2)
    secret = picture(tmp_path / "server-side.jpg")
    arguments = {"type": "pro-image-to-video", "prompt": "x", "wait_seconds": 0}
    with http_server(server_env(sandbox, tmp_path, **storage_env(s3))) as url:
        async with Client(url) as client:
            refused = await client.call_tool("generate_video", {**arguments, "image": str(secret)})
            made = await client.call_tool("generate_video", {**arguments, "image": _png_data_uri()})
    assert refused.is_error and "server-side paths are refused over HTTP" in text(refused)
    assert not made.is_error, text(made)
    assert stats(sandbox)["requests"]["generate"] == 1
    assert any(key.endswith(".png") for key in objects(s3))


@pytest.mark.process
async def test_an_archived_video_outlives_the_apis_url_and_gets_fresh_urls(sandbox, s3, tmp_path):
    set_options(sandbox, finish_seconds=0.2)
    fast = {"expected_seconds": [0.1, 1.0], "dense_interval_seconds": 0.1, "max_interval_seconds": 0.3}
    store_url = f"sqlite:///{tmp_path / 't.db'}"
    settings = settings_for(sandbox, tmp_path, storage={**storage(s3), "archive_videos": True}, poller=fast)
    async with KlingService.open(settings) as service, service.polling() as poller:
        await eventually(lambda: poller.is_following)
        record = await service.submit(await service.prepare({"type": "std-text-to-video", "prompt": "x"}))
        for _ in range(100):
            found = await service.get(record.task_id)
            if found is not None and found.archive_key:
                break
            await asyncio.sleep(0.1)
        assert found is not None and found.archive_key, "the poller did not archive the video"
        set_options(sandbox, media_expire_seconds=0.001)  # Kling deletes its copy
        gone = await service.http.get(found.video_urls[0])
        kept = await service.http.get(await service.videos.lasting_url(found))
    assert gone.status_code == 404
    assert kept.status_code == 200 and kept.content == SAMPLE_VIDEO
    assert found.video_url == found.archived_url  # what the front ends hand out
    listed = kling3(
        "tasks", "--refresh-urls", "--json",
        KLING_BASE_URL=sandbox.url, KLING_API_KEY=sandbox.api_key, KLING_STORE__URL=store_url, **storage_env(s3),
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    [task] = json.loads(listed.stdout)["tasks"]
    assert task["archive_key"] == found.archive_key and "X-Amz-Signature=" in task["archived_url"]


async def test_discord_attachments_are_kept_in_storage_when_it_is_configured(monkeypatch, sandbox, s3, tmp_path):
    from harness import fake_discord as fd

    from .support import ALICE, bot_settings, deliver, fake_discord, followups, running_bot, texts

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (1, 2, 3)).save(buffer, "PNG")
    async with httpx.AsyncClient() as http:
        kept = await http.post(
            f"{sandbox.url}/sandbox/uploads",
            content=buffer.getvalue(),
            headers={"authorization": f"Bearer {sandbox.api_key}", "content-type": "image/png", "x-suffix": ".png"},
        )
    discord_url = f"{sandbox.url}/uploads/{kept.json()['key']}"  # stands in for Discord's CDN, on loopback
    image = fd.attachment("cat.png", "image/png", len(buffer.getvalue()), discord_url)
    settings = bot_settings(sandbox, tmp_path).model_copy(update={"storage": Settings(storage=storage(s3)).storage})
    async with fake_discord(monkeypatch) as fake, running_bot(settings) as bot:
        command = fd.slash("animate", ALICE, prompt="She smiles", attachments={"image": image})
        deliver(bot, command)
        await eventually(lambda: "Started" in texts(followups(fake, command)))
        [record] = await bot.service.store.recent(origin_kind="discord")
    assert record.request["image"].startswith(f"{s3}/{BUCKET}/inputs/")  # not Discord's expiring link
    assert any(key.endswith(".png") for key in objects(s3))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")


async def test_hostile_inputs_get_one_clear_problem_each(sandbox, s3, tmp_path):
    bomb = tmp_path / "bomb.png"  # a valid PNG header claiming 20000 x 20000 pixels, and nothing else
    bomb.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", (20000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00")
        + _chunk(b"IDAT", b"")
    )
    fields = {"type": "o3-pro-reference-to-video", "prompt": "x", "images": [bomb, "y" * 300, "a\x00b"]}
    async with KlingService.open(settings_for(sandbox, tmp_path, storage=storage(s3))) as service:
        with pytest.raises(RequestValidationError) as refused:
            await service.prepare(fields)
    problems = refused.value.problems
    assert any("`images[0]` claims more pixels" in p for p in problems), problems
    assert any("`images[1]`" in p and "not a usable path" in p for p in problems), problems
    assert any("`images[2]`" in p and "not a usable path" in p for p in problems), problems


async def test_a_bucket_that_is_down_does_not_hold_back_the_delivery(sandbox, tmp_path):
    set_options(sandbox, finish_seconds=0.2)
    fast = {"expected_seconds": [0.1, 1.0], "dense_interval_seconds": 0.1, "max_interval_seconds": 0.3}
    down = {**storage(f"http://127.0.0.1:{free_port()}"), "archive_videos": True}
    settings = settings_for(sandbox, tmp_path, storage=down, poller=fast)
    async with KlingService.open(settings) as service, service.polling() as poller:
        await eventually(lambda: poller.is_following)
        record = await service.submit(await service.prepare({"type": "std-text-to-video", "prompt": "x"}))

        async def delivered() -> bool:
            found = await service.get(record.task_id)
            return found is not None and found.delivery.value == "delivered"

        await eventually(delivered, timeout=60)
        found = await service.get(record.task_id)
    assert found is not None and found.archive_key is None and found.video_url == found.video_urls[0]
