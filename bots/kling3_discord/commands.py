"""`/kling …` slash commands: options in, core calls out. No API knowledge lives here.

The four spending commands are built from the request model: each takes the fields its mode's models
accept (per the catalog), typed and bounded as the model declares them; fields that take a file are
uploads. A field added to the model is an option here without a line written.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Optional, get_origin

import annotated_types
import discord
from discord import app_commands

from kling3_tools.domain import catalog
from kling3_tools.domain.catalog import Mode, TaskType
from kling3_tools.domain.errors import KlingError, RequestValidationError
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import DiscordOrigin
from kling3_tools.domain.rules import quote

from .characters import CharacterCommands
from .embeds import task_embed
from .flow import VideoFlow

Choice = app_commands.Choice
Duration = app_commands.Range[int, catalog.MIN_DURATION, catalog.MAX_DURATION]


def model_choices(*modes: Mode) -> list[Choice[str]]:
    """The types of these modes (their prices depend on the provider: `/kling models` and `/kling cost` say)."""
    return [
        Choice(name=f"{spec.type.value} · {spec.description}"[:100], value=spec.type.value)
        for spec in catalog.list_models()
        if spec.mode in modes
    ]


@dataclass(frozen=True)
class Upload:
    """A request field filled from an attached file (Discord hosts it; the API fetches its URL)."""

    option: str
    field: str
    kind: Literal["image", "video"]
    description: str
    required: bool = False


@dataclass(frozen=True)
class SpendingCommand:
    name: str
    description: str
    mode: Mode
    default_type: TaskType
    uploads: tuple[Upload, ...] = ()
    prompt: str = "What the video shows (up to 2000 characters)"
    prompt_first: bool = False  # else after the required uploads
    prompt_required: bool = True


SPENDING_COMMANDS = (
    SpendingCommand("generate", "Text to video (spends credits)", Mode.TEXT, TaskType.PRO_TEXT_TO_VIDEO),
    SpendingCommand(
        "animate",
        "Image to video (spends credits)",
        Mode.IMAGE,
        TaskType.PRO_IMAGE_TO_VIDEO,
        (
            Upload("image", "image", "image", "The start image", required=True),
            Upload("end_image", "end_image", "image", "Optional end frame image"),
        ),
    ),
    SpendingCommand(
        "reference",
        "O3 reference to video: up to 7 reference images (spends credits)",
        Mode.REFERENCE,
        TaskType.O3_PRO_REFERENCE_TO_VIDEO,
        prompt_first=True,
        uploads=(
            *(
                Upload(f"image{n}", "images", "image", "Reference image", required=n == 1)
                for n in range(1, catalog.MAX_REFERENCE_IMAGES + 1)
            ),
            Upload("video", "video", "video", "Optional reference video"),
        ),
    ),
    SpendingCommand(
        "motion",
        "Motion control: your image moved as a video moves (spends credits; Kling's own API)",
        Mode.MOTION,
        TaskType.STD_MOTION_CONTROL,
        (
            Upload("image", "image", "image", "The character to move", required=True),
            Upload("video", "video", "video", "The motion to copy", required=True),
        ),
        prompt="Anything to add (optional)",
        prompt_required=False,
    ),
    SpendingCommand(
        "edit",
        "O3 video edit (spends credits)",
        Mode.EDIT,
        TaskType.O3_STD_VIDEO_EDIT,
        (Upload("video", "video", "video", "The video to edit", required=True),),
        prompt="What should change",
    ),
)


def brief(text: str | None) -> str:
    """A field's description within Discord's 100 characters: whole when it fits, else its first clause."""
    text = (text or "…").rstrip(".")
    if len(text) > 100:
        text = text.split(";")[0]
    return text if len(text) <= 100 else text[:99] + "…"


LIST_SEPARATOR = ";"  # a list field is one text option, its items separated so (prompts hold commas)


def option_type(name: str) -> tuple[Any, list[Choice[str]] | None]:
    """The Discord type of a request field (bounded numbers as ranges, a list as text) and its choices, from the
    model."""
    field = GenerateRequest.model_fields[name]
    value_type = GenerateRequest.value_type(name)
    if get_origin(value_type) is list:
        return str, None
    if isinstance(value_type, type) and issubclass(value_type, enum.Enum):
        return str, [Choice(name=str(member.value), value=str(member.value)) for member in value_type]
    if value_type in (int, float):
        low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
        high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
        if low is not None and high is not None:
            return app_commands.Range[value_type, low, high], None
    return value_type, None


def spending_command(flow: VideoFlow, spec: SpendingCommand) -> app_commands.Command[Any, Any, None]:
    uploaded = {upload.field for upload in spec.uploads}
    accepted = set().union(*(m.accepted_fields for m in catalog.list_models() if m.mode is spec.mode))
    fields = [name for name in GenerateRequest.model_fields if name in accepted - uploaded - {"type", "prompt"}]
    models = [m for m in catalog.list_models() if m.mode is spec.mode]
    required = set.intersection(*(set(m.required_fields) for m in models)) - uploaded - {"prompt"}
    listed = [name for name in fields if get_origin(GenerateRequest.value_type(name)) is list]

    async def callback(interaction: discord.Interaction, **options: Any) -> None:
        chosen = options.pop("model", None)
        request: dict[str, Any] = {"type": chosen or spec.default_type.value}
        uploads = []
        for upload in spec.uploads:
            attachment = options.pop(upload.option, None)
            if attachment is None:
                continue
            uploads.append((attachment, upload.kind))
            if upload.field == "images":
                request.setdefault("images", []).append(attachment.url)
            else:
                request[upload.field] = attachment.url
        for name in listed:
            if isinstance(options.get(name), str):
                options[name] = [item.strip() for item in options[name].split(LIST_SEPARATOR) if item.strip()]
        await flow.start_video(interaction, request | options, uploads)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)
    ]
    descriptions = {"prompt": spec.prompt, "model": "Which Kling model"}
    choices: dict[str, list[Choice[str]]] = {"model": model_choices(spec.mode)}
    optional = {"default": None} if not spec.prompt_required else {}
    prompt = inspect.Parameter("prompt", keyword, annotation=str if spec.prompt_required else str | None, **optional)
    for upload in spec.uploads:
        annotation = discord.Attachment if upload.required else discord.Attachment | None
        default = inspect.Parameter.empty if upload.required else None
        if not upload.required and prompt not in parameters:
            parameters.append(prompt)
        parameters.append(inspect.Parameter(upload.option, keyword, annotation=annotation, default=default))
        descriptions[upload.option] = upload.description
    if prompt not in parameters:
        parameters.append(prompt)
    if spec.prompt_first:
        parameters.remove(prompt)
        parameters.insert(1, prompt)
    parameters.append(inspect.Parameter("model", keyword, annotation=str | None, default=None))
    first_optional = next(i for i, p in enumerate(parameters) if p.default is not inspect.Parameter.empty)
    for name in fields:
        annotation, field_choices = option_type(name)
        if name in required:  # Discord lists a required option before every optional one
            parameters.insert(first_optional, inspect.Parameter(name, keyword, annotation=annotation))
        else:
            parameters.append(inspect.Parameter(name, keyword, annotation=Optional[annotation], default=None))  # noqa: UP045 (a range is no type)
        description = GenerateRequest.model_fields[name].description
        descriptions[name] = brief(description) if name not in listed else brief(f"{description}; separate with ;")
        if field_choices:
            choices[name] = field_choices
    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    described: Callable[..., Coroutine[Any, Any, None]] = app_commands.choices(**choices)(
        app_commands.describe(**descriptions)(callback)
    )
    return app_commands.Command(name=spec.name, description=spec.description, callback=described)


class KlingCommands(app_commands.Group):
    """Make videos with Kling 3.0 and Kling Video O3."""

    def __init__(self, flow: VideoFlow) -> None:
        super().__init__(name="kling", description="Make videos with Kling 3.0 and Kling Video O3")
        self.flow = flow
        for spec in SPENDING_COMMANDS:
            self.add_command(spending_command(flow, spec))
        self.add_command(CharacterCommands(flow))

    @app_commands.command(description="What a video would cost; spends nothing")
    @app_commands.describe(model="Which Kling model", duration="Length in seconds, 3-15 (edits: leave empty)",
                           sound="With native audio (default on)")  # fmt: skip
    @app_commands.choices(model=model_choices(*Mode))
    async def cost(
        self,
        interaction: discord.Interaction,
        model: Choice[str],
        duration: Duration | None = None,
        sound: bool | None = None,
    ) -> None:
        try:
            credits = quote(model.value, duration, sound, self.flow.service.prices)
        except RequestValidationError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        left = await self.flow.left_today(interaction.user.id)
        unit = self.flow.service.unit
        budget = "" if left is None else f" You have {left} {unit} left today."
        await interaction.response.send_message(f"{model.value}: **{credits} {unit}**.{budget}", ephemeral=True)

    @app_commands.command(description="The status of one of your videos")
    @app_commands.describe(task_id="The task id (start typing to pick one of yours)")
    async def status(self, interaction: discord.Interaction, task_id: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        record = await self.flow.service.get(task_id)
        origin = record.origin if record is not None else None
        mine = isinstance(origin, DiscordOrigin) and origin.user_id == interaction.user.id
        roles = [role.name for role in getattr(interaction.user, "roles", [])]
        if not mine and not self.flow.policy.is_admin(roles):  # checked before the API is asked anything
            await interaction.followup.send("That video is not one of yours.", ephemeral=True)
            return
        try:
            checked = await self.flow.service.status(task_id)
        except KlingError as exc:
            await interaction.followup.send(exc.message, ephemeral=True)
            return
        if checked.record is not None:
            [record] = await self.flow.service.videos.refresh_urls([checked.record])  # an archived copy, signed afresh
            await interaction.followup.send(embed=task_embed(record), ephemeral=True)
        else:
            task = checked.task
            urls = " ".join(task.video_urls)
            await interaction.followup.send(f"`{task.task_id}`: {task.status.value} {urls}", ephemeral=True)

    @status.autocomplete("task_id")
    async def _your_tasks(self, interaction: discord.Interaction, current: str) -> list[Choice[str]]:
        records = await self.flow.service.recent(origin_kind="discord", user_id=interaction.user.id, limit=25)
        return [
            Choice(
                name=f"{r.task_id} · {r.display_status} · {r.request.get('prompt', '')}"[:100],
                value=r.task_id,
            )
            for r in records
            if current.lower() in r.task_id.lower()
        ]

    @app_commands.command(description="Your recent videos")
    async def tasks(self, interaction: discord.Interaction) -> None:
        service = self.flow.service
        records = await service.videos.refresh_urls(
            await service.recent(origin_kind="discord", user_id=interaction.user.id, limit=10)
        )
        if not records:
            await interaction.response.send_message("You have no videos yet. Try `/kling generate`.", ephemeral=True)
            return
        lines = [
            f"`{r.task_id}` · {r.display_status} · {r.type}"
            + (f" of `{r.source_task}`" if r.source_task else "")
            + f" · <t:{int(r.submitted_at)}:R>"
            + (f" · {r.video_url}" if r.video_url else "")
            for r in records
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(description="Many shots chained and cut into one film, from a story file (spends credits)")
    @app_commands.describe(file="The story, as TOML (see the README); its plan and total are shown before anything")
    async def story(self, interaction: discord.Interaction, file: discord.Attachment) -> None:
        await self.flow.start_story(interaction, file)

    @app_commands.command(description="The Kling models, their limits and prices")
    async def models(self, interaction: discord.Interaction) -> None:
        lines = [
            f"`{m['type']}` · {m['mode']} · "
            + (f"{m['duration'][0]}-{m['duration'][1]} s" if isinstance(m["duration"], list) else "source length")
            + f" · {m['price']}"
            for m in catalog.describe_models(self.flow.service.prices, self.flow.service.unit)
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(description="How many credits you have left today")
    async def budget(self, interaction: discord.Interaction) -> None:
        left = await self.flow.left_today(interaction.user.id)
        unit = self.flow.service.unit
        text = "There is no daily limit here." if left is None else f"You have **{left} {unit}** left today."
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(description="Credits spent per member in the last 24 hours (admins)")
    async def usage(self, interaction: discord.Interaction) -> None:
        roles = [role.name for role in getattr(interaction.user, "roles", [])]
        if not self.flow.policy.is_admin(roles):
            await interaction.response.send_message("Only the configured admin role may see usage.", ephemeral=True)
            return
        spent = await self.flow.service.spent_by_user("discord")
        ranked = sorted(spent.items(), key=lambda item: -item[1])[:25]
        lines = [f"<@{user}>: {credits} credits" for user, credits in ranked] or ["Nothing spent in 24 hours."]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)
