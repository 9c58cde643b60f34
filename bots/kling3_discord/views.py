"""The buttons under a finished video, and the edit dialog. Result buttons carry the task id in their custom
id, so they keep working after a restart (they are registered as dynamic items when the bot starts)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import discord

from kling3_tools.domain.catalog import TaskType
from kling3_tools.domain.models import GenerateRequest
from kling3_tools.domain.records import DiscordOrigin, TaskRecord

from .flow import flow_of


async def _owned_record(interaction: discord.Interaction, task_id: str) -> TaskRecord | None:
    """The task behind a result button, when the one who clicked is the one who asked; else refuse."""
    record = await flow_of(interaction.client).service.get(task_id)
    if record is None or not isinstance(record.origin, DiscordOrigin):
        await interaction.response.send_message("I no longer know this video.", ephemeral=True)
        return None
    if record.origin.user_id != interaction.user.id:
        await interaction.response.send_message(
            "Only the person who made this video can use its buttons.", ephemeral=True
        )
        return None
    return record


class TaskButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"kling3:(?P<action>reroll|edit):(?P<task_id>[0-9A-Za-z]+)"
):
    """Re-roll (same settings again: spends again, through the same checks) or Edit (asks for an edit
    prompt, then runs an O3 video edit of this video). Only for the one who asked for the video."""

    LOOKS: ClassVar[dict[str, tuple[str, discord.ButtonStyle]]] = {
        "reroll": ("Re-roll", discord.ButtonStyle.blurple),
        "edit": ("Edit", discord.ButtonStyle.grey),
    }

    def __init__(self, action: str, task_id: str) -> None:
        label, style = self.LOOKS[action]
        super().__init__(discord.ui.Button(label=label, style=style, custom_id=f"kling3:{action}:{task_id}"))
        self.action = action
        self.task_id = task_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> TaskButton:
        return cls(match["action"], match["task_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        record = await _owned_record(interaction, self.task_id)
        if record is None:
            return
        if self.action == "reroll":
            await flow_of(interaction.client).start_video(interaction, GenerateRequest.fields_of(record.request))
        elif video := await flow_of(interaction.client).service.videos.lasting_url(record):
            await interaction.response.send_modal(EditModal(video))


class EditModal(discord.ui.Modal, title="Edit this video"):
    prompt: discord.ui.TextInput[EditModal] = discord.ui.TextInput(
        label="What should change?", style=discord.TextStyle.paragraph, max_length=2000
    )

    def __init__(self, video_url: str) -> None:
        super().__init__()
        self.video_url = video_url

    async def on_submit(self, interaction: discord.Interaction) -> None:
        fields = {"type": TaskType.O3_STD_VIDEO_EDIT.value, "prompt": self.prompt.value, "video": self.video_url}
        await flow_of(interaction.client).start_video(interaction, fields)


def result_view(task_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in TaskButton.LOOKS:
        view.add_item(TaskButton(action, task_id))
    return view
