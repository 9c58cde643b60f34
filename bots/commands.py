"""`/kling …` slash commands: options in, core calls out. No API knowledge lives here."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands

from kling3_tools import catalog
from kling3_tools.catalog import AspectRatio, Mode
from kling3_tools.errors import KlingError, RequestValidationError
from kling3_tools.models import quote
from kling3_tools.records import DiscordOrigin

from .notifier import task_embed

if TYPE_CHECKING:
    from .discord_bot import KlingBot

Choice = app_commands.Choice


def model_choices(*modes: Mode) -> list[Choice[str]]:
    return [
        Choice(name=f"{spec.type.value} · {spec.price.describe()}"[:100], value=spec.type.value)
        for spec in catalog.list_models()
        if spec.mode in modes
    ]


RATIOS = [Choice(name=ratio.value, value=ratio.value) for ratio in AspectRatio]
Duration = app_commands.Range[int, catalog.MIN_DURATION, catalog.MAX_DURATION]
CfgScale = app_commands.Range[float, 0.0, 1.0]
DESCRIBE_COMMON = {
    "prompt": "What the video shows (up to 2000 characters)",
    "model": "Which Kling model (price per second in credits)",
    "duration": "Length in seconds, 3-15 (default 5)",
    "aspect_ratio": "Output shape (default 16:9)",
    "sound": "Generate native audio (default on; Kling 3.0 costs less without)",
    "negative_prompt": "What to avoid",
}
CFG_SCALE = "Prompt adherence 0-1, Kling 3.0 only (default 0.5)"


def _value(choice: Choice[str] | str | None) -> str | None:
    return choice.value if isinstance(choice, Choice) else choice


class KlingCommands(app_commands.Group):
    """Make videos with Kling 3.0 and Kling Video O3."""

    def __init__(self, bot: KlingBot) -> None:
        super().__init__(name="kling", description="Make videos with Kling 3.0 and Kling Video O3")
        self.bot = bot

    @app_commands.command(description="Text to video (spends credits)")
    @app_commands.describe(cfg_scale=CFG_SCALE, **DESCRIBE_COMMON)
    @app_commands.choices(model=model_choices(Mode.TEXT), aspect_ratio=RATIOS)
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: str,
        model: Choice[str] | None = None,
        duration: Duration | None = None,
        aspect_ratio: Choice[str] | None = None,
        sound: bool | None = None,
        negative_prompt: str | None = None,
        cfg_scale: CfgScale | None = None,
    ) -> None:
        fields = {
            "type": _value(model) or catalog.TaskType.PRO_TEXT_TO_VIDEO.value, "prompt": prompt, "duration": duration,
            "aspect_ratio": _value(aspect_ratio), "sound": sound, "negative_prompt": negative_prompt,
            "cfg_scale": cfg_scale,
        }  # fmt: skip
        await self.bot.start_video(interaction, fields)

    @app_commands.command(description="Image to video (spends credits)")
    @app_commands.describe(
        image="The start image", end_image="Optional end frame image", cfg_scale=CFG_SCALE, **DESCRIBE_COMMON
    )
    @app_commands.choices(model=model_choices(Mode.IMAGE), aspect_ratio=RATIOS)
    async def animate(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: str,
        end_image: discord.Attachment | None = None,
        model: Choice[str] | None = None,
        duration: Duration | None = None,
        aspect_ratio: Choice[str] | None = None,
        sound: bool | None = None,
        negative_prompt: str | None = None,
        cfg_scale: CfgScale | None = None,
    ) -> None:
        fields = {
            "type": _value(model) or catalog.TaskType.PRO_IMAGE_TO_VIDEO.value, "prompt": prompt,
            "image": image.url, "end_image": end_image.url if end_image else None, "duration": duration,
            "aspect_ratio": _value(aspect_ratio), "sound": sound, "negative_prompt": negative_prompt,
            "cfg_scale": cfg_scale,
        }  # fmt: skip
        images = [a for a in (image, end_image) if a is not None]
        await self.bot.start_video(interaction, fields, attachments=[(a, "image") for a in images])

    @app_commands.command(description="O3 reference to video: up to 7 reference images (spends credits)")
    @app_commands.describe(
        image1="Reference image", image2="Reference image", image3="Reference image", image4="Reference image",
        image5="Reference image", image6="Reference image", image7="Reference image", **DESCRIBE_COMMON,
    )  # fmt: skip
    @app_commands.choices(model=model_choices(Mode.REFERENCE), aspect_ratio=RATIOS)
    async def reference(
        self,
        interaction: discord.Interaction,
        prompt: str,
        image1: discord.Attachment,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        model: Choice[str] | None = None,
        duration: Duration | None = None,
        aspect_ratio: Choice[str] | None = None,
        sound: bool | None = None,
        negative_prompt: str | None = None,
    ) -> None:
        images = [a for a in (image1, image2, image3, image4, image5, image6, image7) if a is not None]
        fields = {
            "type": _value(model) or catalog.TaskType.O3_PRO_REFERENCE_TO_VIDEO.value, "prompt": prompt,
            "images": [a.url for a in images], "duration": duration, "aspect_ratio": _value(aspect_ratio),
            "sound": sound, "negative_prompt": negative_prompt,
        }  # fmt: skip
        await self.bot.start_video(interaction, fields, attachments=[(a, "image") for a in images])

    @app_commands.command(description="O3 video edit (spends credits)")
    @app_commands.describe(
        video="The video to edit", prompt="What should change",
        keep_original_sound="Keep the video's own sound", model="Which O3 edit model (fixed price)",
    )  # fmt: skip
    @app_commands.choices(model=model_choices(Mode.EDIT))
    async def edit(
        self,
        interaction: discord.Interaction,
        video: discord.Attachment,
        prompt: str,
        keep_original_sound: bool | None = None,
        model: Choice[str] | None = None,
    ) -> None:
        fields = {
            "type": _value(model) or catalog.TaskType.O3_STD_VIDEO_EDIT.value, "prompt": prompt, "video": video.url,
            "keep_original_sound": keep_original_sound,
        }  # fmt: skip
        await self.bot.start_video(interaction, fields, attachments=[(video, "video")])

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
            credits = quote(model.value, duration, sound)
        except RequestValidationError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        left = await self.bot.left_today(interaction.user.id)
        budget = "" if left is None else f" You have {left} credits left today."
        await interaction.response.send_message(f"{model.value}: **{credits} credits**.{budget}", ephemeral=True)

    @app_commands.command(description="The status of one of your videos")
    @app_commands.describe(task_id="The task id (start typing to pick one of yours)")
    async def status(self, interaction: discord.Interaction, task_id: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        record = await self.bot.service.get(task_id)
        origin = record.origin if record is not None else None
        mine = isinstance(origin, DiscordOrigin) and origin.user_id == interaction.user.id
        roles = [role.name for role in getattr(interaction.user, "roles", [])]
        if not mine and not self.bot.policy.is_admin(roles):  # checked before the API is asked anything
            await interaction.followup.send("That video is not one of yours.", ephemeral=True)
            return
        try:
            checked = await self.bot.service.status(task_id)
        except KlingError as exc:
            await interaction.followup.send(exc.message, ephemeral=True)
            return
        if checked.record is not None:
            await interaction.followup.send(embed=task_embed(checked.record), ephemeral=True)
        else:
            task = checked.task
            urls = " ".join(task.video_urls)
            await interaction.followup.send(f"`{task.task_id}`: {task.status.value} {urls}", ephemeral=True)

    @status.autocomplete("task_id")
    async def _your_tasks(self, interaction: discord.Interaction, current: str) -> list[Choice[str]]:
        records = await self.bot.service.recent(origin_kind="discord", user_id=interaction.user.id, limit=25)
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
        records = await self.bot.service.recent(origin_kind="discord", user_id=interaction.user.id, limit=10)
        if not records:
            await interaction.response.send_message("You have no videos yet. Try `/kling generate`.", ephemeral=True)
            return
        lines = [
            f"`{r.task_id}` · {r.display_status} · {r.type} · <t:{int(r.submitted_at)}:R>"
            + (f" · {r.video_url}" if r.video_url else "")
            for r in records
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(description="The Kling models, their limits and prices")
    async def models(self, interaction: discord.Interaction) -> None:
        lines = [
            f"`{m['type']}` · {m['mode']} · "
            + (f"{m['duration'][0]}-{m['duration'][1]} s" if isinstance(m["duration"], list) else "source length")
            + f" · {m['price']}"
            for m in catalog.describe_models()
        ]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(description="How many credits you have left today")
    async def budget(self, interaction: discord.Interaction) -> None:
        left = await self.bot.left_today(interaction.user.id)
        text = "There is no daily limit here." if left is None else f"You have **{left} credits** left today."
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(description="Credits spent per member in the last 24 hours (admins)")
    async def usage(self, interaction: discord.Interaction) -> None:
        roles = [role.name for role in getattr(interaction.user, "roles", [])]
        if not self.bot.policy.is_admin(roles):
            await interaction.response.send_message("Only the configured admin role may see usage.", ephemeral=True)
            return
        spent = await self.bot.service.spent_by_user("discord")
        ranked = sorted(spent.items(), key=lambda item: -item[1])[:25]
        lines = [f"<@{user}>: {credits} credits" for user, credits in ranked] or ["Nothing spent in 24 hours."]
        await interaction.response.send_message("\n".join(lines), ephemeral=True)
